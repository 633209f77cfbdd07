"""signing keys: the deployment's token keys, shared by every instance

Revision ID: 0012_signing_keys
Revises: 0011_schema_compatibility
Create Date: 2026-12-05

Expand only (a new table; no change to the tables before it), so an instance of the
previous release keeps serving while the schema is at this revision.

- ``signing_keys``: each Ed25519 key that signs (or signed) the deployment's access
  tokens: its kid, raw public key, state (``active``: signs; ``retiring``: verifies
  until ``verify_until``; ``retired``), the previous key's endorsement of it (what
  devices check before pinning it), where its private key lives (``file``, ``secret``
  or ``database``, where it is sealed with the server's secret key) and when it was
  made. At most one key is active (a partial unique index).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import sync_server.db
from sync_server.migrating import declare_compatibility

revision = "0012_signing_keys"
down_revision = "0011_schema_compatibility"
branch_labels = None
depends_on = None

_ONE_ACTIVE = sa.text("state = 'active'")


def upgrade() -> None:
    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(length=32), nullable=False),
        sa.Column("public_key", sa.LargeBinary(length=32), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("verify_until", sync_server.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("endorsement", sa.LargeBinary(length=64), nullable=True),
        sa.Column("source", sa.String(length=10), nullable=False),
        sa.Column("sealed_private_key", sa.Text(), nullable=True),
        sa.Column("created_at", sync_server.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("kid"),
        sa.UniqueConstraint("public_key", name="uq_signing_keys_public_key"),
    )
    op.create_index(
        "uq_signing_keys_one_active",
        "signing_keys",
        ["state"],
        unique=True,
        sqlite_where=_ONE_ACTIVE,
        postgresql_where=_ONE_ACTIVE,
    )
    declare_compatibility(revision, oldest="0010_edge_boxes")  # expand only


def downgrade() -> None:
    op.drop_index("uq_signing_keys_one_active", table_name="signing_keys")
    op.drop_table("signing_keys")
