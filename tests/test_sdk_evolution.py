"""One error tree, access listeners, record schema evolution and conflict policies."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from automerge import core as am

import crdt
import edge_sdk
from edge_sdk import (
    Argon2Params,
    EdgeClient,
    EdgeError,
    MemoryHub,
    PassphraseKeyProvider,
    latest_wins,
    merge_lists,
)
from edge_sdk._store import SCHEMA_VERSION
from tests.conftest import connect

FIXTURE = Path(__file__).parent / "fixtures" / "store_v1"
"""A store written by the app before assessments v2 (tests/fixtures/README)."""


def add_wound(client: EdgeClient) -> tuple[str, str]:
    patient = client.patients.add(given_name="Ada", family_name="Okafor", birth_date="1950-03-01")
    wound = client.wounds.add(patient_id=patient.id, body_site="heel", etiology="pressure")
    return patient.id, wound.id


# ------------------------------------------------------------------ error tree
FAILING_CALLS: dict[str, tuple[Callable[[EdgeClient], Any], type[Exception]]] = {
    "add, invalid": (lambda c: c.patients.add(given_name=""), crdt.RecordValidationError),
    "add, unknown field": (
        lambda c: c.patients.add(given_name="A", family_name="B", birth_date="1950-01-01", x=1),
        crdt.RecordValidationError,
    ),
    "add, dangling reference": (
        lambda c: c.wounds.add(patient_id="0" * 32, body_site="heel", etiology="pressure"),
        crdt.RecordValidationError,
    ),
    "update, immutable": (
        lambda c: c.patients.update(c.patients.list()[0].id, clinic_id="other"),
        crdt.RecordValidationError,
    ),
    "resolve, no conflict": (
        lambda c: c.patients.resolve(c.patients.list()[0].id, "mrn", "M"),
        crdt.NoConflictError,
    ),
    "splice outside the text": (
        lambda c: c.notes.splice(c.notes.list()[0].id, 99, 1, "x"),
        crdt.RecordValidationError,
    ),
    "get, unknown id": (lambda c: c.patients.get("nope"), edge_sdk.RecordNotFoundError),
    "list, unknown filter": (lambda c: c.patients.list(colour="red"), ValueError),
    "collection, unknown": (lambda c: c.collection("pets"), ValueError),
    "list_intents, unknown state": (lambda c: c.list_intents(state="maybe"), ValueError),
    "write a server-owned collection": (
        lambda c: c.decisions.add(intent_id="x", status="accepted"),
        edge_sdk.ReadOnlyCollectionError,
    ),
    "sync, not enrolled": (lambda c: c.sync(), edge_sdk.NotEnrolledError),
    "import a non-bundle": (
        lambda c: edge_sdk.import_bundle(c, c.path / "keyring.json", passphrase="x"),
        edge_sdk.BundleFormatError,
    ),
    "on_conflict, unknown field": (
        lambda c: c.on_conflict("wounds", "colour", latest_wins),
        ValueError,
    ),
}


@pytest.mark.parametrize("name", sorted(FAILING_CALLS))
def test_every_failure_is_an_edge_error(tmp_store: Any, name: str) -> None:
    client = tmp_store("a")
    patient_id, _ = add_wound(client)
    client.notes.add(patient_id=patient_id, author="RN", text="ok")
    call, also = FAILING_CALLS[name]
    with pytest.raises(EdgeError) as caught:
        call(client)
    assert isinstance(caught.value, also)  # `except crdt.X` / `except ValueError` still work
    assert str(caught.value)


def test_translated_errors_keep_their_attributes(tmp_store: Any) -> None:
    client = tmp_store("a")
    with pytest.raises(edge_sdk.RecordValidationError) as caught:
        client.patients.add(given_name="", family_name="B", birth_date="1950-01-01")
    assert caught.value.collection == "patients"
    assert any(line.startswith("given_name") for line in caught.value.errors)


def test_the_cli_maps_translated_errors_as_before() -> None:
    from cli._app import EXIT_CODES, EXIT_INVALID

    error = edge_sdk.RecordValidationError("patients", ["given_name: too short"])
    assert next(code for kind, code in EXIT_CODES if isinstance(error, kind)) == EXIT_INVALID


# ------------------------------------------------------------------ access listeners
def test_a_failing_access_listener_leaves_one_write_and_a_log_line(
    tmp_store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client = tmp_store("a")
    heard: list[str] = []

    def broken(event: edge_sdk.AccessEvent) -> None:
        raise RuntimeError("listener bug")

    client.add_access_listener(broken)
    subscription = client.add_access_listener(lambda e: heard.append(e.action))
    with caplog.at_level(logging.ERROR, logger="edge_sdk"):
        patient = client.patients.add(given_name="A", family_name="B", birth_date="1950-01-01")
    assert [p.id for p in client.patients.list()] == [patient.id]
    assert "listener bug" in caplog.text
    assert "create" in heard
    subscription.cancel()
    heard.clear()
    client.patients.get(patient.id)
    assert heard == []
    # The audit journal is in the write's transaction, unaffected by listeners.
    assert client.verify_audit().ok


# ------------------------------------------------------------------ schema evolution
def test_a_store_of_the_previous_version_opens_and_upgrades(tmp_path: Path) -> None:
    path = tmp_path / "store"
    shutil.copytree(FIXTURE, path)
    provider = PassphraseKeyProvider("correct horse battery staple", params=Argon2Params.fast())
    with EdgeClient.open(path, provider, idle_lock_after=None) as client:
        assert client.replica.store.get_meta("schema_version") == str(SCHEMA_VERSION)  # from 5
        assessments = client.assessments.list()
        assert len(assessments) == 3
        by_date = {a.captured_at.day: a.measurements for a in assessments}
        assert (by_date[1].area_cm2, by_date[1].area_method) == (3.1, "measured")
        assert (by_date[8].area_cm2, by_date[8].area_method) == (2.36, "ellipse")  # pi/4*2*1.5
        assert (by_date[15].area_cm2, by_date[15].area_method) == (None, None)
        # The projection column was rebuilt: a filter on it sees the estimate.
        rows = client.replica.store.query_records("assessments", ["area_cm2 > ?"], [2.0])
        assert len(rows) == 2
        upgraded = client.replica.store.get_document(by_date_id(client, 8))
        assert upgraded is not None and upgraded.schema_version == 2
        history = client.assessments.history(upgraded.id)
        assert history[-1].device_id == client.device_id
        assert history[-1].fields == ("measurements",)
        assert client.verify_audit().ok
    with EdgeClient.open(path, provider, idle_lock_after=None) as again:  # once only
        assert again._upgrades.run() == 0


def by_date_id(client: EdgeClient, day: int) -> str:
    return next(a.id for a in client.assessments.list() if a.captured_at.day == day)


def newer_assessment(client: EdgeClient, wound_id: str, patient_id: str) -> bytes:
    """An assessment as a newer app (record schema version 3, a field this app does not
    know) would write it, signed by `client`'s device."""
    record = client.assessments.add(
        wound_id=wound_id,
        patient_id=patient_id,
        device_id=client.device_id,
        captured_at="2024-06-01T10:00:00+00:00",
    )
    document = client.replica.store.get_document(record.id, device_id=client.device_id)
    assert document is not None
    doc = document.automerge
    with doc.transaction() as tx:
        tx.put(am.ROOT, "schema_version", am.ScalarType.Int, 3)
        tx.put(am.ROOT, "wound_bed", am.ScalarType.Str, '{"granulation": 80}')
    newer = crdt.RecordDocument.load(doc.save(), device_id=client.device_id)
    newer.seal(client.identity)
    return newer.save()


