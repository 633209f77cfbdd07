"""Bookings through intents on a device: an intent is written signed and immutable, is
`pending` until the server's decision arrives (by sync or bundle), each decision is
reported once, and the server's directory and free slots are read as synced down.

The server is played by a `MemoryHub`: it writes decisions and reference data as the
server does (`write_documents`, signed by its key, under the ids `crdt` defines).
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from crdt import (
    Availability,
    Decision,
    DecisionStatus,
    Directory,
    IntentKind,
    Record,
    RecordDocument,
    RecordValidationError,
    availability_id,
    decision_id,
    directory_id,
    run_in_memory,
)
from edge_sdk import (
    EdgeClient,
    IntentStatus,
    MemoryHub,
    ReadOnlyCollectionError,
    RecordNotFoundError,
    StoreCorruptError,
    export_bundle,
    import_bundle,
)
from edge_sdk._store import SCHEMA_VERSION
from tests.conftest import connect

CET = timezone(timedelta(hours=1))
MONDAY_NINE = datetime(2026, 12, 7, 9, 0, tzinfo=CET)


def add_patient(client: EdgeClient) -> str:
    return client.patients.add(given_name="Ada", family_name="Okafor", birth_date="1950-03-01").id


def server_writes(
    hub: MemoryHub, clinic_id: str, schema: type[Record], record_id: str, **values: Any
) -> None:
    """Put a server-made record in the clinic's feed, as the server would."""
    document = RecordDocument.create(
        schema,
        values,
        device_id=hub.server_device_id,
        clinic_id=clinic_id,
        record_id=record_id,
    )
    hub.write_documents(clinic_id, [document])


def decide(
    hub: MemoryHub, clinic_id: str, intent_id: str, status: str = "accepted", **values: Any
) -> None:
    server_writes(
        hub,
        clinic_id,
        Decision,
        decision_id(intent_id),
        intent_id=intent_id,
        status=status,
        **values,
    )


BOOKED = {
    "booking_id": "booking-1",
    "provider_id": "dr-osei",
    "service": "wound-review",
    "starts_at": "2026-12-07T09:00:00+01:00",
    "ends_at": "2026-12-07T09:30:00+01:00",
}


# ---------------------------------------------------------------- writing intents


def test_a_request_is_a_signed_immutable_intent_pending_until_decided(tmp_store: Any) -> None:
    hub = MemoryHub()
    client = tmp_store()
    patient = add_patient(client)

    asked = client.bookings.request_appointment(
        patient, "wound-review", MONDAY_NINE, provider_id="dr-osei"
    )
    assert isinstance(asked, IntentStatus)
    assert (asked.state, asked.decision) == ("pending", None)
    intent = asked.intent
    assert intent.kind is IntentKind.APPOINTMENT_REQUEST
    assert intent.patient_id == patient and intent.subject_id is None
    assert intent.parsed_details().starts_at == MONDAY_NINE  # type: ignore[attr-defined]
    assert intent.id[14] == "7"  # a UUIDv7: the idempotency key the server dedupes on
    assert [entry.verified for entry in client.intents.history(intent.id)] == [True]

    # Written once: every later change is refused, and nothing is written.
    heads = client.replica.document_heads()
    for change in (
        lambda: client.intents.update(intent.id, patient_id=add_patient(client)),
        lambda: client.intents.delete(intent.id),
    ):
        with pytest.raises(RecordValidationError, match="cannot change after creation"):
            change()
    assert client.replica.document_heads()[intent.id] == heads[intent.id]

    # Pushed: the hub holds it; still pending here until the decision comes down.
    client.sync(transport=connect(hub, client))
    assert intent.id in hub.document_heads(client.clinic_id)
    assert client.intent_status(intent.id).state == "pending"

    decide(hub, client.clinic_id, intent.id, outcome=BOOKED, reason="booked")
    client.sync(transport=connect(hub, client))
    status = client.intent_status(intent.id)
    assert status.state == "accepted" and status.intent == intent
    assert status.decision is not None
    assert status.decision.status is DecisionStatus.ACCEPTED
    assert status.decision.outcome == BOOKED


