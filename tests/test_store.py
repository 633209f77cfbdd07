"""`EdgeClient` over its encrypted store: records, queries, conflicts and the access gate."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from crdt import COLLECTIONS, NoConflictError, RecordValidationError, apply_documents, run_in_memory
from edge_sdk import (
    AccessEvent,
    BlobNotFoundError,
    EdgeClient,
    ReadOnlyCollectionError,
    RecordNotFoundError,
    StoreClosedError,
    StoreError,
    StoreExistsError,
    StoreNotFoundError,
)
from edge_sdk._store import SCHEMA_VERSION

T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)


def add_patient(
    client: EdgeClient, given: str = "Ada", family: str = "Okafor", **extra: Any
) -> Any:
    return client.patients.add(
        given_name=given, family_name=family, birth_date="1950-03-01", **extra
    )


def add_assessment(client: EdgeClient, wound: Any, at: datetime, **extra: Any) -> Any:
    return client.assessments.add(
        wound_id=wound.id,
        patient_id=wound.patient_id,
        captured_at=at,
        device_id=client.device_id,
        **extra,
    )


def record_counts(client: EdgeClient) -> dict[str, int]:
    """How many records (deleted ones included) each collection holds."""
    return {name: len(client.collection(name).list(include_deleted=True)) for name in COLLECTIONS}


def projections_match_documents(client: EdgeClient) -> bool:
    store = client.replica.store
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


def test_an_init_cut_short_can_be_run_again(tmp_store: Any) -> None:
    # An init that died before writing its keyring leaves a database nobody can open.
    abandoned = tmp_store("a")
    abandoned_device = abandoned.device_id
    abandoned.close()
    (tmp_store.path("a") / "keyring.json").unlink()
    assert (tmp_store.path("a") / "coherency.db").exists()
    with pytest.raises(StoreNotFoundError):
        tmp_store.open("a")

    client = tmp_store("a")
    assert client.device_id != abandoned_device
    patient = add_patient(client, mrn="MRN-1")
    client.close()
    with tmp_store.open("a") as reopened:
        assert reopened.device_id == client.device_id
        assert reopened.patients.get(patient.id) == patient

    # Once the keyring is written the store is complete: init refuses, and keeps it.
    with pytest.raises(StoreExistsError):
        tmp_store("a")
    with tmp_store.open("a") as reopened:
        assert [p.id for p in reopened.patients.list()] == [patient.id]


def test_a_closed_client_refuses_to_be_used(tmp_store: Any) -> None:
    client = tmp_store()
    patient = add_patient(client)
    events: list[AccessEvent] = []
    client.add_access_listener(events.append)
    client.close()
    uses: list[Callable[[], Any]] = [
        lambda: client.patients.get(patient.id),
        lambda: client.patients.list(),
        lambda: client.patients.search("Ad"),
        lambda: client.conflicts(),
        lambda: client.find(patient.id),
    ]
    for use in uses:
        with pytest.raises(StoreClosedError, match="closed") as raised:
            use()
        assert isinstance(raised.value, StoreError)
    assert [e.outcome for e in events] == ["StoreClosedError"] * 5  # each attempt, find() too


@pytest.mark.parametrize("write", ["add", "update", "batch"])
def test_a_closed_client_refuses_writes_with_store_closed_error(tmp_store: Any, write: str) -> None:
    client = tmp_store()
    patient = add_patient(client)
    client.close()
    with pytest.raises(StoreClosedError, match="closed"):
        if write == "add":
            add_patient(client)
        elif write == "update":
            client.patients.update(patient.id, given_name="Bea")
        else:
            with client.batch():
                pass


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
        wound,
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
    heads = client.replica.document_heads()
    for call in (
        lambda: client.patients.update(patient.id, given_name=""),
        lambda: client.patients.update(patient.id, clinic_id="clinic-2"),
        lambda: client.patients.update(patient.id, unknown_field=1),
        lambda: client.wounds.update(wound.id, patient_id="someone-else"),
    ):
        with pytest.raises(RecordValidationError):
            call()
    assert client.replica.document_heads() == heads
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


def test_the_change_feed_numbers_every_write_once_in_write_order(tmp_store: Any) -> None:
    client = tmp_store()
    store = client.replica.store
    first = add_patient(client, "First")
    with client.batch():
        batched = [add_patient(client, f"P{i}") for i in range(5)]
        client.wounds.add(patient_id=batched[0].id, body_site="heel")
    client.patients.update(first.id, mrn="MRN-2")  # a rewrite moves to the end
    # Several documents in one call are numbered one after the other.
    documents = [store.get_document(p.id) for p in batched[1:3]]
    store.put_documents([d for d in documents if d is not None])
    feed = store.changed_since(0, limit=100)
    seqs = [seq for _, seq, _, _ in feed]
    assert seqs == sorted(set(seqs)) and seqs[-1] == store.feed_seq()
    order = [doc_id for doc_id, _, _, _ in feed]
    assert order[-3:] == [first.id, batched[1].id, batched[2].id]
    assert order[:3] == [batched[0].id, batched[3].id, batched[4].id]
    assert len(order) == 7 and projections_match_documents(client)


def test_notes_splice_and_edit(tmp_store: Any) -> None:
    client = tmp_store()
    patient = add_patient(client)
    note = client.notes.add(patient_id=patient.id, author="Dr M", text="Wound clean.")
    assert client.notes.splice(note.id, 6, 0, "very ").text == "Wound very clean."
    assert client.notes.edit(note.id, "Wound very clean. Größe 3 cm.").text.endswith("Größe 3 cm.")
    with pytest.raises(RecordValidationError):
        client.notes.splice(note.id, 500, 0, "x")


def test_new_records_must_reference_records_held_here(tmp_store: Any) -> None:
    client = tmp_store()
    ada, bea = add_patient(client, "Ada"), add_patient(client, "Bea")
    ada_wound = client.wounds.add(patient_id=ada.id, body_site="sacrum")
    bea_wound = client.wounds.add(patient_id=bea.id, body_site="heel")

    def assess(wound_id: str, patient_id: str) -> Any:
        return client.assessments.add(
            wound_id=wound_id, patient_id=patient_id, captured_at=T0, device_id=client.device_id
        )

    def note(patient_id: str, wound_id: str | None = None) -> Any:
        return client.notes.add(patient_id=patient_id, wound_id=wound_id, author="Dr M", text="x")

    refused: list[tuple[str, Callable[[], Any]]] = [
        ("patient_id", lambda: client.wounds.add(patient_id="p-1", body_site="shin")),
        ("patient_id", lambda: client.wounds.add(body_site="shin")),
        ("patient_id", lambda: client.wounds.add(patient_id=ada_wound.id, body_site="shin")),
        ("wound_id", lambda: assess("w-1", ada.id)),
        ("wound_id", lambda: assess(ada.id, ada.id)),  # a patient is not a wound
        ("patient_id", lambda: assess(bea_wound.id, ada.id)),
        ("patient_id", lambda: note("p-1")),
        ("patient_id", lambda: note("p-1", ada_wound.id)),
        ("wound_id", lambda: note(ada.id, "w-1")),
        ("wound_id", lambda: note(ada.id, bea_wound.id)),
        ("patient_id", lambda: client.conditions.add(patient_id="p-1", description="CKD")),
        ("wound_id", lambda: client.care_plans.add(patient_id=ada.id, wound_id="w-1")),
        ("patient_id", lambda: client.care_plans.add(patient_id=ada.id, wound_id=bea_wound.id)),
    ]
    counts, heads = record_counts(client), client.replica.document_heads()
    for field_name, create in refused:
        with pytest.raises(RecordValidationError) as raised:
            create()
        assert [line.split(":")[0] for line in raised.value.errors] == [field_name]
    assert record_counts(client) == counts
    assert client.replica.document_heads() == heads

    # The same records with matching references are accepted, also inside one batch.
    with client.batch():
        carl = add_patient(client, "Carl")
        carl_wound = client.wounds.add(patient_id=carl.id, body_site="shin")
        assert assess(carl_wound.id, carl.id).patient_id == carl.id
        assert note(carl.id, carl_wound.id).wound_id == carl_wound.id
        assert note(carl.id).wound_id is None
        assert client.conditions.add(patient_id=carl.id, description="CKD").patient_id == carl.id
        plan = client.care_plans.add(patient_id=carl.id, wound_id=carl_wound.id)
        assert plan.wound_id == carl_wound.id
    assert record_counts(client) == {
        "patients": 3,
        "wounds": 3,
        "assessments": 1,
        "notes": 2,
        "conditions": 1,
        "allergies": 0,
        "medications": 0,
        "care_plans": 1,
        "decisions": 0,
        "intents": 0,
        "directory": 0,
        "availability": 0,
        "catalogue": 0,
        "invoices": 0,
        "notices": 0,
    }


def test_server_owned_decisions_are_read_only_on_a_device(tmp_store: Any) -> None:
    client = tmp_store()
    with pytest.raises(ReadOnlyCollectionError, match="server-owned"):
        client.decisions.add(intent_id="i-1", status="accepted")
    assert client.decisions.list() == []


def test_a_deleted_patient_gets_no_new_wound(tmp_store: Any) -> None:
    client = tmp_store()
    patient = add_patient(client)
    client.wounds.add(patient_id=patient.id, body_site="sacrum")
    client.patients.delete(patient.id)
    counts = record_counts(client)
    with pytest.raises(RecordValidationError, match="patient_id"):
        client.wounds.add(patient_id=patient.id, body_site="heel")
    assert record_counts(client) == counts
    client.patients.restore(patient.id)
    assert client.wounds.add(patient_id=patient.id, body_site="heel").patient_id == patient.id
    assert len(client.wounds.list(patient_id=patient.id)) == 2


def test_records_received_by_sync_need_not_find_their_patient(tmp_store: Any) -> None:
    a, b = tmp_store("a"), tmp_store("b")
    patient = add_patient(a)
    wound = a.wounds.add(patient_id=patient.id, body_site="sacrum")
    saved = a.replica.store.saved_document(wound.id)
    assert saved is not None

    # B receives the wound alone: a wound may arrive before its patient.
    report = apply_documents(b.replica.documents, [(wound.id, saved)], device_id=b.device_id)
    assert report.rejected == []
    assert report.received == {wound.id}
    assert b.wounds.get(wound.id) == wound
    assert b.patients.list(include_deleted=True) == []
    # B's own new records are still checked, until the patient arrives.
    with pytest.raises(RecordValidationError, match="patient_id"):
        b.notes.add(patient_id=patient.id, wound_id=wound.id, author="Dr M", text="x")
    run_in_memory(a.sync_session(), b.sync_session())
    note = b.notes.add(patient_id=patient.id, wound_id=wound.id, author="Dr M", text="x")
    assert b.notes.get(note.id).wound_id == wound.id


# ---------------------------------------------------------------- queries


def test_saved_documents_of_many_ids_match_one_by_one_reads(tmp_store: Any) -> None:
    client = tmp_store("a")
    with client.batch():
        ids = [add_patient(client, family=f"F{i}").id for i in range(1203)]
    client.patients.update(ids[7], family_name="Changed")
    store = client.replica.store
    wanted = [*reversed(ids), "not-held"]  # more than one query's worth of ids

    found = store.saved_with_heads_of(wanted)

    assert set(found) == set(ids)
    for doc_id in ids:
        assert found[doc_id] == store.saved_with_heads(doc_id)
    assert store.saved_with_heads_of([]) == {}


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
    with pytest.raises(ValueError, match="nickname"):
        client.patients.list(nickname="Ada")

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
    assert {n.id for n in client.notes.list(author="Dr M")} == {n1.id, n2.id}  # any field
    with pytest.raises(ValueError):
        client.notes.list(text="a")  # collaborative text is not projected


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


def test_search_folds_unicode_case_and_matches_the_start_of_a_name_or_mrn(tmp_store: Any) -> None:
    client = tmp_store()
    muller = add_patient(client, "Jürgen", "Müller", mrn="A_1%")
    mueller = add_patient(client, "Hans", "Mueller", mrn="B-2")
    strasse = add_patient(client, "Öykü", "Straße", mrn="AX1")
    gone = add_patient(client, "Ilse", "Müllner", mrn="C-3")
    client.patients.delete(gone.id)

    def found(text: str, **options: Any) -> set[str]:
        return {p.id for p in client.patients.search(text, **options)}

    assert found("MÜ") == found("mü") == {muller.id}
    assert found("mue") == {mueller.id}  # not Müller: ü is not folded to ue
    assert found("jÜRGEN") == {muller.id}  # given name
    assert found("ÖYKÜ") == found("STRASSE") == {strasse.id}  # ß casefolds to ss
    # MRN prefixes, with LIKE's wildcards taken literally.
    assert found("a_1%") == found("A_") == {muller.id}
    assert found("A%") == set()
    assert found("b-2") == {mueller.id}
    # Only the start of a name or MRN matches, not the middle of one.
    assert found("ller") == found("üll") == found("rasse") == found("_1") == set()
    # Deleted patients only when asked for.
    assert found("Ilse") == set()
    assert found("Ilse", include_deleted=True) == {gone.id}
    assert found("MÜ", include_deleted=True) == {muller.id, gone.id}


def test_for_wound_orders_by_capture_time_and_windows_it(tmp_store: Any) -> None:
    client = tmp_store()
    patient = add_patient(client)
    w1 = client.wounds.add(patient_id=patient.id, body_site="sacrum")
    w2 = client.wounds.add(patient_id=patient.id, body_site="heel")
    plus2 = timezone(timedelta(hours=2))
    # Written with different offsets: order and windows must follow the instant.
    early = add_assessment(client, w1, datetime(2024, 5, 1, 10, 0, tzinfo=plus2))  # 08:00Z
    mid = add_assessment(client, w1, T0)  # 09:00Z
    late = add_assessment(client, w1, T0 + timedelta(minutes=30, microseconds=5))
    add_assessment(client, w2, T0)
    gone = add_assessment(client, w1, T0 + timedelta(hours=1))
    client.assessments.delete(gone.id)

    def ids(**window: Any) -> list[str]:
        return [a.id for a in client.assessments.for_wound(w1.id, **window)]

    assert ids() == [early.id, mid.id, late.id]
    assert ids(include_deleted=True) == [early.id, mid.id, late.id, gone.id]
    assert ids(since=T0) == [mid.id, late.id]
    assert ids(since=T0 - timedelta(minutes=30)) == [mid.id, late.id]
    assert ids(since=T0 + timedelta(microseconds=1)) == [late.id]
    assert ids(until=T0) == [early.id]
    assert ids(since=datetime(2024, 5, 1, 10, 0, tzinfo=plus2), until=T0) == [early.id]
    assert ids(since=T0, until=T0 + timedelta(minutes=30, microseconds=5)) == [mid.id]
    assert [a.id for a in client.assessments.list(wound_id=w2.id)] != []


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
    assessment = add_assessment(client, wound, T0)
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


def test_blob_reads_and_writes_emit_access_events(tmp_store: Any) -> None:
    client = tmp_store()
    events: list[AccessEvent] = []
    client.add_access_listener(events.append)

    def seen() -> list[tuple[str, str, tuple[str, ...], str]]:
        found = [(e.action, e.collection, e.record_ids, e.outcome) for e in events]
        events.clear()
        return found

    scan, mesh = b"point cloud " * 5000, b"mesh " * 300
    scan_sha, mesh_sha = hashlib.sha256(scan).hexdigest(), hashlib.sha256(mesh).hexdigest()
    assert client.blobs.put_bytes(scan).sha256 == scan_sha
    assert seen() == [("blob-write", "blobs", (scan_sha,), "ok")]
    assert client.blobs.put_stream(io.BytesIO(mesh)).sha256 == mesh_sha
    assert seen() == [("blob-write", "blobs", (mesh_sha,), "ok")]
    assert client.blobs.read_bytes(scan_sha) == scan
    assert seen() == [("blob-read", "blobs", (scan_sha,), "ok")]
    assert b"".join(client.blobs.open(mesh_sha)) == mesh
    assert seen() == [("blob-read", "blobs", (mesh_sha,), "ok")]
    out = io.BytesIO()
    assert client.blobs.copy_to(scan_sha, out) == len(scan)
    assert out.getvalue() == scan
    assert seen() == [("blob-read", "blobs", (scan_sha,), "ok")]
    assert all(e.device_id == client.device_id for e in events)

    # A failed read is audited too, with the error's class as the outcome.
    missing = "0" * 64
    for read in (
        lambda: client.blobs.read_bytes(missing),
        lambda: b"".join(client.blobs.open(missing)),
        lambda: client.blobs.copy_to(missing, io.BytesIO()),
    ):
        with pytest.raises(BlobNotFoundError):
            read()
        assert seen() == [("blob-read", "blobs", (missing,), "BlobNotFoundError")]


def test_a_version_4_store_gets_the_verification_tables(tmp_store: Any) -> None:
    client = tmp_store("old")
    patient = client.patients.add(given_name="A", family_name="B", birth_date="1950-01-01")
    store = client.replica.store
    store.execute("DROP TABLE unverified")
    store.execute("DROP TABLE quarantine")
    store.set_meta("schema_version", "4")
    client.close()
    with tmp_store.open("old") as reopened:
        assert reopened.replica.store.get_meta("schema_version") == str(SCHEMA_VERSION)
        assert reopened.verification_status().pending == 0
        assert reopened.patients.get(patient.id).family_name == "B"
        tables = {
            row[0]
            for row in reopened.replica.store.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'"
            ).fetchall()
        }
        assert {"unverified", "quarantine"} <= tables


def test_reads_from_another_thread_never_fail_nor_see_a_transaction_half_written(
    tmp_store: Any,
) -> None:
    """The app's thread reads while a sync thread writes (background sync): the shared
    connection is used by one thread at a time, and a read waits for a transaction."""
    client = tmp_store("a")
    errors: list[BaseException] = []
    seen: list[int] = []
    done = threading.Event()

    def write() -> None:
        try:
            for batch in range(30):
                with client.batch():
                    for i in range(5):
                        client.patients.add(
                            given_name=f"P{batch}-{i}",
                            family_name="Okafor",
                            birth_date="1950-01-01",
                        )
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    writer = threading.Thread(target=write)
    writer.start()
    try:
        while not done.is_set():
            seen.append(len(client.patients.list()))
            client.replica.store.peer_heads("server")
    except BaseException as exc:
        errors.append(exc)
    writer.join()
    assert errors == []
    assert len(seen) > 1 and all(count % 5 == 0 for count in seen), seen
    assert len(client.patients.list()) == 150


def test_a_failing_commit_listener_leaves_the_write_and_the_writer_alone(
    tmp_store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Whatever runs after a commit (upgrades, conflict policies, the sync status, live
    queries) cannot turn a committed write into an error a caller would retry."""
    client = tmp_store("a")
    heard: list[frozenset[str]] = []

    def broken(written: frozenset[str]) -> None:
        raise RuntimeError("listener bug")

    failing = client.replica.store.add_commit_listener(broken)
    client.replica.store.add_commit_listener(heard.append)
    with caplog.at_level(logging.ERROR, logger="edge_sdk"):
        patient = client.patients.add(
            given_name="Ada", family_name="Okafor", birth_date="1950-01-01"
        )
    assert [p.id for p in client.patients.list()] == [patient.id]
    assert heard == [frozenset({"patients"})]
    assert "a commit callback failed" in caplog.text and "listener bug" in caplog.text
    failing.cancel()
    caplog.clear()
    client.patients.add(given_name="Bo", family_name="Ng", birth_date="1960-01-01")
    assert "listener bug" not in caplog.text and len(heard) == 2


