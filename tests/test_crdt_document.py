"""Record documents: typed create/read/update, merges, tombstones, conflicts, history."""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from automerge import core as am

from crdt import (
    ClinicalNote,
    DocumentError,
    MergeRejectedError,
    NoConflictError,
    Patient,
    RecordDocument,
    RecordValidationError,
    Wound,
    WoundAssessment,
    actor_for_device,
    device_for_actor,
    new_record_id,
)

DEV_A = "00000000-0000-4000-8000-00000000000a"
DEV_B = "00000000-0000-4000-8000-00000000000b"
DEV_C = "00000000-0000-4000-8000-00000000000c"
CLINIC = "clinic-1"
T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)


def patient(device: str = DEV_A, **values: Any) -> RecordDocument:
    fields = {"given_name": "Ada", "family_name": "Okafor", "birth_date": "1950-03-01"}
    return RecordDocument.create(
        Patient, {**fields, **values}, device_id=device, clinic_id=CLINIC, now=T0
    )


def wound(device: str = DEV_A) -> RecordDocument:
    return RecordDocument.create(
        Wound, {"patient_id": "p-1", "body_site": "left heel"}, device_id=device, clinic_id=CLINIC
    )


def note(text: str, device: str = DEV_A) -> RecordDocument:
    return RecordDocument.create(
        ClinicalNote,
        {"patient_id": "p-1", "author": "Dr Mensah", "text": text},
        device_id=device,
        clinic_id=CLINIC,
    )


def sync_pair(a: RecordDocument, b: RecordDocument) -> None:
    """Merge both ways, as two replicas that met would."""
    a.merge(b)
    b.merge(a)


def hand_edit(doc: RecordDocument, device: str, edit: Callable[[Any], None]) -> RecordDocument:
    """A replica of `doc` changed directly through automerge.core, bypassing validation."""
    raw = am.Document.load(doc.save())
    raw.set_actor(actor_for_device(device))
    with raw.transaction() as tx:
        edit(tx)
    return RecordDocument.load(raw.save())


# ---------------------------------------------------------------- create / read


def test_create_fills_metadata_and_reads_back_typed() -> None:
    doc = patient(mrn="MRN-7", contacts=[{"kind": "phone", "value": "+44 20 7946 0000"}])
    record = doc.read()
    assert isinstance(record, Patient)
    assert (record.given_name, record.family_name, record.mrn) == ("Ada", "Okafor", "MRN-7")
    assert record.birth_date.isoformat() == "1950-03-01"
    assert record.contacts[0].value == "+44 20 7946 0000"
    assert record.clinic_id == CLINIC
    assert record.created_by == record.updated_by == DEV_A
    assert record.created_at == record.updated_at == T0
    assert record.deleted is False
    assert doc.id == record.id
    assert doc.collection == "patients"


def test_save_and_load_round_trip() -> None:
    doc = patient()
    loaded = RecordDocument.load(doc.save(), device_id=DEV_B)
    assert loaded.read() == doc.read()
    assert loaded.heads == doc.heads
    assert loaded.schema is Patient


@pytest.mark.parametrize(
    "values",
    [
        {"given_name": "Ada", "family_name": "Okafor"},  # birth_date missing
        {"given_name": "", "family_name": "Okafor", "birth_date": "1950-03-01"},
        {"given_name": 7, "family_name": "Okafor", "birth_date": "1950-03-01"},
        {"given_name": "Ada", "family_name": "Okafor", "birth_date": "2999-01-01"},
        {"given_name": "Ada", "family_name": "Okafor", "birth_date": "1950-03-01", "x": 1},
        {"given_name": "Ada", "family_name": "O", "birth_date": "1950-03-01", "deleted": True},
    ],
    ids=["missing", "empty", "int", "future", "unknown", "metadata"],
)
def test_create_rejects_invalid_values(values: dict[str, Any]) -> None:
    with pytest.raises(RecordValidationError) as caught:
        RecordDocument.create(Patient, values, device_id=DEV_A, clinic_id=CLINIC)
    assert caught.value.collection == "patients"
    assert caught.value.errors


def test_load_refuses_what_is_not_a_record() -> None:
    with pytest.raises(DocumentError):
        RecordDocument.load(b"not automerge at all")
    plain = am.Document()
    with plain.transaction() as tx:
        tx.put(am.ROOT, "hello", am.ScalarType.Str, "world")
    with pytest.raises(DocumentError):
        RecordDocument.load(plain.save())