def test_each_kind_of_intent_carries_its_details(tmp_store: Any) -> None:
    client = tmp_store()
    patient = add_patient(client)
    bookings = client.bookings
    request = bookings.request_appointment(
        patient, "wound-review", MONDAY_NINE, specialisation="dermatology", flexible=True
    )
    visit = bookings.request_visit(
        patient, "compression", "north", MONDAY_NINE, duration_minutes=45, language="yo"
    )
    # Before a decision names the booking, its patient is unknown here.
    cancel = bookings.cancel_appointment("booking-9", "feeling better")
    assert cancel.intent.patient_id is None

    hub = MemoryHub()
    client.sync(transport=connect(hub, client))
    decide(hub, client.clinic_id, request.id, outcome=BOOKED)
    client.sync(transport=connect(hub, client))
    later = MONDAY_NINE + timedelta(days=1)
    move = bookings.reschedule_appointment("booking-1", later, flexible=True)
    review = bookings.review_visit("visit-1", 5, "kind and quick")

    expected = {
        request.id: (IntentKind.APPOINTMENT_REQUEST, patient, None),
        visit.id: (IntentKind.VISIT_REQUEST, patient, None),
        cancel.id: (IntentKind.APPOINTMENT_CANCEL, None, "booking-9"),
        # The booking's patient is known from the request it was booked for.
        move.id: (IntentKind.APPOINTMENT_RESCHEDULE, patient, "booking-1"),
        review.id: (IntentKind.VISIT_REVIEW, None, "visit-1"),
    }
    listed = client.list_intents()
    assert [s.id for s in listed] == sorted(expected)  # oldest first
    for status in listed:
        intent = status.intent
        assert (intent.kind, intent.patient_id, intent.subject_id) == expected[intent.id]
    assert request.intent.details["specialisation"] == "dermatology"
    assert request.intent.details["flexible"] is True
    assert visit.intent.details["duration_minutes"] == 45
    assert visit.intent.details["language"] == "yo"
    assert cancel.intent.details == {"reason": "feeling better"}
    assert move.intent.parsed_details().starts_at == later  # type: ignore[attr-defined]
    assert review.intent.details == {"rating": 5, "comment": "kind and quick"}


def test_bad_requests_are_refused_and_write_nothing(tmp_store: Any) -> None:
    client = tmp_store()
    patient = add_patient(client)
    bookings = client.bookings
    refused = [
        ("UTC offset", lambda: bookings.request_appointment(patient, "x", datetime(2026, 12, 7))),
        ("patient_id", lambda: bookings.request_appointment("p-9", "x", MONDAY_NINE)),
        ("patient_id", lambda: bookings.request_visit("p-9", "npwt", "north", MONDAY_NINE)),
        ("rating", lambda: bookings.review_visit("visit-1", 6)),
        (
            "duration_minutes",
            lambda: bookings.request_visit(patient, "a", "b", MONDAY_NINE, duration_minutes=7),
        ),
    ]
    for problem, ask in refused:
        with pytest.raises(RecordValidationError, match=problem):
            ask()
    assert client.list_intents() == []


def test_list_intents_by_kind_family_state_and_patient(tmp_store: Any) -> None:
    hub = MemoryHub()
    client = tmp_store()
    ada, bea = add_patient(client), add_patient(client)
    first = client.bookings.request_appointment(ada, "wound-review", MONDAY_NINE)
    second = client.bookings.request_appointment(bea, "wound-review", MONDAY_NINE)
    third = client.bookings.request_visit(ada, "npwt", "north", MONDAY_NINE)
    client.sync(transport=connect(hub, client))
    decide(hub, client.clinic_id, first.id, outcome=BOOKED)
    decide(
        hub,
        client.clinic_id,
        second.id,
        "rejected",
        reason="Dr Osei is fully booked on Monday",
        alternative={**BOOKED, "starts_at": "2026-12-08T10:00:00+01:00"},
    )
    client.sync(transport=connect(hub, client))

    def ids(**filters: Any) -> list[str]:
        return [s.id for s in client.list_intents(**filters)]

    assert ids(kind="appointment") == [first.id, second.id]
    assert ids(kind="visit.request") == [third.id]
    assert ids(state="pending") == [third.id]
    assert ids(state="accepted") == [first.id]
    assert ids(kind="appointment", state="rejected") == [second.id]
    assert ids(patient_id=ada) == [first.id, third.id]
    rejected = client.intent_status(second.id)
    assert rejected.decision is not None
    assert rejected.decision.reason == "Dr Osei is fully booked on Monday"
    assert rejected.decision.alternative is not None
    assert rejected.decision.alternative["starts_at"] == "2026-12-08T10:00:00+01:00"
    for bad in ({"kind": "shipment"}, {"state": "maybe"}):
        with pytest.raises(ValueError, match="no intent"):
            client.list_intents(**bad)
    with pytest.raises(RecordNotFoundError):
        client.intent_status("not-an-intent")


