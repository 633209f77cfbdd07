"""Alembic environment: runs on the connection `sync_server.migrate` hands it."""

from __future__ import annotations

from alembic import context

from sync_server._models import Base

config = context.config
connection = config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # ALTER TABLE on SQLite
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
