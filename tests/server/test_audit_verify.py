"""Tampering with the server's audit log is caught: by `verify_log`, by ``coherency
audit verify`` (exit status 6) and by a witness holding checkpoints; proofs served from
a modified log are refused; concurrent appenders and a killed writer leave a log that
verifies. Each test runs on SQLite and on PostgreSQL from the same body."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlcipher3
from click.testing import CliRunner
from sqlalchemy import delete, event, select, update

from cli.main import cli
from crdt import (
    AuditProofError,
    Checkpoint,
    MerkleFrontier,
    leaf_hash,
    merkle_root,
    verify_consistency,
    verify_inclusion,
)
from edge_sdk import HttpAuditLogSource, witness_server_log
from sync_server import Settings, ThreadedServer, create_app, migrate
from sync_server.audit.events import Actor, EnrolmentTokenCreated, LoggedIn
from sync_server.audit.log import (
    LEAF_COLUMNS,
    inclusion_path,
    issue_checkpoint,
    leaf_bytes,
    leaf_bytes_of,
    origin_of,
    seal,
)
from sync_server.audit.services import record_event
from sync_server.audit.tables import AuditCheckpoint, AuditEvent, AuditLogHead
from sync_server.audit.verify import AuditReport, verify_log
from sync_server.db import Database, utcnow
from sync_server.identity.tables import Clinic, Device, EnrolmentToken, Organisation
from sync_server.models.signing import ArtifactKey
from tests.server.conftest import make_settings


@dataclass
class Log:
    """A migrated database of the test's own, its artifact key, and helpers."""

    settings: Settings
    db: Database
    key: ArtifactKey
    url: str

    def append(self, count: int, *, actor: Actor | None = None) -> None:
        """`count` events, one transaction each."""
        for _ in range(count):
            with self.db.write() as session:
                record_event(session=session, event=LoggedIn(actor=actor or Actor.user("u-1")))

    def checkpoint(self) -> Checkpoint:
        with self.db.write() as session:
            return issue_checkpoint(session=session, signer=self.key)

    def verify(self, *witnesses: Checkpoint) -> AuditReport:
        with self.db.read() as session:
            return verify_log(
                session=session, public_key=self.key.public_key_bytes, witnesses=witnesses
            )

    def cli(self, *args: str) -> Any:
        data_dir = str(self.settings.data_dir)
        return CliRunner().invoke(
            cli,
            ["audit", "verify", "--data-dir", data_dir, "--database-url", self.url, *args],
        )

    def sql(self, statement: Any) -> None:
        with self.db.engine.begin() as connection:
            connection.execute(statement)


@pytest.fixture
def log(empty_database: str, tmp_path: Path) -> Iterator[Log]:
    settings = make_settings(tmp_path / "data", empty_database)
    migrate(settings)
    db = Database(settings.resolved_database_url)
    key = ArtifactKey.load_or_create(settings.resolved_artifact_key_file)
    try:
        yield Log(settings, db, key, empty_database)
    finally:
        db.dispose()


def kinds(report: AuditReport) -> set[str]:
    return {problem.kind for problem in report.problems}


def caught(log: Log, kind: str, where: str, *witnesses: Path) -> None:
    """verify_log finds `kind` at `where`; the CLI says so and exits 6."""
    args = [arg for path in witnesses for arg in ("--checkpoints", str(path))]
    result = log.cli(*args)
    assert result.exit_code == 6, result.output
    assert where in result.output
    assert "problem" in result.output.splitlines()[-1]
    as_json = log.cli(*args, "--json")
    assert as_json.exit_code == 6
    found = json.loads(as_json.output)
    assert not found["ok"] and kind in {p["kind"] for p in found["problems"]}


def save(path: Path, *checkpoints: Checkpoint) -> Path:
    path.write_text(json.dumps([c.to_json() for c in checkpoints]))
    return path


