"""A first sync stores records from the server's claim and verifies them after.

A device that pulls from nothing asks for record hints and stores each new document
with the heads and projection the server describes, without loading it; the replica
verifies every one afterwards (in the background, or before any read that would show
it). These tests hold the server to that: what it claims is checked, a lie is caught
and quarantined, and a store closed before verification finished resumes it on open.

Every test runs on SQLite and on PostgreSQL (the `server` fixture).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from automerge import core as am
from sqlalchemy import select, update

import edge_sdk._http_transport
from crdt import RecordDocument, actor_for_device, schema_versions
from edge_sdk import (
    Argon2Params,
    EdgeClient,
    PassphraseKeyProvider,
    RecordNotFoundError,
    RetryPolicy,
)
from sync_server.identity.enrolment import create_enrolment_token
from sync_server.sync.tables import Document, PatientRow, WoundRow

FAST = RetryPolicy(attempts=6, base_seconds=0.01, cap_seconds=0.05, timeout_seconds=30)
KEYS = PassphraseKeyProvider("pass phrase", params=Argon2Params.fast())


class Clinic:
    """One clinic on the server, and the devices a test makes in it."""

    def __init__(self, root: Path, server: Any) -> None:
        self.root = root
        self.server = server
        self.clinic_id = server.new_clinic()
        self.clients: list[EdgeClient] = []

    def device(self, name: str, *, background: bool = True) -> EdgeClient:
        client = EdgeClient.init(self.root / name, KEYS, clinic_id=self.clinic_id)
        self.clients.append(client)
        with self.server.db.write() as session:
            token, _ = create_enrolment_token(
                session=session, clinic_id=self.clinic_id, ttl=timedelta(minutes=10)
            )
        client.enroll(self.server.url, token, name=name)
        if not background:  # the test decides when records get verified
            client.replica.verification.close()
        return client

    def reopen(self, client: EdgeClient) -> EdgeClient:
        path = client.replica.path
        client.close()
        self.clients.remove(client)
        again = EdgeClient.open(path, KEYS)
        self.clients.append(again)
        return again


@pytest.fixture
def clinic(tmp_path: Path, server: Any) -> Iterator[Clinic]:
    made = Clinic(tmp_path, server)
    yield made
    for client in made.clients:
        client.close()


def fill(client: EdgeClient, patients: int) -> list[str]:
    ids = []
    for i in range(patients):
        patient = client.patients.add(
            given_name=f"Ada{i}", family_name="Okafor", birth_date="1950-01-01", mrn=f"M-{i}"
        )
        client.wounds.add(patient_id=patient.id, body_site="left heel", etiology="pressure")
        ids.append(str(patient.id))
    client.sync(retry=FAST)
    return ids


def pending(client: EdgeClient) -> set[str]:
    return set(client.replica.store.unverified())


def test_a_first_sync_stores_from_the_claim_and_verifies_everything(clinic: Clinic) -> None:
    ward, home = clinic.device("ward"), clinic.device("home")
    ids = fill(ward, 20)
    patient, wound = ids[0], ward.wounds.list(patient_id=ids[0])[0].id
    assessment = ward.assessments.add(
        wound_id=wound,
        patient_id=patient,
        captured_at="2025-01-02T10:00:00+00:00",
        device_id=ward.device_id,
        measurements={"area_cm2": 4.1, "max_depth_mm": 3.3, "volume_cm3": 0.1 + 0.2},
    )
    note = ward.notes.add(patient_id=patient, author="Dr Ade", text="Clean, granulating.")
    ward.sync(retry=FAST)
    # Two devices change one field at once: the server's copy holds a conflict.
    home.sync(retry=FAST)
    ward.patients.update(ids[1], mrn="WARD")
    home.patients.update(ids[1], mrn="HOME")
    ward.sync(retry=FAST)
    home.sync(retry=FAST)
    ward.sync(retry=FAST)
    assert ward.patients.conflicts(ids[1])

    fresh = clinic.device("fresh")
    result = fresh.sync(retry=FAST)
    assert len(result.pulled) == 42 and not result.rejected
    # Patients, wounds and assessments come with hints; the note is merged as before.
    assert result.unverified == 41

    status = fresh.wait_verified(timeout=60)
    assert status.done and status.quarantined == ()
    assert pending(fresh) == set()
    for record_id in ids:
        assert fresh.patients.get(record_id) == ward.patients.get(record_id)
    assert sorted(w.id for w in fresh.wounds.list()) == sorted(w.id for w in ward.wounds.list())
    assert fresh.assessments.get(assessment.id) == ward.assessments.get(assessment.id)
    assert fresh.notes.get(note.id) == ward.notes.get(note.id)
    assert fresh.patients.conflicts(ids[1]) == ward.patients.conflicts(ids[1])
    # The same documents, byte for byte heads, as the devices that wrote them.
    assert fresh.replica.document_heads() == ward.replica.document_heads()

    # A later sync is an ordinary merge: edits go both ways.
    fresh.patients.update(ids[0], mrn="M-NEW")
    fresh.sync(retry=FAST)
    again = ward.sync(retry=FAST)
    assert again.unverified == 0
    assert ward.patients.get(ids[0]).mrn == "M-NEW"


def test_no_read_shows_a_record_before_it_is_verified(clinic: Clinic) -> None:
    ward = clinic.device("ward")
    ids = fill(ward, 5)
    fresh = clinic.device("fresh", background=False)
    fresh.sync(retry=FAST)
    assert len(pending(fresh)) == 10

    fresh.patients.get(ids[0])  # verifies the record it shows, first
    assert ids[0] not in pending(fresh) and len(pending(fresh)) == 9
    fresh.wounds.list()  # verifies the collection it lists
    left = pending(fresh)
    assert len(left) == 4 and left <= set(ids)
    # Editing a record builds on its document: verified before the edit.
    fresh.patients.update(ids[1], mrn="M-EDIT")
    assert ids[1] not in pending(fresh)
    # Offering the store to a peer (a sync session) verifies what it offers.
    fresh.replica.document_heads()
    assert pending(fresh) == set()
    assert fresh.verification_status().quarantined == ()


def _tamper_projection(server: Any, record_id: str) -> None:
    """The server's projection row says something the document does not."""
    with server.db.write() as session:
        row = session.get(PatientRow, record_id)
        record = json.loads(row.record)
        record["family_name"] = "Tampered"
        session.execute(
            update(PatientRow)
            .where(PatientRow.id == record_id)
            .values(family_name="Tampered", record=json.dumps(record, separators=(",", ":")))
        )