def test_a_claim_whose_storing_rolled_back_is_no_longer_awaited(tmp_store: Any) -> None:
    """Documents stored from a claim are marked to verify in the same transaction; when
    it rolls back, verification lets the mark go instead of waiting for a document the
    store does not hold (the background thread would otherwise never finish)."""
    from edge_sdk._store import UnverifiedDocument, projection_row

    writer, fresh = tmp_store("writer"), tmp_store("fresh")
    patient = add_patient(writer, "Ada")
    document = writer.replica.store.get_document(str(patient.id))
    assert document is not None
    record = document.read()
    dumped, as_json = record.model_dump(mode="json"), record.model_dump_json()
    claim = UnverifiedDocument(
        doc_id=document.id,
        collection="patients",
        data=document.save(),
        heads=document.heads,
        record=dumped,
        record_json=as_json,
        conflicted=False,
        projection=projection_row("patients", dumped, as_json, False),
    )
    store = fresh.replica.store
    with pytest.raises(RuntimeError, match="cut"), store.transaction():
        store.put_unverified([claim])
        raise RuntimeError("cut")

    status = fresh.wait_verified(timeout=30)
    assert status.done and status.quarantined == ()
    assert store.unverified() == [] and not store.held([document.id])
    # The same claim stored for good verifies (the writer is trusted on first use).
    store.put_unverified([claim])
    assert fresh.wait_verified(timeout=30).done
    assert fresh.patients.get(str(patient.id)).given_name == "Ada"
