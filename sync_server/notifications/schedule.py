"""When a delivery is due under its recipient's preferences (`scheduled`): channels
on or off, quiet hours and digest windows, in the recipient's IANA time zone through
`zoneinfo` (wall times are converted per date, so a window over a daylight-saving
change ends at the right instant). Pure functions of a `NotificationPreference` row;
`notify` calls them. See `sync_server.notifications.preferences` for the rules.
"""

from __future__ import annotations

import time as monotonic_time
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select
from sqlalchemy.orm import Session

from sync_server.errors import Invalid
from sync_server.notifications.tables import NotificationPreference

__all__ = [
    "SWITCHED_CHANNELS",
    "RunClock",
    "digest_due",
    "preferences_for",
    "quiet_at_send",
    "quiet_until",
    "scheduled",
    "zone",
]

SWITCHED_CHANNELS = ("email", "sms", "push")
"""The channels a recipient may turn off, hold in quiet hours and digest (not in-app)."""


def zone(name: str) -> ZoneInfo:
    """The IANA time zone `name`.

    Raises:
        Invalid: ``unknown_time_zone``: not a zone name.
    """
    if not name or len(name) > 64:
        raise Invalid("a time zone is 1 to 64 characters", code="unknown_time_zone")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise Invalid(f"unknown time zone {name!r}", code="unknown_time_zone") from None


def _local(day: date, minute: int, where: ZoneInfo, *, fold: int = 0) -> datetime:
    """The instant of wall time `minute` on `day` in `where`. A wall time that a
    daylight-saving change skips is read with the offset before the change (02:30 on
    the night clocks jump from 02:00 to 03:00 is 03:30 after it); one that a change
    repeats is its first occurrence, or its second with `fold` 1."""
    wall = time(minute // 60, minute % 60, fold=fold)
    return datetime.combine(day, wall, tzinfo=where).astimezone(UTC)


def quiet_until(pref: NotificationPreference, at: datetime) -> datetime | None:
    """The end of the recipient's quiet hours if `at` falls inside them, else None."""
    if pref.quiet_start is None or pref.quiet_end is None:
        return None
    where = zone(pref.time_zone)
    local = at.astimezone(where)
    now = local.hour * 60 + local.minute
    start, end = pref.quiet_start, pref.quiet_end
    today = local.date()
    if start < end:
        inside = start <= now < end
    elif now >= start:  # the window spans midnight: it ends tomorrow
        return _local(today + timedelta(days=1), end, where)
    else:
        inside = now < end
    if not inside:
        return None
    ends = _local(today, end, where)
    # In the hour a change repeats (clocks back from 03:00 to 02:00), `at` may be in
    # the second 02:xx while the first 02:30 is past: the end is the second one.
    return ends if ends > at else _local(today, end, where, fold=1)


def digest_due(pref: NotificationPreference, at: datetime) -> datetime | None:
    """When a digest window open at `at` closes (the next local full hour, or the next
    daily digest time strictly after `at`), or None without digests."""
    if pref.digest == "none":
        return None
    where = zone(pref.time_zone)
    local = at.astimezone(where)
    if pref.digest == "hourly":
        # One hour of elapsed time after the local top of the hour (in UTC: an aware
        # datetime's arithmetic is wall-clock arithmetic, wrong across a change).
        top = local.replace(minute=0, second=0, microsecond=0).astimezone(UTC)
        return top + timedelta(hours=1)
    minute = pref.digest_minute or 0
    for offset in range(3):
        due = _local(local.date() + timedelta(days=offset), minute, where)
        if due > at:
            return due
    raise AssertionError("a daily digest time is within two days")  # pragma: no cover


def scheduled(
    pref: NotificationPreference | None, channel: str, at: datetime
) -> tuple[datetime, str | None] | None:
    """When a delivery through `channel` made at `at` is due and its digest mode (None:
    sent alone); None when the recipient turned the channel off. In-app is always due
    at `at`, alone."""
    if pref is None or channel not in SWITCHED_CHANNELS:
        return at, None
    if not getattr(pref, channel):
        return None
    due = digest_due(pref, at) or at
    return quiet_until(pref, due) or due, None if pref.digest == "none" else pref.digest


class RunClock:
    """The time as one worker run sees it: the run's start `at` (the real time, or a
    test's), moved on by the real time elapsed since, so a check made late in a long
    run (quiet hours before each send) uses the moment of the send."""

    def __init__(self, at: datetime) -> None:
        self._at = at
        self._started = monotonic_time.monotonic()

    def now(self) -> datetime:
        """`at` plus the real time elapsed since this clock was made."""
        return self._at + timedelta(seconds=monotonic_time.monotonic() - self._started)


def quiet_at_send(
    *, session: Session, clinic_id: str, recipient: str, channel: str, at: datetime
) -> datetime | None:
    """The end of `recipient`'s quiet hours if a message through `channel` sent at
    `at` would fall inside them, else None (in-app is never held).

    Workers ask this just before a send, so the quiet hours hold whatever made a
    delivery due: its planned time, a retry's backoff, a staff retry, a backlog, or
    quiet hours set after the event."""
    if channel not in SWITCHED_CHANNELS:
        return None
    pref = session.get(NotificationPreference, (clinic_id, recipient))
    return None if pref is None else quiet_until(pref, at)


def preferences_for(
    *, session: Session, clinic_id: str, recipients: list[str]
) -> dict[str, NotificationPreference]:
    """The stored preferences of `recipients` at `clinic_id`, by address."""
    if not recipients:
        return {}
    rows = session.scalars(
        select(NotificationPreference).where(
            NotificationPreference.clinic_id == clinic_id,
            NotificationPreference.recipient.in_(recipients),
        )
    )
    return {row.recipient: row for row in rows}
