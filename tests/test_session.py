"""Sync sessions between in-memory replicas: what travels, what is refused, what is kept."""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from typing import Any

import pytest
from automerge import core as am

from crdt import (
    DEFAULT_MAX_MESSAGE_SIZE,
    ClinicalNote,
    Entry,
    EntryKind,
    MalformedMessageError,
    MemoryDocumentStore,
    MessageTooLargeError,
    Patient,
    RecordDocument,
    SyncMessage,
    SyncProtocolError,
    SyncSession,
    actor_for_device,
    apply_documents,
    decode_message,
    encode_message,
    run_in_memory,
)

DEV_A = "00000000-0000-4000-8000-00000000000a"
DEV_B = "00000000-0000-4000-8000-00000000000b"
CLINIC = "clinic-1"


def patient(
    name: str = "Ada", *, clinic: str = CLINIC, device: str = DEV_A, **extra: Any
) -> RecordDocument:
    values = {"given_name": name, "family_name": "Okafor", "birth_date": "1950-03-01", **extra}
    return RecordDocument.create(Patient, values, device_id=device, clinic_id=clinic)


def incompressible_text(size: int) -> str:
    rng = random.Random(size)
    return "".join(rng.choice(string.ascii_letters + " ") for _ in range(size))


def store_with(*documents: RecordDocument) -> MemoryDocumentStore:
    store = MemoryDocumentStore()
    store.put_documents(list(documents))
    return store


def copy_of(store: MemoryDocumentStore, device: str) -> MemoryDocumentStore:
    return store_with(
        *(RecordDocument.load(d.save(), device_id=device) for d in store.documents.values())
    )


def heads(store: MemoryDocumentStore) -> dict[str, list[bytes]]:
    return store.document_heads()


def state(store: MemoryDocumentStore) -> dict[str, tuple[list[bytes], bytes]]:
    """Heads and saved bytes of every document: what "unchanged" must preserve."""
    return {doc_id: (doc.heads, doc.save()) for doc_id, doc in store.documents.items()}


class Recorder:
    """A faithful channel that keeps every decoded message for inspection."""

    def __init__(self) -> None:
        self.messages: list[SyncMessage] = []
        self.sizes: list[int] = []

    def __call__(self, data: bytes) -> list[bytes]:
        self.messages.append(decode_message(data))
        self.sizes.append(len(data))
        return [data]

    def kinds(self) -> set[EntryKind]:
        return {entry.kind for message in self.messages for entry in message.entries}


def sessions(
    a: MemoryDocumentStore,
    b: MemoryDocumentStore,
    *,
    policy_b: Callable[[RecordDocument], str | None] | None = None,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
) -> tuple[SyncSession, SyncSession]:
    return (
        SyncSession(a, device_id=DEV_A, max_message_size=max_message_size),
        SyncSession(b, device_id=DEV_B, policy=policy_b, max_message_size=max_message_size),
    )


# ---------------------------------------------------------------- what travels


def test_fresh_documents_travel_whole_in_one_round_trip() -> None:
    a = store_with(*(patient(f"P{i}") for i in range(5)))
    b = MemoryDocumentStore()
    sa, sb = sessions(a, b)
    offer_a, offer_b = sa.poll(), sb.poll()
    assert offer_a is not None and offer_b is not None
    sb.receive(offer_a)
    sa.receive(offer_b)
    docs = sa.poll()
    assert docs is not None
    message = decode_message(docs)
    assert {e.kind for e in message.entries} == {EntryKind.DOC}
    assert {e.doc_id for e in message.entries} == set(a.documents)
    sb.receive(docs)
    assert sa.poll() is None and sb.poll() is None
    assert sa.done and sb.done
    assert heads(b) == heads(a)
    assert sb.report.received == set(a.documents) == sa.report.sent
    assert sb.report.rejected == [] and sa.report.refused_by_peer == []


