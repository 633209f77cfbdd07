"""Notifications through the queue (rq on the real Redis at 127.0.0.1:6379), on SQLite
and PostgreSQL: ids are published only after their transaction commits, a lost
publish is made good by the sweep, duplicate publishes send once, and two worker
processes share the queue, one of them killed with SIGKILL mid-send, with every
delivery sent exactly once.

Each test has a queue of its own (``notification_queue_name``) on the shared Redis,
and its own clinic on the session's server database.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue
from rq.serializers import JSONSerializer
from sqlalchemy import select

from cli.main import cli
from sync_server.db import Database, insert_unless_taken, new_id, utcnow
from sync_server.errors import Invalid, Unavailable
from sync_server.notifications import InApp, Recipient, SandboxPush, deliver_due, notify
from sync_server.notifications.events import NoticeKind
from sync_server.notifications.queue import Publisher, consume, install_publisher, run_worker
from sync_server.notifications.tables import InAppNotice, NotificationDelivery, NotificationEvent
from sync_server.settings import Settings

from .queue_world import LoggedPush, read_log

REDIS_URL = os.environ.get("COHERENCY_TEST_REDIS", "redis://127.0.0.1:6379/0")
ROOT = Path(__file__).resolve().parents[2]
WORLD = Path(__file__).with_name("queue_world.py")


@pytest.fixture(scope="module")
def redis_url() -> str:
    """The test Redis; CI (COHERENCY_REQUIRE_POSTGRES=1) fails without it."""
    try:
        with Redis.from_url(REDIS_URL, socket_connect_timeout=2) as redis:
            redis.ping()
    except RedisError as exc:
        if os.environ.get("COHERENCY_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"Redis is required in CI: {exc}")
        pytest.skip(f"Redis is not running at {REDIS_URL}")
    return REDIS_URL


@pytest.fixture
def queue_name(redis_url: str) -> Iterator[str]:
    """A queue of this test's own, deleted with its jobs afterwards."""
    name = f"test-notifications-{uuid.uuid4().hex[:12]}"
    yield name
    with Redis.from_url(redis_url) as redis:
        Queue(name, connection=redis, serializer=JSONSerializer).delete(delete_jobs=True)


def _settings(server: Any, tmp_path: Path, url: str, queue_name: str) -> Settings:
    return Settings(
        data_dir=tmp_path,
        database_url=server.settings.resolved_database_url,
        notification_queue_url=url,
        notification_queue_name=queue_name,
        notification_interval_seconds=0,
    )


def _notify(
    db: Database, clinic_id: str, *, channels: tuple[str, ...] = ("push",), key: str | None = None
) -> list[str]:
    """One event to one patient in its own transaction; returns its delivery ids."""
    with db.write() as session:
        event_id = notify(
            session=session,
            clinic_id=clinic_id,
            kind=NoticeKind.ORDER_SHIPPED,
            dedupe_key=key or f"queue-test:{uuid.uuid4()}",
            recipients=[Recipient(f"patient:{uuid.uuid4()}", channels)],
            detail={"order": "o-1"},
        )
    with db.read() as session:
        return list(
            session.scalars(
                select(NotificationDelivery.id)
                .where(NotificationDelivery.event_id == event_id)
                .order_by(NotificationDelivery.id)
            )
        )


def _states(db: Database, clinic_id: str) -> dict[str, NotificationDelivery]:
    with db.read() as session:
        rows = session.scalars(
            select(NotificationDelivery).where(NotificationDelivery.clinic_id == clinic_id)
        )
        return {row.id: row for row in rows}


def _queued(redis_url: str, queue_name: str) -> list[list[str]]:
    with Redis.from_url(redis_url) as redis:
        queue = Queue(queue_name, connection=redis, serializer=JSONSerializer)
        return [list(job.args[0]) for job in queue.jobs]


def test_ids_are_published_after_commit_and_duplicates_send_once(
    server: Any, tmp_path: Path, redis_url: str, queue_name: str
) -> None:
    clinic = server.new_clinic()
    settings = _settings(server, tmp_path, redis_url, queue_name)
    db = Database(settings.resolved_database_url)
    publisher = Publisher(settings)
    try:
        install_publisher(db, publisher)
        # A transaction rolled back publishes nothing (its deliveries never existed).
        with pytest.raises(RuntimeError), db.write() as session:
            notify(
                session=session,
                clinic_id=clinic,
                kind=NoticeKind.ORDER_SHIPPED,
                dedupe_key=f"queue-test:{uuid.uuid4()}",
                recipients=[Recipient("patient:p-rolled-back", ("push",))],
                detail={},
            )
            raise RuntimeError("the change failed")
        assert _queued(redis_url, queue_name) == []
        assert _states(db, clinic) == {}

        ids = _notify(db, clinic, channels=("in_app", "push"))
        assert len(ids) == 2
        assert [sorted(job) for job in _queued(redis_url, queue_name)] == [ids]
        assert publisher.published == 2

        # The same ids published twice more: the worker sends each once.
        assert publisher.publish(ids) and publisher.publish(ids)
        push = SandboxPush()
        handler = signal.getsignal(signal.SIGTERM)
        run_worker(
            settings,
            channels=lambda worker_db: {
                "push": push,
                "in_app": InApp(worker_db, server.server_signer()),
            },
            burst=True,
        )
        assert _queued(redis_url, queue_name) == []
        assert signal.getsignal(signal.SIGTERM) is handler  # rq's handler is gone
        rows = _states(db, clinic)
        assert {row.state for row in rows.values()} == {"sent"}
        assert [row.attempts for row in rows.values()] == [1, 1]
        assert push.requests == 1  # not one per publish
        assert [m.idempotency_key for m in push.sent()] == [
            rows[i].id for i in ids if rows[i].channel == "push"
        ]
    finally:
        publisher.close()
        db.dispose()


