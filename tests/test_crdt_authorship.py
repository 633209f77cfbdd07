"""Signed authorship: every change is signed by the device whose actor it carries, the
signatures travel inside the document, and any replica can check them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import pytest
from automerge import core as am
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from crdt import (
    ClinicalNote,
    MemoryDocumentStore,
    Patient,
    RecordDocument,
    StaticDirectory,
    WoundAssessment,
    actor_for_device,
    apply_documents,
)

CLINIC = "clinic-1"


@dataclass
class Device:
    device_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)

    @property
    def public_key(self) -> bytes:
        return self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def sign(self, data: bytes) -> bytes:
        return self.key.sign(data)


@pytest.fixture
def ward() -> Device:
    return Device()


@pytest.fixture
def home() -> Device:
    return Device()


def directory(*devices: Device, clinic: str = CLINIC) -> StaticDirectory:
    return StaticDirectory({(clinic, d.device_id): d.public_key for d in devices})


def new_patient(device: Device, **values: object) -> RecordDocument:
    return RecordDocument.create(
        Patient,
        {"given_name": "Ada", "family_name": "Okafor", "birth_date": "1950-03-01", **values},
        device_id=device.device_id,
        clinic_id=CLINIC,
        signer=device,
    )


def test_signed_writes_verify_on_any_replica_and_history_says_so(
    ward: Device, home: Device
) -> None:
    doc = new_patient(ward)
    doc.update({"mrn": "M-1"}, device_id=ward.device_id, signer=ward)
    relay = RecordDocument.load(doc.save(), device_id=home.device_id)  # through another
    relay.update({"given_name": "Adaeze"}, device_id=home.device_id, signer=home)
    assert relay.authorship(directory(ward, home)) is None
    history = relay.history(directory=directory(ward, home))
    assert [(e.device_id, e.action, e.verified) for e in history] == [
        (ward.device_id, "created", True),
        (ward.device_id, "updated", True),
        (home.device_id, "updated", True),
    ]
    assert "_auth" not in relay.values()  # the signatures are not part of the record
    assert [e.verified for e in relay.history()] == [None, None, None]


def test_a_device_forging_another_devices_actor_is_refused(ward: Device, home: Device) -> None:
    doc = new_patient(ward)
    stored = doc.save()
    forged = RecordDocument.load(stored)
    raw = forged.automerge
    raw.set_actor(actor_for_device(ward.device_id))  # home writes as if it were ward
    with raw.transaction() as tx:
        tx.put(am.ROOT, "given_name", am.ScalarType.Str, "Mallory")
    before = {c.hash for c in RecordDocument.load(stored).automerge.get_changes([])}
    reason = forged.authorship(directory(ward, home), known=before)
    assert reason is not None and "is not signed by that device" in reason
    store = MemoryDocumentStore()
    store.put_documents([RecordDocument.load(stored)])
    report = apply_documents(
        store,
        [(doc.id, raw.save())],
        device_id=home.device_id,
        authorship=directory(ward, home),
    )
    assert report.received == set() and "not signed" in report.rejected[0].reason


def test_a_change_claiming_another_author_is_refused(ward: Device, home: Device) -> None:
    doc = new_patient(ward)
    known = {c.hash for c in doc.automerge.get_changes([])}
    # home signs its change, but says ward made it.
    doc.update({"mrn": "M-9"}, device_id=home.device_id, signer=home)
    raw = doc.automerge
    raw.set_actor(actor_for_device(home.device_id))
    with raw.transaction() as tx:
        tx.put(am.ROOT, "updated_by", am.ScalarType.Str, ward.device_id)
    doc = RecordDocument.load(raw.save())
    doc.seal(home)
    reason = doc.authorship(directory(ward, home), known=known)
    assert reason == f"a change by device {home.device_id} writes updated_by = '{ward.device_id}'"


def test_an_assessment_device_id_must_be_its_author(ward: Device, home: Device) -> None:
    values = {
        "wound_id": "w-1",
        "patient_id": "p-1",
        "captured_at": "2024-05-01T10:00:00+00:00",
        "device_id": ward.device_id,
    }
    honest = RecordDocument.create(
        WoundAssessment, values, device_id=ward.device_id, clinic_id=CLINIC, signer=ward
    )
    assert honest.authorship(directory(ward)) is None
    lying = RecordDocument.create(
        WoundAssessment, values, device_id=home.device_id, clinic_id=CLINIC, signer=home
    )
    reason = lying.authorship(directory(ward, home))
    assert reason is not None and "writes device_id" in reason


def test_unknown_devices_and_bad_signatures_are_refused(ward: Device, home: Device) -> None:
    doc = new_patient(home)
    reason = doc.authorship(directory(ward))
    assert reason == f"device {home.device_id} is not an enrolled device of clinic {CLINIC}"
    other_clinic = directory(home, clinic="clinic-2")
    assert doc.authorship(other_clinic) == reason
    impostor = Device(device_id=home.device_id)  # home's id, another key
    assert doc.authorship(directory(impostor)) == (
        f"a signature by device {home.device_id} does not verify"
    )


def test_unsigned_changes_are_refused(ward: Device) -> None:
    unsigned = RecordDocument.create(
        Patient,
        {"given_name": "Ada", "family_name": "Okafor", "birth_date": "1950-03-01"},
        device_id=ward.device_id,
        clinic_id=CLINIC,
    )
    reason = unsigned.authorship(directory(ward))
    assert reason is not None and "is not signed by that device" in reason


def test_concurrent_signers_both_verify_after_a_merge(ward: Device, home: Device) -> None:
    note = RecordDocument.create(
        ClinicalNote,
        {"patient_id": "p-1", "author": "RN", "text": "Clean."},
        device_id=ward.device_id,
        clinic_id=CLINIC,
        signer=ward,
    )
    other = RecordDocument.load(note.save(), device_id=home.device_id)
    note.splice_text("text", 0, 0, "Day 2. ", device_id=ward.device_id, signer=ward)
    other.splice_text("text", 6, 0, " Dry.", device_id=home.device_id, signer=home)
    known = {c.hash for c in note.automerge.get_changes([])}
    assert note.merge(other)
    assert note.authorship(directory(ward, home), known=known) is None
    assert note.authorship(directory(ward, home)) is None
    assert {e.device_id for e in note.history(directory=directory(ward, home))} == {
        ward.device_id,
        home.device_id,
    }