def test_changed_documents_travel_through_the_sync_protocol() -> None:
    doc = patient()
    a = store_with(doc, patient("Unchanged"))
    b = copy_of(a, DEV_B)
    doc.update({"mrn": "MRN-5"}, device_id=DEV_A)
    recorder = Recorder()
    run_in_memory(*sessions(a, b), channel=recorder)
    assert recorder.kinds() == {EntryKind.OFFER, EntryKind.SYNC}
    synced = {e.doc_id for m in recorder.messages for e in m.entries if e.kind is EntryKind.SYNC}
    assert synced == {doc.id}
    assert heads(b) == heads(a)
    assert b.documents[doc.id].read().mrn == "MRN-5"


def test_concurrent_changes_on_both_sides_converge_with_the_same_conflicts() -> None:
    a = store_with(patient(), patient("Other"))
    b = copy_of(a, DEV_B)
    doc_id = next(iter(a.documents))
    a.documents[doc_id].update({"mrn": "A-1", "sex": "female"}, device_id=DEV_A)
    b.documents[doc_id].update({"mrn": "B-1", "given_name": "Adaeze"}, device_id=DEV_B)
    b.put_documents([patient("Only on B", device=DEV_B)])
    run_in_memory(*sessions(a, b))
    assert heads(a) == heads(b)
    merged_a, merged_b = a.documents[doc_id], b.documents[doc_id]
    assert merged_a.values() == merged_b.values()
    assert merged_a.read().given_name == "Adaeze"
    assert [c.field for c in merged_a.conflicts()] == ["mrn"]
    assert merged_a.conflicts() == merged_b.conflicts()


def test_a_side_that_receives_before_its_first_poll_still_completes_its_offer() -> None:
    # Request/response transports (HTTP) make the responder receive first.
    a = store_with(patient("On A"), patient("Also on A"))
    b = store_with(patient("On B", device=DEV_B))
    sa, sb = sessions(a, b)
    for _ in range(10):
        request = sa.poll()
        if request is not None:
            sb.receive(request)
        response = sb.poll()
        if response is not None:
            sa.receive(response)
        if request is None and response is None:
            break
    assert sa.done and sb.done
    assert heads(a) == heads(b)
    assert len(a.documents) == 3


def test_a_second_session_after_convergence_sends_only_offers() -> None:
    a = store_with(patient(), patient("Two"))
    b = MemoryDocumentStore()
    run_in_memory(*sessions(a, b))
    recorder = Recorder()
    rounds = run_in_memory(*sessions(a, b), channel=recorder)
    assert recorder.kinds() == {EntryKind.OFFER}
    assert rounds <= 2


def test_small_message_cap_batches_without_exceeding_it() -> None:
    a = store_with(*(patient(f"Patient{i:03d}") for i in range(40)))
    b = store_with(*(patient(f"B{i:03d}", device=DEV_B) for i in range(10)))
    cap = 4096
    recorder = Recorder()
    run_in_memory(*sessions(a, b, max_message_size=cap), channel=recorder)
    assert heads(a) == heads(b)
    assert len(a.documents) == 50
    assert max(recorder.sizes) <= cap
    assert len(recorder.messages) > 4  # the documents did not fit in one message each way


def test_a_document_larger_than_the_cap_is_refused_on_send() -> None:
    big = RecordDocument.create(
        ClinicalNote,
        {"patient_id": "p-1", "author": "Dr Mensah", "text": incompressible_text(5000)},
        device_id=DEV_A,
        clinic_id=CLINIC,
    )
    sa, sb = sessions(store_with(big), MemoryDocumentStore(), max_message_size=2048)
    sb.receive(sa.poll() or b"")
    sa.receive(sb.poll() or b"")
    with pytest.raises(MessageTooLargeError):
        sa.poll()


# ---------------------------------------------------------------- refusals


