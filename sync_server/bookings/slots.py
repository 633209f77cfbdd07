"""Slots as the database knows them: a provider's schedule for a day, what is free of
it, and the claims that make a booking hold its time.

`take` is the only way a booking gets time: it inserts one `BookingClaim` per 5-minute
step in a savepoint, and a step another booking holds fails the insert (primary key
on PostgreSQL and SQLite alike; PostgreSQL's exclusion constraint guards `bookings`
too). No check-then-insert decides anything here: the free-slot queries only choose
what to try.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import delete, insert, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from sync_server.bookings.schedule import Closure, Hours, Span, parse_hhmm, slots, windows, zone
from sync_server.bookings.tables import (
    STEP_MINUTES,
    Booking,
    BookingClaim,
    Provider,
    ScheduleException,
    WeeklyHours,
)

__all__ = [
    "CACHE_PREFIX",
    "Schedule",
    "forget_cached",
    "free_slots",
    "held",
    "is_aligned",
    "json_list",
    "release",
    "schedule_for",
    "steps",
    "take",
]

_STEP = timedelta(minutes=STEP_MINUTES)


def is_aligned(moment: datetime) -> bool:
    """True if `moment` falls on a 5-minute step (whole minutes, no seconds)."""
    return moment.second == 0 and moment.microsecond == 0 and moment.minute % STEP_MINUTES == 0


def steps(span: Span) -> list[datetime]:
    """The 5-minute steps `span` covers (it must start and end on steps)."""
    found: list[datetime] = []
    at = span.start.astimezone(UTC)
    while at < span.end:
        found.append(at)
        at += _STEP
    return found


def take(*, session: Session, booking: Booking, span: Span, provider_id: str | None = None) -> bool:
    """Give `booking` (new, or stored and moving) the time `span` of its provider (or
    of `provider_id`), in a savepoint: True if every step was free; else False and
    nothing changed (a new booking is not stored, a stored one keeps its time)."""
    savepoint = session.begin_nested()
    try:
        booking.provider_id = provider_id or booking.provider_id
        booking.starts_at, booking.ends_at = span.start, span.end
        session.add(booking)
        session.flush()
        session.execute(
            insert(BookingClaim),
            [
                {"provider_id": booking.provider_id, "at": at, "booking_id": booking.id}
                for at in steps(span)
            ],
        )
    except IntegrityError:
        savepoint.rollback()
        return False
    savepoint.commit()
    return True


def release(*, session: Session, booking_id: str) -> None:
    """Free every step `booking_id` holds."""
    session.execute(delete(BookingClaim).where(BookingClaim.booking_id == booking_id))


class Schedule:
    """A provider's working windows: weekly hours read once, exceptions read for the
    days asked about (a wider range when a day outside it is asked), each day's
    windows computed once. Get one through `schedule_for`, which keeps it for the rest
    of the session's transaction."""

    _READ_AHEAD = timedelta(days=16)

    def __init__(self, session: Session, provider: Provider) -> None:
        self.provider = provider
        self._session = session
        rows = session.scalars(
            select(WeeklyHours).where(WeeklyHours.provider_id == provider.id)
        ).all()
        self._zones = sorted({row.timezone for row in rows})
        self._hours = [
            (
                Hours(
                    row.weekday,
                    parse_hhmm(row.start_time),
                    parse_hhmm(row.end_time),
                    row.valid_from,
                    row.valid_until,
                ),
                row.timezone,
            )
            for row in rows
        ]
        self._closures: list[Closure] = []
        self._read: tuple[date, date] | None = None
        self._days: dict[date, list[Span]] = {}

    def _read_closures(self, day: date) -> None:
        if self._read is not None and self._read[0] <= day <= self._read[1]:
            return
        first = day - timedelta(days=1)
        last = day + self._READ_AHEAD
        if self._read is not None:
            first, last = min(first, self._read[0]), max(last, self._read[1])
        provider = self.provider
        scope = [ScheduleException.provider_id == provider.id]
        if provider.clinic_id is not None:
            scope.append(
                (ScheduleException.clinic_id == provider.clinic_id)
                & ScheduleException.provider_id.is_(None)
            )
        scope.append(
            ScheduleException.clinic_id.is_(None)
            & ScheduleException.provider_id.is_(None)
            & (ScheduleException.organisation_id == provider.organisation_id)
        )
        self._closures = [
            Closure(
                row.day,
                row.kind,
                parse_hhmm(row.start_time) if row.start_time else None,
                parse_hhmm(row.end_time) if row.end_time else None,
            )
            for row in self._session.scalars(
                select(ScheduleException).where(
                    or_(*scope), ScheduleException.day >= first, ScheduleException.day <= last
                )
            )
        ]
        self._read = (first, last)
        self._days.clear()

    def windows(self, day: date) -> list[Span]:
        """The UTC spans worked on `day` (local to each window's time zone)."""
        if day not in self._days:
            self._read_closures(day)
            found: list[Span] = []
            for name in self._zones:
                hours = [h for h, tz in self._hours if tz == name]
                found += windows(hours, self._closures, day, zone(name))
            self._days[day] = sorted(found, key=lambda s: s.start)
        return self._days[day]

    def offers(self, span: Span) -> bool:
        """True if `span` lies inside one working window of its (local) day."""
        for offset in (-1, 0, 1):  # the UTC date may differ from the local one
            day = span.start.date() + timedelta(days=offset)
            if any(window.covers(span) for window in self.windows(day)):
                return True
        return False

    def slots(self, day: date, minutes: int) -> list[Span]:
        """Back-to-back slots of `minutes` on `day`."""
        return slots(self.windows(day), minutes)