def test_an_untouched_log_verifies(log: Log, tmp_path: Path) -> None:
    log.append(12)
    first = log.checkpoint()
    log.append(5)
    log.checkpoint()
    report = log.verify(first)
    assert report.ok and report.events == 17 and report.checkpoints == 2
    result = log.cli("--checkpoints", str(save(tmp_path / "w.json", first)))
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == (
        "audit log: 17 events, 2 checkpoints kept, 1 witness checkpoint: verified"
    )


def test_an_event_is_written_once_already_holding_its_leaf(log: Log) -> None:
    """Sealing adds no statement per event: the event row is inserted with its leaf
    index and hash (not inserted bare and updated), and the head is reserved and
    advanced in two statements, whatever the transaction holds. The head stays the
    last lock a transaction takes: what else it writes is written before."""
    log.append(1)  # the head row exists
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(" ".join(statement.split()).lower())

    event.listen(log.db.engine, "before_cursor_execute", seen)
    try:
        log.append(1)
        with log.db.write() as session:  # two events and a row of another table
            for user in ("u-2", "u-3"):
                record_event(session=session, event=LoggedIn(actor=Actor.user(user)))
            session.add(Organisation(id=str(uuid.uuid4()), name="written before the head"))
    finally:
        event.remove(log.db.engine, "before_cursor_execute", seen)
    writes = [s.split(" (")[0] for s in statements if s.startswith(("insert", "update"))]
    inserts = [s for s in writes if s.startswith("insert into audit_events")]
    assert 2 <= len(inserts) <= 3  # at most one per event (PostgreSQL batches the two)
    assert not [s for s in writes if s.startswith("update audit_events")]
    head = [s for s in writes if s.startswith("update audit_log_head")]
    assert len(head) == 4  # per transaction: reserve the leaves, then the new frontier
    assert all("set size=" in s for s in head[0::2])
    assert all("set frontier=" in s for s in head[1::2])
    reserved = [i for i, s in enumerate(writes) if s.startswith("update audit_log_head set size")]
    assert reserved[1] > writes.index("insert into organisations")  # its head, after it
    report = log.verify()
    assert report.ok and report.events == 4


def test_the_newest_sealed_event_is_proven_from_the_seal_without_reading_the_tree(
    log: Log,
) -> None:
    """`seal` hands back the subtrees the log held before its last event: that event's
    inclusion proof built from them is the one built from the stored tree, proves the
    event against the signed root, and reads nothing of the tree. The log grows to 59
    events, one to three per transaction."""
    reads: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        reads.append(statement.lower())

    for step in range(1, 30):
        with log.db.write() as session:
            for n in range(1 + step % 3):
                record_event(session=session, event=LoggedIn(actor=Actor.user(f"u-{n}")))
            sealed = seal(session=session)
            newest = sealed.events[-1]
            assert newest.seq is not None and sealed.leaves[-1] == leaf_bytes(
                session=session, seq=newest.seq
            )
            checkpoint = issue_checkpoint(session=session, signer=log.key)
            assert checkpoint.size == newest.seq + 1
            reads.clear()
            event.listen(log.db.engine, "before_cursor_execute", seen)
            try:
                fast = inclusion_path(
                    session=session, seq=newest.seq, size=checkpoint.size, known=sealed.subtrees
                )
            finally:
                event.remove(log.db.engine, "before_cursor_execute", seen)
            assert not [r for r in reads if "audit_events" in r or "audit_nodes" in r]
            assert fast == inclusion_path(session=session, seq=newest.seq, size=checkpoint.size)
            verify_inclusion(
                leaf=leaf_hash(sealed.leaves[-1]),
                index=newest.seq,
                size=checkpoint.size,
                path=fast,
                root=checkpoint.root,
            )
    assert log.verify().ok


def test_an_edited_event_is_caught(log: Log) -> None:
    log.append(10)
    log.sql(update(AuditEvent).where(AuditEvent.seq == 6).values(outcome="denied"))
    report = log.verify()
    assert [(p.kind, p.where) for p in report.problems if p.kind == "edited"] == [
        ("edited", "event 6")
    ]
    caught(log, "edited", "event 6: its contents no longer match its leaf hash")