def test_refused_documents_are_reported_to_the_peer_and_not_stored() -> None:
    good, bad = patient("Good"), patient("Bad", mrn="BLOCKED")
    a = store_with(good, bad)
    b = MemoryDocumentStore()

    def policy(doc: RecordDocument) -> str | None:
        return "blocked MRN" if doc.values().get("mrn") == "BLOCKED" else None

    sa, sb = sessions(a, b, policy_b=policy)
    run_in_memory(sa, sb)
    assert set(b.documents) == {good.id}
    assert [(r.doc_id, r.reason) for r in sb.report.rejected] == [(bad.id, "blocked MRN")]
    assert [(r.doc_id, r.reason) for r in sa.report.refused_by_peer] == [(bad.id, "blocked MRN")]
    assert bad.id not in sb.report.received


def test_a_policy_refusing_another_clinic_stores_nothing_of_it() -> None:
    ours, theirs = patient("Ours"), patient("Theirs", clinic="clinic-2")
    a = store_with(ours, theirs)
    b = MemoryDocumentStore()

    def same_clinic(doc: RecordDocument) -> str | None:
        clinic = doc.read().clinic_id
        return None if clinic == CLINIC else f"record belongs to {clinic}"

    sa, sb = sessions(a, b, policy_b=same_clinic)
    run_in_memory(sa, sb)
    assert set(b.documents) == {ours.id}
    assert [r.doc_id for r in sa.report.refused_by_peer] == [theirs.id]


def test_a_policy_refusal_on_the_sync_path_keeps_the_stored_document() -> None:
    doc = patient()
    a = store_with(doc)
    b = copy_of(a, DEV_B)
    before = state(b)
    doc.delete(device_id=DEV_A)

    def no_deletes(candidate: RecordDocument) -> str | None:
        return "deletes are not accepted here" if candidate.values()["deleted"] else None

    sa, sb = sessions(a, b, policy_b=no_deletes)
    run_in_memory(sa, sb)
    assert state(b) == before
    assert [r.doc_id for r in sb.report.rejected] == [doc.id]
    assert [r.doc_id for r in sa.report.refused_by_peer] == [doc.id]


def hand_made_invalid(doc: RecordDocument, edit: Callable[[Any], None]) -> RecordDocument:
    raw = am.Document.load(doc.save())
    raw.set_actor(actor_for_device(DEV_A))
    with raw.transaction() as tx:
        edit(tx)
    return RecordDocument.load(raw.save())


@pytest.mark.parametrize(
    "edit",
    [
        lambda tx: tx.put(am.ROOT, "given_name", am.ScalarType.Int, 3),
        lambda tx: tx.put(am.ROOT, "given_name", am.ScalarType.Str, ""),
        lambda tx: tx.put(am.ROOT, "clinic_id", am.ScalarType.Str, "clinic-2"),
    ],
    ids=["int", "empty", "immutable"],
)
def test_an_invalid_change_on_the_sync_path_is_refused(edit: Callable[[Any], None]) -> None:
    doc = patient()
    b = store_with(RecordDocument.load(doc.save(), device_id=DEV_B))
    a = store_with(hand_made_invalid(doc, edit))  # a replica that skipped validation
    before = state(b)
    sa, sb = sessions(a, b)
    run_in_memory(sa, sb)
    assert state(b) == before
    assert [r.doc_id for r in sb.report.rejected] == [doc.id]
    assert [r.doc_id for r in sa.report.refused_by_peer] == [doc.id]


def test_an_invalid_fresh_document_is_refused_whole() -> None:
    bad = hand_made_invalid(patient(), lambda tx: tx.delete(am.ROOT, "family_name"))
    good = patient("Good")
    b = MemoryDocumentStore()
    sa, sb = sessions(store_with(bad, good), b)
    run_in_memory(sa, sb)
    assert set(b.documents) == {good.id}
    assert [r.doc_id for r in sa.report.refused_by_peer] == [bad.id]


# ---------------------------------------------------------------- damaged input