# ---------------------------------------------------------------- decisions reported


def test_each_decision_is_reported_once_also_across_reopening(tmp_store: Any) -> None:
    hub = MemoryHub()
    client = tmp_store("a")
    patient = add_patient(client)
    heard: list[Decision] = []
    subscription = client.on_decision(heard.append)
    first = client.bookings.request_appointment(patient, "wound-review", MONDAY_NINE)
    client.sync(transport=connect(hub, client))
    assert heard == []  # nothing decided yet

    decide(hub, client.clinic_id, first.id, outcome=BOOKED)
    client.sync(transport=connect(hub, client))
    assert [d.intent_id for d in heard] == [first.id]
    client.sync(transport=connect(hub, client))  # nothing new
    assert len(heard) == 1

    # A decision that arrives while nobody listens waits, and is reported once to the
    # next callback registered, also after the store is reopened.
    subscription.cancel()
    second = client.bookings.request_appointment(patient, "wound-review", MONDAY_NINE)
    client.sync(transport=connect(hub, client))
    decide(hub, client.clinic_id, second.id, "rejected", reason="no slot")
    client.sync(transport=connect(hub, client))
    assert len(heard) == 1
    client.close()

    reopened = tmp_store.open("a")
    late: list[Decision] = []
    reopened.on_decision(late.append)
    assert [d.intent_id for d in late] == [second.id]
    reopened.sync(transport=connect(hub, reopened))
    reopened.close()
    again = tmp_store.open("a")
    never: list[Decision] = []
    again.on_decision(never.append)
    again.sync(transport=connect(hub, again))
    assert never == []
    assert [s.state for s in again.list_intents()] == ["accepted", "rejected"]


def test_a_decision_arriving_in_a_bundle_is_reported(tmp_path: Path, tmp_store: Any) -> None:
    hub = MemoryHub()
    ward, home = tmp_store("ward"), tmp_store("home")
    patient = add_patient(ward)
    asked = ward.bookings.request_appointment(patient, "wound-review", MONDAY_NINE)
    for tablet in (ward, home):
        tablet.sync(transport=connect(hub, tablet))  # home now trusts the hub's key
    decide(hub, ward.clinic_id, asked.id, outcome=BOOKED)
    ward.sync(transport=connect(hub, ward))

    heard: list[Decision] = []
    home.on_decision(heard.append)
    bundle = tmp_path / "ward.bundle"
    export_bundle(ward, bundle, passphrase="bundle secret")
    import_bundle(home, bundle, passphrase="bundle secret")
    import_bundle(home, bundle, passphrase="bundle secret")  # again: nothing new
    assert [d.id for d in heard] == [decision_id(asked.id)]
    assert home.intent_status(asked.id).state == "accepted"


def test_a_decision_arriving_in_a_sync_session_is_reported(tmp_store: Any) -> None:
    hub = MemoryHub()
    ward, home = tmp_store("ward"), tmp_store("home")
    asked = ward.bookings.request_appointment(add_patient(ward), "x", MONDAY_NINE)
    for tablet in (ward, home):
        tablet.sync(transport=connect(hub, tablet))
    decide(hub, ward.clinic_id, asked.id, outcome=BOOKED)
    ward.sync(transport=connect(hub, ward))

    heard: list[Decision] = []
    home.on_decision(heard.append)
    run_in_memory(ward.sync_session(), home.sync_session())  # device to device
    run_in_memory(ward.sync_session(), home.sync_session())
    assert [d.id for d in heard] == [decision_id(asked.id)]