def test_an_older_app_keeps_a_newer_record_and_says_so(tmp_store: Any) -> None:
    newer_app, older_app, third = tmp_store("new"), tmp_store("old"), tmp_store("third")
    patient_id, wound_id = add_wound(newer_app)
    data = newer_assessment(newer_app, wound_id, patient_id)
    doc = crdt.RecordDocument.load(data)
    with newer_app.batch():
        newer_app.replica.store.put_documents([doc])
    # Device to device (a session; bundles merge the same way), then on to a third.
    crdt.run_in_memory(newer_app.sync_session(), older_app.sync_session())
    crdt.run_in_memory(older_app.sync_session(), third.sync_session())
    assert older_app.records_needing_update() == [(doc.id, "assessments", 3)]
    with pytest.raises(edge_sdk.RecordFromNewerAppError) as caught:
        older_app.assessments.get(doc.id)
    assert caught.value.version == 3 and "update the app" in str(caught.value)
    with pytest.raises(edge_sdk.RecordFromNewerAppError):
        older_app.assessments.update(doc.id, clinician="RN")
    assert older_app.assessments.list() == []  # the rest of the store reads as ever
    assert older_app.patients.get(patient_id).id == patient_id
    # Kept whole and synced on: the third device holds the same document.
    assert third.replica.store.saved_document(doc.id) == older_app.replica.store.saved_document(
        doc.id
    )


