"""Bookings under real concurrency, over HTTP on SQLite and PostgreSQL: many devices
(each its own HTTP client, token and patient) race for one slot or one caregiver's
hour behind a barrier; a reschedule races requests for its target slot; the same push
is retried from two threads; pushes arrive duplicated and out of order. Whatever the
interleaving, the database holds one booking per slot and one decision per intent."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any, TypeVar

import pytest
from sqlalchemy import func, select

from crdt import Decision, DecisionStatus, IntentKind, RecordDocument, decision_id
from sync_server.bookings.directory import set_clinic_timezone
from sync_server.bookings.tables import ACTIVE_STATES, Booking, BookingClaim
from sync_server.intents.tables import IntentDecision
from sync_server.sync.tables import Document

from .bookings_world import BookingWorld, Tablet, build_world, local, wire

DEVICES = 50
T = TypeVar("T")


@pytest.fixture
def world(server: Any) -> Iterator[BookingWorld]:
    built = build_world(server)
    yield built
    built.close()


def race(actions: Sequence[Callable[[], T]]) -> list[T]:
    """Run every action in its own thread, all released at once by a barrier."""
    barrier = threading.Barrier(len(actions))

    def start(action: Callable[[], T]) -> T:
        barrier.wait(timeout=60)
        return action()

    with ThreadPoolExecutor(len(actions)) as pool:
        futures = [pool.submit(start, action) for action in actions]
        return [future.result(timeout=300) for future in futures]


def tablets_with_patients(world: BookingWorld, count: int) -> list[tuple[Tablet, RecordDocument]]:
    """`count` enrolled tablets of `world`'s clinic, each with its own synced patient."""
    made = [world.tablet() for _ in range(count)]
    patients = [tablet.patient(f"Race{n}") for n, tablet in enumerate(made)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda pair: pair[0].push(pair[1]), zip(made, patients, strict=True)))
    return list(zip(made, patients, strict=True))


def decisions(server: Any, intent_ids: Sequence[str]) -> tuple[dict[str, int], dict[str, int]]:
    """Per intent: its `intent_decisions` rows and its decision documents."""
    with server.db.read() as session:
        rows = dict(
            session.execute(
                select(IntentDecision.intent_id, func.count())
                .where(IntentDecision.intent_id.in_(intent_ids))
                .group_by(IntentDecision.intent_id)
            ).all()
        )
        wanted = {decision_id(i): i for i in intent_ids}
        docs = dict(
            session.execute(
                select(Document.id, func.count())
                .where(Document.id.in_(list(wanted)), Document.collection == "decisions")
                .group_by(Document.id)
            ).all()
        )
    return rows, {wanted[d]: n for d, n in docs.items()}


def assert_decided_once(server: Any, intent_ids: Sequence[str]) -> None:
    rows, docs = decisions(server, intent_ids)
    assert rows == dict.fromkeys(intent_ids, 1)
    assert docs == dict.fromkeys(intent_ids, 1)


def active_on(server: Any, provider_id: str, start: datetime, end: datetime) -> list[Booking]:
    """The active bookings of `provider_id` overlapping [start, end)."""
    with server.db.read() as session:
        return list(
            session.scalars(
                select(Booking).where(
                    Booking.provider_id == provider_id,
                    Booking.state.in_(ACTIVE_STATES),
                    Booking.starts_at < end,
                    Booking.ends_at > start,
                )
            )
        )


def claims_of(server: Any, booking_id: str) -> list[datetime]:
    with server.db.read() as session:
        return sorted(
            session.scalars(select(BookingClaim.at).where(BookingClaim.booking_id == booking_id))
        )


def held_decision(tablet: Tablet, intent_id: str) -> Decision:
    decision = tablet.decision(intent_id)
    assert decision is not None, f"device {tablet.device_id} lacks the decision of {intent_id}"
    return decision


def assert_one_winner(
    decided: Sequence[Decision], when: datetime, provider_id: str
) -> tuple[Decision, list[Decision]]:
    """Exactly one accepted at `when` with `provider_id`; the rest rejected with a
    reason naming the time and an alternative elsewhere."""
    won = [d for d in decided if d.status is DecisionStatus.ACCEPTED]
    lost = [d for d in decided if d.status is DecisionStatus.REJECTED]
    assert len(won) == 1 and len(lost) == len(decided) - 1, [d.status for d in decided]
    assert won[0].outcome is not None
    assert won[0].outcome["provider_id"] == provider_id
    assert datetime.fromisoformat(won[0].outcome["starts_at"]) == when
    for decision in lost:
        assert decision.reason is not None and f"{when.astimezone(when.tzinfo):%H:%M}" in (
            decision.reason
        )
        assert decision.alternative is not None, decision.reason
        offered = datetime.fromisoformat(decision.alternative["starts_at"])
        assert offered != when and decision.alternative["provider_id"] == provider_id
    return won[0], lost


