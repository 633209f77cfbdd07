"""Hostile bytes against the decoder and the merge path: whatever arrives, the only
errors are the documented ones, a refused document is refused alone, and nothing
accepted is over the limits of what one document may cost."""

from __future__ import annotations

import contextlib
import uuid
from datetime import UTC, datetime

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from crdt import (
    ClinicalNote,
    CrdtError,
    DocumentLimits,
    Entry,
    EntryKind,
    MemoryDocumentStore,
    Patient,
    RecordDocument,
    SyncMessage,
    SyncProtocolError,
    apply_documents,
    decode_message,
    encode_message,
)
from tests.hostile_bytes import mutated

DEVICE = str(uuid.UUID(int=7))
LIMITS = DocumentLimits(max_bytes=1 << 20, max_changes=2000, max_operations=100_000)
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _seeds() -> list[bytes]:
    patient = RecordDocument.create(
        Patient,
        {"given_name": "Ada", "family_name": "Okafor", "birth_date": "1950-03-01"},
        device_id=DEVICE,
        clinic_id="c",
        now=datetime(2024, 1, 1, tzinfo=UTC),
    )
    patient.update({"mrn": "M-1"}, device_id=DEVICE)
    note = RecordDocument.create(
        ClinicalNote,
        {"patient_id": patient.id, "author": "RN", "text": "Granulating well."},
        device_id=DEVICE,
        clinic_id="c",
    )
    note.splice_text("text", 0, 0, "Day 3. ", device_id=DEVICE)
    return [patient.save(), note.save()]


SEEDS = _seeds()
SEED_IDS = [RecordDocument.load(seed).id for seed in SEEDS]


def mutated_documents() -> st.SearchStrategy[bytes]:
    """A real saved document with bytes flipped, cut, repeated or appended."""
    return mutated(SEEDS)


payloads = st.one_of(st.binary(max_size=512), mutated_documents(), st.sampled_from(SEEDS))
# Mostly the seeds' own ids, so that intact and mutated seeds get as far as a merge.
doc_ids = st.one_of(
    st.sampled_from(SEED_IDS),
    st.sampled_from(SEED_IDS),
    st.from_regex(r"[0-9a-f]{8}-[0-9a-f-]{10,27}", fullmatch=True),
)


@SETTINGS
@given(st.binary(max_size=4096))
def test_the_wire_decoder_raises_only_protocol_errors(data: bytes) -> None:
    with contextlib.suppress(SyncProtocolError):
        decode_message(data, max_entries=100)


@SETTINGS
@given(st.lists(st.tuples(doc_ids, payloads), max_size=8))
def test_merging_hostile_documents_refuses_them_alone(entries: list[tuple[str, bytes]]) -> None:
    """Whatever the mix, merging raises nothing; what is kept is whole and within limits."""
    message = encode_message(SyncMessage({}, tuple(Entry(EntryKind.DOC, d, p) for d, p in entries)))
    decoded = decode_message(message)  # our own framing round-trips
    store = MemoryDocumentStore()
    report = apply_documents(
        store,
        [(e.doc_id, e.payload) for e in decoded.entries],
        device_id=DEVICE,
        limits=LIMITS,
    )
    event("a document was kept" if report.received else "nothing kept")
    assert report.received <= {d for d, _ in entries}
    for doc_id in report.received:
        document = store.get_document(doc_id)
        assert document is not None and document.id == doc_id
        assert LIMITS.check_document(document.automerge) is None
        document.read()  # what is stored validates
        document.conflicts()
        document.history()


@SETTINGS
@given(mutated_documents())
def test_loading_a_hostile_document_raises_only_document_errors(data: bytes) -> None:
    try:
        document = RecordDocument.load(data, limits=LIMITS)
        document.read()
        document.conflicts()
        document.history()
    except CrdtError:
        pass


@SETTINGS
@given(st.one_of(st.binary(max_size=2048), mutated_documents()))
def test_measuring_hostile_bytes_gives_a_reason_never_an_exception(data: bytes) -> None:
    reason = LIMITS.check_saved(data)
    changes, operations = LIMITS.measure(data)
    assert changes >= 0 and operations >= 0
    assert reason is None or isinstance(reason, str)
