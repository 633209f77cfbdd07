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

from sqlalchemy import JSON, CheckConstraint, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from sync_server.db import Base, Id, UTCDateTime, utcnow

__all__ = ["DELIVERY_STATES", "InAppNotice", "NotificationDelivery", "NotificationEvent"]

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
        CheckConstraint(
            "state IN ('pending', 'sending', 'sent', 'dead')", name="ck_notification_state"
        ),
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
