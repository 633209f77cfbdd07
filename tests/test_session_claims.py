"""Device-to-device sessions store records new to the receiver from the sender's claim.

A sender whose store can describe its documents (`hinted_documents`) sends each DOC
with a RECORD hint to a receiver that announced it takes them; the receiver stores
those documents from the hint (`put_claimed`) and verifies them after, as a first sync
does. These tests hold the receiver's background verification back where they need
to see the claims before their check (`Verification.close` stops the thread; reads and
`wait_verified` still verify).
"""

from __future__ import annotations

import dataclasses
import json
import random
import threading
from collections.abc import Sequence
from typing import Any

import pytest
from automerge import core as am

from crdt import (
    DocumentStore,
    Entry,
    EntryKind,
    MemoryDocumentStore,
    RecordDocument,
    RecordHint,
    SyncMessage,
    SyncSession,
    decode_message,
    encode_message,
    entry_size,
    run_in_memory,
    schema_versions,
)
from edge_sdk import EdgeClient, RecordFromNewerAppError, RecordNotFoundError


def fill(client: EdgeClient, patients: int, wounds_each: int = 1) -> list[str]:
    ids: list[str] = []
    with client.batch():
        for n in range(patients):
            patient = client.patients.add(
                given_name=f"Ada {n}", family_name="Okafor", birth_date="1950-01-01"
            )
            ids.append(str(patient.id))
            for _ in range(wounds_each):
                ids.append(str(client.wounds.add(patient_id=patient.id, body_site="left heel").id))
    return ids


def session(client: EdgeClient, store: DocumentStore | None = None, **kwargs: Any) -> SyncSession:
    """A session over `client` (or over `store` standing in for its documents)."""
    replica = client.replica
    return SyncSession(
        store if store is not None else replica.documents,
        device_id=replica.device_id,
        policy=replica.policy,
        authorship=replica.directory,
        **kwargs,
    )


def entries_of(messages: list[bytes]) -> list[list[tuple[EntryKind, str]]]:
    return [[(e.kind, e.doc_id) for e in decode_message(m).entries] for m in messages]


def recording(log: list[bytes]) -> Any:
    def channel(data: bytes) -> list[bytes]:
        log.append(data)
        return [data]

    return channel


def test_new_records_are_stored_from_the_claim_and_verified_after(tmp_store: Any) -> None:
    ward, office = tmp_store("ward"), tmp_store("office")
    ids = fill(ward, 6)
    office.replica.verification.close()  # keep the claims unverified until read
    sink = office.sync_session()
    run_in_memory(ward.sync_session(), sink)
    assert sink.report.received == set(ids) and sink.report.rejected == []
    assert office.verification_status().pending == len(ids)
    # A read verifies what it would show first: never an unverified record.
    first = office.patients.get(ids[0])
    assert first.given_name == "Ada 0"
    assert office.verification_status().pending == len(ids) - 1
    status = office.wait_verified()
    assert status.done and status.quarantined == ()
    assert office.replica.document_heads() == ward.replica.document_heads()
    assert {p.given_name for p in office.patients.list()} == {f"Ada {n}" for n in range(6)}


class _LyingSender:
    """A peer's documents whose hints claim something else than the bytes hold."""

    def __init__(self, client: EdgeClient, lie: Any) -> None:
        self._documents = client.replica.documents
        self._lie = lie

    def __getattr__(self, name: str) -> Any:
        return getattr(self._documents, name)

    def hinted_documents(self, ids: Sequence[str]) -> dict[str, tuple[bytes, RecordHint | None]]:
        found = self._documents.hinted_documents(ids)  # type: ignore[attr-defined]
        return {
            doc_id: (data, None if hint is None else self._lie(hint))
            for doc_id, (data, hint) in found.items()
        }


def _renamed(hint: RecordHint) -> RecordHint:
    record = json.loads(hint.record_json)
    if "family_name" in record:
        record["family_name"] = "Forged"
    return dataclasses.replace(hint, record_json=json.dumps(record, separators=(",", ":")))


def _other_heads(hint: RecordHint) -> RecordHint:
    return dataclasses.replace(hint, heads=(bytes(32),))


@pytest.mark.parametrize(
    ("lie", "reason", "lied_about"),
    [
        (_renamed, "differs from the document", "patients"),
        (_other_heads, "heads sent with it are not the document's heads", "*"),
    ],
)
def test_a_claim_the_document_does_not_bear_out_is_quarantined(
    tmp_store: Any, lie: Any, reason: str, lied_about: str
) -> None:
    ward, office = tmp_store("ward"), tmp_store("office")
    ids = fill(ward, 3)
    patients = {str(p.id) for p in ward.patients.list()}
    sink = office.sync_session()
    run_in_memory(session(ward, _LyingSender(ward, lie)), sink)  # type: ignore[arg-type]
    assert sink.report.received == set(ids)
    bad = patients if lied_about == "patients" else set(ids)
    for doc_id in bad:
        with pytest.raises(RecordNotFoundError):
            office.patients.get(doc_id) if doc_id in patients else office.wounds.get(doc_id)
    status = office.wait_verified()
    assert {q.record_id for q in status.quarantined} == bad
    assert all(reason in q.reason for q in status.quarantined)
    assert set(office.replica.document_heads()) == set(ids) - bad
    assert all(p.family_name == "Okafor" for p in office.patients.list())