def test_ingest_accepts_both_versions(tmp_store: Any) -> None:
    """`crdt.apply_documents` is what the server's push ingest runs on every document."""
    client = tmp_store("a")
    v1 = crdt.RecordDocument.load((FIXTURE.parent / "assessment_v1.automerge").read_bytes())
    assert v1.schema_version == 1
    patient_id, wound_id = add_wound(client)
    v2 = client.assessments.add(
        wound_id=wound_id,
        patient_id=patient_id,
        device_id=client.device_id,
        captured_at="2024-06-01T10:00:00+00:00",
        measurements={"area_cm2": 1.0, "area_method": "measured"},
    )
    v2_bytes = client.replica.store.saved_document(v2.id)
    assert v2_bytes is not None
    store = crdt.MemoryDocumentStore()
    report = crdt.apply_documents(
        store, [(v1.id, v1.save()), (v2.id, v2_bytes)], device_id=client.device_id
    )
    assert report.rejected == [] and set(report.received) == {v1.id, v2.id}


# ------------------------------------------------------------------ conflict policies
def concurrent_status(hub: MemoryHub, a: EdgeClient, b: EdgeClient) -> str:
    _, wound_id = add_wound(a)
    a.sync(transport=connect(hub, a))
    b.sync(transport=connect(hub, b))
    a.wounds.update(wound_id, status="healing")
    b.wounds.update(wound_id, status="healed")  # later: latest_wins keeps it
    return wound_id


def test_latest_wins_on_two_devices_converges_and_stops(tmp_store: Any) -> None:
    hub = MemoryHub()
    a, b = tmp_store("a"), tmp_store("b")
    for client in (a, b):
        client.on_conflict("wounds", "status", latest_wins)
    wound_id = concurrent_status(hub, a, b)
    for _ in range(3):
        for client in (a, b):
            client.sync(transport=connect(hub, client))
    assert a.wounds.get(wound_id).status == b.wounds.get(wound_id).status == "healed"
    assert a.conflicts() == b.conflicts() == []
    heads = (a.replica.document_heads(), b.replica.document_heads())
    for client in (a, b):  # nothing more to write: no loop
        client.sync(transport=connect(hub, client))
    assert (a.replica.document_heads(), b.replica.document_heads()) == heads
    resolutions = [e for e in a.wounds.history(wound_id) if e.fields == ("status",)]
    assert len(resolutions) == 4  # two edits, one resolution by each device


def test_ask_the_user_is_asked_once_and_cancel_restores_the_default(tmp_store: Any) -> None:
    hub = MemoryHub()
    a, b = tmp_store("a"), tmp_store("b")
    asked: list[crdt.FieldConflict] = []
    subscription = a.on_conflict("wounds", "status", lambda c: asked.append(c))
    wound_id = concurrent_status(hub, a, b)
    b.sync(transport=connect(hub, b))
    a.sync(transport=connect(hub, a))
    a.patients.add(given_name="C", family_name="D", birth_date="1950-01-01")
    a.sync(transport=connect(hub, a))
    assert [c.record_id for c in asked] == [wound_id]
    assert {v.value for v in asked[0].values} == {"healing", "healed"}
    assert all(v.at is not None for v in asked[0].values)
    assert [c.field for c in a.conflicts()] == ["status"]  # left for a person
    subscription.cancel()


def test_merge_lists_unions_the_values() -> None:
    values = (
        crdt.ConflictValue(value=["a", "b"], device_id="1", current=False),
        crdt.ConflictValue(value=["b", "c"], device_id="2", current=True),
    )
    conflict = crdt.FieldConflict("r", "assessments", "quality_flags", values)
    assert merge_lists(conflict) == ["a", "b", "c"]


def test_a_server_of_the_older_version_refuses_a_newer_record_with_the_reason(
    tmp_store: Any,
) -> None:
    hub = MemoryHub()  # the server's sync semantics
    client = tmp_store("new")
    patient_id, wound_id = add_wound(client)
    doc = crdt.RecordDocument.load(newer_assessment(client, wound_id, patient_id))
    with client.batch():
        client.replica.store.put_documents([doc])
    result = client.sync(transport=connect(hub, client))
    reasons = {r.doc_id: r.reason for r in result.refused_by_server}
    assert "update the server" in reasons[doc.id]