def test_a_savepoint_rolled_back_inside_the_transaction_keeps_what_it_collected(
    server: Any, tmp_path: Path, redis_url: str, queue_name: str
) -> None:
    """A sweep records many notices in one transaction; one that loses its dedupe race
    rolls back only its savepoint, and the ids collected before it are still published
    when the transaction commits."""
    clinic = server.new_clinic()
    settings = _settings(server, tmp_path, redis_url, queue_name)
    db = Database(settings.resolved_database_url)
    publisher = Publisher(settings)
    try:
        install_publisher(db, publisher)
        taken = f"queue-test:{uuid.uuid4()}"
        _notify(db, clinic, key=taken)
        with db.write() as session:
            notify(
                session=session,
                clinic_id=clinic,
                kind=NoticeKind.ORDER_SHIPPED,
                dedupe_key=f"queue-test:{uuid.uuid4()}",
                recipients=[Recipient("patient:p-kept", ("push",))],
                detail={},
            )
            # Another instance recorded this key first: its savepoint rolls back.
            lost = NotificationEvent(
                id=new_id(), clinic_id=clinic, kind="order_shipped", dedupe_key=taken, detail={}
            )
            assert not insert_unless_taken(session, lost)
        with db.read() as session:
            kept = session.scalar(
                select(NotificationDelivery.id).where(
                    NotificationDelivery.recipient == "patient:p-kept",
                    NotificationDelivery.clinic_id == clinic,
                )
            )
        assert kept is not None
        assert [kept] in _queued(redis_url, queue_name)
    finally:
        publisher.close()
        db.dispose()