def test_a_deleted_event_is_caught(log: Log) -> None:
    log.append(10)
    log.sql(delete(AuditEvent).where(AuditEvent.seq == 4))
    report = log.verify()
    assert "deleted" in kinds(report)
    caught(log, "deleted", "1 event missing before event 5")


def test_two_swapped_events_are_caught(log: Log) -> None:
    log.append(10)
    with log.db.read() as session:
        rows = {
            r.seq: (r.id, bytes(r.leaf_hash))
            for r in session.execute(select(AuditEvent.seq, AuditEvent.id, AuditEvent.leaf_hash))
        }
    (a, leaf_a), (b, leaf_b) = rows[3], rows[4]
    # The rows exchange places and take each other's leaf hash: the tree is unchanged.
    log.sql(update(AuditEvent).where(AuditEvent.id == a).values(seq=-1))
    log.sql(update(AuditEvent).where(AuditEvent.id == b).values(seq=3, leaf_hash=leaf_a))
    log.sql(update(AuditEvent).where(AuditEvent.id == a).values(seq=4, leaf_hash=leaf_b))
    report = log.verify()
    assert {(p.kind, p.where) for p in report.problems if p.kind == "edited"} == {
        ("edited", "event 3"),
        ("edited", "event 4"),
    }
    caught(log, "edited", "event 4: its contents no longer match")


def _truncate(log: Log, keep: int) -> None:
    """The attack a hash chain misses: delete the newest events, fix the head row up
    to the shorter log, and delete the checkpoints that covered the deleted events."""
    with log.db.read() as session:
        leaves = session.scalars(
            select(AuditEvent.leaf_hash).where(AuditEvent.seq < keep).order_by(AuditEvent.seq)
        ).all()
    frontier = MerkleFrontier()
    for leaf in leaves:
        frontier.append(bytes(leaf))
    log.sql(delete(AuditEvent).where(AuditEvent.seq >= keep))
    log.sql(delete(AuditCheckpoint).where(AuditCheckpoint.size > keep))
    log.sql(update(AuditLogHead).values(size=keep, frontier=b"".join(frontier.hashes)))


def test_the_newest_events_deleted_are_caught_only_by_a_witness(log: Log, tmp_path: Path) -> None:
    log.append(10)
    log.checkpoint()
    log.append(10)
    held = log.checkpoint()  # a device kept this one
    _truncate(log, 15)

    alone = log.verify()
    assert alone.ok, alone.problems  # the database alone is consistent again
    assert log.cli().exit_code == 0

    witnessed = log.verify(held)
    assert kinds(witnessed) == {"truncated"}
    caught(
        log,
        "truncated",
        "witness checkpoint of 20 events: the log has 15 events: the newest 5 were deleted",
        save(tmp_path / "held.json", held),
    )


def test_a_recomputed_leaf_hash_is_caught_by_the_checkpoint_roots(log: Log) -> None:
    log.append(10)
    log.checkpoint()
    with log.db.read() as session:
        row = session.execute(select(*LEAF_COLUMNS).where(AuditEvent.seq == 2)).one()
    values = list(row)
    values[LEAF_COLUMNS.index(AuditEvent.outcome)] = "denied"
    forged = leaf_hash(leaf_bytes_of(values))
    log.sql(
        update(AuditEvent).where(AuditEvent.seq == 2).values(outcome="denied", leaf_hash=forged)
    )
    report = log.verify()
    assert "edited" not in kinds(report)  # the leaf matches its row now
    assert "rewritten" in kinds(report)
    caught(log, "rewritten", "kept checkpoint of 10 events signed")


def test_a_checkpoint_with_a_bad_signature_is_caught(log: Log) -> None:
    log.append(3)
    signed = log.checkpoint()
    bad = bytes([signed.signature[0] ^ 1]) + signed.signature[1:]
    log.sql(update(AuditCheckpoint).values(signature=bad))
    assert kinds(log.verify()) == {"checkpoint"}
    caught(log, "checkpoint", "checkpoint 1 of 1: the checkpoint of size 3 is not signed")


