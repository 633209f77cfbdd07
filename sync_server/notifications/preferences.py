"""Recipient preferences: channels on or off, quiet hours and digests, applied when
`notify` makes the deliveries.

- A channel a recipient turned off gets no delivery. In-app has no switch: the in-app
  notice is the record of the event's detail, so it is always written, at once.
- Quiet hours hold email, SMS and push: a delivery due inside them is due at their end
  (local wall time in the recipient's IANA zone, through `zoneinfo`, so a window over
  a daylight-saving change ends at the right instant).
- A digest mode (hourly, or daily at a local time) makes email, SMS and push
  deliveries due at the end of the current window and marks them for grouping: the
  worker sends all due ones of a (recipient, channel) as one message
  (`sync_server.notifications.digests`).

A change of preferences applies to deliveries made after it; those already made keep
their time and mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import time
from typing import ClassVar, Literal

from sqlalchemy.orm import Session

from sync_server.audit.events import Actor, Event, Operation
from sync_server.audit.services import record_event
from sync_server.bookings.directory import clinic_in_scope, require_writer
from sync_server.db import insert_unless_taken, utcnow
from sync_server.errors import Invalid
from sync_server.identity.principals import Principal
from sync_server.notifications.schedule import zone
from sync_server.notifications.tables import NotificationPreference

__all__ = [
    "Digest",
    "PreferencesSet",
    "Wanted",
    "get_preferences",
    "set_preferences",
]

Digest = Literal["none", "hourly", "daily"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Wanted:
    """Preferences as a caller gives them (times are local wall times)."""

    email: bool = True
    sms: bool = True
    push: bool = True
    time_zone: str = "UTC"
    quiet_start: time | None = None
    quiet_end: time | None = None
    digest: Digest = "none"
    digest_at: time | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PreferencesSet(Event):
    """Staff set how a recipient is notified."""

    name: ClassVar[str] = "notification-preferences-set"
    operation: ClassVar[Operation] = "U"
    recipient: str

    def target(self) -> str | None:
        return self.recipient


def _minute(at: time) -> int:
    return at.hour * 60 + at.minute


def _address(recipient: str) -> str:
    if not recipient or len(recipient) > 200:
        raise Invalid("a recipient's address is 1 to 200 characters", code="invalid")
    return recipient


def get_preferences(
    *, session: Session, principal: Principal, clinic_id: str, recipient: str
) -> NotificationPreference:
    """A recipient's preferences at a clinic in the caller's scope (the defaults, not
    stored, when none were set: every channel on, no quiet hours, no digest).

    Raises:
        Forbidden: ``forbidden``: the caller is not staff or an admin.
        NotFound: no such clinic in the caller's scope.
        Invalid: a recipient address longer than 200 characters.
    """
    require_writer(principal)
    clinic_in_scope(session=session, principal=principal, clinic_id=clinic_id)
    found = session.get(NotificationPreference, (clinic_id, _address(recipient)))
    if found is not None:
        return found
    return NotificationPreference(
        clinic_id=clinic_id,
        recipient=recipient,
        email=True,
        sms=True,
        push=True,
        time_zone="UTC",
        quiet_start=None,
        quiet_end=None,
        digest="none",
        digest_minute=None,
        updated_at=utcnow(),
    )


def set_preferences(
    *,
    session: Session,
    principal: Principal,
    clinic_id: str,
    recipient: str,
    wanted: Wanted,
) -> NotificationPreference:
    """Store a recipient's preferences at a clinic in the caller's scope (replacing
    any earlier ones). Audited.

    Raises:
        Forbidden: ``forbidden``: the caller is not staff or an admin.
        NotFound: no such clinic in the caller's scope.
        Invalid: ``unknown_time_zone``; ``invalid_quiet_hours`` (only one end given,
            or start equal to end); ``invalid_digest`` (a daily digest without its
            time, or a time for another mode).
    """
    require_writer(principal)
    clinic_in_scope(session=session, principal=principal, clinic_id=clinic_id)
    zone(wanted.time_zone)
    if (wanted.quiet_start is None) != (wanted.quiet_end is None) or (
        wanted.quiet_start is not None
        and wanted.quiet_end is not None
        and _minute(wanted.quiet_start) == _minute(wanted.quiet_end)
    ):
        raise Invalid("quiet hours need a start and a different end", code="invalid_quiet_hours")
    if (wanted.digest == "daily") != (wanted.digest_at is not None):
        raise Invalid(
            "a daily digest needs its time, and only a daily digest has one",
            code="invalid_digest",
        )
    values = {
        "email": wanted.email,
        "sms": wanted.sms,
        "push": wanted.push,
        "time_zone": wanted.time_zone,
        "quiet_start": None if wanted.quiet_start is None else _minute(wanted.quiet_start),
        "quiet_end": None if wanted.quiet_end is None else _minute(wanted.quiet_end),
        "digest": wanted.digest,
        "digest_minute": None if wanted.digest_at is None else _minute(wanted.digest_at),
        "updated_at": utcnow(),
    }
    key = (clinic_id, _address(recipient))
    row = NotificationPreference(clinic_id=clinic_id, recipient=recipient, **values)
    # The primary key decides a race between two first settings; the loser updates.
    if not insert_unless_taken(session, row):
        existing = session.get_one(NotificationPreference, key, populate_existing=True)
        for name, value in values.items():
            setattr(existing, name, value)
        row = existing
    session.flush()
    patient = recipient.partition(":")[2] if recipient.startswith("patient:") else None
    record_event(
        session=session,
        event=PreferencesSet(
            actor=Actor.of(principal),
            clinic_id=clinic_id,
            patient_ids=(patient,) if patient else (),
            recipient=recipient,
        ),
    )
    return row
