"""The device's hash-chained audit log: what each SDK call writes, that an access whose
audit row cannot be written does not happen, that tampering with the store is found,
that a kill -9 leaves writes and their audit rows together, that sync pushes the chain
(in memory; the HTTP server side is tests/server/test_device_audit_push.py), and the
automatic logoff."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import sqlcipher3

import crdt
from crdt import GENESIS, canonical_json, chain_hash
from edge_sdk import (
    EdgeClient,
    MemoryHub,
    MemoryTransport,
    RecordNotFoundError,
    StoreError,
    StoreLockedError,
    WrongKeyError,
)
from edge_sdk._store import SCHEMA_VERSION
from tests.conftest import PASSPHRASE, fast_provider

REPO = Path(crdt.__file__).resolve().parents[1]


def events(client: EdgeClient) -> list[dict[str, Any]]:
    return [json.loads(e.canonical) for e in client.replica.audit.events()]


def last(client: EdgeClient) -> dict[str, Any]:
    return events(client)[-1]


def hub_transport(client: EdgeClient, hub: MemoryHub) -> MemoryTransport:
    return MemoryTransport(
        hub,
        device_id=client.device_id,
        clinic_id=client.clinic_id,
        public_key=client.identity.public_key,
    )


def tamper(client: EdgeClient, *statements: tuple[str, tuple[Any, ...]]) -> None:
    """Run SQL on the store's file with its key, as someone holding the key could."""
    store = client.replica.store
    data_key = store.data_key
    store.lock()
    conn = sqlcipher3.connect(str(client.path / "coherency.db"))
    conn.execute(f"PRAGMA key = \"x'{data_key.hex()}'\"")
    for sql, params in statements:
        conn.execute(sql, params)
    conn.commit()
    conn.close()
    client.unlock(fast_provider(PASSPHRASE))


def problems(client: EdgeClient) -> list[tuple[str, int]]:
    return [(p.kind, p.seq) for p in client.verify_audit().problems]


# ---------------------------------------------------------------- what is written
def test_every_sdk_call_on_patient_data_writes_its_chained_row(tmp_store: Any) -> None:
    client = tmp_store("a")
    client.user = "user-17"
    patient = client.patients.add(
        given_name="Ada", family_name="Okafor", birth_date=date(1980, 5, 6)
    )
    wound = client.wounds.add(patient_id=patient.id, body_site="heel", etiology="diabetic")
    note = client.notes.add(patient_id=patient.id, wound_id=wound.id, author="Dr M", text="Seen")
    blob = client.blobs.put_bytes(b"scan")

    calls: list[tuple[Callable[[], Any], str, str, str, list[str], list[str]]] = [
        (
            lambda: client.patients.get(patient.id),
            "R",
            "read",
            "patients",
            [patient.id],
            [patient.id],
        ),
        (lambda: client.patients.list(), "R", "list", "patients", [patient.id], [patient.id]),
        (
            lambda: client.patients.search("oka"),
            "R",
            "search",
            "patients",
            [patient.id],
            [patient.id],
        ),
        (
            lambda: client.wounds.list(patient_id=patient.id),
            "R",
            "list",
            "wounds",
            [wound.id],
            [patient.id],
        ),
        (lambda: client.notes.get(note.id), "R", "read", "notes", [note.id], [patient.id]),
        (
            lambda: client.patients.update(patient.id, mrn="M1"),
            "U",
            "update",
            "patients",
            [patient.id],
            [patient.id],
        ),
        (
            lambda: client.notes.edit(note.id, "Seen again"),
            "U",
            "update",
            "notes",
            [note.id],
            [patient.id],
        ),
        (lambda: client.wounds.delete(wound.id), "D", "delete", "wounds", [wound.id], [patient.id]),
        (
            lambda: client.wounds.restore(wound.id),
            "U",
            "restore",
            "wounds",
            [wound.id],
            [patient.id],
        ),
        (
            lambda: client.patients.history(patient.id),
            "R",
            "history",
            "patients",
            [patient.id],
            [patient.id],
        ),
        (
            lambda: client.patients.conflicts(patient.id),
            "R",
            "conflicts",
            "patients",
            [patient.id],
            [patient.id],
        ),
        (lambda: client.conflicts(), "R", "conflicts", "*", [], []),
        (
            lambda: client.blobs.read_bytes(blob.sha256),
            "R",
            "blob-read",
            "blobs",
            [blob.sha256],
            [],
        ),
    ]
    for call, operation, action, collection, records, patients in calls:
        before = client.replica.audit.head()[0]
        call()
        written = events(client)[before:]
        assert len(written) == 1, action
        assert {
            k: written[0][k] for k in ("operation", "action", "collection", "records", "patients")
        } == {
            "operation": operation,
            "action": action,
            "collection": collection,
            "records": records,
            "patients": patients,
        }
        assert written[0]["outcome"] == "ok"
        assert written[0]["user"] == "user-17" and written[0]["purpose"] == "treatment"

    chain = events(client)
    assert [e["seq"] for e in chain] == list(range(1, len(chain) + 1))
    assert chain[0]["action"] == "create" and chain[0]["operation"] == "C"
    assert chain[0]["at"].endswith("Z") and len(chain[0]["at"]) == len(
        "2026-01-01T00:00:00.000000Z"
    )
    assert set(chain[0]) == {
        "v",
        "seq",
        "at",
        "device_id",
        "user",
        "operation",
        "action",
        "collection",
        "records",
        "patients",
        "outcome",
        "purpose",
    }
    # The hashes chain from GENESIS over the canonical bytes.
    previous = GENESIS
    for stored in client.replica.audit.events():
        assert stored.canonical == canonical_json(json.loads(stored.canonical))
        assert stored.hash == chain_hash(previous, stored.canonical)
        previous = stored.hash
    # Ids only: no name, MRN or note text anywhere in the log.
    text = b"".join(e.canonical for e in client.replica.audit.events())
    for secret in (b"Okafor", b"Ada", b"M1", b"Seen", b"heel"):
        assert secret not in text
    assert client.verify_audit().ok


