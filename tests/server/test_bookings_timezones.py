"""Bookings across a daylight-saving change, end to end over HTTP on SQLite and
PostgreSQL: a clinic in Europe/Berlin, the weeks of the last Sundays of March and
October next year; each decision's start is the local time asked for, converted with
the offset of its own day."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from crdt import DecisionStatus, IntentKind

from .bookings_world import BookingWorld, build_world, local


def last_sunday(year: int, month: int) -> date:
    day = date(year, month + 1, 1) - timedelta(days=1)
    return day - timedelta(days=(day.weekday() + 1) % 7)


@pytest.fixture
def world(server: Any) -> Iterator[BookingWorld]:
    built = build_world(server)
    yield built
    built.close()


@pytest.mark.parametrize(("month", "before", "after"), [(3, 1, 2), (10, 2, 1)])
def test_a_booking_across_the_change_starts_at_the_local_time_asked_for(
    world: BookingWorld, month: int, before: int, after: int
) -> None:
    """`before`/`after`: Berlin's UTC offset in hours on the Friday before and the
    Monday after the change."""
    change = last_sunday(date.today().year + 1, month)
    friday, monday = change - timedelta(days=2), change + timedelta(days=1)
    tablet = world.tablet()
    patient = tablet.patient()
    asks = {
        day: tablet.intent(
            IntentKind.APPOINTMENT_REQUEST,
            patient_id=patient.id,
            service=world.review,
            starts_at=local(day, 9),
            provider_id=world.doctors[0],
        )
        for day in (friday, monday)
    }
    # Both days' 09:00 again: refused, the reason in local time, the alternative the
    # next slot of the same local morning.
    clash = tablet.intent(
        IntentKind.APPOINTMENT_REQUEST,
        patient_id=patient.id,
        service=world.review,
        starts_at=local(monday, 9),
        provider_id=world.doctors[0],
    )
    tablet.sync(patient, *asks.values())
    tablet.sync(clash)

    for day, offset in ((friday, before), (monday, after)):
        decision = tablet.decision(asks[day].id)
        assert decision is not None and decision.status is DecisionStatus.ACCEPTED
        assert decision.outcome is not None
        starts = datetime.fromisoformat(decision.outcome["starts_at"])
        assert starts == datetime(day.year, day.month, day.day, 9 - offset, tzinfo=UTC)
        assert starts == local(day, 9)
        assert datetime.fromisoformat(decision.outcome["ends_at"]) - starts == timedelta(minutes=30)
    refused = tablet.decision(clash.id)
    assert refused is not None and refused.status is DecisionStatus.REJECTED
    assert refused.reason is not None and f"09:00 on Monday {monday.day}" in refused.reason
    assert refused.alternative is not None
    assert datetime.fromisoformat(refused.alternative["starts_at"]) == local(monday, 9, 30)