def test_a_checkpoint_that_does_not_extend_the_earlier_one_is_caught(log: Log) -> None:
    log.append(8)
    log.checkpoint()
    # A checkpoint of a smaller log, signed later (a server that rolled its log back).
    with log.db.read() as session:
        leaves = session.scalars(
            select(AuditEvent.leaf_hash).where(AuditEvent.seq < 5).order_by(AuditEvent.seq)
        ).all()
    older = Checkpoint(
        origin_of(log.key.public_key_bytes), 5, merkle_root(bytes(x) for x in leaves), utcnow()
    )
    log.sql(
        AuditCheckpoint.__table__.insert().values(  # type: ignore[attr-defined]
            origin=older.origin,
            size=older.size,
            root=older.root,
            at=older.at,
            signature=log.key.sign_checkpoint(older.message()),
        )
    )
    report = log.verify()
    assert kinds(report) == {"checkpoint"}
    caught(log, "checkpoint", "covers 5 events, fewer than the 8 of the checkpoint before it")


# ------------------------------------------------------------------ over HTTP
@dataclass
class Live:
    url: str
    token: str
    device_id: str


@pytest.fixture
def live(log: Log) -> Iterator[Live]:
    settings = log.settings.model_copy(update={"audit_checkpoint_seconds": 3600.0})
    app = create_app(settings)
    server = ThreadedServer(app)
    server.start()
    organisation_id, clinic_id, device_id = (str(uuid.uuid4()) for _ in range(3))
    with log.db.write() as session:
        session.add(Organisation(id=organisation_id, name="org"))
        session.flush()
        session.add(Clinic(id=clinic_id, organisation_id=organisation_id, name="c", feed_seq=0))
        session.flush()
        session.add(Device(id=device_id, clinic_id=clinic_id, public_key=os.urandom(32)))
    token, _ = app.state.signing_key.issue_access_token(
        subject=device_id,
        kind="device",
        clinic_id=clinic_id,
        organisation_id=organisation_id,
        role="device",
        ttl=timedelta(minutes=15),
    )
    try:
        yield Live(server.url, token, device_id)
    finally:
        server.stop()


def _get(live: Live, path: str, **params: int) -> Any:
    with httpx.Client(base_url=live.url, timeout=30) as http:
        response = http.get(path, params=params, headers={"authorization": f"Bearer {live.token}"})
    assert response.status_code == 200, response.text
    return response.json()


def test_proofs_from_a_modified_log_are_refused(log: Log, live: Live) -> None:
    log.append(300, actor=Actor.device(live.device_id))  # past a kept 256-leaf subtree
    held = Checkpoint.from_json(_get(live, "/v1/audit/checkpoint"))
    log.append(40, actor=Actor.device(live.device_id))
    current = Checkpoint.from_json(_get(live, "/v1/audit/checkpoint"))
    assert (held.size, current.size) == (300, 340)

    def check(seq: int) -> None:
        proof = _get(live, "/v1/audit/proofs/consistency", first=held.size, second=current.size)
        verify_consistency(
            first=held.size,
            second=current.size,
            first_root=held.root,
            second_root=current.root,
            path=[bytes.fromhex(p) for p in proof["path"]],
        )
        answer = _get(live, "/v1/audit/proofs/inclusion", seq=seq, size=current.size)
        verify_inclusion(
            leaf=leaf_hash(answer["leaf"].encode()),
            index=seq,
            size=current.size,
            path=[bytes.fromhex(p) for p in answer["path"]],
            root=current.root,
        )

    check(310)  # honest answers verify
    # The attacker edits event 310 and recomputes its leaf hash: the routes now build
    # their proofs from the modified leaves, and the checkpoints refuse them.
    with log.db.read() as session:
        row = session.execute(select(*LEAF_COLUMNS).where(AuditEvent.seq == 310)).one()
    values = list(row)
    values[LEAF_COLUMNS.index(AuditEvent.outcome)] = "denied"
    log.sql(
        update(AuditEvent)
        .where(AuditEvent.seq == 310)
        .values(outcome="denied", leaf_hash=leaf_hash(leaf_bytes_of(values)))
    )
    with pytest.raises(AuditProofError):
        check(310)
    with pytest.raises(AuditProofError):  # the consistency proof alone fails too
        proof = _get(live, "/v1/audit/proofs/consistency", first=held.size, second=current.size)
        verify_consistency(
            first=held.size,
            second=current.size,
            first_root=held.root,
            second_root=current.root,
            path=[bytes.fromhex(p) for p in proof["path"]],
        )