def test_record_ids_are_uuid7_unique_and_in_creation_order() -> None:
    ids = [new_record_id() for _ in range(3000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    parsed = [uuid.UUID(i) for i in ids]
    assert {(u.version, u.variant) for u in parsed} == {(7, uuid.RFC_4122)}
    assert [str(u) for u in parsed] == ids
    # The random part differs from id to id, not only the time part.
    assert len({u.int & ((1 << 62) - 1) for u in parsed}) == len(ids)
    created = patient()
    assert uuid.UUID(created.id).version == 7 and created.read().id == created.id


def test_a_forked_process_makes_other_record_ids_than_its_parent() -> None:
    new_record_id()  # the parent holds random bytes it has not used yet
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():  # Python 3.12+ warns of fork with threads about
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: its ids go to the parent, then it leaves at once
        os.close(read_end)
        os.write(write_end, " ".join(new_record_id() for _ in range(50)).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        child = pipe.read().split()
    os.waitpid(pid, 0)
    parent = [new_record_id() for _ in range(50)]
    assert len(child) == 50
    # Compared without the time part: both may stamp the same milliseconds.
    assert not {i[14:] for i in child} & {i[14:] for i in parent}


def test_actor_ids_are_device_uuids() -> None:
    assert actor_for_device(DEV_A) == uuid.UUID(DEV_A).bytes
    assert device_for_actor(actor_for_device(DEV_A)) == DEV_A
    with pytest.raises(DocumentError):
        actor_for_device("not-a-uuid")


# ---------------------------------------------------------------- update / merge


def test_update_writes_only_changed_fields() -> None:
    doc = patient()
    heads = doc.heads
    assert doc.update({"given_name": "Ada"}, device_id=DEV_A) == []
    assert doc.heads == heads  # nothing written
    assert doc.update({"given_name": "Adaeze", "family_name": "Okafor"}, device_id=DEV_B) == [
        "given_name"
    ]
    assert doc.read().given_name == "Adaeze"
    assert doc.read().updated_by == DEV_B


def test_update_refuses_invalid_and_leaves_document_unchanged() -> None:
    doc = patient()
    heads, values = doc.heads, doc.values()
    for changes in ({"given_name": ""}, {"nope": 1}, {"birth_date": "yesterday"}):
        with pytest.raises(RecordValidationError):
            doc.update(changes, device_id=DEV_A)
    assert doc.heads == heads
    assert doc.values() == values


def test_concurrent_writes_of_different_fields_merge_field_by_field() -> None:
    a = patient()
    b = a.fork(device_id=DEV_B)
    a.update({"given_name": "Adaeze"}, device_id=DEV_A)
    b.update({"mrn": "MRN-9", "sex": "female"}, device_id=DEV_B)
    assert a.merge(b) is True
    assert b.merge(a) is True
    assert a.heads == b.heads
    for doc in (a, b):
        record = doc.read()
        assert (record.given_name, record.mrn, record.sex.value) == ("Adaeze", "MRN-9", "female")
        assert doc.conflicts() == []
    assert a.merge(b) is False  # nothing new the second time


def test_merge_refuses_another_record() -> None:
    with pytest.raises(DocumentError):
        patient().merge(patient())


def test_merge_is_order_independent() -> None:
    base = patient()
    replicas = [base.fork(device_id=d) for d in (DEV_A, DEV_B, DEV_C)]
    for i, replica in enumerate(replicas):
        replica.update(
            {"mrn": f"MRN-{i}", "family_name": f"Name{i}"}, device_id=(DEV_A, DEV_B, DEV_C)[i]
        )
    forward, backward = base.fork(), base.fork()
    for replica in replicas:
        forward.merge(replica)
    for replica in reversed(replicas):
        backward.merge(replica)
    assert forward.heads == backward.heads
    assert forward.values() == backward.values()
    assert forward.conflicts() == backward.conflicts()


# ---------------------------------------------------------------- tombstones


def test_delete_is_a_tombstone_and_restore_undoes_it() -> None:
    doc = patient()
    assert doc.delete(device_id=DEV_A) is True
    assert doc.delete(device_id=DEV_A) is False
    record = doc.read()
    assert record.deleted is True
    assert record.given_name == "Ada"  # the data stays
    assert doc.restore(device_id=DEV_B) is True
    assert doc.restore(device_id=DEV_B) is False
    assert doc.read().deleted is False


def test_delete_on_one_replica_and_edit_on_another_keeps_both() -> None:
    a = patient()
    b = a.fork(device_id=DEV_B)
    a.delete(device_id=DEV_A)
    b.update({"given_name": "Adaeze", "mrn": "MRN-3"}, device_id=DEV_B)
    sync_pair(a, b)
    for doc in (a, b):
        record = doc.read()
        assert record.deleted is True
        assert (record.given_name, record.mrn) == ("Adaeze", "MRN-3")
        assert doc.conflicts() == []


def test_concurrent_deletes_are_not_a_conflict() -> None:
    a = patient()
    b = a.fork(device_id=DEV_B)
    a.delete(device_id=DEV_A)
    b.delete(device_id=DEV_B)
    sync_pair(a, b)
    assert a.read().deleted is True
    assert a.conflicts() == b.conflicts() == []


# ---------------------------------------------------------------- conflicts


def conflicted_pair() -> tuple[RecordDocument, RecordDocument]:
    a = patient()
    b = a.fork(device_id=DEV_B)
    a.update({"given_name": "Ann"}, device_id=DEV_A)
    b.update({"given_name": "Bea", "family_name": "Brown"}, device_id=DEV_B)
    sync_pair(a, b)
    return a, b


def test_concurrent_writes_of_one_field_are_a_conflict_listed_with_both_devices() -> None:
    a, b = conflicted_pair()
    conflicts = a.conflicts()
    assert conflicts == b.conflicts()
    assert [c.field for c in conflicts] == ["given_name"]
    conflict = conflicts[0]
    assert (conflict.record_id, conflict.collection) == (a.id, "patients")
    assert {(v.device_id, v.value) for v in conflict.values} == {(DEV_A, "Ann"), (DEV_B, "Bea")}
    current = [v for v in conflict.values if v.current]
    assert len(current) == 1
    assert a.read().given_name == b.read().given_name == current[0].value
    assert a.read().family_name == "Brown"  # the other field merged without conflict


def test_resolve_supersedes_every_concurrent_value() -> None:
    a, b = conflicted_pair()
    loser = next(v.value for v in a.conflicts()[0].values if not v.current)
    a.resolve("given_name", loser, device_id=DEV_A)
    assert a.conflicts() == []
    assert a.read().given_name == loser
    b.merge(a)
    assert b.conflicts() == []
    assert b.read().given_name == loser
    assert a.heads == b.heads


def test_resolve_keeping_the_current_value_still_settles_the_conflict() -> None:
    a, b = conflicted_pair()
    winner = a.read().given_name
    b.resolve("given_name", winner, device_id=DEV_B)
    a.merge(b)
    assert a.conflicts() == b.conflicts() == []
    assert a.read().given_name == winner


def test_three_way_conflict_lists_all_three_devices() -> None:
    base = patient()
    replicas = [base.fork(device_id=d) for d in (DEV_A, DEV_B, DEV_C)]
    for device, replica, value in zip((DEV_A, DEV_B, DEV_C), replicas, "XYZ", strict=True):
        replica.update({"mrn": f"MRN-{value}"}, device_id=device)
    for replica in replicas:
        for other in replicas:
            replica.merge(other)
    conflicts = [r.conflicts() for r in replicas]
    assert conflicts[0] == conflicts[1] == conflicts[2]
    assert {v.device_id for v in conflicts[0][0].values} == {DEV_A, DEV_B, DEV_C}


def test_resolve_without_conflict_or_with_invalid_value_refused() -> None:
    a, _ = conflicted_pair()
    heads = a.heads
    with pytest.raises(NoConflictError):
        a.resolve("family_name", "Brown", device_id=DEV_A)
    with pytest.raises(RecordValidationError):
        a.resolve("given_name", "", device_id=DEV_A)
    assert a.heads == heads
    assert len(a.conflicts()) == 1
    with pytest.raises(NoConflictError):
        patient().resolve("given_name", "Ann", device_id=DEV_A)


def test_a_later_write_seen_by_both_sides_ends_the_conflict() -> None:
    a, b = conflicted_pair()
    b.update({"given_name": "Beatrice"}, device_id=DEV_B)
    a.merge(b)
    assert a.conflicts() == []
    assert a.read().given_name == "Beatrice"


def test_json_field_conflict_reports_decoded_values() -> None:
    a = patient()
    b = a.fork(device_id=DEV_B)
    a.update({"contacts": [{"kind": "phone", "value": "111"}]}, device_id=DEV_A)
    b.update({"contacts": [{"kind": "email", "value": "b@example.org"}]}, device_id=DEV_B)
    sync_pair(a, b)
    (conflict,) = a.conflicts()
    assert conflict.field == "contacts"
    values = sorted(v.value[0]["kind"] for v in conflict.values)
    assert values == ["email", "phone"]


# ---------------------------------------------------------------- note text


@pytest.mark.parametrize(
    ("base", "edit_a", "edit_b", "expected"),
    [
        (
            "Wound clean.",
            "Wound clean. Dressing changed.",
            "Today: Wound clean.",
            "Today: Wound clean. Dressing changed.",
        ),
        ("abc def ghi", "abc DEF ghi", "abc def GHI", "abc DEF GHI"),
        ("slough 20%", "slough 10%", "slough 20%, granulation 80%", "slough 10%, granulation 80%"),
        ("", "from A", "", "from A"),
        (
            "Größe: 3 cm — Wundrand gerötet",
            "Größe: 2,5 cm — Wundrand gerötet",
            "Größe: 3 cm — Wundrand rosig",
            "Größe: 2,5 cm — Wundrand rosig",
        ),
        ("pain 😐 today", "pain 🙂 today", "pain 😐 today 👍", "pain 🙂 today 👍"),
        ("創傷は清潔", "創傷は清潔です", "今日、創傷は清潔", "今日、創傷は清潔です"),
        # e + combining acute accent: two code points, edited independently.
        (
            "cafe\u0301 visit",
            "cafe\u0301 visit done",
            "the cafe\u0301 visit",
            "the cafe\u0301 visit done",
        ),
        # A deletes everything it saw; B's concurrent insertion survives.
        ("delete me entirely", "", "delete me entirely!", "!"),
    ],
)
def test_concurrent_note_edits_both_survive(
    base: str, edit_a: str, edit_b: str, expected: str
) -> None:
    a = note(base)
    b = a.fork(device_id=DEV_B)
    a.update({"text": edit_a}, device_id=DEV_A)
    b.update({"text": edit_b}, device_id=DEV_B)
    sync_pair(a, b)
    merged = a.read().text
    assert merged == b.read().text
    assert merged == expected
    assert a.conflicts() == []  # text merges; it is never a conflict


def test_concurrent_inserts_at_one_position_keep_both_in_one_order() -> None:
    a = note("BP ok.")
    b = a.fork(device_id=DEV_B)
    a.splice_text("text", 6, 0, " Pulse 72.", device_id=DEV_A)
    b.splice_text("text", 6, 0, " Temp 37.1 °C.", device_id=DEV_B)
    sync_pair(a, b)
    merged = a.read().text
    assert merged == b.read().text
    assert merged in ("BP ok. Pulse 72. Temp 37.1 °C.", "BP ok. Temp 37.1 °C. Pulse 72.")


def test_splice_text_positions_are_code_points() -> None:
    doc = note("a😀b")
    doc.splice_text("text", 1, 1, "🎉🎉", device_id=DEV_A)
    assert doc.read().text == "a🎉🎉b"
    doc.splice_text("text", 3, 1, "", device_id=DEV_A)
    assert doc.read().text == "a🎉🎉"
    loaded = RecordDocument.load(doc.save())
    assert loaded.read().text == "a🎉🎉"


@pytest.mark.parametrize(
    ("field", "position", "delete"),
    [("text", 5, 0), ("text", 0, 4), ("text", -1, 0), ("author", 0, 0)],
)
def test_splice_text_refuses_bad_ranges_and_non_text_fields(
    field: str, position: int, delete: int
) -> None:
    doc = note("abc")
    heads = doc.heads
    with pytest.raises(RecordValidationError):
        doc.splice_text(field, position, delete, "x", device_id=DEV_A)
    assert doc.heads == heads


# ---------------------------------------------------------------- history


def test_history_lists_device_time_action_and_fields_in_time_order() -> None:
    a = patient()
    b = a.fork(device_id=DEV_B)
    b.update({"mrn": "MRN-1"}, device_id=DEV_B, now=T0 + timedelta(minutes=2))
    a.update(
        {"given_name": "Adaeze", "sex": "female"}, device_id=DEV_A, now=T0 + timedelta(minutes=1)
    )
    a.merge(b)
    a.delete(device_id=DEV_C, now=T0 + timedelta(minutes=3))
    a.restore(device_id=DEV_A, now=T0 + timedelta(minutes=4))
    history = a.history()
    assert [(h.action, h.device_id, h.at - T0) for h in history] == [
        ("created", DEV_A, timedelta(0)),
        ("updated", DEV_A, timedelta(minutes=1)),
        ("updated", DEV_B, timedelta(minutes=2)),
        ("deleted", DEV_C, timedelta(minutes=3)),
        ("restored", DEV_A, timedelta(minutes=4)),
    ]
    assert set(history[0].fields) >= {"given_name", "family_name", "birth_date"}
    assert history[1].fields == ("given_name", "sex")
    assert history[2].fields == ("mrn",)
    assert history[3].fields == history[4].fields == ("deleted",)
    assert len({h.change for h in history}) == len(history)
    assert [h.change for h in RecordDocument.load(a.save()).history()] == [
        h.change for h in history
    ]


# ---------------------------------------------------------------- immutable fields


@pytest.mark.parametrize(
    ("make", "changes"),
    [
        (patient, {"clinic_id": "clinic-2"}),
        (patient, {"id": "another-id"}),
        (wound, {"patient_id": "p-2"}),
    ],
)
def test_update_refuses_immutable_fields(
    make: Callable[[], RecordDocument], changes: dict[str, Any]
) -> None:
    doc = make()
    heads = doc.heads
    with pytest.raises(RecordValidationError):
        doc.update(changes, device_id=DEV_A)
    assert doc.heads == heads


def test_update_refuses_assessment_links() -> None:
    doc = RecordDocument.create(
        WoundAssessment,
        {"wound_id": "w-1", "patient_id": "p-1", "captured_at": T0.isoformat(), "device_id": DEV_A},
        device_id=DEV_A,
        clinic_id=CLINIC,
    )
    for changes in ({"wound_id": "w-2"}, {"patient_id": "p-2"}):
        with pytest.raises(RecordValidationError):
            doc.update(changes, device_id=DEV_A)


@pytest.mark.parametrize(
    ("make", "field", "value"),
    [
        (patient, "clinic_id", "clinic-2"),
        (wound, "patient_id", "p-2"),
        (wound, "clinic_id", "clinic-2"),
    ],
)
def test_merge_that_changes_an_immutable_field_is_refused(
    make: Callable[[], RecordDocument], field: str, value: str
) -> None:
    target = make()
    moved = hand_edit(target, DEV_B, lambda tx: tx.put(am.ROOT, field, am.ScalarType.Str, value))
    assert moved.values()[field] == value  # the hand-made replica really differs
    heads, values, saved = target.heads, target.values(), target.save()
    with pytest.raises(MergeRejectedError) as caught:
        target.merge(moved)
    assert caught.value.doc_id == target.id
    assert field in caught.value.reason
    assert (target.heads, target.values(), target.save()) == (heads, values, saved)


# ---------------------------------------------------------------- merge validation


@pytest.mark.parametrize(
    "edit",
    [
        lambda tx: tx.put(am.ROOT, "given_name", am.ScalarType.Int, 42),
        lambda tx: tx.put(am.ROOT, "given_name", am.ScalarType.Str, ""),
        lambda tx: tx.put(am.ROOT, "birth_date", am.ScalarType.Str, "not a date"),
        lambda tx: tx.put(am.ROOT, "sex", am.ScalarType.Str, "dragon"),
        lambda tx: tx.put(am.ROOT, "contacts", am.ScalarType.Str, "{not json"),
        lambda tx: tx.put(am.ROOT, "surprise", am.ScalarType.Str, "extra field"),
        lambda tx: tx.delete(am.ROOT, "family_name"),
        lambda tx: tx.put_object(am.ROOT, "given_name", am.ObjType.Map),
    ],
    ids=["int", "empty", "date", "enum", "json", "extra", "missing", "object"],
)
def test_merge_of_an_invalid_replica_is_refused_and_changes_nothing(
    edit: Callable[[Any], None],
) -> None:
    target = patient()
    target.update({"mrn": "MRN-1"}, device_id=DEV_A)
    bad = hand_edit(target, DEV_B, edit)
    heads, values, saved = target.heads, target.values(), target.save()
    with pytest.raises(MergeRejectedError):
        target.merge(bad)
    assert (target.heads, target.values(), target.save()) == (heads, values, saved)
    assert target.read().mrn == "MRN-1"


def test_merge_that_changes_the_collection_is_refused() -> None:
    target = patient()
    other = hand_edit(
        target, DEV_B, lambda tx: tx.put(am.ROOT, "collection", am.ScalarType.Str, "wounds")
    )
    heads = target.heads
    with pytest.raises(DocumentError):
        target.merge(other)
    assert target.heads == heads


def test_adopt_refuses_an_invalid_candidate() -> None:
    target = patient()
    candidate = target.automerge.fork()
    with candidate.transaction() as tx:
        tx.put(am.ROOT, "given_name", am.ScalarType.Int, 1)
    heads = target.heads
    with pytest.raises(MergeRejectedError):
        target.adopt(candidate)
    assert target.heads == heads
    assert target.read().given_name == "Ada"
