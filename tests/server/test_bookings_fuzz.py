"""Any intent a device can write is decided without a server error: Hypothesis writes
intents of every kind with arbitrary (schema-valid) details, times from year 1 to
9999 in any UTC offset, unknown and foreign ids, and each gets exactly one decision.
SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crdt import IntentKind, RecordValidationError

from .bookings_world import BookingWorld, Tablet, build_world, local


@pytest.fixture(scope="module")
def fuzz_world(server: Any) -> Iterator[tuple[BookingWorld, Tablet, str]]:
    world = build_world(server)
    tablet = world.tablet()
    patient = tablet.patient()
    tablet.sync(patient)
    yield world, tablet, patient.id
    world.close()


offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(
    lambda m: timezone(timedelta(minutes=m))
)
times = st.one_of(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=offsets),
    st.integers(min_value=-2, max_value=400).map(
        lambda d: (datetime.now(UTC) + timedelta(days=d)).replace(second=0, microsecond=0)
    ),
)
words = st.text(min_size=1, max_size=20)


@pytest.mark.slow
@settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(data=st.data())
def test_any_writable_intent_gets_exactly_one_decision(
    fuzz_world: tuple[BookingWorld, Tablet, str], data: st.DataObject
) -> None:
    world, tablet, patient_id = fuzz_world
    kind = data.draw(st.sampled_from(list(IntentKind)))
    someone = st.one_of(st.just(patient_id), st.uuids().map(str))
    provider = st.one_of(st.none(), st.sampled_from(world.doctors + world.caregivers), words)
    booking = st.one_of(st.uuids().map(str), words)
    when = data.draw(st.one_of(times, st.just(local(world.monday, 9))))
    if kind is IntentKind.APPOINTMENT_REQUEST:
        fields: dict[str, Any] = {
            "patient_id": data.draw(someone),
            "service": data.draw(st.one_of(st.just(world.review), words)),
            "starts_at": when,
            "provider_id": data.draw(provider),
            "flexible": data.draw(st.booleans()),
        }
    elif kind is IntentKind.APPOINTMENT_RESCHEDULE:
        fields = {"subject_id": data.draw(booking), "starts_at": when}
    elif kind is IntentKind.APPOINTMENT_CANCEL:
        fields = {"subject_id": data.draw(booking)}
    elif kind is IntentKind.VISIT_REQUEST:
        fields = {
            "patient_id": data.draw(someone),
            "skill": data.draw(st.one_of(st.just("compression"), words)),
            "area": data.draw(st.one_of(st.just(world.north), words)),
            "starts_at": when,
            "duration_minutes": data.draw(st.integers(1, 96).map(lambda n: n * 5)),
            "caregiver_id": data.draw(provider),
            "flexible": data.draw(st.booleans()),
        }
    else:
        fields = {"subject_id": data.draw(booking), "rating": data.draw(st.integers(1, 5))}
    try:
        intent = tablet.intent(kind, **fields)
    except RecordValidationError:
        return  # not writable on a device: nothing to push
    answer = tablet.sync(intent)
    assert answer["rejected"] == [] and answer["accepted"] == [intent.id]
    decision = tablet.decision(intent.id)
    assert decision is not None and decision.intent_id == intent.id
    assert decision.reason or decision.outcome
    again = tablet.push(intent)
    assert again["unchanged"] == [intent.id]