def test_fifty_devices_race_for_one_slot_and_exactly_one_gets_it(world: BookingWorld) -> None:
    server, doctor = world.server, world.doctors[0]
    when = local(world.monday, 9)
    pairs = tablets_with_patients(world, DEVICES)
    intents = [
        tablet.intent(
            IntentKind.APPOINTMENT_REQUEST,
            patient_id=patient.id,
            service=world.review,
            starts_at=when,
            provider_id=doctor,
        )
        for tablet, patient in pairs
    ]
    answers = race(
        [
            lambda t=tablet, i=intent: t.push(i)
            for (tablet, _), intent in zip(pairs, intents, strict=True)
        ]
    )
    assert all(a["accepted"] == [i.id] for a, i in zip(answers, intents, strict=True))
    race([lambda t=tablet: t.pull() for tablet, _ in pairs])

    decided = [held_decision(t, i.id) for (t, _), i in zip(pairs, intents, strict=True)]
    won, _ = assert_one_winner(decided, when, doctor)
    held = active_on(server, doctor, when, when + timedelta(minutes=30))
    assert [b.id for b in held] == [won.outcome["booking_id"]]  # type: ignore[index]
    assert len(claims_of(server, held[0].id)) == 6
    assert_decided_once(server, [i.id for i in intents])


def test_fifty_devices_of_five_clinics_race_for_one_caregivers_hour(
    world: BookingWorld, server: Any
) -> None:
    """Caregivers serve the whole organisation: pushes of different clinics do not
    queue on one clinic's lock, so only the database guard keeps the hour single."""
    clinics = [world]
    for _ in range(4):
        other = dataclasses.replace(world, clinic_id=server.new_clinic(), tablets=[])
        with server.db.write() as session:
            set_clinic_timezone(
                session=session,
                principal=world.staff,
                clinic_id=other.clinic_id,
                timezone="Europe/Berlin",
            )
        clinics.append(other)
    per_clinic = DEVICES // len(clinics)
    pairs = [pair for c in clinics for pair in tablets_with_patients(c, per_clinic)]
    caregiver, when = world.caregivers[0], local(world.monday, 14)
    intents = [
        tablet.intent(
            IntentKind.VISIT_REQUEST,
            patient_id=patient.id,
            skill="wound dressing",
            area=world.north,
            starts_at=when,
            duration_minutes=60,
            caregiver_id=caregiver,
        )
        for tablet, patient in pairs
    ]
    try:
        race(
            [
                lambda t=tablet, i=intent: t.push(i)
                for (tablet, _), intent in zip(pairs, intents, strict=True)
            ]
        )
        race([lambda t=tablet: t.pull() for tablet, _ in pairs])
        decided = [held_decision(t, i.id) for (t, _), i in zip(pairs, intents, strict=True)]
    finally:
        for other in clinics[1:]:
            other.close()

    won, _ = assert_one_winner(decided, when, caregiver)
    held = active_on(server, caregiver, when, when + timedelta(hours=1))
    assert [b.id for b in held] == [won.outcome["booking_id"]]  # type: ignore[index]
    assert len(claims_of(server, held[0].id)) == 12
    assert_decided_once(server, [i.id for i in intents])


