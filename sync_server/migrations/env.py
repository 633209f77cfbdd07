"""Alembic environment: runs on the connection `sync_server.migrate` hands it, or
offline (``server migrate --sql``) for the dialect `sync_server.migration_script` names."""

from __future__ import annotations

from alembic import context

# Every domain's tables, so the metadata Alembic compares against is complete.
from sync_server.audit import tables as _audit  # noqa: F401
from sync_server.blobs import tables as _blobs  # noqa: F401
from sync_server.bookings import tables as _bookings  # noqa: F401
from sync_server.commerce import tables as _commerce  # noqa: F401
from sync_server.db import Base
from sync_server.edge import tables as _edge  # noqa: F401
from sync_server.identity import tables as _identity  # noqa: F401
from sync_server.intents import tables as _intents  # noqa: F401
from sync_server.migrating import VERSION_TABLE
from sync_server.models import tables as _models  # noqa: F401
from sync_server.notifications import tables as _notifications  # noqa: F401
from sync_server.payments import tables as _payments  # noqa: F401
from sync_server.sync import tables as _sync  # noqa: F401

config = context.config
if context.is_offline_mode():
    context.configure(
        dialect_name=config.attributes["dialect"],
        target_metadata=Base.metadata,
        render_as_batch=config.attributes["dialect"] == "sqlite",
        literal_binds=True,
        version_table=VERSION_TABLE,
    )
else:
    connection = config.attributes["connection"]
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # ALTER TABLE on SQLite
        compare_type=True,
        version_table=VERSION_TABLE,
    )
with context.begin_transaction():
    context.run_migrations()
