"""A device's audit chain pushed to a real server (SQLite and PostgreSQL): stored
append-only, its head put in the server's Merkle log, a signed checkpoint kept on the
device; a broken chain refused with 409 and nothing of it stored or lost."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlcipher3

from crdt import Checkpoint, leaf_hash, verify_inclusion
from edge_sdk import (
    Argon2Params,
    AuditPushError,
    ChainedEvent,
    EdgeClient,
    HttpTransport,
    PassphraseKeyProvider,
    RetryPolicy,
    SyncError,
    enrollment_of,
)
from sync_server.audit.device_chains import device_chain
from sync_server.identity.enrolment import create_enrolment_token

FAST = RetryPolicy(attempts=6, base_seconds=0.01, cap_seconds=0.05, timeout_seconds=30)
KEY = PassphraseKeyProvider("pass phrase", params=Argon2Params.fast())


@pytest.fixture
def device(tmp_path: Path, server: Any) -> Iterator[EdgeClient]:
    clinic = server.new_clinic()
    with server.db.write() as session:
        token, _ = create_enrolment_token(
            session=session, clinic_id=clinic, ttl=timedelta(minutes=10)
        )
    client = EdgeClient.init(tmp_path / "tablet", KEY, clinic_id=clinic)
    client.enroll(server.url, token, name="tablet")
    yield client
    client.close()


def _server_chain(server: Any, device_id: str) -> list[tuple[int, bytes, bytes]]:
    with server.db.read() as session:
        return [
            (e.seq, e.canonical, e.hash) for e in device_chain(session=session, device_id=device_id)
        ]


def _local_chain(client: EdgeClient) -> list[tuple[int, bytes, bytes]]:
    return [(e.seq, e.canonical, e.hash) for e in client.replica.audit.events()]


def test_sync_pushes_the_chain_and_keeps_a_checkpoint_that_names_its_head(
    device: EdgeClient, server: Any
) -> None:
    patient = device.patients.add(
        given_name="Ada", family_name="Okafor", birth_date=date(1980, 5, 6)
    )
    device.patients.get(patient.id)
    result = device.sync(retry=FAST)
    assert result.audit_error is None
    assert result.audit_acknowledged >= 2
    held = _server_chain(server, device.device_id)
    assert held == _local_chain(device)[: len(held)]
    assert held[-1][0] == result.audit_acknowledged

    rows = device.replica.store.execute(
        "SELECT head_seq, checkpoint, leaf_index, leaf, inclusion FROM audit_checkpoints"
    ).fetchall()
    assert len(rows) == 1
    head_seq, text, leaf_index, leaf, inclusion = rows[0]
    checkpoint = Checkpoint.from_json(json.loads(text))
    enrollment = enrollment_of(device)
    assert enrollment is not None and enrollment.artifact_public_key is not None
    checkpoint.verify(enrollment.artifact_public_key)  # the key pinned at enrolment
    verify_inclusion(
        leaf=leaf_hash(bytes(leaf)),
        index=leaf_index,
        size=checkpoint.size,
        path=[bytes.fromhex(p) for p in json.loads(inclusion)],
        root=checkpoint.root,
    )
    assert f"{device.device_id}:{head_seq}:{held[-1][2].hex()}" in bytes(leaf).decode()
    assert device.verify_audit().ok

    # The next sync pushes only the events since, and the chain stays one.
    device.patients.list()
    again = device.sync(retry=FAST)
    assert again.audit_acknowledged > result.audit_acknowledged
    assert (
        _server_chain(server, device.device_id) == _local_chain(device)[: again.audit_acknowledged]
    )
    assert device.verify_audit().checkpoints == 2


def test_a_resent_push_is_idempotent(device: EdgeClient, server: Any) -> None:
    device.patients.list()
    device.sync(retry=FAST)
    held = _server_chain(server, device.device_id)
    events = [ChainedEvent(*event) for event in held]
    with HttpTransport(device.replica, retry=FAST) as transport:
        receipt = transport.push_audit(events)
    assert receipt.head_seq == held[-1][0]
    assert _server_chain(server, device.device_id) == held


def test_a_broken_chain_is_refused_with_409_and_nothing_is_stored_or_lost(
    device: EdgeClient, server: Any, tmp_path: Path
) -> None:
    device.patients.list()
    device.sync(retry=FAST)
    held = _server_chain(server, device.device_id)
    for _ in range(3):
        device.patients.list()
    local_before = _local_chain(device)
    # Tamper with the first unpushed event on the device (its bytes, not its hash).
    seq = len(held) + 1
    path = device.path
    data_key = device.replica.store.data_key
    device.replica.store.lock()
    conn = sqlcipher3.connect(str(path / "coherency.db"))
    conn.execute(f"PRAGMA key = \"x'{data_key.hex()}'\"")
    conn.execute(
        "UPDATE audit_events SET canonical = replace(canonical, '\"ok\"', '\"no\"') WHERE seq = ?",
        (seq,),
    )
    conn.commit()
    conn.close()
    device.unlock(KEY)

    result = device.sync(retry=FAST)
    assert result.audit_error is not None and f"event {seq}" in result.audit_error
    assert _server_chain(server, device.device_id) == held  # nothing of the batch
    local_after = _local_chain(device)
    assert len(local_after) >= len(local_before)  # nothing lost
    assert [e[0] for e in local_after[: len(local_before)]] == [e[0] for e in local_before]
    problems = device.verify_audit().problems
    assert [(p.kind, p.seq) for p in problems] == [("altered", seq)]

    # The route itself answers 409 naming the event.
    events = [ChainedEvent(*e) for e in local_after[len(held) :]]
    with (
        HttpTransport(device.replica, retry=FAST) as transport,
        pytest.raises(AuditPushError) as refused,
    ):
        transport.push_audit(events)
    assert refused.value.seq == seq and refused.value.server_seq == len(held)


def test_events_of_another_device_or_garbage_are_refused_without_a_5xx(
    device: EdgeClient, server: Any
) -> None:
    device.patients.list()
    with HttpTransport(device.replica, retry=FAST) as transport:
        first = device.replica.audit.events()[0]
        forged = json.loads(first.canonical)
        forged["device_id"] = "someone-else"
        bad = ChainedEvent(1, json.dumps(forged).encode(), first.hash)
        with pytest.raises(SyncError, match="audit_push_invalid"):
            transport.push_audit([bad])
        for body in (
            {"events": []},
            {"events": [{"seq": 1, "canonical": "%%", "hash": "00"}]},
            [1],
        ):
            response = transport.request("POST", "/v1/audit/device-events", json=body)
            assert 400 <= response.status_code < 500, response.text
        gap = transport.request(
            "POST",
            "/v1/audit/device-events",
            json={
                "events": [
                    {
                        "seq": 5,
                        "canonical": base64.b64encode(first.canonical).decode(),
                        "hash": first.hash.hex(),
                    }
                ]
            },
        )
        assert gap.status_code == 422  # canonical names seq 1, not 5
    assert _server_chain(server, device.device_id) == []


def test_the_servers_verifier_catches_a_device_chain_edited_cut_or_dropped(
    device: EdgeClient, server: Any
) -> None:
    """The heads the log sealed pin each device's chain: the server's own verifier
    (`verify_log`) catches a chain edited, its newest events deleted, or dropped whole.
    Each tampering is made in a savepoint of one transaction and undone."""
    from sqlalchemy import delete, update

    from sync_server.audit.tables import DeviceAuditEvent
    from sync_server.audit.verify import verify_log

    device.patients.add(given_name="Ada", family_name="Okafor", birth_date=date(1950, 1, 1))
    device.sync(retry=FAST)
    device.patients.list()
    device.sync(retry=FAST)
    chain = _server_chain(server, device.device_id)
    assert len(chain) >= 3
    key = server.app.state.artifact_key.public_key_bytes
    mine = DeviceAuditEvent.device_id == device.device_id

    def problems(session: Any) -> list[str]:
        found = verify_log(session=session, public_key=key).problems
        return [str(p) for p in found if device.device_id in p.where]

    with server.db.read() as session:
        assert problems(session) == []
        tamperings = {
            "edited": update(DeviceAuditEvent)
            .where(mine, DeviceAuditEvent.seq == 2)
            .values(canonical=chain[1][1].replace(b'"R"', b'"U"').replace(b'"C"', b'"U"')),
            "deleted": delete(DeviceAuditEvent).where(mine, DeviceAuditEvent.seq == len(chain)),
            "dropped": delete(DeviceAuditEvent).where(mine),
        }
        expected = {
            "edited": f"device {device.device_id} event 2: its contents no longer match",
            "deleted": "its newest events were deleted",
            "dropped": "its audit chain is gone",
        }
        for name, statement in tamperings.items():
            savepoint = session.begin_nested()
            session.execute(statement)
            found = problems(session)
            savepoint.rollback()
            assert found and expected[name] in found[0], (name, found)
        assert problems(session) == []


def test_concurrent_pushes_of_one_chain_store_it_once_without_a_server_error(
    server: Any,
) -> None:
    """Two syncs of one device racing (a watch loop and a manual sync) send the same
    events at once: every answer is a success (or 409 busy), the chain is stored once."""
    from concurrent.futures import ThreadPoolExecutor

    from crdt import GENESIS, canonical_json, chain_hash

    clinic = server.new_clinic()
    device_id, token = server.device_token(clinic)
    previous, events = GENESIS, []
    for seq in range(1, 6):
        canonical = canonical_json({"v": 1, "seq": seq, "device_id": device_id, "action": "read"})
        previous = chain_hash(previous, canonical)
        events.append(
            {
                "seq": seq,
                "canonical": base64.b64encode(canonical).decode(),
                "hash": previous.hex(),
            }
        )
    body = json.dumps({"events": events})

    def push(_: int) -> int:
        with server.http(token) as http:
            return int(
                http.post(
                    "/v1/audit/device-events",
                    content=body,
                    headers={"content-type": "application/json"},
                ).status_code
            )

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(push, range(16)))
    assert set(answers) <= {200, 409} and 200 in answers, answers
    assert [seq for seq, _, _ in _server_chain(server, device_id)] == [1, 2, 3, 4, 5]
