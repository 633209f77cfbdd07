"""Schedules in a clinic's time zone (`sync_server.bookings.schedule`, pure): weekly
hours across the daylight-saving weeks of Europe/Berlin and America/New_York,
holidays, partial closures, extra hours, and `parse_hhmm`."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from sync_server.bookings.schedule import (
    Closure,
    Hours,
    Span,
    parse_hhmm,
    slots,
    windows,
    zone,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
HOUR = timedelta(hours=1)

# The nights the clocks change in 2026 (Sundays): (zone, spring forward, fall back).
CHANGES = [
    pytest.param(BERLIN, date(2026, 3, 29), date(2026, 10, 25), id="Europe/Berlin"),
    pytest.param(NEW_YORK, date(2026, 3, 8), date(2026, 11, 1), id="America/New_York"),
]


def every_day(start: str, end: str, **valid: date) -> list[Hours]:
    return [Hours(d, parse_hhmm(start), parse_hhmm(end), **valid) for d in range(7)]


def local(day: date, hh: int, mm: int, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, time(hh, mm), tzinfo=tz)


@pytest.mark.parametrize(("tz", "spring", "autumn"), CHANGES)
def test_a_nine_oclock_slot_stays_nine_local_and_its_utc_moves(
    tz: ZoneInfo, spring: date, autumn: date
) -> None:
    hours = every_day("09:00", "12:00")
    for change in (spring, autumn):
        before, after = change - timedelta(days=6), change + timedelta(days=1)  # Mon, Mon
        starts = []
        for day in (before, after):
            first = slots(windows(hours, [], day, tz), 30)[0]
            assert first.start.tzinfo is UTC
            assert first.start.astimezone(tz).time() == time(9, 0)
            assert first.start == local(day, 9, 0, tz)
            starts.append(first.start.time())
        # Clocks forward: 09:00 local is an hour earlier in UTC; back: an hour later.
        shift = timedelta(hours=-1 if change == spring else 1)
        assert datetime.combine(date.min, starts[1]) - datetime.combine(date.min, starts[0]) == (
            shift
        )


@pytest.mark.parametrize(("tz", "spring", "autumn"), CHANGES)
def test_a_midnight_to_six_window_on_the_change_night_lasts_five_or_seven_hours(
    tz: ZoneInfo, spring: date, autumn: date
) -> None:
    hours = every_day("00:00", "06:00")
    (short,) = windows(hours, [], spring, tz)
    (long,) = windows(hours, [], autumn, tz)
    (usual,) = windows(hours, [], spring - timedelta(days=1), tz)
    assert short.end - short.start == 5 * HOUR
    assert long.end - long.start == 7 * HOUR
    assert usual.end - usual.start == 6 * HOUR


@pytest.mark.parametrize(("tz", "spring", "autumn"), CHANGES)
def test_slots_across_the_change_last_exactly_their_length(
    tz: ZoneInfo, spring: date, autumn: date
) -> None:
    hours = every_day("00:00", "06:00")
    for change, count in ((spring, 5), (autumn, 7)):
        found = slots(windows(hours, [], change, tz), 60)
        assert len(found) == count
        assert all(s.end - s.start == HOUR and s.minutes == 60 for s in found)
        assert all(a.end == b.start for a, b in itertools.pairwise(found))
    # Spring: the slot from 01:00 local ends at 03:00 local (02:00 does not exist).
    one = next(s for s in slots(windows(hours, [], spring, tz), 60) if s.start == local(
        spring, 1, 0, tz
    ))  # fmt: skip
    assert one.end.astimezone(tz).time() == time(3, 0)
    # Autumn: the repeated hour (02:00 in Berlin, 01:00 in New York) is two slots.
    again = time(2, 0) if tz is BERLIN else time(1, 0)
    repeated = [
        s for s in slots(windows(hours, [], autumn, tz), 60)
        if s.start.astimezone(tz).time() == again
    ]  # fmt: skip
    assert len(repeated) == 2 and repeated[1].start - repeated[0].start == HOUR
    # 15-minute slots through the change: each exactly 15 real minutes, none lost.
    quarter = slots(windows(hours, [], spring, tz), 15)
    assert len(quarter) == 5 * 4 and {s.minutes for s in quarter} == {15}


@pytest.mark.parametrize(("tz", "spring", "autumn"), CHANGES)
def test_windows_bordering_the_missing_and_the_repeated_hour(
    tz: ZoneInfo, spring: date, autumn: date
) -> None:
    # 01:30-03:30 on the spring night: the clock skips an hour, one real hour remains.
    (skipped,) = windows(every_day("01:30", "03:30"), [], spring, tz)
    assert skipped.end - skipped.start == HOUR
    # 01:00-02:00 in autumn (New York repeats 01:00-02:00, Berlin 02:00-03:00): the
    # ambiguous local times resolve to their first occurrence, as Python's fold=0.
    (repeat,) = windows(every_day("00:00", "03:00"), [], autumn, tz)
    assert repeat.end - repeat.start == 4 * HOUR


@pytest.mark.parametrize(("tz", "spring", "autumn"), CHANGES)
def test_a_window_to_midnight_ends_at_the_next_days_start(
    tz: ZoneInfo, spring: date, autumn: date
) -> None:
    day = spring - timedelta(days=1)  # Saturday: ends at the start of the change day
    (evening,) = windows(every_day("18:00", "24:00"), [], day, tz)
    assert evening.end == local(spring, 0, 0, tz)
    assert evening.end - evening.start == 6 * HOUR


def test_holidays_and_all_day_closures_leave_nothing() -> None:
    day = date(2026, 12, 25)
    hours = every_day("09:00", "17:00")
    assert windows(hours, [Closure(day, "holiday")], day, BERLIN) == []
    assert windows(hours, [Closure(day, "closed")], day, BERLIN) == []
    # Even with extra hours the same day, and only on that day.
    assert windows(hours, [Closure(day, "holiday"), Closure(day, "extra", time(18), time(20))],
                   day, BERLIN) == []  # fmt: skip
    assert len(windows(hours, [Closure(day, "holiday")], day + timedelta(days=1), BERLIN)) == 1


def test_partial_closures_cut_windows_and_extra_hours_add_and_merge() -> None:
    day = date(2026, 6, 1)
    hours = every_day("09:00", "12:00")
    lunch = Closure(day, "closed", time(10, 0), time(10, 30))
    assert windows(hours, [lunch], day, BERLIN) == [
        Span(local(day, 9, 0, BERLIN), local(day, 10, 0, BERLIN)),
        Span(local(day, 10, 30, BERLIN), local(day, 12, 0, BERLIN)),
    ]
    # A closure covering the start or the whole window.
    assert windows(hours, [Closure(day, "closed", time(8), time(9, 30))], day, BERLIN) == [
        Span(local(day, 9, 30, BERLIN), local(day, 12, 0, BERLIN))
    ]
    assert windows(hours, [Closure(day, "closed", time(8), time(13))], day, BERLIN) == []
    # Extra hours: adjacent ones merge, separate ones stay apart, closures apply to both.
    extra = [Closure(day, "extra", time(12), time(13)), Closure(day, "extra", time(15), time(16))]
    assert windows(hours, extra, day, BERLIN) == [
        Span(local(day, 9, 0, BERLIN), local(day, 13, 0, BERLIN)),
        Span(local(day, 15, 0, BERLIN), local(day, 16, 0, BERLIN)),
    ]
    cut = Closure(day, "closed", time(11, 30), time(15, 30))
    assert windows(hours, [*extra, cut], day, BERLIN) == [
        Span(local(day, 9, 0, BERLIN), local(day, 11, 30, BERLIN)),
        Span(local(day, 15, 30, BERLIN), local(day, 16, 0, BERLIN)),
    ]
    # Extra hours on a day off make it a working day; a reversed window adds nothing.
    sunday = date(2026, 6, 7)
    weekdays = [Hours(d, time(9), time(12)) for d in range(5)]
    assert windows(weekdays, [], sunday, BERLIN) == []
    assert windows(weekdays, [Closure(sunday, "extra", time(10), time(11))], sunday, BERLIN) == [
        Span(local(sunday, 10, 0, BERLIN), local(sunday, 11, 0, BERLIN))
    ]
    assert windows(weekdays, [Closure(sunday, "extra", time(11), time(10))], sunday, BERLIN) == []


def test_weekly_hours_apply_within_their_validity() -> None:
    start, until = date(2026, 6, 8), date(2026, 6, 14)
    hours = every_day("09:00", "10:00", valid_from=start, valid_until=until)
    assert windows(hours, [], start - timedelta(days=1), BERLIN) == []
    assert len(windows(hours, [], start, BERLIN)) == 1
    assert len(windows(hours, [], until, BERLIN)) == 1
    assert windows(hours, [], until + timedelta(days=1), BERLIN) == []


def test_slots_are_whole_and_back_to_back() -> None:
    day = date(2026, 6, 1)
    (window,) = windows(every_day("09:00", "10:10"), [], day, BERLIN)
    found = slots([window], 30)
    assert [s.start.astimezone(BERLIN).strftime("%H:%M") for s in found] == ["09:00", "09:30"]
    assert slots([window], 71) == []
    with pytest.raises(ValueError):
        slots([window], 0)


def test_spans_are_aware_and_half_open() -> None:
    at = datetime(2026, 6, 1, 9, tzinfo=UTC)
    with pytest.raises(ValueError, match="timezone-aware"):
        Span(datetime(2026, 6, 1, 9), at)
    a, b = Span(at, at + HOUR), Span(at + HOUR, at + 2 * HOUR)
    assert not a.overlaps(b) and not b.overlaps(a)
    assert a.overlaps(Span(at + HOUR - timedelta(minutes=5), at + 2 * HOUR))
    assert Span(at, at + 2 * HOUR).covers(a) and not a.covers(Span(at, at + 2 * HOUR))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("00:00", time(0, 0)),
        ("09:05", time(9, 5)),
        ("23:59", time(23, 59)),
        ("24:00", time.max),
    ],
)
def test_parse_hhmm_reads_times_of_day_and_the_end_of_the_day(text: str, expected: time) -> None:
    assert parse_hhmm(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "9:00", "09:0", "0900", "09-00", "24:01", "25:00", "12:60", "ab:cd", "+1:00", " 9:00",
     "09:00:00", "-1:30", "¹²:00"],
)  # fmt: skip
def test_parse_hhmm_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError):
        parse_hhmm(text)


def test_unknown_time_zones_are_refused() -> None:
    for name in ("Mars/Olympus", "", "../etc/passwd"):
        with pytest.raises(ValueError, match="unknown time zone"):
            zone(name)
    assert zone("Europe/Berlin") == BERLIN
