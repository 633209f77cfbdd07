"""Booking tables: the directory (providers, services), schedules (weekly hours and
exceptions), bookings and the claims that make double booking impossible, calendar
feeds and quality flags.

No provider is ever booked twice for overlapping times, and the database enforces it:
every active booking holds one `booking_claims` row per 5-minute step of its time
(primary key: provider, step), so a second booking over any of those steps fails its
insert, whatever the application checked before. On PostgreSQL an exclusion
constraint over the provider and the booking's time range (``btree_gist``, created by
migration 0004) guards the `bookings` table itself as well.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    Boolean,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from sync_server.db import Base, Id, UTCDateTime, utcnow

__all__ = [
    "ACTIVE_STATES",
    "STEP_MINUTES",
    "Booking",
    "BookingClaim",
    "CalendarFeed",
    "Provider",
    "QualityFlag",
    "ScheduleException",
    "Service",
    "WeeklyHours",
]

STEP_MINUTES = 5
"""Bookings start and end on multiples of this many minutes; claims are per step."""

ACTIVE_STATES = ("booked", "confirmed", "en_route", "started")
"""States in which a booking holds its provider's time."""


class Provider(Base):
    """A doctor, nurse or caregiver who can be booked."""

    __tablename__ = "providers"

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    organisation_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"), index=True)
    # The clinic they work at; None for caregivers, who visit across the organisation.
    clinic_id: Mapped[str | None] = mapped_column(ForeignKey("clinics.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))  # crdt.ProviderKind
    # JSON lists of short strings.
    specialisations: Mapped[str] = mapped_column(Text, default="[]")
    skills: Mapped[str] = mapped_column(Text, default="[]")
    languages: Mapped[str] = mapped_column(Text, default="[]")
    areas: Mapped[str] = mapped_column(Text, default="[]")
    services: Mapped[str] = mapped_column(Text, default="[]")  # service codes offered
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Service(Base):
    """Something bookable and how long one slot of it lasts."""

    __tablename__ = "booking_services"
    __table_args__ = (UniqueConstraint("organisation_id", "code", name="uq_services_org_code"),)

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    organisation_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"), index=True)
    code: Mapped[str] = mapped_column(String(60))
    name: Mapped[str] = mapped_column(String(200))
    duration_minutes: Mapped[int] = mapped_column(Integer)
    specialisation: Mapped[str | None] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20), default="appointment")  # or "visit"


class WeeklyHours(Base):
    """One weekly working window of a provider, in local time of `timezone`."""

    __tablename__ = "weekly_hours"

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    provider_id: Mapped[str] = mapped_column(ForeignKey("providers.id"), index=True)
    weekday: Mapped[int] = mapped_column(Integer)  # Monday 0 .. Sunday 6
    start_time: Mapped[str] = mapped_column(String(5))  # "HH:MM"
    end_time: Mapped[str] = mapped_column(String(5))
    timezone: Mapped[str] = mapped_column(String(64))  # IANA name, e.g. Europe/Berlin
    valid_from: Mapped[date | None] = mapped_column(Date)
    valid_until: Mapped[date | None] = mapped_column(Date)


class ScheduleException(Base):
    """A day that differs from the weekly hours: a provider away, a clinic holiday
    (`provider_id` None: every provider of `clinic_id`; both None: the organisation),
    or extra hours."""

    __tablename__ = "schedule_exceptions"

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    organisation_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"), index=True)
    clinic_id: Mapped[str | None] = mapped_column(ForeignKey("clinics.id"))
    provider_id: Mapped[str | None] = mapped_column(ForeignKey("providers.id"))
    day: Mapped[date] = mapped_column(Date, index=True)
    kind: Mapped[str] = mapped_column(String(20))  # closed | holiday | extra
    # For "closed": the hours away (None: the whole day); for "extra": the hours added.
    start_time: Mapped[str | None] = mapped_column(String(5))
    end_time: Mapped[str | None] = mapped_column(String(5))
    note: Mapped[str | None] = mapped_column(String(200))


class Booking(Base):
    """An appointment at a clinic or a caregiver's visit at a patient's home."""

    __tablename__ = "bookings"
    __table_args__ = (Index("ix_bookings_provider_start", "provider_id", "starts_at"),)

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    organisation_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"), index=True)
    clinic_id: Mapped[str] = mapped_column(ForeignKey("clinics.id"), index=True)
    kind: Mapped[str] = mapped_column(String(20))  # appointment | visit
    provider_id: Mapped[str] = mapped_column(ForeignKey("providers.id"))
    patient_id: Mapped[str] = mapped_column(Id, index=True)
    service: Mapped[str] = mapped_column(String(200))  # a service code, or a visit's skill
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # booked, confirmed, en_route, started (active: `ACTIVE_STATES`), completed,
    # cancelled, no_show, missed.
    state: Mapped[str] = mapped_column(String(20))
    intent_id: Mapped[str] = mapped_column(Id, unique=True)  # the intent that made it
    area: Mapped[str | None] = mapped_column(String(200))  # visits: where
    language: Mapped[str | None] = mapped_column(String(200))
    late_cancellation: Mapped[bool] = mapped_column(Boolean, default=False)
    cancel_reason: Mapped[str | None] = mapped_column(String(500))
    rating: Mapped[int | None] = mapped_column(Integer)  # visits: the one review
    review_comment: Mapped[str | None] = mapped_column(Text)
    reviewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class BookingClaim(Base):
    """One 5-minute step of a provider's time held by an active booking."""

    __tablename__ = "booking_claims"

    provider_id: Mapped[str] = mapped_column(ForeignKey("providers.id"), primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    booking_id: Mapped[str] = mapped_column(ForeignKey("bookings.id"), index=True)


class CalendarFeed(Base):
    """A secret iCalendar URL for one provider's or one patient's bookings."""

    __tablename__ = "calendar_feeds"

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    organisation_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"), index=True)
    clinic_id: Mapped[str | None] = mapped_column(ForeignKey("clinics.id"))
    subject_kind: Mapped[str] = mapped_column(String(20))  # provider | patient
    subject_id: Mapped[str] = mapped_column(Id)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # SHA-256 hex
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class QualityFlag(Base):
    """Something staff should look at: a missed visit, a low rating."""

    __tablename__ = "quality_flags"

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    organisation_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"), index=True)
    provider_id: Mapped[str] = mapped_column(ForeignKey("providers.id"), index=True)
    booking_id: Mapped[str] = mapped_column(ForeignKey("bookings.id"))
    reason: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
