"""Recording notification events in the caller's transaction.

`notify` writes an event and one pending delivery per (channel, recipient) in the
session of the change it reports, so the event exists if and only if that change
commits. A second call with the same ``dedupe_key`` (a retried webhook, a replayed
intent) adds nothing.

Who is told (the rule the domains follow, `patient_recipients`, `staff_recipients`):

- something about a patient's booking, order or payment: the patient, in-app and by
  push (``patient:<id>``; their devices resolve it);
- a break-glass access: the clinic's staff, in-app and by email (``staff:<clinic id>``;
  the email channel sends it to ``Settings.notification_staff_email``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from sync_server.db import insert_unless_taken, new_id, open_database, utcnow
from sync_server.errors import Invalid
from sync_server.notifications.schedule import preferences_for, scheduled
from sync_server.notifications.tables import NotificationDelivery, NotificationEvent
from sync_server.settings import Settings

__all__ = [
    "CHANNELS",
    "NoticeKind",
    "Recipient",
    "notify",
    "notify_event",
    "patient_recipients",
    "staff_recipients",
]

CHANNELS = frozenset({"in_app", "email", "sms", "push"})
"""The channel names a delivery may name."""


class NoticeKind(StrEnum):
    """What happened, as notifications name it."""

    BOOKING_DECIDED = "booking.decided"
    BOOKING_CANCELLED = "booking.cancelled"
    ORDER_ACCEPTED = "order.accepted"
    ORDER_REFUSED = "order.refused"
    ORDER_SHIPPED = "order.shipped"
    PAYMENT_FAILED = "payment.failed"
    PAYMENT_REFUNDED = "payment.refunded"
    BREAK_GLASS = "break_glass.granted"
    REMINDER_24H = "booking.reminder_24h"
    REMINDER_2H = "booking.reminder_2h"
    PRESCRIPTION_EXPIRING = "prescription.expiring"
    WOUND_NOT_ON_TRACK = "wound.not_on_track"
    LOW_STOCK = "stock.low"


@dataclass(frozen=True, slots=True)
class Recipient:
    """Who is told (`address`: ``patient:<id>``, ``staff:<clinic id>`` or an email
    address) and through which channels."""

    address: str
    channels: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.address or len(self.address) > 200:
            raise Invalid("a recipient's address is 1 to 200 characters", code="invalid")
        unknown = set(self.channels) - CHANNELS
        if unknown or not self.channels:
            raise Invalid(f"unknown channels {sorted(unknown)}", code="invalid")


def patient_recipients(patient_id: str) -> list[Recipient]:
    """A patient, told in-app and by push."""
    return [Recipient(f"patient:{patient_id}", ("in_app", "push"))]


def staff_recipients(clinic_id: str) -> list[Recipient]:
    """A clinic's staff, told in-app and by email."""
    return [Recipient(f"staff:{clinic_id}", ("in_app", "email"))]


def notify(
    *,
    session: Session,
    clinic_id: str,
    kind: NoticeKind,
    dedupe_key: str,
    recipients: Iterable[Recipient],
    detail: Mapping[str, Any],
    not_before: datetime | None = None,
) -> str | None:
    """Record an event and its pending deliveries in `session`'s transaction (the
    caller commits or rolls back with its own change).

    Returns the new event's id, or None when `dedupe_key` was already recorded
    (nothing is added then). Deliveries are due at `not_before` (default now), or
    later under the recipient's quiet hours and digest; a channel the recipient
    turned off gets none (in-app is never off).

    Raises:
        Invalid: a `dedupe_key` longer than 200 characters.
    """
    if not dedupe_key or len(dedupe_key) > 200:
        raise Invalid("a dedupe key is 1 to 200 characters", code="invalid")
    if session.scalar(
        select(NotificationEvent.id).where(NotificationEvent.dedupe_key == dedupe_key)
    ):
        return None
    at = utcnow()
    event = NotificationEvent(
        id=new_id(),
        clinic_id=clinic_id,
        kind=str(kind),
        dedupe_key=dedupe_key,
        detail=dict(detail),
        created_at=at,
    )
    # The unique dedupe key decides a race between two transactions, not the SELECT.
    if not insert_unless_taken(session, event):
        return None
    seen: set[tuple[str, str]] = set()
    recipients = list(recipients)
    # Recipient preferences (`sync_server.notifications.schedule`): a channel turned
    # off gets no delivery, quiet hours and digests move when it is due.
    preferences = preferences_for(
        session=session, clinic_id=clinic_id, recipients=sorted({r.address for r in recipients})
    )
    for recipient in recipients:
        for channel in recipient.channels:
            if (channel, recipient.address) in seen:
                continue
            seen.add((channel, recipient.address))
            plan = scheduled(preferences.get(recipient.address), channel, not_before or at)
            if plan is None:
                continue
            session.add(
                NotificationDelivery(
                    id=new_id(),
                    event_id=event.id,
                    clinic_id=clinic_id,
                    channel=channel,
                    recipient=recipient.address,
                    state="pending",
                    attempts=0,
                    next_attempt_at=plan[0],
                    created_at=at,
                    digest=plan[1],
                )
            )
    session.flush()
    return event.id


def notify_event(
    settings: Settings,
    *,
    clinic_id: str,
    kind: str,
    dedupe_key: str,
    recipients: Mapping[str, Sequence[str]],
    detail: Mapping[str, Any],
) -> str | None:
    """Record an event and its deliveries in a transaction of its own, on the
    settings' database: for what is no domain change's (an operator's announcement, a
    benchmark). `recipients` maps each address (``patient:<id>``, ``staff:<clinic
    id>``, an email address) to its channel names. The workers send it as any other.

    Returns the event's id, or None when `dedupe_key` was already recorded.

    Raises:
        Invalid: an unknown kind or channel, an empty or too long address or dedupe key.
        NotFound: no database at the settings' SQLite path.
    """
    try:
        known = NoticeKind(kind)
    except ValueError:
        raise Invalid(f"unknown notice kind {kind!r}", code="invalid") from None
    listed = [Recipient(address, tuple(channels)) for address, channels in recipients.items()]
    with open_database(settings, must_exist=True) as database, database.write() as session:
        return notify(
            session=session,
            clinic_id=clinic_id,
            kind=known,
            dedupe_key=dedupe_key,
            recipients=listed,
            detail=detail,
        )