def test_a_witness_catches_a_server_whose_log_does_not_extend_its_checkpoints(
    log: Log, live: Live, tmp_path: Path
) -> None:
    log.append(20)
    held = Checkpoint.from_json(_get(live, "/v1/audit/checkpoint"))
    log.append(5)
    key = log.key.public_key_bytes
    with HttpAuditLogSource(live.url, token=live.token) as source:
        assert witness_server_log(source, held=[held], public_key=key).ok
    witnesses = save(tmp_path / "held.json", held)
    args = ["audit", "verify", "--url", live.url, "--token", live.token]
    args += ["--public-key", key.hex(), "--checkpoints", str(witnesses)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "server audit log: 25 events" in result.output and "extends them all" in result.output

    # Rewritten: event 3 edited, its leaf recomputed, the head and checkpoints rebuilt
    # and signed again (an attacker with the database and the server's key).
    with log.db.read() as session:
        rows = session.execute(select(*LEAF_COLUMNS).order_by(AuditEvent.seq)).all()
    leaves = []
    for row in rows:
        values = list(row)
        if values[0] == 3:
            values[LEAF_COLUMNS.index(AuditEvent.outcome)] = "denied"
        leaves.append(leaf_hash(leaf_bytes_of(values)))
    log.sql(
        update(AuditEvent).where(AuditEvent.seq == 3).values(outcome="denied", leaf_hash=leaves[3])
    )
    frontier = MerkleFrontier()
    for leaf in leaves:
        frontier.append(leaf)
    log.sql(update(AuditLogHead).values(frontier=b"".join(frontier.hashes)))
    log.sql(delete(AuditCheckpoint))
    log.checkpoint()
    assert log.verify().ok  # the database alone now agrees with itself
    with HttpAuditLogSource(live.url, token=live.token) as source:
        report = witness_server_log(source, held=[held], public_key=key)
    assert [p.kind for p in report.problems] == ["rewritten"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 6, result.output
    assert "held checkpoint 1 (20 events" in result.output
    assert "does not extend it" in result.output

    # Truncated: the log now shorter than the held checkpoint.
    _truncate(log, 10)
    log.sql(delete(AuditCheckpoint))
    log.checkpoint()
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 6
    assert "the newest 10 were deleted" in result.output

    # A held checkpoint not signed by the pinned key.
    forged = Checkpoint(held.origin, held.size, held.root, held.at, bytes(64))
    result = CliRunner().invoke(cli, [*args[:-1], str(save(tmp_path / "forged.json", forged))])
    assert result.exit_code == 6 and "not signed by the server's key" in result.output


# ------------------------------------------------------------------ concurrency
def test_concurrent_appenders_leave_a_gapless_log_that_verifies(log: Log) -> None:
    threads, each = 8, 15
    errors: list[BaseException] = []

    class Rollback(Exception):
        pass

    def work(worker: int) -> None:
        try:
            for n in range(each):
                actor = Actor.user(f"w{worker}-{n}")
                try:
                    with log.db.write() as session:
                        record_event(session=session, event=LoggedIn(actor=actor))
                        if n % 5 == 1:  # a savepoint rolled back takes no leaf
                            nested = session.begin_nested()
                            record_event(session=session, event=LoggedIn(actor=Actor.user("gone")))
                            session.flush()
                            nested.rollback()
                        if n % 4 == 3:  # the whole transaction rolls back
                            raise Rollback
                except Rollback:
                    pass
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert not errors, errors
    expected = sum(1 for n in range(each) if n % 4 != 3) * threads

    with log.db.read() as session:
        rows = session.execute(
            select(AuditEvent.seq, AuditEvent.leaf_hash, AuditEvent.actor_id).order_by(
                AuditEvent.seq
            )
        ).all()
        head = session.execute(select(AuditLogHead.size)).scalar_one()
    assert [r.seq for r in rows] == list(range(expected)) and head == expected
    assert not any(r.actor_id == "gone" for r in rows)
    root = merkle_root(bytes(r.leaf_hash) for r in rows)
    assert log.checkpoint().root == root
    assert log.verify().ok


# ------------------------------------------------------------------ crash
_WRITER = """
import sys
from datetime import timedelta
from sync_server.db import Database, utcnow
from sync_server.identity.enrolment import create_enrolment_token

db = Database(sys.argv[1])
n = 0
while True:
    with db.write() as session:
        create_enrolment_token(session=session, clinic_id=sys.argv[2], ttl=timedelta(hours=1))
    n += 1
    print(n, flush=True)
"""


def test_a_killed_writer_leaves_every_row_with_its_audit_event(log: Log) -> None:
    organisation_id, clinic_id = str(uuid.uuid4()), str(uuid.uuid4())
    with log.db.write() as session:
        session.add(Organisation(id=organisation_id, name="org"))
        session.flush()
        session.add(Clinic(id=clinic_id, organisation_id=organisation_id, name="c", feed_seq=0))
    process = subprocess.Popen(
        [sys.executable, "-c", _WRITER, log.url, clinic_id],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 60
    for line in process.stdout:
        if int(line) >= 40 or time.monotonic() > deadline:
            break
    time.sleep(0.05)  # let it be mid-transaction, most likely
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stdout.close()

    with log.db.read() as session:
        tokens = set(session.scalars(select(EnrolmentToken.id)))
        audited = set(
            session.scalars(
                select(AuditEvent.target).where(AuditEvent.action == EnrolmentTokenCreated.name)
            )
        )
        unsealed = session.scalars(select(AuditEvent.id).where(AuditEvent.seq.is_(None))).all()
    assert len(tokens) >= 40
    assert tokens == audited
    assert unsealed == []
    assert log.verify().ok


def test_a_device_store_and_its_kept_checkpoints_through_the_command_line(
    log: Log, live: Live, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edge_sdk import Argon2Params, EdgeClient, PassphraseKeyProvider, kept_checkpoints
    from sync_server import issue_enrolment_token

    token = issue_enrolment_token(log.settings, clinic="audit-cli", ttl=timedelta(minutes=5))
    store = tmp_path / "tablet"
    provider = PassphraseKeyProvider("tablet passphrase", params=Argon2Params.fast())
    with EdgeClient.init(store, provider, clinic_id=token.clinic_id) as client:
        client.enroll(live.url, token.token, name="tablet")
        client.patients.add(given_name="A", family_name="B", birth_date="1950-01-01", mrn="M1")
        client.sync()
        assert len(kept_checkpoints(client)) >= 1
    monkeypatch.setenv("COHERENCY_PASSPHRASE", "tablet passphrase")

    result = CliRunner().invoke(cli, ["audit", "verify", "--store", str(store)])
    assert result.exit_code == 0, result.output
    assert result.output.rstrip().endswith(": verified")
    result = CliRunner().invoke(cli, ["--store", str(store), "audit", "verify", "--device"])
    assert result.exit_code == 0, result.output
    assert "extends them all" in result.output

    with EdgeClient.open(store, provider) as client:  # someone with the key edits a row
        data_key = client.replica.store.data_key
    connection = sqlcipher3.connect(str(store / "coherency.db"))
    connection.execute(f"PRAGMA key = \"x'{data_key.hex()}'\"")
    connection.execute(
        "UPDATE audit_events SET canonical = replace(canonical, '\"ok\"', '\"no\"') WHERE seq = 2"
    )
    connection.commit()
    connection.close()
    result = CliRunner().invoke(cli, ["audit", "verify", "--store", str(store), "--json"])
    assert result.exit_code == 6, result.output
    found = json.loads(result.output)
    assert not found["ok"] and {"kind": "altered", "seq": 2} in [
        {"kind": p["kind"], "seq": p["seq"]} for p in found["problems"]
    ]
