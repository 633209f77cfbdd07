"""What one received document may cost: bytes, changes and operations, measured from
chunk headers before the document is loaded, and again after a merge."""

from __future__ import annotations

import struct
import uuid
import zlib
from datetime import UTC, datetime

import pytest
from automerge import core as am

from crdt import (
    DocumentLimits,
    DocumentTooCostlyError,
    MemoryDocumentStore,
    Patient,
    RecordDocument,
    apply_documents,
)

DEVICE = str(uuid.UUID(int=1))
OTHER = str(uuid.UUID(int=2))
T0 = datetime(2024, 5, 1, tzinfo=UTC)
SMALL = DocumentLimits(max_bytes=1 << 20, max_changes=1000, max_operations=50_000)


def record_with_changes(changes: int, *, device: str = DEVICE) -> RecordDocument:
    doc = RecordDocument.create(
        Patient,
        {"given_name": "Ada", "family_name": "Okafor", "birth_date": "1950-03-01"},
        device_id=device,
        clinic_id="c",
        now=T0,
    )
    raw = doc.automerge
    for n in range(changes - 1):
        with raw.transaction() as tx:
            tx.put(am.ROOT, "given_name", am.ScalarType.Str, f"Ada {n % 7}")
    return RecordDocument.load(raw.save())


def test_a_document_over_the_change_limit_is_refused_alone_before_loading() -> None:
    costly = record_with_changes(1500)
    fine = record_with_changes(10, device=OTHER)
    data = costly.save()
    assert len(data) < 4000  # the history compresses: bytes alone would not catch it
    assert SMALL.check_saved(data) == "the document has 1500 changes, over the limit of 1000"
    store = MemoryDocumentStore()
    report = apply_documents(
        store, [(costly.id, data), (fine.id, fine.save())], device_id=DEVICE, limits=SMALL
    )
    assert report.received == {fine.id}
    assert [(r.doc_id, r.reason) for r in report.rejected] == [
        (costly.id, "the document has 1500 changes, over the limit of 1000")
    ]
    with pytest.raises(DocumentTooCostlyError):
        RecordDocument.load(data, limits=SMALL)


def test_the_operation_limit_counts_every_operation() -> None:
    doc = record_with_changes(5)  # creation writes every field: many operations
    tight = DocumentLimits(max_operations=3)
    reason = tight.check_saved(doc.save())
    assert reason is not None and "operations, over the limit of 3" in reason
    assert tight.check_document(doc.automerge) == reason
    assert DocumentLimits().check_saved(doc.save()) is None


def test_a_merge_that_would_cross_the_limit_is_refused_and_changes_nothing() -> None:
    base = record_with_changes(1)
    mine = base.fork(device_id=DEVICE)
    theirs = base.fork(device_id=OTHER)
    for n in range(600):
        mine.update({"given_name": f"A{n}"}, device_id=DEVICE)
        theirs.update({"family_name": f"B{n}"}, device_id=OTHER)
    heads = mine.heads
    with pytest.raises(Exception) as refused:
        mine.merge(theirs, limits=SMALL)
    assert "over the limit of 1000" in str(refused.value)
    assert mine.heads == heads


def test_the_change_limit_holds_for_changes_sent_one_by_one() -> None:
    doc = record_with_changes(1200)
    loose_changes = b"".join(c.raw_bytes for c in doc.automerge.get_changes([]))
    assert SMALL.check_saved(loose_changes) == (
        "the document has 1200 changes, over the limit of 1000"
    )


def test_a_compressed_chunk_that_inflates_past_the_budget_is_refused() -> None:
    bomb_body = zlib.compressobj(9, zlib.DEFLATED, -15)
    payload = bomb_body.compress(b"\0" * (40 << 20)) + bomb_body.flush()
    chunk = b"\x85\x6f\x4a\x83" + b"\0\0\0\0" + b"\x02" + _uleb(len(payload)) + payload
    reason = SMALL.check_saved(chunk)
    assert reason is not None and "inflates past the size limit" in reason


@pytest.mark.parametrize(
    "data",
    [b"garbage", b"\x85\x6f\x4a\x83" + b"\0" * 4 + b"\x07\x00", struct.pack("<Q", 1) * 4],
)
def test_unreadable_bytes_get_a_reason_not_an_exception(data: bytes) -> None:
    reason = DocumentLimits().check_saved(data)
    assert reason is not None and reason.startswith("not a readable Automerge document")


def _uleb(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


@pytest.mark.parametrize(
    "values",
    [
        {"given_name": "Ada\0"},
        {"mrn": "M\0-1"},
        {"contacts": [{"kind": "phone", "value": "0\x0012"}]},
    ],
)
def test_a_nul_character_is_refused_at_write_time(values: dict[str, object]) -> None:
    from crdt import RecordValidationError

    doc = record_with_changes(1)
    with pytest.raises(RecordValidationError, match="NUL character"):
        doc.update(values, device_id=DEVICE)
    with pytest.raises(RecordValidationError, match="NUL character"):
        RecordDocument.create(
            Patient,
            {"given_name": "Ada", "family_name": "O", "birth_date": "1950-03-01", **values},
            device_id=DEVICE,
            clinic_id="c",
        )


def test_a_received_record_holding_nul_is_refused_alone() -> None:
    doc = record_with_changes(1)
    raw = doc.automerge
    with raw.transaction() as tx:  # a hostile replica writes around the schema
        tx.put(am.ROOT, "family_name", am.ScalarType.Str, "Ok\0afor")
    fine = record_with_changes(1, device=OTHER)
    report = apply_documents(
        MemoryDocumentStore(),
        [(doc.id, raw.save()), (fine.id, fine.save())],
        device_id=DEVICE,
    )
    assert report.received == {fine.id}
    assert "NUL character" in report.rejected[0].reason
