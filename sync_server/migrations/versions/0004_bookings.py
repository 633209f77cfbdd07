"""bookings decided by the server: intents and decisions, directory, schedules, bookings

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04

- ``intent_decisions``: one row per decided intent (primary key: the intent's id), the
  database's guarantee that an intent is decided once.
- The booking directory (``providers``, ``booking_services``), schedules
  (``weekly_hours``, ``schedule_exceptions``), ``bookings`` and ``booking_claims`` (one
  row per 5-minute step an active booking holds: no double booking on any database),
  ``calendar_feeds`` and ``quality_flags``.
- ``clinics.timezone`` (IANA name, ``UTC`` for existing clinics).
- On PostgreSQL, ``btree_gist`` and an exclusion constraint: no two active bookings of
  one provider overlap in time.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import sync_server.db

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_ACTIVE = "('booked', 'confirmed', 'en_route', 'started')"


def upgrade() -> None:
    op.create_table(
        "booking_services",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("organisation_id", sa.String(length=64), nullable=False),
        sa.Column("code", sa.String(length=60), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("duration_minutes", sa.Integer(), nullable=False),
        sa.Column("specialisation", sa.String(length=200), nullable=True),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisations.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("organisation_id", "code", name="uq_services_org_code"),
    )
    op.create_index(
        op.f("ix_booking_services_organisation_id"),
        "booking_services",
        ["organisation_id"],
        unique=False,
    )
    op.create_table(
        "calendar_feeds",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("organisation_id", sa.String(length=64), nullable=False),
        sa.Column("clinic_id", sa.String(length=64), nullable=True),
        sa.Column("subject_kind", sa.String(length=20), nullable=False),
        sa.Column("subject_id", sa.String(length=64), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sync_server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sync_server.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["clinic_id"],
            ["clinics.id"],
        ),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisations.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_index(
        op.f("ix_calendar_feeds_organisation_id"),
        "calendar_feeds",
        ["organisation_id"],
        unique=False,
    )
    op.create_table(
        "intent_decisions",
        sa.Column("intent_id", sa.String(length=64), nullable=False),
        sa.Column("clinic_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=30), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=True),
        sa.Column("decided_at", sync_server.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["clinic_id"],
            ["clinics.id"],
        ),
        sa.PrimaryKeyConstraint("intent_id"),
    )
    op.create_index(
        op.f("ix_intent_decisions_clinic_id"), "intent_decisions", ["clinic_id"], unique=False
    )
    op.create_table(
        "providers",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("organisation_id", sa.String(length=64), nullable=False),
        sa.Column("clinic_id", sa.String(length=64), nullable=True),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("specialisations", sa.Text(), nullable=False),
        sa.Column("skills", sa.Text(), nullable=False),
        sa.Column("languages", sa.Text(), nullable=False),
        sa.Column("areas", sa.Text(), nullable=False),
        sa.Column("services", sa.Text(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sync_server.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["clinic_id"],
            ["clinics.id"],
        ),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisations.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_providers_clinic_id"), "providers", ["clinic_id"], unique=False)
    op.create_index(
        op.f("ix_providers_organisation_id"), "providers", ["organisation_id"], unique=False
    )
    op.create_table(
        "bookings",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("organisation_id", sa.String(length=64), nullable=False),
        sa.Column("clinic_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("provider_id", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("service", sa.String(length=200), nullable=False),
        sa.Column("starts_at", sync_server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sync_server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("intent_id", sa.String(length=64), nullable=False),
        sa.Column("area", sa.String(length=200), nullable=True),
        sa.Column("language", sa.String(length=200), nullable=True),
        sa.Column("late_cancellation", sa.Boolean(), nullable=False),
        sa.Column("cancel_reason", sa.String(length=500), nullable=True),
        sa.Column("rating", sa.Integer(), nullable=True),
        sa.Column("review_comment", sa.Text(), nullable=True),
        sa.Column("reviewed_at", sync_server.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", sync_server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sync_server.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["clinic_id"],
            ["clinics.id"],
        ),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisations.id"],
        ),
        sa.ForeignKeyConstraint(
            ["provider_id"],
            ["providers.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("intent_id"),
    )
    op.create_index(op.f("ix_bookings_clinic_id"), "bookings", ["clinic_id"], unique=False)
    op.create_index(
        op.f("ix_bookings_organisation_id"), "bookings", ["organisation_id"], unique=False
    )
    op.create_index(op.f("ix_bookings_patient_id"), "bookings", ["patient_id"], unique=False)
    op.create_index(
        "ix_bookings_provider_start", "bookings", ["provider_id", "starts_at"], unique=False
    )
    op.create_table(
        "schedule_exceptions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("organisation_id", sa.String(length=64), nullable=False),
        sa.Column("clinic_id", sa.String(length=64), nullable=True),
        sa.Column("provider_id", sa.String(length=64), nullable=True),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("start_time", sa.String(length=5), nullable=True),
        sa.Column("end_time", sa.String(length=5), nullable=True),
        sa.Column("note", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(
            ["clinic_id"],
            ["clinics.id"],
        ),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisations.id"],
        ),
        sa.ForeignKeyConstraint(
            ["provider_id"],
            ["providers.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_schedule_exceptions_day"), "schedule_exceptions", ["day"], unique=False
    )
    op.create_index(
        op.f("ix_schedule_exceptions_organisation_id"),
        "schedule_exceptions",
        ["organisation_id"],
        unique=False,
    )
    op.create_table(
        "weekly_hours",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("provider_id", sa.String(length=64), nullable=False),
        sa.Column("weekday", sa.Integer(), nullable=False),
        sa.Column("start_time", sa.String(length=5), nullable=False),
        sa.Column("end_time", sa.String(length=5), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("valid_from", sa.Date(), nullable=True),
        sa.Column("valid_until", sa.Date(), nullable=True),
        sa.ForeignKeyConstraint(
            ["provider_id"],
            ["providers.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_weekly_hours_provider_id"), "weekly_hours", ["provider_id"], unique=False
    )
    op.create_table(
        "booking_claims",
        sa.Column("provider_id", sa.String(length=64), nullable=False),
        sa.Column("at", sync_server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("booking_id", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["booking_id"],
            ["bookings.id"],
        ),
        sa.ForeignKeyConstraint(
            ["provider_id"],
            ["providers.id"],
        ),
        sa.PrimaryKeyConstraint("provider_id", "at"),
    )
    op.create_index(
        op.f("ix_booking_claims_booking_id"), "booking_claims", ["booking_id"], unique=False
    )
    op.create_table(
        "quality_flags",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("organisation_id", sa.String(length=64), nullable=False),
        sa.Column("provider_id", sa.String(length=64), nullable=False),
        sa.Column("booking_id", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=False),
        sa.Column("created_at", sync_server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sync_server.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["booking_id"],
            ["bookings.id"],
        ),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisations.id"],
        ),
        sa.ForeignKeyConstraint(
            ["provider_id"],
            ["providers.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_quality_flags_organisation_id"), "quality_flags", ["organisation_id"], unique=False
    )
    op.create_index(
        op.f("ix_quality_flags_provider_id"), "quality_flags", ["provider_id"], unique=False
    )
    op.add_column(
        "clinics", sa.Column("timezone", sa.String(length=64), server_default="UTC", nullable=False)
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE EXTENSION IF NOT EXISTS btree_gist")
        op.execute(
            "ALTER TABLE bookings ADD CONSTRAINT ex_bookings_provider_time "
            "EXCLUDE USING gist (provider_id WITH =, tstzrange(starts_at, ends_at) WITH &&) "
            f"WHERE (state IN {_ACTIVE})"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE bookings DROP CONSTRAINT IF EXISTS ex_bookings_provider_time")
    with op.batch_alter_table("clinics") as batch:
        batch.drop_column("timezone")
    op.drop_index(op.f("ix_quality_flags_provider_id"), table_name="quality_flags")
    op.drop_index(op.f("ix_quality_flags_organisation_id"), table_name="quality_flags")
    op.drop_table("quality_flags")
    op.drop_index(op.f("ix_booking_claims_booking_id"), table_name="booking_claims")
    op.drop_table("booking_claims")
    op.drop_index(op.f("ix_weekly_hours_provider_id"), table_name="weekly_hours")
    op.drop_table("weekly_hours")
    op.drop_index(op.f("ix_schedule_exceptions_organisation_id"), table_name="schedule_exceptions")
    op.drop_index(op.f("ix_schedule_exceptions_day"), table_name="schedule_exceptions")
    op.drop_table("schedule_exceptions")
    op.drop_index("ix_bookings_provider_start", table_name="bookings")
    op.drop_index(op.f("ix_bookings_patient_id"), table_name="bookings")
    op.drop_index(op.f("ix_bookings_organisation_id"), table_name="bookings")
    op.drop_index(op.f("ix_bookings_clinic_id"), table_name="bookings")
    op.drop_table("bookings")
    op.drop_index(op.f("ix_providers_organisation_id"), table_name="providers")
    op.drop_index(op.f("ix_providers_clinic_id"), table_name="providers")
    op.drop_table("providers")
    op.drop_index(op.f("ix_intent_decisions_clinic_id"), table_name="intent_decisions")
    op.drop_table("intent_decisions")
    op.drop_index(op.f("ix_calendar_feeds_organisation_id"), table_name="calendar_feeds")
    op.drop_table("calendar_feeds")
    op.drop_index(op.f("ix_booking_services_organisation_id"), table_name="booking_services")
    op.drop_table("booking_services")