def test_a_malformed_message_raises_and_leaves_the_store_unchanged() -> None:
    a = store_with(patient("New"))
    b = store_with(patient("Held", device=DEV_B))
    before = state(b)
    sa, sb = sessions(a, b)
    with pytest.raises(SyncProtocolError):
        sb.receive(b"definitely not a sync message")
    sb.receive(sa.poll() or b"")
    sa.receive(sb.poll() or b"")
    docs = sa.poll()
    assert docs is not None
    for damaged in (docs[:-1], docs[:20], docs[:10] + bytes([docs[10] ^ 1]) + docs[11:]):
        with pytest.raises(MalformedMessageError):
            sb.receive(damaged)
        assert state(b) == before
    sb.receive(docs)  # the intact message still applies afterwards
    assert set(b.documents) == set(a.documents) | set(before)


@pytest.mark.parametrize(
    "payload",
    [b"garbage", b"", lambda: patient("Other").save()],
    ids=["garbage", "empty", "wrong-id"],
)
def test_unusable_doc_entries_are_refused_and_the_rest_kept(payload: Any) -> None:
    good = patient("Good")
    target_id = patient("Target").id
    data = payload() if callable(payload) else payload
    b = MemoryDocumentStore()
    report = apply_documents(b, [(target_id, data), (good.id, good.save())], device_id=DEV_B)
    assert set(b.documents) == {good.id}
    assert [r.doc_id for r in report.rejected] == [target_id]
    assert report.received == {good.id}


def test_an_unusable_sync_entry_is_refused_not_raised() -> None:
    doc = patient()
    a = store_with(doc)
    b = copy_of(a, DEV_B)
    doc.update({"mrn": "MRN-1"}, device_id=DEV_A)
    before = state(b)
    sa, sb = sessions(a, b)
    sb.receive(sa.poll() or b"")
    sa.receive(sb.poll() or b"")
    sync = sa.poll()
    assert sync is not None
    forged = encode_message(SyncMessage({}, (Entry(EntryKind.SYNC, doc.id, b"\x42junk"),)))
    sb.receive(forged)
    assert state(b) == before
    assert [r.doc_id for r in sb.report.rejected] == [doc.id]
    reply = decode_message(sb.poll() or b"")
    assert [e.kind for e in reply.entries] == [EntryKind.REJECT]


def test_apply_documents_refuses_an_invalid_replica_of_a_stored_document() -> None:
    doc = patient()
    b = store_with(RecordDocument.load(doc.save(), device_id=DEV_B))
    before = state(b)
    bad = hand_made_invalid(doc, lambda tx: tx.put(am.ROOT, "given_name", am.ScalarType.Int, 9))
    report = apply_documents(b, [(doc.id, bad.save())], device_id=DEV_B)
    assert [r.doc_id for r in report.rejected] == [doc.id]
    assert report.received == set()
    assert state(b) == before


def test_applying_documents_twice_changes_nothing_the_second_time() -> None:
    docs = [patient(f"P{i}") for i in range(3)]
    b = MemoryDocumentStore()
    first = apply_documents(b, [(d.id, d.save()) for d in docs], device_id=DEV_B)
    snapshot = state(b)
    second = apply_documents(b, [(d.id, d.save()) for d in docs], device_id=DEV_B)
    assert first.received == {d.id for d in docs}
    assert second.received == set() and second.rejected == []
    assert state(b) == snapshot


# ---------------------------------------------------------------- lossy links


def test_a_link_that_drops_everything_ends_without_changes() -> None:
    a = store_with(patient())
    b = store_with(patient("B", device=DEV_B))
    before_a, before_b = state(a), state(b)
    run_in_memory(*sessions(a, b), channel=lambda data: [])
    assert (state(a), state(b)) == (before_a, before_b)


def test_a_link_that_duplicates_everything_still_converges() -> None:
    doc = patient()
    a = store_with(doc, patient("Fresh"))
    b = copy_of(a, DEV_B)
    doc.update({"mrn": "MRN-2"}, device_id=DEV_A)
    b.documents[doc.id].update({"sex": "male"}, device_id=DEV_B)
    b.put_documents([patient("From B", device=DEV_B)])
    sa, sb = sessions(a, b)
    run_in_memory(sa, sb, channel=lambda data: [data, data])
    assert heads(a) == heads(b)
    assert sa.report.rejected == sb.report.rejected == []
