"""notification preferences, quiet hours and digests

Revision ID: 0015_notification_preferences
Revises: 0014_notifications
Create Date: 2026-12-06

- ``notification_preferences``: one row per (clinic, recipient) (primary key): email,
  SMS and push on or off, quiet hours (local minutes of the day and an IANA time
  zone), a digest mode (none, hourly, daily at a local minute); check constraints
  hold the shapes.
- ``notification_digests``: one row per digest message (its id is the idempotency key).
- ``notification_deliveries.digest`` (the digest mode a delivery was made with) and
  ``notification_deliveries.digest_id`` (the digest it was grouped into).

Expand only (new tables, new nullable columns): servers from 0010 on still serve the
schema; servers before 0015 send every delivery alone.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import sync_server.db
from sync_server.migrating import declare_compatibility

revision = "0015_notification_preferences"
down_revision = "0014_notifications"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notification_preferences",
        sa.Column("clinic_id", sa.String(length=64), nullable=False),
        sa.Column("recipient", sa.String(length=200), nullable=False),
        sa.Column("email", sa.Boolean(), nullable=False),
        sa.Column("sms", sa.Boolean(), nullable=False),
        sa.Column("push", sa.Boolean(), nullable=False),
        sa.Column("time_zone", sa.String(length=64), nullable=False),
        sa.Column("quiet_start", sa.Integer(), nullable=True),
        sa.Column("quiet_end", sa.Integer(), nullable=True),
        sa.Column("digest", sa.String(length=10), nullable=False),
        sa.Column("digest_minute", sa.Integer(), nullable=True),
        sa.Column("updated_at", sync_server.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "(quiet_start IS NULL AND quiet_end IS NULL) OR (quiet_start IS NOT NULL "
            "AND quiet_end IS NOT NULL AND quiet_start <> quiet_end "
            "AND quiet_start BETWEEN 0 AND 1439 AND quiet_end BETWEEN 0 AND 1439)",
            name="ck_notification_pref_quiet",
        ),
        sa.CheckConstraint(
            "digest IN ('none', 'hourly', 'daily')", name="ck_notification_pref_digest"
        ),
        sa.CheckConstraint(
            "(digest = 'daily' AND digest_minute BETWEEN 0 AND 1439) "
            "OR (digest <> 'daily' AND digest_minute IS NULL)",
            name="ck_notification_pref_digest_minute",
        ),
        sa.ForeignKeyConstraint(["clinic_id"], ["clinics.id"]),
        sa.PrimaryKeyConstraint("clinic_id", "recipient"),
    )
    op.create_table(
        "notification_digests",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("clinic_id", sa.String(length=64), nullable=False),
        sa.Column("channel", sa.String(length=20), nullable=False),
        sa.Column("recipient", sa.String(length=200), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("created_at", sync_server.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("size > 0", name="ck_notification_digest_size"),
        sa.ForeignKeyConstraint(["clinic_id"], ["clinics.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_notification_digests_clinic_id", "notification_digests", ["clinic_id"], unique=False
    )
    # Plain ADD COLUMN (no batch step, so `migrate --sql` still writes SQLite's
    # script): no foreign key on digest_id; it is only ever set in the transaction
    # that inserts its digest.
    op.add_column(
        "notification_deliveries", sa.Column("digest", sa.String(length=10), nullable=True)
    )
    op.add_column(
        "notification_deliveries", sa.Column("digest_id", sa.String(length=64), nullable=True)
    )
    op.create_index(
        "ix_notification_deliveries_digest_id",
        "notification_deliveries",
        ["digest_id"],
        unique=False,
    )
    declare_compatibility(revision, oldest="0010_edge_boxes")  # expand only


def downgrade() -> None:
    op.drop_index("ix_notification_deliveries_digest_id", table_name="notification_deliveries")
    with op.batch_alter_table("notification_deliveries", schema=None) as batch:
        batch.drop_column("digest_id")
        batch.drop_column("digest")
    op.drop_index("ix_notification_digests_clinic_id", table_name="notification_digests")
    op.drop_table("notification_digests")
    op.drop_table("notification_preferences")
