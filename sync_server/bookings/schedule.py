"""Slots from schedules: weekly hours in a time zone, less exceptions and holidays.

Pure functions over plain values. Working hours are local times of the provider's
time zone; every instant they produce is UTC. A slot is stepped in real time from the
start of its window, so a slot across a daylight-saving change lasts exactly its
service's length, and a window on the night the clocks change is as long as it
really is (one hour shorter or longer).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "Closure",
    "Hours",
    "Span",
    "parse_hhmm",
    "slots",
    "windows",
    "zone",
]


@dataclass(frozen=True, slots=True)
class Span:
    """A half-open stretch of time [start, end), both UTC."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("spans are timezone-aware")

    @property
    def minutes(self) -> int:
        """Its length in whole minutes."""
        return int((self.end - self.start).total_seconds() // 60)

    def overlaps(self, other: Span) -> bool:
        """True if the two share any instant."""
        return self.start < other.end and other.start < self.end

    def covers(self, other: Span) -> bool:
        """True if `other` lies wholly inside this span."""
        return self.start <= other.start and other.end <= self.end


@dataclass(frozen=True, slots=True)
class Hours:
    """A weekly working window: `weekday` (Monday 0) from `start` to `end`, local."""

    weekday: int
    start: time
    end: time
    valid_from: date | None = None
    valid_until: date | None = None

    def applies(self, day: date) -> bool:
        """True if this window is worked on `day`."""
        return (
            day.weekday() == self.weekday
            and (self.valid_from is None or day >= self.valid_from)
            and (self.valid_until is None or day <= self.valid_until)
        )


@dataclass(frozen=True, slots=True)
class Closure:
    """A change to one day: ``closed`` (away; with no times, the whole day),
    ``holiday`` (the whole day) or ``extra`` (hours added), local times."""

    day: date
    kind: str
    start: time | None = None
    end: time | None = None


def zone(name: str) -> ZoneInfo:
    """The IANA time zone `name`.

    Raises:
        ValueError: Not a time zone this machine knows.
    """
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}") from None


def parse_hhmm(text: str) -> time:
    """A local time from ``HH:MM`` (``24:00`` is the end of the day).

    Raises:
        ValueError: Not a time of that form.
    """
    hours, sep, minutes = text.partition(":")
    if not sep or len(hours) != 2 or len(minutes) != 2 or not (hours + minutes).isdigit():
        raise ValueError(f"{text!r} is not a time of the form HH:MM")
    h, m = int(hours), int(minutes)
    if (h, m) == (24, 0):
        return time.max
    if h > 23 or m > 59:
        raise ValueError(f"{text!r} is not a time of day")
    return time(h, m)


def _instant(day: date, at: time, tz: ZoneInfo) -> datetime:
    if at == time.max:  # 24:00: the start of the next day
        return datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz).astimezone(UTC)
    return datetime.combine(day, at, tzinfo=tz).astimezone(UTC)


def _span(day: date, start: time, end: time, tz: ZoneInfo) -> Span | None:
    first, last = _instant(day, start, tz), _instant(day, end, tz)
    return Span(first, last) if first < last else None


def _subtract(spans: list[Span], cut: Span) -> list[Span]:
    kept: list[Span] = []
    for span in spans:
        if not span.overlaps(cut):
            kept.append(span)
            continue
        if span.start < cut.start:
            kept.append(Span(span.start, cut.start))
        if cut.end < span.end:
            kept.append(Span(cut.end, span.end))
    return kept


def windows(
    hours: Iterable[Hours], closures: Iterable[Closure], day: date, tz: ZoneInfo
) -> list[Span]:
    """The UTC spans worked on local `day`: its weekly windows, plus extra hours, less
    closures; a holiday or an all-day closure leaves nothing."""
    todays = [c for c in closures if c.day == day]
    if any(c.kind == "holiday" or (c.kind == "closed" and c.start is None) for c in todays):
        return []
    spans = [s for h in hours if h.applies(day) if (s := _span(day, h.start, h.end, tz))]
    for extra in todays:
        if extra.kind == "extra" and extra.start is not None and extra.end is not None:
            added = _span(day, extra.start, extra.end, tz)
            if added is not None:
                spans.append(added)
    for closure in todays:
        if closure.kind == "closed" and closure.start is not None and closure.end is not None:
            cut = _span(day, closure.start, closure.end, tz)
            if cut is not None:
                spans = _subtract(spans, cut)
    return _merged(spans)


def _merged(spans: list[Span]) -> list[Span]:
    merged: list[Span] = []
    for span in sorted(spans, key=lambda s: s.start):
        if merged and span.start <= merged[-1].end:
            merged[-1] = Span(merged[-1].start, max(merged[-1].end, span.end))
        else:
            merged.append(span)
    return merged


def slots(spans: Sequence[Span], minutes: int) -> list[Span]:
    """Back-to-back slots of `minutes` from the start of each span, whole ones only."""
    if minutes <= 0:
        raise ValueError("a slot lasts at least a minute")
    length = timedelta(minutes=minutes)
    found: list[Span] = []
    for span in spans:
        at = span.start
        while at + length <= span.end:
            found.append(Span(at, at + length))
            at += length
    return found
