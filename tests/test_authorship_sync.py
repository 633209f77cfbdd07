"""Signed authorship through the SDK: every local write is signed, every replica checks
what it receives (bundles, a hub), whichever device relayed it, and history says whose
signature verifies."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from automerge import core as am

from crdt import (
    MemoryDocumentStore,
    RecordDocument,
    StaticDirectory,
    SyncSession,
    actor_for_device,
    apply_documents,
    run_in_memory,
)
from edge_sdk import (
    Argon2Params,
    MemoryHub,
    MemoryTransport,
    RecordNotFoundError,
    export_bundle,
    import_bundle,
)

SECRET = "bundle passphrase for tests"
FAST = Argon2Params.fast()


def transport(hub: MemoryHub, client: Any) -> MemoryTransport:
    return MemoryTransport(
        hub,
        device_id=client.device_id,
        clinic_id=client.clinic_id,
        public_key=client.identity.public_key,
    )


def add_patient(client: Any, family: str = "Okafor") -> str:
    record = client.patients.add(given_name="Ada", family_name=family, birth_date="1950-01-01")
    return str(record.id)


def forge(client: Any, record_id: str, victim: str) -> None:
    """`client` writes a change to its own store under `victim`'s actor (around the SDK)."""
    store = client.replica.store
    document = store.get_document(record_id)
    raw = document.automerge
    raw.set_actor(actor_for_device(victim))
    with raw.transaction() as tx:
        tx.put(am.ROOT, "family_name", am.ScalarType.Str, "Forged")
    store.put_documents([RecordDocument.load(raw.save())])


def test_every_local_write_is_signed_and_history_says_it_verifies(tmp_store: Any) -> None:
    ward = tmp_store("ward")
    record = add_patient(ward)
    ward.patients.update(record, mrn="M-1")
    ward.patients.delete(record)
    history = ward.patients.history(record)
    assert [(e.action, e.verified) for e in history] == [
        ("created", True),
        ("updated", True),
        ("deleted", True),
    ]
    document = ward.replica.store.get_document(record)
    assert document.authorship(ward.replica.directory) is None


def test_a_relayed_document_keeps_its_authors_signatures(tmp_store: Any, tmp_path: Path) -> None:
    hub = MemoryHub()
    ward, home, office = tmp_store("ward"), tmp_store("home"), tmp_store("office")
    for client in (ward, home, office):
        transport(hub, client)  # each device enrolled with the hub
    record = add_patient(ward)
    path = tmp_path / "ward.bundle"
    export_bundle(ward, path, passphrase=SECRET, kdf=FAST, everything=True)
    assert import_bundle(home, path, passphrase=SECRET).received == {record}
    home.patients.update(record, mrn="H-1")
    # home pushes ward's record (and its own change) to the hub: both authors verify.
    result = home.sync(transport=transport(hub, home))
    assert result.pushed == [record] and result.refused_by_server == []
    pulled = office.sync(transport=transport(hub, office))
    assert pulled.pulled == [record] and pulled.rejected == []
    authors = {(e.device_id, e.verified) for e in office.patients.history(record)}
    assert authors == {(ward.device_id, True), (home.device_id, True)}


def test_a_change_forged_in_another_devices_name_is_refused_everywhere(
    tmp_store: Any, tmp_path: Path
) -> None:
    hub = MemoryHub()
    ward, mallory, office = tmp_store("ward"), tmp_store("mallory"), tmp_store("office")
    for client in (ward, mallory, office):
        transport(hub, client)
    record = add_patient(ward)
    ward.sync(transport=transport(hub, ward))
    mallory.sync(transport=transport(hub, mallory))
    forge(mallory, record, victim=ward.device_id)
    # The hub refuses it...
    pushed = mallory.sync(transport=transport(hub, mallory))
    assert [r.doc_id for r in pushed.refused_by_server] == [record]
    assert "is not signed by that device" in pushed.refused_by_server[0].reason
    # ...and so does a device that receives it in a bundle.
    office.sync(transport=transport(hub, office))
    path = tmp_path / "mallory.bundle"
    export_bundle(mallory, path, passphrase=SECRET, kdf=FAST, everything=True)
    report = import_bundle(office, path, passphrase=SECRET)
    assert [r.doc_id for r in report.rejected] == [record]
    assert office.patients.get(record).family_name == "Okafor"


def test_a_forged_document_is_quarantined_after_a_device_to_device_session(
    tmp_store: Any,
) -> None:
    """A peer tablet offering a record the receiver lacks sends it whole (a DOC entry)
    with its record hint: the receiver stores it from the claim and verifies it like
    every other path before any read shows it; a forged change is quarantined."""
    ward, mallory, office = tmp_store("ward"), tmp_store("mallory"), tmp_store("office")
    record = add_patient(ward)
    run_in_memory(ward.sync_session(), mallory.sync_session())
    forge(mallory, record, victim=ward.device_id)
    honest = add_patient(mallory, family="Adeyemi")
    sink = office.sync_session()
    run_in_memory(mallory.sync_session(), sink)
    assert sink.report.received == {record, honest} and sink.report.rejected == []
    with pytest.raises(RecordNotFoundError):  # verified on the read, and quarantined
        office.patients.get(record)
    assert office.patients.get(honest).family_name == "Adeyemi"
    status = office.wait_verified()
    assert status.done and [q.record_id for q in status.quarantined] == [record]
    assert "is not signed by that device" in status.quarantined[0].reason
    assert record not in office.replica.document_heads()


def test_a_forged_document_is_refused_by_a_session_that_verifies_as_it_receives(
    tmp_store: Any,
) -> None:
    """A receiver that stores nothing from claims (a relay's `MemoryDocumentStore`)
    checks the forged change as it arrives and refuses it in the session."""
    ward, mallory = tmp_store("ward"), tmp_store("mallory")
    record = add_patient(ward)
    run_in_memory(ward.sync_session(), mallory.sync_session())
    forge(mallory, record, victim=ward.device_id)
    relay = SyncSession(
        MemoryDocumentStore(),
        device_id=str(uuid.uuid4()),
        authorship=StaticDirectory({(ward.clinic_id, ward.device_id): ward.identity.public_key}),
    )
    run_in_memory(mallory.sync_session(), relay)
    assert [r.doc_id for r in relay.report.rejected] == [record]
    assert "is not signed by that device" in relay.report.rejected[0].reason


def test_a_revoked_devices_new_changes_are_refused_when_relayed(tmp_store: Any) -> None:
    hub = MemoryHub()
    ward, stolen, office = tmp_store("ward"), tmp_store("stolen"), tmp_store("office")
    for client in (ward, stolen, office):
        transport(hub, client)
    record = add_patient(stolen)  # signed before the device was lost: stays valid
    stolen.sync(transport=transport(hub, stolen))
    ward.sync(transport=transport(hub, ward))
    hub.revoke(stolen.device_id)
    stolen.patients.update(record, mrn="AFTER")  # signed with a revoked device's key
    relayed = stolen.replica.store.saved_document(record)
    assert relayed is not None
    # ward receives the new change (say, in a bundle) and relays it: the hub refuses it,
    # and ward itself, having synced the directory without the revoked device, too.
    ward.sync(transport=transport(hub, ward))
    refused = apply_documents(
        ward.replica.documents,
        [(record, relayed)],
        device_id=ward.device_id,
        authorship=ward.replica.directory,
    )
    assert [r.doc_id for r in refused.rejected] == [record]
    assert "not an enrolled device" in refused.rejected[0].reason
    assert ward.patients.get(record).mrn is None
