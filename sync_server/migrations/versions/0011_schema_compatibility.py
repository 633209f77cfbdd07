"""schema compatibility: which server revisions can serve the schema (rolling upgrades)

Revision ID: 0011_schema_compatibility
Revises: 0010_edge_boxes
Create Date: 2026-12-05

- ``schema_compatibility``: per migration, the oldest server revision that can still
  serve the schema it leaves (`sync_server.migrating.declare_compatibility`). A server
  older than the database reads it there, since it cannot read the new scripts.

An expand migration (one new table): servers from 0010 on still serve it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from sync_server.migrating import declare_compatibility

revision = "0011_schema_compatibility"
down_revision = "0010_edge_boxes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "schema_compatibility",
        sa.Column("revision", sa.String(length=64), nullable=False),
        sa.Column("oldest_servable", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("revision"),
        comment="Per migration: the oldest server revision that can serve the schema it leaves.",
    )
    declare_compatibility(revision, oldest="0010_edge_boxes")


def downgrade() -> None:
    op.drop_table("schema_compatibility")