def test_a_failing_callback_is_logged_and_does_not_stop_the_sync(
    tmp_store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    hub = MemoryHub()
    client = tmp_store()
    asked = client.bookings.request_appointment(add_patient(client), "x", MONDAY_NINE)
    client.sync(transport=connect(hub, client))
    decide(hub, client.clinic_id, asked.id, outcome=BOOKED)

    def broken(decision: Decision) -> None:
        raise RuntimeError("app bug")

    heard: list[Decision] = []
    client.on_decision(broken)
    client.on_decision(heard.append)
    with caplog.at_level(logging.ERROR, logger="edge_sdk"):
        result = client.sync(transport=connect(hub, client))
    assert decision_id(asked.id) in result.pulled
    assert len(heard) == 1
    assert "a decision callback failed" in caplog.text


# ---------------------------------------------------------------- reference data


def test_directory_and_free_slots_as_synced_down(tmp_store: Any) -> None:
    hub = MemoryHub()
    client = tmp_store()
    assert client.bookings.directory() is None
    assert client.bookings.free_slots() == []

    generated = datetime(2026, 12, 4, 6, 0, tzinfo=UTC)
    server_writes(
        hub,
        client.clinic_id,
        Directory,
        directory_id(client.clinic_id),
        generated_at=generated,
        providers=[
            {"id": "dr-osei", "name": "Dr Osei", "kind": "doctor", "services": ["wound-review"]}
        ],
        services=[{"code": "wound-review", "name": "Wound review", "duration_minutes": 30}],
    )
    monday, tuesday = date(2026, 12, 7), date(2026, 12, 8)
    for day, slots in (
        (tuesday, [("dr-osei", "wound-review", 9), ("dr-ncube", "dressing", 10)]),
        (monday, [("dr-osei", "wound-review", 14)]),
    ):
        server_writes(
            hub,
            client.clinic_id,
            Availability,
            availability_id(client.clinic_id, day),
            day=day,
            timezone="Europe/Berlin",
            generated_at=generated,
            slots=[
                {
                    "provider_id": provider,
                    "service": service,
                    "starts_at": datetime.combine(day, datetime.min.time(), CET).replace(hour=hour),
                    "ends_at": datetime.combine(day, datetime.min.time(), CET).replace(
                        hour=hour, minute=30
                    ),
                }
                for provider, service, hour in slots
            ],
        )
    client.sync(transport=connect(hub, client))

    directory = client.bookings.directory()
    assert directory is not None and directory.generated_at == generated
    assert [p.name for p in directory.providers] == ["Dr Osei"]
    days = client.bookings.free_slots()
    assert [d.day for d in days] == [monday, tuesday]
    assert all(d.generated_at == generated for d in days)
    assert len(days[1].slots) == 2
    (only,) = client.bookings.free_slots(day=tuesday, provider_id="dr-ncube")
    assert [s.service for s in only.slots] == ["dressing"]
    # A day held with nothing matching comes back empty, not absent: known, not unknown.
    assert [len(d.slots) for d in client.bookings.free_slots(service="dressing")] == [0, 1]
    assert client.bookings.free_slots(day=date(2026, 12, 9)) == []

    # Reference data is the server's: a device never writes it.
    with pytest.raises(ReadOnlyCollectionError):
        client.collection("availability").add(
            day=monday, timezone="UTC", generated_at=generated, slots=[]
        )


# ---------------------------------------------------------------- older stores


def test_a_version_1_store_opens_and_takes_intents(tmp_store: Any) -> None:
    client = tmp_store("old")
    patient = add_patient(client)
    store = client.replica.store
    # Make it what version 1 made: no intent or reference-data tables, no inbox.
    with store.transaction():
        for table in ("intents", "directory", "availability", "decision_inbox"):
            store.execute(f"DROP TABLE {table}")
        store.set_meta("schema_version", "1")
    client.close()

    reopened = tmp_store.open("old")
    assert reopened.replica.store.get_meta("schema_version") == str(SCHEMA_VERSION)
    assert reopened.patients.get(patient).family_name == "Okafor"
    asked = reopened.bookings.request_appointment(patient, "wound-review", MONDAY_NINE)
    assert reopened.intent_status(asked.id).state == "pending"
    assert reopened.bookings.free_slots() == []


def test_a_store_from_a_newer_version_is_refused(tmp_store: Any) -> None:
    client = tmp_store("new")
    client.replica.store.set_meta("schema_version", str(SCHEMA_VERSION + 1))
    client.close()
    with pytest.raises(StoreCorruptError, match=f"schema version {SCHEMA_VERSION + 1}"):
        tmp_store.open("new")