CACHE_PREFIX = "coherency.bookings."
"""Prefix of the ``session.info`` keys the bookings code caches under."""
_SCHEDULES = CACHE_PREFIX + "schedules"


def schedule_for(*, session: Session, provider: Provider) -> Schedule:
    """`provider`'s schedule, read once per session (a push's transaction decides many
    intents against the same schedules); `forget_cached` after changing one."""
    kept: dict[str, Schedule] = session.info.setdefault(_SCHEDULES, {})
    schedule = kept.get(provider.id)
    if schedule is None:
        schedule = kept[provider.id] = Schedule(session, provider)
    return schedule


def forget_cached(*, session: Session) -> None:
    """Drop what the bookings code keeps in `session` for the rest of its transaction
    (schedules, providers, services: keys starting ``coherency.bookings.``); call it
    after changing any of them."""
    for key in [k for k in session.info if str(k).startswith(CACHE_PREFIX)]:
        del session.info[key]


def held(*, session: Session, provider_ids: Sequence[str], span: Span) -> dict[str, set[datetime]]:
    """The steps within `span` already held, per provider."""
    rows = session.execute(
        select(BookingClaim.provider_id, BookingClaim.at).where(
            BookingClaim.provider_id.in_(provider_ids),
            BookingClaim.at >= span.start,
            BookingClaim.at < span.end,
        )
    ).all()
    taken: dict[str, set[datetime]] = {pid: set() for pid in provider_ids}
    for provider_id, at in rows:
        taken[provider_id].add(at.astimezone(UTC))
    return taken


def free_slots(
    *,
    session: Session,
    providers: Iterable[Provider],
    minutes: int,
    days: Sequence[date],
    after: datetime | None = None,
) -> list[tuple[Provider, Span]]:
    """Every free slot of `minutes` of `providers` on `days` (starting after `after`),
    earliest first."""
    providers = list(providers)
    if not providers or not days:
        return []
    first, last = min(days), max(days)
    outer = Span(
        datetime.combine(first - timedelta(days=1), datetime.min.time(), tzinfo=UTC),
        datetime.combine(last + timedelta(days=2), datetime.min.time(), tzinfo=UTC),
    )
    taken = held(session=session, provider_ids=[p.id for p in providers], span=outer)
    found: list[tuple[Provider, Span]] = []
    for provider in providers:
        schedule = schedule_for(session=session, provider=provider)
        for day in days:
            for slot in schedule.slots(day, minutes):
                if after is not None and slot.start < after:
                    continue
                if not any(step in taken[provider.id] for step in steps(slot)):
                    found.append((provider, slot))
    found.sort(key=lambda item: (item[1].start, item[0].id))
    return found


def json_list(text: str | None) -> list[str]:
    """A provider's JSON list column as a list of strings."""
    if not text:
        return []
    value = json.loads(text)
    return [str(item) for item in value] if isinstance(value, list) else []