def _unsigned_change(server: Any, record_id: str, author: str) -> None:
    """The server's copy gets a change under an enrolled device's actor that the device
    never signed; heads and projection are made to agree with it, so only the missing
    signature betrays it."""
    with server.db.write() as session:
        data = session.execute(select(Document.data).where(Document.id == record_id)).scalar_one()
        raw = RecordDocument.load(bytes(data)).automerge
        raw.set_actor(actor_for_device(author))
        with raw.transaction() as tx:
            tx.put(am.ROOT, "family_name", am.ScalarType.Str, "Forged")
        forged = RecordDocument.load(raw.save())
        record = forged.read()
        session.execute(
            update(Document)
            .where(Document.id == record_id)
            .values(data=forged.save(), heads=b"".join(sorted(forged.heads)))
        )
        session.execute(
            update(PatientRow)
            .where(PatientRow.id == record_id)
            .values(family_name="Forged", record=record.model_dump_json())
        )


@pytest.mark.parametrize("tamper", ["projection", "unsigned change"])
def test_a_lie_from_the_server_is_caught_quarantined_and_reported(
    clinic: Clinic, tamper: str
) -> None:
    ward = clinic.device("ward")
    ids = fill(ward, 4)
    victim = ids[2]
    if tamper == "projection":
        _tamper_projection(clinic.server, victim)
    else:
        _unsigned_change(clinic.server, victim, ward.replica.device_id)
    fresh = clinic.device("fresh", background=False)
    fresh.sync(retry=FAST)

    with pytest.raises(RecordNotFoundError):
        fresh.patients.get(victim)  # verified first: found out, never shown
    status = fresh.verification_status()
    assert [q.record_id for q in status.quarantined] == [victim]
    quarantined = status.quarantined[0]
    assert quarantined.collection == "patients" and not quarantined.retry
    if tamper == "projection":
        assert "differs from the document" in quarantined.reason
    else:
        assert "not signed" in quarantined.reason
    # Nothing of it stays in the store; everything else verifies and reads.
    assert victim not in fresh.replica.document_heads()
    assert all(p.family_name == "Okafor" for p in fresh.patients.list())
    assert len(fresh.patients.list()) == 3
    # Reported: the quarantine is in the device's audit chain, which reaches the server.
    events = [json.loads(e.canonical) for e in fresh.replica.audit.events()]
    assert [e["records"] for e in events if e["action"] == "quarantine"] == [[victim]]
    # A later sync does not bring it back, nor push it on.
    fresh.sync(retry=FAST)
    assert victim not in fresh.replica.document_heads()
    assert [q.record_id for q in fresh.verification_status().quarantined] == [victim]


