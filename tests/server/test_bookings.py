"""Bookings decided by the server, over real HTTP on SQLite and PostgreSQL: intents
decided inside the push that delivers them, once, with the decision in the same
sync; no slot or caregiver hour booked twice; reschedules atomic; visits tracked and
reviewed once."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from crdt import (
    Availability,
    DecisionStatus,
    Directory,
    IntentKind,
    RecordDocument,
    availability_id,
    directory_id,
)
from sync_server.audit.tables import AuditEvent
from sync_server.bookings.manage import change_state
from sync_server.bookings.tables import Booking, BookingClaim, QualityFlag
from sync_server.intents.tables import IntentDecision
from sync_server.sync.tables import Document

from .bookings_world import MEDIA, BookingWorld, Tablet, build_world, local, wire


@pytest.fixture
def world(server: Any) -> Iterator[BookingWorld]:
    built = build_world(server)
    yield built
    built.close()


def ask(tablet: Tablet, patient: RecordDocument, when: datetime, **details: Any) -> RecordDocument:
    service = details.pop("service", tablet.world.review)
    return tablet.intent(
        IntentKind.APPOINTMENT_REQUEST,
        patient_id=patient.id,
        service=service,
        starts_at=when,
        **details,
    )


def decisions_of(server: Any, intent_id: str) -> int:
    with server.db.read() as session:
        return (
            session.scalar(
                select(func.count())
                .select_from(IntentDecision)
                .where(IntentDecision.intent_id == intent_id)
            )
            or 0
        )


def test_an_intent_is_decided_in_its_push_and_the_decision_comes_back_in_the_same_sync(
    world: BookingWorld,
) -> None:
    tablet = world.tablet()
    patient = tablet.patient()
    intent = ask(tablet, patient, local(world.monday, 9), provider_id=world.doctors[0])
    answer = tablet.sync(patient, intent)
    assert set(answer["accepted"]) == {patient.id, intent.id}

    decision = tablet.decision(intent.id)
    assert decision is not None and decision.status is DecisionStatus.ACCEPTED
    assert decision.outcome is not None
    assert decision.outcome["provider_id"] == world.doctors[0]
    assert datetime.fromisoformat(decision.outcome["starts_at"]) == local(world.monday, 9)
    with world.server.db.read() as session:
        booking = session.get(Booking, decision.outcome["booking_id"])
        assert booking is not None and booking.state == "booked"
        assert booking.intent_id == intent.id
        claims = session.scalar(
            select(func.count())
            .select_from(BookingClaim)
            .where(BookingClaim.booking_id == booking.id)
        )
        assert claims == 6  # 30 minutes in 5-minute steps


def test_the_second_request_for_a_slot_is_rejected_with_a_reason_and_an_alternative(
    world: BookingWorld,
) -> None:
    first, second = world.tablet(), world.tablet()
    a, b = first.patient("Ames"), second.patient("Brook")
    when = local(world.monday, 10)
    mine = ask(first, a, when, provider_id=world.doctors[0])
    theirs = ask(second, b, when, provider_id=world.doctors[0])
    first.sync(a, mine)
    second.sync(b, theirs)

    won, lost = first.decision(mine.id), second.decision(theirs.id)
    assert won is not None and won.status is DecisionStatus.ACCEPTED
    assert lost is not None and lost.status is DecisionStatus.REJECTED
    assert lost.reason is not None and "10:00" in lost.reason and "Dr Doctor 0" in lost.reason
    assert lost.alternative is not None
    offered = datetime.fromisoformat(lost.alternative["starts_at"])
    assert offered != when and lost.alternative["provider_id"] == world.doctors[0]
    assert abs(offered - when) == timedelta(minutes=30)  # the neighbouring slot


def test_any_fitting_doctor_takes_the_slot_and_flexible_requests_take_the_nearest(
    world: BookingWorld,
) -> None:
    tablet = world.tablet()
    when = local(world.monday, 11)
    patients = [tablet.patient(f"P{n}") for n in range(3)]
    intents = [ask(tablet, p, when, flexible=(n == 2)) for n, p in enumerate(patients)]
    tablet.sync(*patients, *intents)
    decided = [tablet.decision(i.id) for i in intents]
    assert [d.status if d else None for d in decided] == [
        DecisionStatus.ACCEPTED,
        DecisionStatus.ACCEPTED,
        DecisionStatus.ACCEPTED_ALTERNATIVE,
    ]
    doctors = {d.outcome["provider_id"] for d in decided[:2] if d and d.outcome}
    assert doctors == set(world.doctors)
    third = decided[2]
    assert third is not None and third.outcome is not None and third.reason
    assert datetime.fromisoformat(third.outcome["starts_at"]) != when


@pytest.mark.parametrize(
    ("hour", "minute", "problem"),
    [(7, 0, "not working"), (9, 7, "5-minute step")],
)
def test_requests_outside_the_schedule_are_rejected_with_the_reason(
    world: BookingWorld, hour: int, minute: int, problem: str
) -> None:
    tablet = world.tablet()
    patient = tablet.patient()
    intent = ask(tablet, patient, local(world.monday, hour, minute), provider_id=world.doctors[0])
    tablet.sync(patient, intent)
    decision = tablet.decision(intent.id)
    assert decision is not None and decision.status is DecisionStatus.REJECTED
    assert decision.reason is not None and problem in decision.reason


def test_unknown_patients_services_past_and_far_times_are_rejected(world: BookingWorld) -> None:
    tablet = world.tablet()
    patient = tablet.patient()
    tablet.sync(patient)
    cases = {
        "not a patient of this clinic": tablet.intent(
            IntentKind.APPOINTMENT_REQUEST,
            patient_id="01000000-0000-7000-8000-000000000000",
            service=world.review,
            starts_at=local(world.monday, 9),
        ),
        "no service": ask(tablet, patient, local(world.monday, 9), service="massage"),
        "passed": ask(tablet, patient, datetime.now(UTC) - timedelta(days=1)),
        "days ahead": ask(tablet, patient, datetime(9999, 12, 31, 23, 55, tzinfo=UTC)),
    }
    tablet.sync(*cases.values())
    for problem, intent in cases.items():
        decision = tablet.decision(intent.id)
        assert decision is not None and decision.status is DecisionStatus.REJECTED, problem
        assert decision.reason is not None and problem in decision.reason


def test_replays_retries_and_second_routes_decide_an_intent_once(world: BookingWorld) -> None:
    tablet, relay = world.tablet(), world.tablet()
    patient = tablet.patient()
    intent = ask(tablet, patient, local(world.monday, 9, 30), provider_id=world.doctors[1])
    tablet.sync(patient, intent)
    first = tablet.decision(intent.id)
    assert first is not None and first.status is DecisionStatus.ACCEPTED

    # The same bundle again, a retried push, and the intent through another device.
    tablet.push(patient, intent)
    tablet.push(raw=wire(intent, intent))
    relay.sync(intent)
    assert decisions_of(world.server, intent.id) == 1
    with world.server.db.read() as session:
        bookings = session.scalar(
            select(func.count()).select_from(Booking).where(Booking.intent_id == intent.id)
        )
        decision_rows = session.scalar(
            select(func.count())
            .select_from(Document)
            .where(Document.collection == "decisions", Document.id.like(f"%{intent.id}"))
        )
    assert bookings == 1 and decision_rows == 1
    again = relay.decision(intent.id)
    assert again is not None and again.outcome == first.outcome
    with world.server.db.read() as session:
        audited = session.scalars(
            select(AuditEvent.outcome).where(
                AuditEvent.action == "intents-decided", AuditEvent.target.contains(intent.id)
            )
        ).all()
    assert audited == ["accepted=1"]


def test_an_intent_changed_after_creation_is_refused_and_keeps_its_decision(
    world: BookingWorld,
) -> None:
    from automerge import core as am

    tablet = world.tablet()
    patient = tablet.patient()
    intent = ask(tablet, patient, local(world.monday, 9), provider_id=world.doctors[0])
    tablet.sync(patient, intent)
    raw = am.Document.load(intent.save())
    with raw.transaction() as tx:
        tx.put(am.ROOT, "updated_at", am.ScalarType.Str, "2030-01-01T00:00:00+00:00")
    tampered = RecordDocument.load(raw.save(), device_id=tablet.device_id)
    tampered.seal(world.server.signer(tablet.device_id))
    answer = tablet.push(tampered)
    assert [r["doc_id"] for r in answer["rejected"]] == [intent.id]
    assert "cannot change after creation" in answer["rejected"][0]["reason"]
    assert decisions_of(world.server, intent.id) == 1


def test_reschedule_moves_atomically_and_cancel_frees_the_slot(world: BookingWorld) -> None:
    tablet, other = world.tablet(), world.tablet()
    patient, rival = tablet.patient(), other.patient("Rival")
    doctor = world.doctors[0]
    booked = ask(tablet, patient, local(world.monday, 9), provider_id=doctor)
    blocker = ask(other, rival, local(world.monday, 10), provider_id=doctor)
    tablet.sync(patient, booked)
    other.sync(rival, blocker)
    booking_id = tablet.decision(booked.id).outcome["booking_id"]  # type: ignore[union-attr]

    # Onto a taken slot: refused, and the appointment keeps its time.
    onto_taken = tablet.intent(
        IntentKind.APPOINTMENT_RESCHEDULE,
        patient_id=patient.id,
        subject_id=booking_id,
        starts_at=local(world.monday, 10),
    )
    # Onto a free one: moved, the old slot freed in the same transaction.
    onto_free = tablet.intent(
        IntentKind.APPOINTMENT_RESCHEDULE,
        patient_id=patient.id,
        subject_id=booking_id,
        starts_at=local(world.monday, 11),
    )
    tablet.sync(onto_taken)
    refused = tablet.decision(onto_taken.id)
    assert refused is not None and refused.status is DecisionStatus.REJECTED
    with world.server.db.read() as session:
        booking = session.get(Booking, booking_id)
        assert booking is not None and booking.starts_at == local(world.monday, 9)
    tablet.sync(onto_free)
    moved = tablet.decision(onto_free.id)
    assert moved is not None and moved.status is DecisionStatus.ACCEPTED

    # The freed 09:00 can be booked by someone else now.
    again = ask(other, rival, local(world.monday, 9), provider_id=doctor)
    other.sync(again)
    assert other.decision(again.id).status is DecisionStatus.ACCEPTED  # type: ignore[union-attr]

    cancel = tablet.intent(
        IntentKind.APPOINTMENT_CANCEL, patient_id=patient.id, subject_id=booking_id, reason="ill"
    )
    tablet.sync(cancel)
    cancelled = tablet.decision(cancel.id)
    assert cancelled is not None and cancelled.status is DecisionStatus.ACCEPTED
    assert cancelled.outcome == {
        "booking_id": booking_id,
        "state": "cancelled",
        "late_cancellation": False,
    }
    with world.server.db.read() as session:
        assert (
            session.scalar(
                select(func.count())
                .select_from(BookingClaim)
                .where(BookingClaim.booking_id == booking_id)
            )
            == 0
        )
    twice = tablet.intent(
        IntentKind.APPOINTMENT_CANCEL, patient_id=patient.id, subject_id=booking_id
    )
    tablet.sync(twice)
    assert tablet.decision(twice.id).status is DecisionStatus.REJECTED  # type: ignore[union-attr]


def test_a_visit_goes_to_a_fitting_caregiver_and_is_reviewed_once(world: BookingWorld) -> None:
    tablet = world.tablet()
    patient = tablet.patient()
    visit = tablet.intent(
        IntentKind.VISIT_REQUEST,
        patient_id=patient.id,
        skill="compression",
        area=world.south,  # only the first caregiver serves the south
        starts_at=local(world.monday, 14),
        duration_minutes=45,
    )
    tablet.sync(patient, visit)
    decided = tablet.decision(visit.id)
    assert decided is not None and decided.status is DecisionStatus.ACCEPTED
    assert decided.outcome is not None and decided.outcome["provider_id"] == world.caregivers[0]
    booking_id = decided.outcome["booking_id"]

    # The same caregiver cannot be in two places at once.
    clash = tablet.intent(
        IntentKind.VISIT_REQUEST,
        patient_id=patient.id,
        skill="compression",
        area=world.south,
        starts_at=local(world.monday, 14, 30),
    )
    early_review = tablet.intent(
        IntentKind.VISIT_REVIEW, patient_id=patient.id, subject_id=booking_id, rating=5
    )
    tablet.sync(clash, early_review)
    assert tablet.decision(clash.id).status is DecisionStatus.REJECTED  # type: ignore[union-attr]
    assert tablet.decision(early_review.id).status is DecisionStatus.REJECTED  # type: ignore[union-attr]

    signer = world.server.server_signer()
    for state in ("en_route", "started", "completed"):
        with world.server.db.write() as session:
            change_state(
                session=session,
                principal=world.staff,
                booking_id=booking_id,
                state=state,
                signer=signer,
            )
    low = tablet.intent(
        IntentKind.VISIT_REVIEW, patient_id=patient.id, subject_id=booking_id, rating=1
    )
    second = tablet.intent(
        IntentKind.VISIT_REVIEW, patient_id=patient.id, subject_id=booking_id, rating=5
    )
    tablet.sync(low, second)
    assert tablet.decision(low.id).status is DecisionStatus.ACCEPTED  # type: ignore[union-attr]
    assert tablet.decision(second.id).status is DecisionStatus.REJECTED  # type: ignore[union-attr]
    with world.server.db.read() as session:
        flags = session.scalars(
            select(QualityFlag.reason).where(QualityFlag.booking_id == booking_id)
        ).all()
    assert flags == ["low rating (1/5)"]


def test_reference_data_syncs_down_read_only_and_shows_the_free_slots(
    world: BookingWorld,
) -> None:
    world.publish()
    tablet = world.tablet()
    tablet.pull()
    directory = RecordDocument.load(tablet.held[directory_id(world.clinic_id)]).read()
    assert isinstance(directory, Directory)
    assert {p.id for p in directory.providers} >= {*world.doctors, world.nurse}
    day = world.monday
    availability = RecordDocument.load(tablet.held[availability_id(world.clinic_id, day)]).read()
    assert isinstance(availability, Availability) and availability.timezone == "Europe/Berlin"
    nine = [s for s in availability.slots if s.starts_at == local(day, 9)]
    assert {(s.provider_id, s.service) for s in nine} >= {(world.doctors[0], world.review)}

    patient = tablet.patient()
    intent = ask(tablet, patient, local(day, 9), provider_id=world.doctors[0])
    tablet.sync(patient, intent)
    after = RecordDocument.load(tablet.held[availability_id(world.clinic_id, day)]).read()
    assert isinstance(after, Availability)
    assert not any(
        s.starts_at == local(day, 9)
        and s.provider_id == world.doctors[0]
        and s.service == world.review
        for s in after.slots
    )
    # A device may not write reference data.
    forged = RecordDocument.load(
        tablet.held[directory_id(world.clinic_id)], device_id=tablet.device_id
    )
    forged.update(
        {"services": []}, device_id=tablet.device_id, signer=world.server.signer(tablet.device_id)
    )
    answer = tablet.push(forged)
    assert [r["doc_id"] for r in answer["rejected"]] == [directory_id(world.clinic_id)]


def test_another_clinics_device_sees_nothing_of_these_bookings(
    world: BookingWorld, server: Any
) -> None:
    tablet = world.tablet()
    patient = tablet.patient()
    intent = ask(tablet, patient, local(world.monday, 9), provider_id=world.doctors[0])
    tablet.sync(patient, intent)
    elsewhere = build_world(server, doctors=1, caregivers=0)
    stranger = elsewhere.tablet()
    got = stranger.pull()
    assert intent.id not in got and patient.id not in got
    assert not any(doc_id.endswith(intent.id) for doc_id in got)
    # Nor can it act on them: its cancel names a booking outside its clinic.
    booking_id = tablet.decision(intent.id).outcome["booking_id"]  # type: ignore[union-attr]
    cancel = stranger.intent(IntentKind.APPOINTMENT_CANCEL, subject_id=booking_id)
    stranger.sync(cancel)
    refused = stranger.decision(cancel.id)
    elsewhere.close()
    assert refused is not None and refused.status is DecisionStatus.REJECTED


def test_housekeeping_publishes_every_clinics_horizon_once(world: BookingWorld) -> None:
    from sync_server.bookings.reference import AVAILABILITY_DAYS, publish_everywhere

    server = world.server
    signer = server.server_signer()
    now = datetime.now(UTC)
    publish_everywhere(database=server.db, signer=signer, now=now)
    with server.db.read() as session:
        held = set(
            session.scalars(
                select(Document.id).where(
                    Document.clinic_id == world.clinic_id,
                    Document.collection.in_(["availability", "directory"]),
                )
            )
        )
    assert directory_id(world.clinic_id) in held
    assert len([d for d in held if d.startswith("availability:")]) == AVAILABILITY_DAYS
    # Nothing changed: nothing is written again.
    assert publish_everywhere(database=server.db, signer=signer, now=now) == 0


def test_a_batch_of_every_outcome_is_audited_in_one_bounded_row(world: BookingWorld) -> None:
    tablet = world.tablet()
    patients = [tablet.patient(f"P{n}") for n in range(4)]
    when = local(world.monday, 9)
    intents = [
        ask(tablet, p, when, provider_id=world.doctors[0], flexible=n == 1)
        for n, p in enumerate(patients[:3])
    ]
    intents.append(ask(tablet, patients[3], when, service="no-such-service"))
    tablet.sync(*patients, *intents)
    with world.server.db.read() as session:
        (outcome,) = session.scalars(
            select(AuditEvent.outcome).where(
                AuditEvent.action == "intents-decided",
                AuditEvent.target.contains(intents[0].id),
            )
        ).all()
    assert outcome == "accepted=1 alt=1 rejected=2"


def test_a_push_of_too_many_intents_is_refused_whole_before_any_is_decided(
    world: BookingWorld,
) -> None:
    """Each intent is decided while the push holds its clinic's feed: one push may not
    carry more than `push_max_intents` (the SDK pushes in halves)."""
    tablet = world.tablet()
    patient = tablet.patient()
    tablet.sync(patient)
    limit = world.server.settings.push_max_intents
    intents = [
        ask(tablet, patient, local(world.monday, 9) + timedelta(days=7 * (n // 6)))
        for n in range(limit + 1)
    ]
    response = tablet.http.post("/v1/sync/push", content=wire(*intents), headers=MEDIA)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "push_too_costly"
    with world.server.db.read() as session:
        stored = session.scalar(
            select(func.count())
            .select_from(Document)
            .where(Document.id.in_([i.id for i in intents]))
        )
        decided = session.scalar(
            select(func.count())
            .select_from(IntentDecision)
            .where(IntentDecision.intent_id.in_([i.id for i in intents]))
        )
    assert stored == 0 and decided == 0
    answer = tablet.push(*intents[:limit])
    assert len(answer["accepted"]) == limit