def test_a_failed_access_is_written_with_its_error(tmp_store: Any) -> None:
    client = tmp_store("a")
    with pytest.raises(RecordNotFoundError):
        client.patients.get("no-such-id")
    assert last(client)["outcome"] == "RecordNotFoundError"
    assert last(client)["records"] == ["no-such-id"]


def test_listeners_still_hear_every_access(tmp_store: Any) -> None:
    client = tmp_store("a")
    heard: list[str] = []
    client.add_access_listener(lambda event: heard.append(f"{event.action}:{event.outcome}"))
    patient = client.patients.add(given_name="A", family_name="B", birth_date="1950-01-01")
    client.patients.get(patient.id)
    assert heard == ["create:ok", "read:ok"]


def _break_audit_writes(client: EdgeClient) -> None:
    client.replica.store.execute(
        "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events"
        " BEGIN SELECT RAISE(ABORT, 'audit disk full'); END"
    )


def test_no_unaudited_reads_or_writes(tmp_store: Any) -> None:
    client = tmp_store("a")
    patient = client.patients.add(given_name="A", family_name="B", birth_date="1950-01-01")
    seen_before = len(events(client))
    _break_audit_writes(client)
    with pytest.raises(StoreError):
        client.patients.get(patient.id)  # the read happened, its row did not: no answer
    with pytest.raises(StoreError):
        client.patients.add(given_name="C", family_name="D", birth_date="1950-01-01")
    with pytest.raises(StoreError):
        client.patients.update(patient.id, mrn="X")
    client.replica.store.execute("DROP TRIGGER refuse_audit")
    # The writes rolled back with their audit rows.
    assert [p.id for p in client.patients.list()] == [patient.id]
    assert client.patients.get(patient.id).mrn is None
    assert len(events(client)) == seen_before + 2  # the list and the get just now


def test_a_version_3_store_gets_the_audit_tables(tmp_store: Any) -> None:
    client = tmp_store("old")
    store = client.replica.store
    store.execute("DROP TABLE audit_events")
    store.execute("DROP TABLE audit_checkpoints")
    store.set_meta("schema_version", "3")
    client.close()
    reopened = tmp_store.open("old")
    reopened.patients.list()
    assert reopened.replica.store.get_meta("schema_version") == str(SCHEMA_VERSION)
    assert events(reopened)[0]["seq"] == 1


# ---------------------------------------------------------------- tampering
@pytest.fixture
def logged(tmp_store: Any) -> EdgeClient:
    client = tmp_store("a")
    patient = client.patients.add(given_name="A", family_name="B", birth_date="1950-01-01")
    for _ in range(5):
        client.patients.get(patient.id)
    assert client.verify_audit().ok and client.replica.audit.head()[0] == 6
    return client


def test_an_edited_event_is_found(logged: EdgeClient) -> None:
    tamper(
        logged,
        (
            "UPDATE audit_events SET canonical = replace(canonical, 'read', 'list') WHERE seq = 3",
            (),
        ),
    )
    assert problems(logged) == [("altered", 3)]


def test_an_edited_event_with_its_hash_recomputed_breaks_the_next_link(logged: EdgeClient) -> None:
    rows = logged.replica.audit.events()
    canonical = rows[2].canonical.replace(b'"read"', b'"list"')
    tamper(
        logged,
        (
            "UPDATE audit_events SET canonical = ?, hash = ? WHERE seq = 3",
            (canonical, chain_hash(rows[1].hash, canonical)),
        ),
    )
    assert problems(logged) == [("altered", 4)]


