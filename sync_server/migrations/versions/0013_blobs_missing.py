"""blobs the storage lost: when a blob was found missing, and why

Revision ID: 0013_blobs_missing
Revises: 0012_signing_keys
Create Date: 2026-12-05

- ``blobs.missing_since``: when the server found that its storage no longer holds the
  blob (absent, another size, or bytes whose SHA-256 differs); NULL while it is stored.
  A device that holds the blob uploads it again, which clears it.
- ``blobs.missing_reason``: ``absent``, ``size_mismatch`` or ``hash_mismatch``.

Expand only (two nullable columns): servers from 0010 on still serve the schema; they
ignore the marks (an older server answers a lost blob 503 ``blob_unavailable``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import sync_server.db
from sync_server.migrating import declare_compatibility

revision = "0013_blobs_missing"
down_revision = "0012_signing_keys"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("blobs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("missing_since", sync_server.db.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("missing_reason", sa.String(length=20), nullable=True))
    declare_compatibility(revision, oldest="0010_edge_boxes")  # expand only


def downgrade() -> None:
    with op.batch_alter_table("blobs", schema=None) as batch_op:
        batch_op.drop_column("missing_reason")
        batch_op.drop_column("missing_since")
