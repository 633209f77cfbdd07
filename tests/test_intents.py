"""Intents: immutable records a device writes offline for the server to decide. Every
replica refuses any change after creation, however it travels."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from automerge import core as am
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from crdt import (
    AppointmentRequest,
    Intent,
    IntentKind,
    MemoryDocumentStore,
    RecordDocument,
    RecordValidationError,
    StaticDirectory,
    apply_documents,
    new_record_id,
)

CLINIC = "clinic-1"
PATIENT = str(uuid.uuid4())
SERVER = str(uuid.uuid4())


class Device:
    def __init__(self) -> None:
        self.device_id = str(uuid.uuid4())
        self.key = Ed25519PrivateKey.generate()
        self.public_key = self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def sign(self, data: bytes) -> bytes:
        return self.key.sign(data)


def request(device: Device, **details: object) -> RecordDocument:
    return RecordDocument.create(
        Intent,
        {
            "kind": IntentKind.APPOINTMENT_REQUEST,
            "patient_id": PATIENT,
            "details": {
                "service": "wound-review",
                "starts_at": "2026-12-07T09:00:00+01:00",
                **details,
            },
        },
        device_id=device.device_id,
        clinic_id=CLINIC,
        record_id=new_record_id(),
        signer=device,
    )


def test_an_intent_carries_typed_details() -> None:
    device = Device()
    intent = request(device, flexible=True).read()
    assert isinstance(intent, Intent)
    details = intent.parsed_details()
    assert isinstance(details, AppointmentRequest)
    assert details.starts_at == datetime(2026, 12, 7, 8, 0, tzinfo=UTC)
    assert details.flexible is True


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"kind": "appointment.request", "patient_id": PATIENT, "details": {}}, "service"),
        (
            {
                "kind": "appointment.request",
                "patient_id": PATIENT,
                "details": {"service": "x", "starts_at": "2026-12-07T09:00:00"},
            },
            "UTC offset",
        ),
        ({"kind": "appointment.cancel", "details": {}}, "subject_id"),
        ({"kind": "visit.review", "subject_id": "b-1", "details": {"rating": 6}}, "rating"),
        ({"kind": "not.a.kind", "details": {}}, "kind"),
    ],
)
def test_bad_intents_are_refused_when_written(values: dict[str, object], problem: str) -> None:
    device = Device()
    with pytest.raises(RecordValidationError) as raised:
        RecordDocument.create(Intent, values, device_id=device.device_id, clinic_id=CLINIC)
    assert problem in str(raised.value)


def test_an_intent_cannot_be_changed_or_deleted_where_it_was_written() -> None:
    device = Device()
    intent = request(device)
    before = intent.heads
    for write in (
        lambda: intent.update({"patient_id": str(uuid.uuid4())}, device_id=device.device_id),
        lambda: intent.delete(device_id=device.device_id),
    ):
        with pytest.raises(RecordValidationError, match="cannot change after creation"):
            write()
    assert intent.heads == before


def _tampered(intent: RecordDocument, device: Device, field: str, value: str) -> bytes:
    """A copy of `intent` with one more change written under the author's own actor,
    as a hostile or buggy app would write it straight through Automerge."""
    raw = am.Document.load(intent.save())
    with raw.transaction() as tx:
        tx.put(am.ROOT, field, am.ScalarType.Str, value)
    return raw.save()


@pytest.mark.parametrize(("field", "value"), [("updated_at", "2030-01-01T00:00:00+00:00")])
def test_a_later_change_is_refused_on_merge_and_as_a_fresh_document(field: str, value: str) -> None:
    device = Device()
    directory = StaticDirectory({(CLINIC, device.device_id): device.public_key})
    intent = request(device)
    tampered = _tampered(intent, device, field, value)

    # A replica that holds the intent refuses the later change...
    holder = MemoryDocumentStore()
    apply_documents(holder, [(intent.id, intent.save())], device_id=SERVER)
    report = apply_documents(holder, [(intent.id, tampered)], device_id=SERVER)
    assert [r.doc_id for r in report.rejected] == [intent.id]
    assert holder.saved_document(intent.id) == intent.save()

    # ...and so does one that sees the tampered document first, with or without
    # checking signatures.
    for authorship in (None, directory):
        fresh = MemoryDocumentStore()
        report = apply_documents(
            fresh, [(intent.id, tampered)], device_id=SERVER, authorship=authorship
        )
        assert [r.doc_id for r in report.rejected] == [intent.id]
        assert fresh.saved_document(intent.id) is None


def test_the_same_intent_merged_again_changes_nothing() -> None:
    device = Device()
    intent = request(device)
    store = MemoryDocumentStore()
    first = apply_documents(store, [(intent.id, intent.save())], device_id=SERVER)
    again = apply_documents(store, [(intent.id, intent.save())], device_id=SERVER)
    assert first.received == {intent.id}
    assert again.received == set() and again.rejected == []
