"""devices' hash-chained audit logs, pushed append-only

Revision ID: 0008_device_audit
Revises: 0007_audit_log
Create Date: 2026-12-04

- ``device_audit_events``: each device's audit chain as pushed, by (device, seq).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import sync_server.db

revision = "0008_device_audit"
down_revision = "0007_audit_log"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "device_audit_events",
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("clinic_id", sa.String(length=64), nullable=False),
        sa.Column("canonical", sa.LargeBinary(), nullable=False),
        sa.Column("hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("received_at", sync_server.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("device_id", "seq"),
    )
    op.create_index(
        op.f("ix_device_audit_events_clinic_id"),
        "device_audit_events",
        ["clinic_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_device_audit_events_clinic_id"), table_name="device_audit_events")
    op.drop_table("device_audit_events")