def test_a_hint_that_cannot_be_stored_falls_back_to_the_full_merge(clinic: Clinic) -> None:
    """A claim shaped wrong for its projection (a list where a column takes text) is not
    stored from: the document is merged from its own bytes, with every check."""
    ward = clinic.device("ward")
    fill(ward, 3)
    wound = ward.wounds.list()[0].id
    with clinic.server.db.write() as session:
        row = session.get(WoundRow, wound)
        record = json.loads(row.record)
        record["body_site"] = ["not", "text"]
        row.record = json.dumps(record)
    fresh = clinic.device("fresh")
    result = fresh.sync(retry=FAST)
    assert len(result.pulled) == 6 and not result.rejected
    assert result.unverified == 5  # the three patients and the two other wounds
    assert fresh.wounds.get(wound).body_site == "left heel"  # the document's own value
    assert fresh.wait_verified(timeout=60).quarantined == ()


def test_a_device_reading_records_at_other_schema_versions_gets_no_hints(
    clinic: Clinic, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An app at other record schema versions would read a true claim to other values
    (and quarantine it): the server sends it documents alone, each merged in full."""
    ward = clinic.device("ward")
    ids = fill(ward, 4)
    fresh = clinic.device("fresh")
    monkeypatch.setattr(
        edge_sdk._http_transport, "schema_versions", lambda: "patients:99," + schema_versions()
    )
    result = fresh.sync(retry=FAST)
    assert len(result.pulled) == 8 and not result.rejected
    assert result.unverified == 0 and pending(fresh) == set()
    assert [fresh.patients.get(i) for i in ids] == [ward.patients.get(i) for i in ids]
    monkeypatch.undo()
    later = clinic.device("later")  # the same app as the server's: hints again
    assert later.sync(retry=FAST).unverified == 8


def test_a_store_closed_before_verification_finished_resumes_it_on_open(
    clinic: Clinic,
) -> None:
    ward = clinic.device("ward")
    ids = fill(ward, 10)
    fresh = clinic.device("fresh", background=False)
    fresh.sync(retry=FAST)
    assert len(pending(fresh)) == 20

    reopened = clinic.reopen(fresh)
    status = reopened.wait_verified(timeout=60)
    assert status.done and status.quarantined == ()
    assert pending(reopened) == set()
    assert {p.id for p in reopened.patients.list()} == set(ids)


def test_the_sync_status_counts_pending_uploads_without_verifying_the_first_sync(
    clinic: Clinic,
) -> None:
    ward = clinic.device("ward")
    fill(ward, 10)
    home = clinic.device("home", background=False)
    home.sync(retry=FAST)
    waiting = pending(home)
    assert len(waiting) == 20  # ten patients and their wounds, stored from the claim
    seen: list[Any] = []
    with home.on_sync_status(seen.append):
        assert home.sync_status().pending_records == 0
        home.patients.add(given_name="Bo", family_name="Ng", birth_date="1960-01-01")
    # The new patient is waiting to go up, and counting it verified nothing.
    assert [status.pending_records for status in seen] == [1]
    assert pending(home) == waiting


def test_the_background_checks_without_the_store_and_a_read_meanwhile_decides_once(
    clinic: Clinic,
) -> None:
    """The background thread holds the store's lock only to read a chunk and to record
    what it found: while it checks signatures, the app reads (and verifies what it
    reads) without waiting; a record verified by that read is not recorded twice."""
    ward = clinic.device("ward")
    ids = fill(ward, 4)
    victim = ids[2]
    _tamper_projection(clinic.server, victim)
    fresh = clinic.device("fresh")
    directory = fresh.replica.directory
    inside, release = threading.Event(), threading.Event()
    held: list[bool] = []
    device_key = directory.device_key

    def paused(device_id: str, clinic_id: str, declared: bytes | None) -> bytes | None:
        # The background's first signature check waits here until the test lets it go.
        if threading.current_thread().name == "edge-sdk-verification" and not inside.is_set():
            inside.set()
            held.append(release.wait(30))
        return device_key(device_id, clinic_id, declared)

    directory.device_key = paused  # type: ignore[method-assign]
    fresh.sync(retry=FAST)
    assert inside.wait(30), "the background verification did not start"

    # The background thread is inside a check: the store answers, and a read verifies
    # (here: quarantines) the record it shows.
    with pytest.raises(RecordNotFoundError):
        fresh.patients.get(victim)
    assert fresh.patients.get(ids[0]).family_name == "Okafor"
    assert not release.is_set()
    release.set()

    status = fresh.wait_verified(timeout=60)
    assert held == [True]  # it was still waiting when the reads above returned
    assert status.done and [q.record_id for q in status.quarantined] == [victim]
    events = [json.loads(e.canonical) for e in fresh.replica.audit.events()]
    assert [e["records"] for e in events if e["action"] == "quarantine"] == [[victim]]
    assert sorted(p.id for p in fresh.patients.list()) == sorted(i for i in ids if i != victim)
    assert len(fresh.wounds.list()) == 4