@pytest.mark.parametrize("round_", range(3))
def test_a_reschedule_racing_requests_for_its_target_keeps_one_booking_on_each_slot(
    world: BookingWorld, round_: int
) -> None:
    server, doctor = world.server, world.doctors[0]
    a, b = local(world.monday, 9), local(world.monday, 10 + round_ % 2)
    mover = world.tablet()
    patient = mover.patient("Mover")
    first = mover.intent(
        IntentKind.APPOINTMENT_REQUEST,
        patient_id=patient.id,
        service=world.review,
        starts_at=a,
        provider_id=doctor,
    )
    mover.sync(patient, first)
    booking_id = held_decision(mover, first.id).outcome["booking_id"]  # type: ignore[index]
    rivals = tablets_with_patients(world, 15)
    move = mover.intent(
        IntentKind.APPOINTMENT_RESCHEDULE, patient_id=patient.id, subject_id=booking_id, starts_at=b
    )
    asks = [
        tablet.intent(
            IntentKind.APPOINTMENT_REQUEST,
            patient_id=p.id,
            service=world.review,
            starts_at=b,
            provider_id=doctor,
        )
        for tablet, p in rivals
    ]
    # The reschedule goes at a different place in the start order each round.
    pushes: list[Callable[[], Any]] = [
        lambda t=tablet, i=intent: t.push(i)
        for (tablet, _), intent in zip(rivals, asks, strict=True)
    ]
    pushes.insert([0, len(pushes) // 2, len(pushes)][round_], lambda: mover.push(move))
    race(pushes)
    mover.pull()
    for tablet, _ in rivals:
        tablet.pull()

    moved = held_decision(mover, move.id)
    on_b = active_on(server, doctor, b, b + timedelta(minutes=30))
    on_a = active_on(server, doctor, a, a + timedelta(minutes=30))
    assert len(on_b) == 1
    winners = [
        held_decision(t, i.id)
        for (t, _), i in zip(rivals, asks, strict=True)
        if held_decision(t, i.id).status is DecisionStatus.ACCEPTED
    ]
    if moved.status is DecisionStatus.ACCEPTED:
        assert on_b[0].id == booking_id and not winners and on_a == []
    else:
        assert moved.status is DecisionStatus.REJECTED
        assert len(winners) == 1 and on_b[0].id == winners[0].outcome["booking_id"]  # type: ignore[index]
        assert [x.id for x in on_a] == [booking_id]  # the old time is still held
        assert on_a[0].starts_at == a
    for booking in (*on_a, *on_b):
        steps = claims_of(server, booking.id)
        assert steps[0] == booking.starts_at and len(steps) == 6
    assert_decided_once(server, [move.id, *(i.id for i in asks)])


def test_the_same_push_retried_from_two_threads_is_decided_once(world: BookingWorld) -> None:
    tablet = world.tablet()
    patient = tablet.patient()
    tablet.push(patient)
    intents = [
        tablet.intent(
            IntentKind.APPOINTMENT_REQUEST,
            patient_id=patient.id,
            service=world.dressing,
            starts_at=local(world.monday, 9, 15 * n),
            provider_id=world.nurse,
        )
        for n in range(4)
    ]
    body = wire(*intents)
    twin = dataclasses.replace(tablet, http=world.server.http(_token(world, tablet)))
    try:
        answers = race([lambda: tablet.push(raw=body), lambda: twin.push(raw=body)])
    finally:
        twin.http.close()
    ids = {i.id for i in intents}
    # One of the two stored them; the other found them already there.
    assert sorted(set(answers[0]["accepted"]) | set(answers[1]["accepted"])) == sorted(ids)
    assert not set(answers[0]["accepted"]) & set(answers[1]["accepted"])
    tablet.pull()
    assert_decided_once(world.server, sorted(ids))
    assert all(held_decision(tablet, i).status is DecisionStatus.ACCEPTED for i in ids)
    with world.server.db.read() as session:
        assert session.scalar(
            select(func.count()).select_from(Booking).where(Booking.intent_id.in_(ids))
        ) == len(ids)


def test_duplicated_and_reordered_pushes_decide_each_intent_once(world: BookingWorld) -> None:
    writer, relay = world.tablet(), world.tablet()
    patient = writer.patient("Late")
    early = writer.intent(
        IntentKind.APPOINTMENT_REQUEST,
        patient_id=patient.id,
        service=world.review,
        starts_at=local(world.monday, 11),
        provider_id=world.doctors[1],
    )
    # The intent arrives before the patient it names, twice in one push and through
    # a second device at the same moment.
    race([lambda: writer.push(raw=wire(early, early)), lambda: relay.push(early)])
    late = writer.intent(
        IntentKind.APPOINTMENT_REQUEST,
        patient_id=patient.id,
        service=world.review,
        starts_at=local(world.monday, 11),
        provider_id=world.doctors[1],
    )
    # Then the patient, the early intent again and a later one, in reverse order;
    # and the whole bundle replayed.
    writer.push(late, early, patient)
    writer.push(patient, early, late)
    relay.push(late, early)
    writer.pull()
    relay.pull()

    first = held_decision(writer, early.id)
    assert first.status is DecisionStatus.REJECTED
    assert first.reason is not None and "not a patient of this clinic" in first.reason
    second = held_decision(relay, late.id)
    assert second.status is DecisionStatus.ACCEPTED
    assert held_decision(relay, early.id).status is DecisionStatus.REJECTED  # unchanged
    assert_decided_once(world.server, [early.id, late.id])
    loaded = RecordDocument.load(writer.held[decision_id(early.id)]).read()
    assert isinstance(loaded, Decision) and loaded.status is DecisionStatus.REJECTED


def _token(world: BookingWorld, tablet: Tablet) -> str:
    """A second access token of `tablet`'s device (a retry after a cut connection
    comes on a new connection, maybe with a refreshed token)."""
    _, token = world.server.device_token(
        world.clinic_id,
        device_id=tablet.device_id,
        public_key=world.server.signer(tablet.device_id).public_key,
    )
    return str(token)