def test_a_deleted_event_is_found(logged: EdgeClient) -> None:
    tamper(logged, ("DELETE FROM audit_events WHERE seq = 4", ()))
    assert ("missing", 4) in problems(logged)


def test_swapped_events_are_found(logged: EdgeClient) -> None:
    rows = logged.replica.audit.events()
    tamper(
        logged,
        (
            "UPDATE audit_events SET canonical = ?, hash = ? WHERE seq = 2",
            (rows[2].canonical, rows[2].hash),
        ),
        (
            "UPDATE audit_events SET canonical = ?, hash = ? WHERE seq = 3",
            (rows[1].canonical, rows[1].hash),
        ),
    )
    # Both are under the wrong number, and event 4 no longer follows what is at 3.
    assert problems(logged) == [("misplaced", 2), ("misplaced", 3), ("altered", 4)]


def test_the_newest_events_deleted_are_found_through_the_kept_checkpoint(
    logged: EdgeClient,
) -> None:
    hub = MemoryHub()
    result = logged.sync(transport=hub_transport(logged, hub))
    acknowledged = result.audit_acknowledged
    assert acknowledged >= 6 and logged.verify_audit().ok
    # A plain hash chain cannot tell a truncated tail: the checkpoint can.
    tamper(logged, ("DELETE FROM audit_events WHERE seq >= ?", (acknowledged - 1,)))
    assert ("truncated", acknowledged) in problems(logged)


def test_a_rewritten_chain_is_found_through_the_kept_checkpoint(logged: EdgeClient) -> None:
    hub = MemoryHub()
    acknowledged = logged.sync(transport=hub_transport(logged, hub)).audit_acknowledged
    # Rebuild a whole, self-consistent chain without event 2.
    kept = [json.loads(e.canonical) for e in logged.replica.audit.events() if e.seq != 2]
    statements: list[tuple[str, tuple[Any, ...]]] = [("DELETE FROM audit_events", ())]
    previous = GENESIS
    for seq, fields in enumerate(kept, start=1):
        fields["seq"] = seq
        canonical = canonical_json(fields)
        previous = chain_hash(previous, canonical)
        statements.append(
            (
                "INSERT INTO audit_events(seq, canonical, hash) VALUES (?, ?, ?)",
                (seq, canonical, previous),
            )
        )
    tamper(logged, *statements)
    found = problems(logged)
    assert found and all(kind == "truncated" for kind, _ in found)
    assert ("truncated", acknowledged) in found


def test_a_forged_or_rolled_back_checkpoint_is_found(logged: EdgeClient) -> None:
    hub = MemoryHub()
    logged.sync(transport=hub_transport(logged, hub))
    logged.patients.list()
    logged.sync(transport=hub_transport(logged, hub))
    assert logged.verify_audit().ok and logged.verify_audit().checkpoints == 2
    first, second = logged.replica.store.execute(
        "SELECT id, checkpoint FROM audit_checkpoints ORDER BY id"
    ).fetchall()
    forged = json.loads(second[1])
    forged["size"] += 1
    tamper(
        logged,
        (
            "UPDATE audit_checkpoints SET checkpoint = ? WHERE id = ?",
            (json.dumps(forged), second[0]),
        ),
    )
    assert [kind for kind, _ in problems(logged)] == ["checkpoint"]
    # Put the checkpoints back, in the wrong order: the later one does not extend it.
    tamper(
        logged,
        ("UPDATE audit_checkpoints SET checkpoint = ? WHERE id = ?", (second[1], second[0])),
        ("UPDATE audit_checkpoints SET id = -1 WHERE id = ?", (first[0],)),
        ("UPDATE audit_checkpoints SET id = ? WHERE id = ?", (first[0], second[0])),
        ("UPDATE audit_checkpoints SET id = ? WHERE id = -1", (second[0],)),
    )
    assert [kind for kind, _ in problems(logged)] == ["rollback"]


# ---------------------------------------------------------------- sync (in memory)
def test_sync_pushes_the_chain_append_only_and_a_restored_hub_is_caught_rolling_back(
    tmp_store: Any,
) -> None:
    client = tmp_store("a")
    hub = MemoryHub()
    client.patients.list()
    first = client.sync(transport=hub_transport(client, hub))
    assert first.audit_error is None
    backup = hub.snapshot()
    client.patients.list()
    second = client.sync(transport=hub_transport(client, hub))
    assert second.audit_acknowledged > first.audit_acknowledged
    hub.restore(backup)  # the hub lost the second push
    client.patients.list()
    third = client.sync(transport=hub_transport(client, hub))
    assert third.audit_error is None
    chain = [(e.seq, e.hash) for e in client.replica.audit.events()]
    assert [(e.seq, e.hash) for e in hub.audit_chain(client.device_id)] == chain[
        : third.audit_acknowledged
    ]
    # The device got its chain back onto the hub, and, as a witness, it noticed that the
    # hub's log went back to an earlier state (its later checkpoint does not extend the
    # one kept before the restore).
    assert [kind for kind, _ in problems(client)] == ["rollback"]


