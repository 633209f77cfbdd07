"""A device witnesses a live server's audit log (SQLite and PostgreSQL):
`EdgeClient.verify_audit(server=True)` asks the enrolled server, through the device's
own HTTP transport and credentials, for its current checkpoint and, for each checkpoint
the device kept from its audit pushes, the RFC 9162 proof that the log extends it. A
server whose log was edited afterwards (one leaf changed in its database, nothing
signed again) cannot give one, whether it answers with a proof that fails or with 409
``audit_log_damaged``: each kept checkpoint is reported as a problem."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, insert, select, update

from crdt import Checkpoint
from edge_sdk import (
    Argon2Params,
    EdgeClient,
    HttpAuditLogSource,
    HttpTransport,
    PassphraseKeyProvider,
    RetryPolicy,
    verify_audit,
)
from sync_server.audit.log import NODE_LEVEL
from sync_server.audit.tables import AuditEvent, AuditNode
from sync_server.identity.enrolment import create_enrolment_token

FAST = RetryPolicy(attempts=6, base_seconds=0.01, cap_seconds=0.05, timeout_seconds=30)
KEY = PassphraseKeyProvider("pass phrase", params=Argon2Params.fast())


@pytest.fixture
def device(tmp_path: Path, server: Any) -> Iterator[EdgeClient]:
    """An enrolled device that pushed its audit chain at least twice: two kept
    checkpoints or more, two of a size that is not a power of two (see `_attacked`)."""
    clinic = server.new_clinic()
    with server.db.write() as session:
        token, _ = create_enrolment_token(
            session=session, clinic_id=clinic, ttl=timedelta(minutes=10)
        )
    client = EdgeClient.init(tmp_path / "tablet", KEY, clinic_id=clinic)
    client.enroll(server.url, token, name="tablet")
    patient = client.patients.add(given_name="Ada", family_name="Okafor", birth_date="1950-03-01")
    for _ in range(6):
        client.patients.get(patient.id)
        assert client.sync(retry=FAST).audit_error is None
        if len(_attacked(client)) >= 2:
            break
    yield client
    client.close()


def _kept(client: EdgeClient) -> list[tuple[int, Checkpoint]]:
    rows = client.replica.store.execute(
        "SELECT head_seq, checkpoint FROM audit_checkpoints ORDER BY id"
    ).fetchall()
    return [(int(seq), Checkpoint.from_json(json.loads(text))) for seq, text in rows]


def _attacked(client: EdgeClient) -> list[tuple[int, Checkpoint]]:
    """The kept checkpoints whose newest leaf every consistency proof from them reads.

    The RFC 9162 proof from a tree of m leaves carries the hash of the subtree that
    ends at leaf m - 1, unless m is a power of two (then the held root stands for
    [0, m) and nothing of it is sent): an edit inside such a tree is invisible to
    proofs, and only `coherency audit verify` on the server's database finds it.
    """
    return [(seq, c) for seq, c in _kept(client) if c.size & (c.size - 1)]


def test_a_device_witnesses_an_untouched_log(device: EdgeClient, server: Any) -> None:
    kept = _kept(device)
    report = device.verify_audit(server=True)
    assert report.ok, report.problems
    assert report.checkpoints == len(kept) >= 2
    assert report.server is not None and report.server.size >= kept[-1][1].size
    # The same through the function, with a transport of the app's own.
    with HttpTransport(device.replica, retry=FAST) as transport:
        again = verify_audit(device, server=HttpAuditLogSource(request=transport.request))
    assert again.ok and again.server is not None


@pytest.mark.parametrize("tampering", ["edited leaf", "deleted leaf"])
def test_a_server_whose_log_was_edited_is_reported_naming_each_kept_checkpoint(
    device: EdgeClient, server: Any, tampering: str
) -> None:
    attacked = _attacked(device)
    assert len(attacked) >= 2
    # The log grows past them all (a checkpoint of the log's current size needs no
    # proof: the signed roots, which nobody changed, are compared).
    device.patients.list()
    assert device.sync(retry=FAST).audit_error is None
    kept = _kept(device)
    # The newest leaf of each: changed (or emptied) in the server's database, and
    # every kept subtree hash over it dropped (a rewrite would recompute them), so the
    # server builds its proofs from its leaves as they now are. Nothing is signed again.
    leaves = [c.size - 1 for _, c in attacked]
    covering = {(level, leaf >> level) for leaf in leaves for level in range(NODE_LEVEL, 63)}
    forged = None if tampering == "deleted leaf" else bytes(32)
    with server.db.write() as session:
        originals = dict(
            session.execute(
                select(AuditEvent.seq, AuditEvent.leaf_hash).where(AuditEvent.seq.in_(leaves))
            ).all()
        )
        nodes = [
            {"level": n.level, "index": n.index, "hash": n.hash}
            for n in session.scalars(select(AuditNode).where(AuditNode.level >= NODE_LEVEL))
            if (n.level, n.index) in covering
        ]
        for node in nodes:
            session.execute(
                delete(AuditNode).where(
                    AuditNode.level == node["level"], AuditNode.index == node["index"]
                )
            )
        session.execute(
            update(AuditEvent).where(AuditEvent.seq.in_(leaves)).values(leaf_hash=forged)
        )
    try:
        report = device.verify_audit(server=True)
    finally:
        with server.db.write() as session:
            for seq, original in originals.items():
                session.execute(
                    update(AuditEvent).where(AuditEvent.seq == seq).values(leaf_hash=original)
                )
            if nodes:
                session.execute(insert(AuditNode), nodes)
    assert not report.ok
    # Only the server's side is wrong: the device's own chain and checkpoints hold.
    assert {p.kind for p in report.problems} == {"server-rewritten"}, report.problems
    named = {p.seq: p.message for p in report.problems}
    assert set(named) >= {seq for seq, _ in attacked}
    assert set(named) <= {seq for seq, _ in kept}
    for seq, checkpoint in attacked:
        assert f"kept for event {seq} ({checkpoint.size} events" in named[seq]
        if tampering == "deleted leaf":  # the server could not build a proof at all
            assert "audit_log_damaged" in named[seq] or "missing events" in named[seq]
    # Put back, the log extends them all again.
    assert device.verify_audit(server=True).ok


def test_a_server_checkpoint_not_signed_by_the_pinned_key_is_reported(
    device: EdgeClient, server: Any, tmp_path: Path
) -> None:
    # The device pinned another artifact key than the one the server signs with.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    other = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    device.replica.pin_artifact_key(other)
    report = device.verify_audit(server=True)
    kinds = [p.kind for p in report.problems]
    assert "server-checkpoint" in kinds
    assert next(p for p in report.problems if p.kind == "server-checkpoint").seq == 0
