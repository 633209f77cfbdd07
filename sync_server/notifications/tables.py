"""Notification tables: the events the domains reported, one delivery per (event,
channel, recipient), and the in-app notices the in-app channel wrote.

The exactly-once rules are the database's: an event is recorded once per
``dedupe_key`` (unique), a delivery once per (event, channel, recipient) (unique), and
an in-app notice once per delivery (its primary key is the delivery id, the
idempotency key every channel is given). A worker claims a delivery with a conditional
UPDATE (`sync_server.notifications.worker`), so two workers never hold one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from sync_server.db import Base, Id, UTCDateTime, utcnow

__all__ = [
    "DELIVERY_STATES",
    "DIGEST_MODES",
    "InAppNotice",
    "NotificationDelivery",
    "NotificationDigest",
    "NotificationEvent",
    "NotificationPreference",
]


def _one_of(column: str, values: tuple[str, ...]) -> str:
    """The CHECK that `column` holds one of `values` (``state IN ('a', 'b')``)."""
    return f"{column} IN ({', '.join(repr(value) for value in values)})"


DELIVERY_STATES = ("pending", "sending", "sent", "dead")
"""pending (due at ``next_attempt_at``), sending (leased by a worker until
``lease_until``), sent, dead (out of attempts, or refused for good: staff may retry)."""


class NotificationEvent(Base):
    """Something a domain reported, once per `dedupe_key` (a retried webhook or a
    replayed intent is the same event). `detail` is the in-app detail: it may hold
    clinical values and never leaves the app (no other channel renders it)."""

    __tablename__ = "notification_events"

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    clinic_id: Mapped[str] = mapped_column(ForeignKey("clinics.id"), index=True)
    kind: Mapped[str] = mapped_column(String(60))
    dedupe_key: Mapped[str] = mapped_column(String(200), unique=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class NotificationDelivery(Base):
    """One message of an event to one recipient through one channel."""

    __tablename__ = "notification_deliveries"
    __table_args__ = (
        UniqueConstraint("event_id", "channel", "recipient", name="uq_notification_deliveries"),
        CheckConstraint(_one_of("state", DELIVERY_STATES), name="ck_notification_state"),
        CheckConstraint("attempts >= 0", name="ck_notification_attempts"),
        Index("ix_notification_deliveries_due", "state", "next_attempt_at"),
    )

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    event_id: Mapped[str] = mapped_column(ForeignKey("notification_events.id"), index=True)
    clinic_id: Mapped[str] = mapped_column(ForeignKey("clinics.id"), index=True)
    channel: Mapped[str] = mapped_column(String(20))
    recipient: Mapped[str] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(10), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Not sent before this time: the first attempt, a backoff, and later quiet hours
    # and digests (they move it, nothing else changes).
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    provider_message_id: Mapped[str | None] = mapped_column(String(200))
    last_error: Mapped[str | None] = mapped_column(String(500))  # never PHI
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Digests (0015): the recipient's digest mode when the delivery was made (None:
    # sent alone), and the digest it was grouped into (set once, never changed; no
    # foreign key: 0015 adds the column by a plain ADD COLUMN, and it is only set in
    # the transaction that inserts its `NotificationDigest`).
    digest: Mapped[str | None] = mapped_column(String(10))
    digest_id: Mapped[str | None] = mapped_column(Id, index=True)


class InAppNotice(Base):
    """What the in-app channel delivered: the event's detail for one recipient, read
    by the clinic's devices and staff. Its id is the delivery's (written once)."""

    __tablename__ = "notification_notices"

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    event_id: Mapped[str] = mapped_column(ForeignKey("notification_events.id"), index=True)
    clinic_id: Mapped[str] = mapped_column(ForeignKey("clinics.id"), index=True)
    recipient: Mapped[str] = mapped_column(String(200), index=True)
    kind: Mapped[str] = mapped_column(String(60))
    title: Mapped[str] = mapped_column(String(200))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


DIGEST_MODES = ("none", "hourly", "daily")
"""none (each delivery alone), hourly (at the end of each local hour), daily (once a
day at ``digest_minute`` local time)."""


class NotificationPreference(Base):
    """How one recipient address of a clinic is told: which of email, SMS and push are
    on (in-app has no switch: it is the record of the detail), quiet hours (local
    minutes of the day in `time_zone`, end exclusive; start after end spans midnight)
    and a digest mode. One row per (clinic, recipient): the primary key."""

    __tablename__ = "notification_preferences"
    __table_args__ = (
        CheckConstraint(
            "(quiet_start IS NULL AND quiet_end IS NULL) OR (quiet_start IS NOT NULL "
            "AND quiet_end IS NOT NULL AND quiet_start <> quiet_end "
            "AND quiet_start BETWEEN 0 AND 1439 AND quiet_end BETWEEN 0 AND 1439)",
            name="ck_notification_pref_quiet",
        ),
        CheckConstraint(_one_of("digest", DIGEST_MODES), name="ck_notification_pref_digest"),
        CheckConstraint(
            "(digest = 'daily' AND digest_minute BETWEEN 0 AND 1439) "
            "OR (digest <> 'daily' AND digest_minute IS NULL)",
            name="ck_notification_pref_digest_minute",
        ),
    )

    clinic_id: Mapped[str] = mapped_column(ForeignKey("clinics.id"), primary_key=True)
    recipient: Mapped[str] = mapped_column(String(200), primary_key=True)
    email: Mapped[bool] = mapped_column(Boolean, default=True)
    sms: Mapped[bool] = mapped_column(Boolean, default=True)
    push: Mapped[bool] = mapped_column(Boolean, default=True)
    time_zone: Mapped[str] = mapped_column(String(64), default="UTC")
    quiet_start: Mapped[int | None] = mapped_column(Integer)
    quiet_end: Mapped[int | None] = mapped_column(Integer)
    digest: Mapped[str] = mapped_column(String(10), default="none")
    digest_minute: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class NotificationDigest(Base):
    """One digest message: the deliveries whose `digest_id` is this row's id, sent as
    one message with this id as the idempotency key (a worker that died mid-send
    leaves the group whole: the next one sends the same group with the same key)."""

    __tablename__ = "notification_digests"
    __table_args__ = (CheckConstraint("size > 0", name="ck_notification_digest_size"),)

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    clinic_id: Mapped[str] = mapped_column(ForeignKey("clinics.id"), index=True)
    channel: Mapped[str] = mapped_column(String(20))
    recipient: Mapped[str] = mapped_column(String(200))
    size: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
