"""`EdgeClient` over its encrypted store: records, queries, conflicts and the access gate."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from crdt import NoConflictError, RecordValidationError, run_in_memory
from edge_sdk import (
    AccessEvent,
    EdgeClient,
    RecordNotFoundError,
    StoreExistsError,
    StoreNotFoundError,
)

T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)


def add_patient(
    client: EdgeClient, given: str = "Ada", family: str = "Okafor", **extra: Any
) -> Any:
    return client.patients.add(
        given_name=given, family_name=family, birth_date="1950-03-01", **extra
    )


def add_assessment(client: EdgeClient, wound_id: str, at: datetime, **extra: Any) -> Any:
    return client.assessments.add(
        wound_id=wound_id, patient_id="p-1", captured_at=at, device_id=client.device_id, **extra
    )


def projections_match_documents(client: EdgeClient) -> bool:
    store = client._store
    for doc_id in store.document_heads():
        document = store.get_document(doc_id)
        assert document is not None
        expected = json.loads(json.dumps(document.read().model_dump(mode="json")))
        if store.get_record(document.collection, doc_id) != expected:
            return False
    return True


# ---------------------------------------------------------------- lifecycle


def test_init_then_open_keeps_records_identity_and_clinic(tmp_store: Any) -> None:
    client = tmp_store("a", clinic_id="clinic-7")
    patient = add_patient(client, mrn="MRN-1")
    device = client.device_id
    client.close()
    with tmp_store.open("a") as reopened:
        assert reopened.device_id == device
        assert reopened.clinic_id == "clinic-7"
        assert reopened.patients.get(patient.id) == patient
        assert reopened.identity.public_key == client.identity.public_key


def test_init_twice_is_refused(tmp_store: Any) -> None:
    tmp_store("a")
    with pytest.raises(StoreExistsError):
        tmp_store("a")
    with pytest.raises(StoreExistsError):
        tmp_store("a", passphrase="another passphrase")


def test_open_without_a_store_is_refused(tmp_store: Any) -> None:
    with pytest.raises(StoreNotFoundError):
        tmp_store.open("nothing-here")


# ---------------------------------------------------------------- records


def test_add_get_update_delete_restore(tmp_store: Any) -> None:
    client = tmp_store()
    patient = add_patient(client, mrn="MRN-1", contacts=[{"kind": "phone", "value": "123"}])
    assert patient.clinic_id == client.clinic_id
    assert patient.created_by == client.device_id
    assert client.patients.get(patient.id) == patient
    updated = client.patients.update(patient.id, given_name="Adaeze", sex="female")
    assert (updated.given_name, updated.sex.value, updated.mrn) == ("Adaeze", "female", "MRN-1")
    assert client.patients.get(patient.id) == updated
    deleted = client.patients.delete(patient.id)
    assert deleted.deleted is True
    assert client.patients.get(patient.id).deleted is True  # a tombstone, still readable
    assert client.patients.list() == []
    assert [p.id for p in client.patients.list(include_deleted=True)] == [patient.id]
    assert client.patients.restore(patient.id).deleted is False
    assert [p.id for p in client.patients.list()] == [patient.id]
    assert projections_match_documents(client)


def test_every_collection_round_trips(tmp_store: Any) -> None:
    client = tmp_store()
    patient = add_patient(client)
    wound = client.wounds.add(patient_id=patient.id, body_site="sacrum", onset="2024-04-01")
    assessment = add_assessment(
        client,
        wound.id,
        T0,
        measurements={"area_cm2": 4.5, "volume_cm3": 1.25, "max_depth_mm": 6.0},
        blobs=[{"sha256": "ab" * 32, "size": 10, "kind": "point_cloud"}],
        quality_flags=["low_light"],
    )
    note = client.notes.add(patient_id=patient.id, wound_id=wound.id, author="Dr M", text="ok")
    for collection, record in (
        (client.wounds, wound),
        (client.assessments, assessment),
        (client.notes, note),
    ):
        assert collection.get(record.id) == record
        assert client.find(record.id) is collection
    assert client.assessments.get(assessment.id).measurements.area_cm2 == 4.5
    assert client.collection("notes") is client.notes
    with pytest.raises(ValueError):
        client.collection("payments")
    assert projections_match_documents(client)


def test_missing_and_cross_collection_ids_are_not_found(tmp_store: Any) -> None:
    client = tmp_store()
    patient = add_patient(client)
    wound = client.wounds.add(patient_id=patient.id, body_site="sacrum")
    with pytest.raises(RecordNotFoundError):
        client.patients.get("no-such-id")
    with pytest.raises(RecordNotFoundError):
        client.patients.get(wound.id)
    with pytest.raises(RecordNotFoundError):
        client.patients.update(wound.id, given_name="X")
    with pytest.raises(RecordNotFoundError):
        client.wounds.delete(patient.id)
    with pytest.raises(RecordNotFoundError):
        client.find("no-such-id")


def test_invalid_and_immutable_updates_are_refused_and_change_nothing(tmp_store: Any) -> None:
    client = tmp_store()
    patient = add_patient(client)
    wound = client.wounds.add(patient_id=patient.id, body_site="sacrum")
    heads = client._store.document_heads()
    for call in (
        lambda: client.patients.update(patient.id, given_name=""),
        lambda: client.patients.update(patient.id, clinic_id="clinic-2"),
        lambda: client.patients.update(patient.id, unknown_field=1),
        lambda: client.wounds.update(wound.id, patient_id="someone-else"),
    ):
        with pytest.raises(RecordValidationError):
            call()
    assert client._store.document_heads() == heads
    with pytest.raises(RecordValidationError):
        client.patients.add(given_name="Ada", family_name="Okafor")
    assert len(client.patients.list()) == 1


def test_batch_is_all_or_nothing(tmp_store: Any) -> None:
    client = tmp_store()
    with client.batch():
        add_patient(client, "One")
        add_patient(client, "Two")
    with pytest.raises(RuntimeError), client.batch():
        add_patient(client, "Three")
        client.patients.update(client.patients.list()[0].id, mrn="MRN-X")
        raise RuntimeError("cancelled")
    assert sorted(p.given_name for p in client.patients.list()) == ["One", "Two"]
    assert all(p.mrn is None for p in client.patients.list())
    assert projections_match_documents(client)


def test_notes_splice_and_edit(tmp_store: Any) -> None:
    client = tmp_store()
    note = client.notes.add(patient_id="p-1", author="Dr M", text="Wound clean.")
    assert client.notes.splice(note.id, 6, 0, "very ").text == "Wound very clean."
    assert client.notes.edit(note.id, "Wound very clean. Größe 3 cm.").text.endswith("Größe 3 cm.")
    with pytest.raises(RecordValidationError):
        client.notes.splice(note.id, 500, 0, "x")


# ---------------------------------------------------------------- queries


def test_list_filters_and_limit(tmp_store: Any) -> None:
    client = tmp_store()
    ada = add_patient(client, "Ada", "Okafor", mrn="MRN-1")
    bea = add_patient(client, "Bea", "Okafor", mrn="MRN-2")
    add_patient(client, "Ada", "Brown", mrn="MRN-3")
    assert [p.id for p in client.patients.list(mrn="MRN-2")] == [bea.id]
    assert {p.id for p in client.patients.list(family_name="Okafor")} == {ada.id, bea.id}
    assert [p.id for p in client.patients.list(given_name="Ada", family_name="Okafor")] == [ada.id]
    assert len(client.patients.list(limit=2)) == 2
    assert [p.id for p in client.patients.list()] == sorted(p.id for p in client.patients.list())
    with pytest.raises(ValueError, match="birth_date"):
        client.patients.list(birth_date="1950-03-01")

    w1 = client.wounds.add(patient_id=ada.id, body_site="sacrum")
    w2 = client.wounds.add(patient_id=ada.id, body_site="heel", status="healed")
    client.wounds.add(patient_id=bea.id, body_site="shin")
    assert {w.id for w in client.wounds.list(patient_id=ada.id)} == {w1.id, w2.id}
    assert [w.id for w in client.wounds.list(patient_id=ada.id, status="healed")] == [w2.id]
    client.wounds.delete(w1.id)
    assert [w.id for w in client.wounds.list(patient_id=ada.id)] == [w2.id]

    n1 = client.notes.add(patient_id=ada.id, wound_id=w2.id, author="Dr M", text="a")
    n2 = client.notes.add(patient_id=ada.id, author="Dr M", text="b")
    assert {n.id for n in client.notes.list(patient_id=ada.id)} == {n1.id, n2.id}
    assert [n.id for n in client.notes.list(wound_id=w2.id)] == [n1.id]
    with pytest.raises(ValueError):
        client.notes.list(author="Dr M")


def test_search_by_prefix_any_case_with_wildcards_escaped(tmp_store: Any) -> None:
    client = tmp_store()
    okafor = add_patient(client, "Ada", "Okafor", mrn="MRN-100")
    brown = add_patient(client, "Chidi", "Brown", mrn="X_1")
    odd = add_patient(client, "100%", "Percent")
    gone = add_patient(client, "Okay", "Deleted")
    client.patients.delete(gone.id)
    assert [p.id for p in client.patients.search("oka")] == [okafor.id]
    assert [p.id for p in client.patients.search("OKA", include_deleted=True)] == [
        gone.id,  # ordered by family name: Deleted < Okafor
        okafor.id,
    ]
    assert [p.id for p in client.patients.search("chi")] == [brown.id]
    assert [p.id for p in client.patients.search("mrn-1")] == [okafor.id]
    assert [p.id for p in client.patients.search("100%")] == [odd.id]
    assert client.patients.search("1%") == []  # % is literal, not a wildcard
    assert [p.id for p in client.patients.search("X_")] == [brown.id]
    assert client.patients.search("X%") == []
    assert client.patients.search("_") == []
    assert client.patients.search("") != []
    assert len(client.patients.search("", limit=1)) == 1


def test_for_wound_orders_by_capture_time_and_windows_it(tmp_store: Any) -> None:
    client = tmp_store()
    plus2 = timezone(timedelta(hours=2))
    # Written with different offsets: order and windows must follow the instant.
    early = add_assessment(client, "w-1", datetime(2024, 5, 1, 10, 0, tzinfo=plus2))  # 08:00Z
    mid = add_assessment(client, "w-1", T0)  # 09:00Z
    late = add_assessment(client, "w-1", T0 + timedelta(minutes=30, microseconds=5))
    add_assessment(client, "w-2", T0)
    gone = add_assessment(client, "w-1", T0 + timedelta(hours=1))
    client.assessments.delete(gone.id)

    def ids(**window: Any) -> list[str]:
        return [a.id for a in client.assessments.for_wound("w-1", **window)]

    assert ids() == [early.id, mid.id, late.id]
    assert ids(include_deleted=True) == [early.id, mid.id, late.id, gone.id]
    assert ids(since=T0) == [mid.id, late.id]
    assert ids(since=T0 - timedelta(minutes=30)) == [mid.id, late.id]
    assert ids(since=T0 + timedelta(microseconds=1)) == [late.id]
    assert ids(until=T0) == [early.id]
    assert ids(since=datetime(2024, 5, 1, 10, 0, tzinfo=plus2), until=T0) == [early.id]
    assert ids(since=T0, until=T0 + timedelta(minutes=30, microseconds=5)) == [mid.id]
    assert [a.id for a in client.assessments.list(wound_id="w-2")] != []


# ---------------------------------------------------------------- conflicts, history, sync


def test_conflicts_resolve_and_history_through_the_client(tmp_store: Any) -> None:
    a, b = tmp_store("a"), tmp_store("b")
    patient = add_patient(a)
    run_in_memory(a.sync_session(), b.sync_session())
    a.patients.update(patient.id, given_name="Ann")
    b.patients.update(patient.id, given_name="Bea", mrn="MRN-9")
    run_in_memory(a.sync_session(), b.sync_session())
    assert a.conflicts() == b.conflicts()
    (conflict,) = a.conflicts()
    assert conflict.field == "given_name"
    assert {(v.device_id, v.value) for v in conflict.values} == {
        (a.device_id, "Ann"),
        (b.device_id, "Bea"),
    }
    assert a.patients.conflicts(patient.id) == [conflict]
    assert a.patients.get(patient.id).mrn == "MRN-9"
    with pytest.raises(NoConflictError):
        a.patients.resolve(patient.id, "mrn", "MRN-1")
    resolved = b.patients.resolve(patient.id, "given_name", "Ann")
    assert resolved.given_name == "Ann"
    assert b.conflicts() == []
    run_in_memory(a.sync_session(), b.sync_session())
    assert a.conflicts() == [] and a.patients.conflicts(patient.id) == []
    assert a.patients.get(patient.id).given_name == "Ann"
    history = a.patients.history(patient.id)
    assert history[0].action == "created" and history[0].device_id == a.device_id
    assert {h.device_id for h in history} == {a.device_id, b.device_id}
    assert [h.at for h in history] == sorted(h.at for h in history)
    assert projections_match_documents(a) and projections_match_documents(b)


def test_sync_between_clients_converges(tmp_store: Any, snapshot: Callable[..., Any]) -> None:
    a, b = tmp_store("a"), tmp_store("b")
    add_patient(a, "From A")
    patient_b = add_patient(b, "From B")
    b.wounds.add(patient_id=patient_b.id, body_site="heel")
    sa, sb = a.sync_session(), b.sync_session()
    run_in_memory(sa, sb)
    assert snapshot(a) == snapshot(b)
    assert len(a.patients.list()) == 2
    assert len(sa.report.received) == 2 and len(sb.report.received) == 1


def test_another_clinics_records_are_refused_by_sync(tmp_store: Any) -> None:
    ours, theirs = tmp_store("ours"), tmp_store("theirs", clinic_id="clinic-2")
    add_patient(ours, "Ours")
    add_patient(theirs, "Theirs")
    s_ours, s_theirs = ours.sync_session(), theirs.sync_session()
    run_in_memory(s_ours, s_theirs)
    assert [p.given_name for p in ours.patients.list()] == ["Ours"]
    assert [p.given_name for p in theirs.patients.list()] == ["Theirs"]
    assert len(s_ours.report.rejected) == 1 and len(s_theirs.report.refused_by_peer) == 1
    assert "clinic-2" in s_ours.report.rejected[0].reason


# ---------------------------------------------------------------- access events


def test_every_read_and_write_emits_an_access_event(tmp_store: Any) -> None:
    client, peer = tmp_store("a"), tmp_store("b")
    events: list[AccessEvent] = []
    client.add_access_listener(events.append)

    def last(n: int = 1) -> list[tuple[str, str, tuple[str, ...], str]]:
        return [(e.action, e.collection, e.record_ids, e.outcome) for e in events[-n:]]

    patient = add_patient(client)
    assert last() == [("create", "patients", (patient.id,), "ok")]
    client.patients.get(patient.id)
    assert last() == [("read", "patients", (patient.id,), "ok")]
    client.patients.update(patient.id, mrn="MRN-1")
    assert last() == [("update", "patients", (patient.id,), "ok")]
    client.patients.list()
    assert last() == [("list", "patients", (patient.id,), "ok")]
    client.patients.search("Ad")
    assert last() == [("search", "patients", (patient.id,), "ok")]
    client.patients.delete(patient.id)
    assert last() == [("delete", "patients", (patient.id,), "ok")]
    client.patients.restore(patient.id)
    assert last() == [("restore", "patients", (patient.id,), "ok")]
    client.patients.history(patient.id)
    assert last() == [("history", "patients", (patient.id,), "ok")]
    client.patients.conflicts(patient.id)
    assert last() == [("conflicts", "patients", (patient.id,), "ok")]
    client.conflicts()
    assert last() == [("conflicts", "*", (), "ok")]

    wound = client.wounds.add(patient_id=patient.id, body_site="sacrum")
    assert last() == [("create", "wounds", (wound.id,), "ok")]
    client.wounds.update(wound.id, status="healing")
    client.wounds.list(patient_id=patient.id)
    assert last(2) == [
        ("update", "wounds", (wound.id,), "ok"),
        ("list", "wounds", (wound.id,), "ok"),
    ]
    assessment = add_assessment(client, wound.id, T0)
    client.assessments.for_wound(wound.id)
    assert last() == [("list", "assessments", (assessment.id,), "ok")]
    note = client.notes.add(patient_id=patient.id, author="Dr M", text="x")
    client.notes.splice(note.id, 0, 0, "y")
    client.notes.edit(note.id, "z")
    assert last(3) == [
        ("create", "notes", (note.id,), "ok"),
        ("update", "notes", (note.id,), "ok"),
        ("update", "notes", (note.id,), "ok"),
    ]
    assert all(e.device_id == client.device_id for e in events)
    assert all(e.at.tzinfo is not None for e in events)

    # Failures are audited too, with the error's class as the outcome.
    with pytest.raises(RecordNotFoundError):
        client.patients.get("missing")
    assert last() == [("read", "patients", ("missing",), "RecordNotFoundError")]
    with pytest.raises(RecordValidationError):
        client.patients.update(patient.id, given_name="")
    assert last() == [("update", "patients", (patient.id,), "RecordValidationError")]
    with pytest.raises(NoConflictError):
        client.patients.resolve(patient.id, "given_name", "X")
    assert last() == [("resolve", "patients", (patient.id,), "NoConflictError")]
    with pytest.raises(RecordValidationError):
        client.wounds.add(patient_id=patient.id)
    assert last() == [("create", "wounds", (), "RecordValidationError")]

    # Sync reads and writes patient data as well.
    from_peer = add_patient(peer, "From peer")
    before = len(events)
    run_in_memory(client.sync_session(), peer.sync_session())
    sync_events = events[before:]
    assert {e.action for e in sync_events} <= {"sync-read", "sync-write"}
    written = {i for e in sync_events if e.action == "sync-write" for i in e.record_ids}
    read = {i for e in sync_events if e.action == "sync-read" for i in e.record_ids}
    assert written == {from_peer.id}
    assert read >= {patient.id, wound.id, assessment.id, note.id}  # sent whole to the peer
    assert all(e.outcome == "ok" for e in sync_events)
