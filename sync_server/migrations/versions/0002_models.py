"""published models

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24

The wound models an organisation's admins publish: the canonical manifest exactly as
the server signed it, the signature, and which one is active (at most one per
organisation: a partial unique index, which SQLite and PostgreSQL both support).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import sync_server.db

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "published_models",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("organisation_id", sa.String(length=64), nullable=False),
        sa.Column("model_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("manifest", sa.LargeBinary(), nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=False),
        sa.Column("published_at", sync_server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("published_by", sa.String(length=64), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["organisation_id"], ["organisations.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("organisation_id", "sha256", name="uq_published_models_org_sha256"),
    )
    with op.batch_alter_table("published_models", schema=None) as batch_op:
        batch_op.create_index(
            "uq_published_models_active",
            ["organisation_id"],
            unique=True,
            sqlite_where=sa.text("active"),
            postgresql_where=sa.text("active"),
        )


def downgrade() -> None:
    with op.batch_alter_table("published_models", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_published_models_active",
            sqlite_where=sa.text("active"),
            postgresql_where=sa.text("active"),
        )
    op.drop_table("published_models")
