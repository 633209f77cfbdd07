"""notifications: events, deliveries (the outbox) and in-app notices

Revision ID: 0014_notifications
Revises: 0013_blobs_missing
Create Date: 2026-12-06

- ``notification_events``: what a domain reported, once per ``dedupe_key`` (unique).
- ``notification_deliveries``: one per (event, channel, recipient) (unique), with
  its state, attempts, ``next_attempt_at`` and a worker's lease.
- ``notification_notices``: what the in-app channel delivered (id: the delivery's).

Expand only (new tables): servers from 0010 on still serve the schema; they write no
notifications.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import sync_server.db
from sync_server.migrating import declare_compatibility

revision = "0014_notifications"
down_revision = "0013_blobs_missing"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notification_events",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("clinic_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=60), nullable=False),
        sa.Column("dedupe_key", sa.String(length=200), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("created_at", sync_server.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["clinic_id"], ["clinics.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dedupe_key"),
    )
    op.create_index(
        "ix_notification_events_clinic_id", "notification_events", ["clinic_id"], unique=False
    )
    op.create_table(
        "notification_deliveries",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("clinic_id", sa.String(length=64), nullable=False),
        sa.Column("channel", sa.String(length=20), nullable=False),
        sa.Column("recipient", sa.String(length=200), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sync_server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("lease_owner", sa.String(length=100), nullable=True),
        sa.Column("lease_until", sync_server.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("provider_message_id", sa.String(length=200), nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("created_at", sync_server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sync_server.db.UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "state IN ('pending', 'sending', 'sent', 'dead')", name="ck_notification_state"
        ),
        sa.CheckConstraint("attempts >= 0", name="ck_notification_attempts"),
        sa.ForeignKeyConstraint(["clinic_id"], ["clinics.id"]),
        sa.ForeignKeyConstraint(["event_id"], ["notification_events.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("event_id", "channel", "recipient", name="uq_notification_deliveries"),
    )
    op.create_index(
        "ix_notification_deliveries_clinic_id",
        "notification_deliveries",
        ["clinic_id"],
        unique=False,
    )
    op.create_index(
        "ix_notification_deliveries_event_id", "notification_deliveries", ["event_id"], unique=False
    )
    op.create_index(
        "ix_notification_deliveries_due",
        "notification_deliveries",
        ["state", "next_attempt_at"],
        unique=False,
    )
    op.create_table(
        "notification_notices",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("clinic_id", sa.String(length=64), nullable=False),
        sa.Column("recipient", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=60), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("created_at", sync_server.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["clinic_id"], ["clinics.id"]),
        sa.ForeignKeyConstraint(["event_id"], ["notification_events.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_notification_notices_clinic_id", "notification_notices", ["clinic_id"], unique=False
    )
    op.create_index(
        "ix_notification_notices_event_id", "notification_notices", ["event_id"], unique=False
    )
    op.create_index(
        "ix_notification_notices_recipient", "notification_notices", ["recipient"], unique=False
    )
    declare_compatibility(revision, oldest="0010_edge_boxes")  # expand only


def downgrade() -> None:
    op.drop_table("notification_notices")
    op.drop_table("notification_deliveries")
    op.drop_table("notification_events")