def test_a_broken_chain_is_refused_whole_and_nothing_is_lost(tmp_store: Any) -> None:
    client = tmp_store("a")
    hub = MemoryHub()
    client.patients.list()
    client.sync(transport=hub_transport(client, hub))
    held = hub.audit_chain(client.device_id)
    client.patients.list()
    client.patients.list()
    seq = len(held) + 1
    tamper(
        client,
        (
            "UPDATE audit_events SET canonical = replace(canonical, '\"ok\"', '\"no\"')"
            " WHERE seq = ?",
            (seq,),
        ),
    )
    local = len(client.replica.audit.events())
    result = client.sync(transport=hub_transport(client, hub))
    assert result.audit_error is not None and f"event {seq}" in result.audit_error
    assert hub.audit_chain(client.device_id) == held
    assert len(client.replica.audit.events()) >= local


# ---------------------------------------------------------------- crash
WRITER = textwrap.dedent(
    """
    import sys
    from edge_sdk import Argon2Params, EdgeClient, PassphraseKeyProvider

    store, passphrase = sys.argv[1:3]
    client = EdgeClient.open(store, PassphraseKeyProvider(passphrase, params=Argon2Params.fast()))
    print("ready", flush=True)
    n = 0
    while True:
        n += 1
        patient = client.patients.add(given_name="P", family_name="Crash", birth_date="1950-03-01")
        client.patients.update(patient.id, mrn=f"M{n}")
        client.patients.get(patient.id)
        print(patient.id, flush=True)
    """
)


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_a_kill_9_leaves_every_write_with_its_audit_row_and_vice_versa(tmp_store: Any) -> None:
    tmp_store("crash").close()
    path = tmp_store.path("crash")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    for kill_after in (3, 40):
        with subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), PASSPHRASE],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        ) as child:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready"
            for _ in range(kill_after):
                assert child.stdout.readline()
            child.send_signal(signal.SIGKILL)
            child.wait()
    client = tmp_store.open("crash")
    report = client.verify_audit()
    assert report.ok, report.problems
    store = client.replica.store
    writes = store.execute(
        "SELECT id, data FROM documents WHERE collection = 'patients'"
    ).fetchall()
    audited: dict[str, list[str]] = {}
    for event in events(client):
        if event["outcome"] == "ok" and event["operation"] in "CU":
            for record in event["records"]:
                audited.setdefault(record, []).append(event["action"])
    for doc_id, data in writes:
        document = crdt.RecordDocument.load(bytes(data))
        changes = len(document.history())
        # Every change of every stored record has its audit row ...
        assert len(audited.get(doc_id, [])) == changes, doc_id
    # ... and every audited write is stored.
    assert set(audited) == {doc_id for doc_id, _ in writes}


# ---------------------------------------------------------------- automatic logoff
def test_the_store_locks_itself_when_idle_and_unlocks_with_the_key(tmp_path: Path) -> None:
    client = EdgeClient.init(
        tmp_path / "s", fast_provider(PASSPHRASE), clinic_id="c", idle_lock_after=0.4
    )
    try:
        patient = client.patients.add(given_name="A", family_name="B", birth_date="1950-01-01")
        blob = client.blobs.put_bytes(b"scan")
        for _ in range(4):  # use keeps it open
            time.sleep(0.2)
            client.patients.get(patient.id)
        assert not client.locked
        time.sleep(0.8)
        assert client.locked  # the timer locked it, without any call
        assert client.replica.store._data_key is None  # the key is dropped
        with pytest.raises(StoreLockedError):
            client.patients.get(patient.id)
        with pytest.raises(StoreLockedError):
            client.blobs.read_bytes(blob.sha256)
        with pytest.raises(WrongKeyError):
            client.unlock(fast_provider("wrong passphrase"))
        assert client.locked
        client.unlock(fast_provider(PASSPHRASE))
        assert client.patients.get(patient.id).id == patient.id
        assert client.blobs.read_bytes(blob.sha256) == b"scan"
        assert client.verify_audit().ok
        client.lock()
        with pytest.raises(StoreLockedError):
            client.patients.list()
    finally:
        client.close()


def test_idle_lock_can_be_turned_off(tmp_path: Path) -> None:
    client = EdgeClient.init(
        tmp_path / "s", fast_provider(PASSPHRASE), clinic_id="c", idle_lock_after=None
    )
    with client:
        assert client.idle_lock_after is None
        assert EdgeClient.open.__kwdefaults__["idle_lock_after"] == 15 * 60