def test_a_lost_publish_is_sent_by_the_sweep(
    server: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clinic = server.new_clinic()
    # Nothing listens on port 1: every publish fails, the commit does not.
    settings = _settings(server, tmp_path, "redis://127.0.0.1:1/0", "nowhere")
    db = Database(settings.resolved_database_url)
    publisher = Publisher(settings)
    try:
        install_publisher(db, publisher)
        with caplog.at_level(logging.WARNING, logger="sync_server.notifications"):
            ids = _notify(db, clinic)
        assert publisher.dropped == 1 and publisher.published == 0
        assert "could not queue 1 notification deliveries" in caplog.text
        push = SandboxPush()
        run = deliver_due(db, {"push": push}, owner="sweep", clinic_ids=[clinic])
        assert run.sent == 1
        assert [m.idempotency_key for m in push.sent()] == ids
    finally:
        publisher.close()
        db.dispose()


def test_hostile_or_misplaced_jobs_and_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(Invalid):
        consume("not a list")  # type: ignore[arg-type]
    with pytest.raises(Invalid):
        consume(["x" * 65])
    with pytest.raises(Unavailable):
        consume(["0190a0e0-0000-7000-8000-000000000000"])  # no worker in this process
    with pytest.raises(Invalid):
        Publisher(Settings(data_dir=tmp_path, notification_queue_url="http://example.org/"))
    with pytest.raises(Invalid):
        Publisher(Settings(data_dir=tmp_path))
    unreachable = Settings(data_dir=tmp_path, notification_queue_url="redis://127.0.0.1:1/0")
    with pytest.raises(Unavailable):
        run_worker(unreachable, channels=lambda db: {}, burst=True)
    missing = CliRunner().invoke(
        cli, ["server", "notification-worker", "--data-dir", str(tmp_path), "--burst"]
    )
    assert missing.exit_code == 2, missing.output
    assert "notification_queue_url" in missing.output


def _worker(
    server: Any, tmp_path: Path, redis_url: str, queue_name: str, log: Path, index: int
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "COHERENCY_SERVER_DATA_DIR": str(tmp_path / f"worker-{index}"),
        "COHERENCY_SERVER_DATABASE_URL": server.settings.resolved_database_url,
        "COHERENCY_SERVER_NOTIFICATION_QUEUE_URL": redis_url,
        "COHERENCY_SERVER_NOTIFICATION_QUEUE_NAME": queue_name,
        "COHERENCY_SERVER_NOTIFICATION_INTERVAL_SECONDS": "0",  # the test sweeps its clinic
        "COHERENCY_SERVER_NOTIFICATION_LEASE_SECONDS": "2",
        "QUEUE_TEST_LOG": str(log),
        "QUEUE_TEST_SLEEP": "0.25",
    }
    with (tmp_path / f"worker-{index}.err").open("wb") as errors:
        return subprocess.Popen(
            [sys.executable, str(WORLD)], env=env, stdout=errors, stderr=errors, cwd=tmp_path
        )


def _until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_two_workers_share_the_queue_and_one_killed_mid_send_loses_nothing(
    server: Any, tmp_path: Path, redis_url: str, queue_name: str
) -> None:
    clinic = server.new_clinic()
    settings = _settings(server, tmp_path, redis_url, queue_name)
    log = tmp_path / "provider.log"
    db = Database(settings.resolved_database_url)
    publisher = Publisher(settings)
    workers = [_worker(server, tmp_path, redis_url, queue_name, log, i) for i in (0, 1)]
    try:
        install_publisher(db, publisher)
        ids = [i for _ in range(16) for i in _notify(db, clinic)]
        for delivery_id in ids:  # every id published three times in all
            assert publisher.publish([delivery_id]) and publisher.publish([delivery_id])

        victim = workers[0]

        def victim_is_mid_send() -> bool:
            lines = read_log(log)
            mine = [key for what, key, pid in lines if pid == victim.pid and what == "start"]
            done = {key for what, key, pid in lines if pid == victim.pid and what == "sent"}
            return len(mine) >= 3 and mine[-1] not in done

        _until(victim_is_mid_send, 60, "the first worker's third send")
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        lines = read_log(log)
        held = [k for w, k, p in lines if p == victim.pid and w == "start"][-1]
        assert ("sent", held, victim.pid) not in lines

        # The survivor drains the queue; the delivery the victim held waits for its lease.
        def drained() -> bool:
            rows = _states(db, clinic)
            return all(r.state == "sent" for i, r in rows.items() if i != held)

        _until(drained, 60, "the surviving worker")

        def expired() -> bool:
            lease = _states(db, clinic)[held].lease_until
            return lease is None or lease < utcnow()

        _until(expired, 10, "the lease to expire")
        # The sweep (here the test's, for its own clinic) takes over the expired lease,
        # unless a duplicate job of the survivor already did.
        deliver_due(db, {"push": LoggedPush(log, 0)}, owner="sweep", clinic_ids=[clinic])

        rows = _states(db, clinic)
        assert sorted(rows) == sorted(ids)
        assert {r.state for r in rows.values()} == {"sent"}
        # Claimed once each (the duplicate publishes found nothing to claim), the held
        # one twice (the victim's claim, then the one that sent it).
        assert {i: r.attempts for i, r in rows.items()} == {i: (2 if i == held else 1) for i in ids}
        lines = read_log(log)
        sent = Counter(key for what, key, _ in lines if what == "sent")
        assert sent == Counter(ids), "every delivery reached the provider exactly once"
        senders = {pid for what, _, pid in lines if what == "start"}
        assert {victim.pid, workers[1].pid} <= senders  # both workers took jobs
        assert workers[1].poll() is None  # the survivor is still serving
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.terminate()
        for worker in workers:
            try:
                worker.wait(15)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        publisher.close()
        db.dispose()


def test_an_instance_with_a_queue_url_publishes_its_new_deliveries(
    server: Any, redis_url: str, queue_name: str
) -> None:
    from sync_server import create_app

    clinic = server.new_clinic()
    settings = server.settings.model_copy(
        update={"notification_queue_url": redis_url, "notification_queue_name": queue_name}
    )
    app = create_app(settings)
    try:
        ids = _notify(app.state.db, clinic)
        assert _queued(redis_url, queue_name) == [ids]
        assert app.state.notification_publisher.published == 1
        # The session's own server has no queue: nothing it commits is published.
        _notify(server.db, clinic)
        assert _queued(redis_url, queue_name) == [ids]
    finally:
        app.state.notification_publisher.close()
        app.state.db.dispose()


def test_the_worker_command_sends_what_is_queued(
    server: Any,
    tmp_path: Path,
    redis_url: str,
    queue_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clinic = server.new_clinic()
    settings = _settings(server, tmp_path, redis_url, queue_name)
    db = Database(settings.resolved_database_url)
    publisher = Publisher(settings)
    try:
        install_publisher(db, publisher)
        ids = _notify(db, clinic, channels=("in_app",))
        monkeypatch.setenv("COHERENCY_SERVER_NOTIFICATION_QUEUE_NAME", queue_name)
        monkeypatch.setenv("COHERENCY_SERVER_NOTIFICATION_INTERVAL_SECONDS", "0")
        result = CliRunner().invoke(
            cli,
            [
                "server",
                "notification-worker",
                "--data-dir",
                str(tmp_path),
                "--database-url",
                settings.resolved_database_url,
                "--queue-url",
                redis_url,
                "--burst",
            ],
        )
        assert result.exit_code == 0, result.output
        assert _queued(redis_url, queue_name) == []
        with db.read() as session:
            notices = session.scalars(select(InAppNotice.id).where(InAppNotice.clinic_id == clinic))
            assert list(notices) == ids
        assert {r.state for r in _states(db, clinic).values()} == {"sent"}
    finally:
        publisher.close()
        db.dispose()