def test_a_document_and_its_hint_travel_in_one_message(tmp_store: Any) -> None:
    """A hint that does not fit beside its document is dropped, and that document is
    merged with every check as it arrives; every other one is stored from its claim."""
    ward, office = tmp_store("ward"), tmp_store("office")
    ids = fill(ward, 12)
    found = ward.replica.store.hinted_documents(ids)
    pairs = sorted(
        entry_size(Entry(EntryKind.DOC, doc_id, data))
        + entry_size(Entry(EntryKind.RECORD, doc_id, hint.encode()))
        for doc_id, (data, hint) in found.items()
        if hint is not None
    )
    alone = max(
        entry_size(Entry(EntryKind.DOC, doc_id, data)) for doc_id, (data, _) in found.items()
    )
    cap = 512 + pairs[len(pairs) // 2]  # room for the smaller pairs, not the larger
    assert alone < pairs[len(pairs) // 2] < pairs[-1]  # each document fits alone
    office.replica.verification.close()
    sent: list[bytes] = []
    sink = session(office, max_message_size=cap)
    run_in_memory(session(ward, max_message_size=cap), sink, channel=recording(sent))
    with_hint, without = set(), set()
    for message in entries_of(sent):
        docs = {doc_id for kind, doc_id in message if kind is EntryKind.DOC}
        hints = {doc_id for kind, doc_id in message if kind is EntryKind.RECORD}
        assert hints <= docs  # never a hint apart from its document
        with_hint |= hints
        without |= docs - hints
    assert with_hint and without and with_hint | without == set(ids)
    assert sink.report.received == set(ids) and sink.report.rejected == []
    assert set(office.replica.store.unverified()) == with_hint
    assert office.wait_verified().quarantined == ()
    assert office.replica.document_heads() == ward.replica.document_heads()


def test_no_hints_go_to_a_receiver_that_did_not_ask_for_them(tmp_store: Any) -> None:
    ward = tmp_store("ward")
    ids = fill(ward, 4)
    relay = SyncSession(MemoryDocumentStore(), device_id=ward.device_id, policy=ward.replica.policy)
    sent: list[bytes] = []
    run_in_memory(relay, ward.sync_session(), channel=recording(sent))
    kinds = {kind for message in entries_of(sent) for kind, _ in message}
    assert EntryKind.DOC in kinds and EntryKind.RECORD not in kinds
    assert relay.report.received == set(ids)


def test_a_record_already_held_is_merged_not_claimed(tmp_store: Any) -> None:
    ward, office = tmp_store("ward"), tmp_store("office")
    ids = fill(ward, 3)
    run_in_memory(ward.sync_session(), office.sync_session())
    assert office.wait_verified().done
    ward.patients.update(ids[0], mrn="M-7")  # both hold it now, with different heads
    office.replica.verification.close()
    sink = office.sync_session()
    run_in_memory(ward.sync_session(), sink)
    assert sink.report.received == {ids[0]}
    assert office.verification_status().pending == 0
    assert office.patients.get(ids[0]).mrn == "M-7"


def test_seeded_sessions_with_hints_converge_with_nothing_left_unverified(
    tmp_store: Any,
) -> None:
    """Several tablets writing and exchanging in a seeded random order end with the same
    records, all verified, none quarantined."""
    rng = random.Random(1607)
    tablets = [tmp_store(f"tablet-{n}") for n in range(3)]
    for _ in range(12):
        writer = rng.choice(tablets)
        fill(writer, rng.randint(1, 3), wounds_each=rng.randint(0, 2))
        if rng.random() < 0.4 and writer.patients.list():
            target = rng.choice(writer.patients.list())
            writer.patients.update(target.id, mrn=f"M-{rng.randint(0, 99)}")
        a, b = rng.sample(tablets, 2)
        run_in_memory(a.sync_session(), b.sync_session())
    for a in tablets:
        for b in tablets:
            if a is not b:
                run_in_memory(a.sync_session(), b.sync_session())
    heads = [t.replica.document_heads() for t in tablets]
    assert heads[0] == heads[1] == heads[2] and heads[0]
    for tablet in tablets:
        status = tablet.wait_verified()
        assert status.done and status.quarantined == ()


def test_a_signer_trusted_on_first_use_keeps_its_first_key(tmp_store: Any) -> None:
    """A session's merge and the background verification may meet a new signer at the
    same moment: the second to trust it gets the key the first kept, not an error."""
    store = tmp_store("office").replica.store
    device = "0b7f5f58-3f3a-4c43-9a55-64a0d3c2a9e1"
    assert store.trust_signer(device, b"\x01" * 32, "2026-12-07T00:00:00+00:00") == b"\x01" * 32
    assert store.trust_signer(device, b"\x02" * 32, "2026-12-07T00:00:01+00:00") == b"\x01" * 32
    assert store.trusted_signer(device) == (b"\x01" * 32, "2026-12-07T00:00:00+00:00")


def test_no_hints_go_to_a_receiver_reading_records_at_other_schema_versions(
    tmp_store: Any,
) -> None:
    ward, office = tmp_store("ward"), tmp_store("office")
    ids = fill(ward, 3)

    def other_app(data: bytes) -> list[bytes]:
        # The receiver's first message, as an app at other schema versions says it.
        message = decode_message(data)
        if "hints" in message.control:
            control = {**message.control, "hints": "patients:99," + schema_versions()}
            data = encode_message(SyncMessage(control, message.entries))
        return [data]

    sent: list[bytes] = []
    sink = office.sync_session()
    sender = ward.sync_session()
    for _ in range(100):
        out_a, out_b = sender.poll(), sink.poll()
        if out_a is None and out_b is None:
            break
        if out_a is not None:
            sent.append(out_a)
            sink.receive(out_a)
        for data in other_app(out_b) if out_b is not None else []:
            sender.receive(data)
    kinds = {kind for message in entries_of(sent) for kind, _ in message}
    assert EntryKind.DOC in kinds and EntryKind.RECORD not in kinds
    assert sink.report.received == set(ids) and office.verification_status().pending == 0


def test_a_claimed_record_a_newer_app_wrote_is_kept_as_a_merge_keeps_it(
    tmp_store: Any,
) -> None:
    """Its record cannot be read here, so its claim cannot be compared: once it passed
    every check a merge makes it is stored as a merge stores it, not quarantined."""
    newer, office = tmp_store("newer"), tmp_store("office")
    patient = newer.patients.add(given_name="Ada", family_name="Okafor", birth_date="1950-03-01")
    wound = newer.wounds.add(patient_id=patient.id, body_site="heel", etiology="pressure")
    assessment = newer.assessments.add(
        wound_id=wound.id,
        patient_id=patient.id,
        device_id=newer.device_id,
        captured_at="2024-06-01T10:00:00+00:00",
    )
    as_read = assessment.model_dump_json()
    document = newer.replica.store.get_document(assessment.id, device_id=newer.device_id)
    raw = document.automerge
    with raw.transaction() as tx:  # what a newer app (schema version 3) would write
        tx.put(am.ROOT, "schema_version", am.ScalarType.Int, 3)
        tx.put(am.ROOT, "wound_bed", am.ScalarType.Str, '{"granulation": 80}')
    written = RecordDocument.load(raw.save(), device_id=newer.device_id)
    written.seal(newer.identity)
    newer.replica.store.put_documents([written])

    def hint_it(hint: RecordHint | None, doc_id: str, heads: tuple[bytes, ...]) -> Any:
        if doc_id != assessment.id:
            return hint
        return RecordHint("assessments", heads, as_read)

    class Describing(_LyingSender):
        def hinted_documents(
            self, ids: Sequence[str]
        ) -> dict[str, tuple[bytes, RecordHint | None]]:
            found = self._documents.hinted_documents(ids)  # type: ignore[attr-defined]
            heads = newer.replica.document_heads()
            return {
                doc_id: (data, hint_it(hint, doc_id, tuple(heads[doc_id])))
                for doc_id, (data, hint) in found.items()
            }

    office.replica.verification.close()
    sink = office.sync_session()
    run_in_memory(session(newer, Describing(newer, None)), sink)  # type: ignore[arg-type]
    assert assessment.id in office.replica.store.unverified()  # stored from the claim
    status = office.wait_verified()
    assert status.done and status.quarantined == ()
    assert office.records_needing_update() == [(assessment.id, "assessments", 3)]
    with pytest.raises(RecordFromNewerAppError):
        office.assessments.get(assessment.id)
    assert office.assessments.list() == []  # its claimed projection row is gone
    assert office.replica.document_heads() == newer.replica.document_heads()


def test_a_sender_writing_during_sessions_never_gets_a_true_record_quarantined(
    tmp_store: Any,
) -> None:
    """The sender's documents and their hints are read together: a local write landing
    between them would pair bytes with another version's record, and the receiver would
    quarantine a true record. A writer thread edits the records while fresh receivers
    run sessions against the sender."""
    ward = tmp_store("ward")
    ids = fill(ward, 30, wounds_each=0)
    stop = threading.Event()
    failures: list[BaseException] = []

    def write() -> None:
        rng = random.Random(7)
        try:
            while not stop.is_set():
                ward.patients.update(rng.choice(ids), mrn=f"M-{rng.randint(0, 10**6)}")
        except BaseException as exc:  # surfaced by the assertion below
            failures.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        for n in range(6):
            office = tmp_store(f"office-{n}")
            sink = office.sync_session()
            run_in_memory(ward.sync_session(), sink)
            assert sink.report.received == set(ids) and sink.report.rejected == []
            status = office.wait_verified()
            assert status.done and status.quarantined == ()
    finally:
        stop.set()
        writer.join()
    assert failures == []
