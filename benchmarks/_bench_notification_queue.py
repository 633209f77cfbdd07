"""Benchmark: notifications delivered per second through the queue (rq on Redis) by two
worker processes, on PostgreSQL.

Two ``coherency server notification-worker`` processes (the real command, its sweep
off so that only the queue feeds them) consume one queue on the Redis at
127.0.0.1:6379 (``COHERENCY_BENCH_REDIS``). Per repeat, the events are recorded first
(each in its own transaction, one patient each, in-app and push: two deliveries,
the rows `notify` writes, through SQL: benchmarks use the server's public names only),
then the clock starts and their ids are queued as an instance's publisher queues them,
one JSON job per transaction; it stops when the database holds every delivery
``sent``. The in-app channel writes its notice row; push is the sandbox provider (in
memory).

- ``notifications.queue.delivered_per_s``: deliveries sent per second of wall time.

Without PostgreSQL or Redis the figure is reported missing, with the reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks._bench_sync import MissingFigure, _database, _place
from benchmarks._common import progress
from benchmarks._harness import Figure, scratch_dir

__all__ = ["NAMES", "run"]

NAMES = ("notifications.queue.delivered_per_s",)
REDIS_ENV = "COHERENCY_BENCH_REDIS"
REDIS_DEFAULT = "redis://127.0.0.1:6379/0"
WORKERS = 2
_ENV_PREFIX = "COHERENCY_SERVER_"


def events_per_repeat(scale: int) -> int:
    """Events (two deliveries each) per repeat: scale / 10, between 50 and 2,000."""
    return max(50, min(2_000, scale // 10))


def _redis_unavailable(url: str) -> str | None:
    from redis import Redis
    from redis.exceptions import RedisError

    try:
        with Redis.from_url(url, socket_connect_timeout=2) as redis:
            redis.ping()
    except RedisError as exc:
        return f"Redis unreachable at {url} ({type(exc).__name__})"
    return None


def run(*, scale: int, repeat: int, root: Path) -> list[Figure | MissingFigure]:
    """Measure the queue's delivery rate on PostgreSQL (missing without it or Redis)."""
    redis_url = os.environ.get(REDIS_ENV, REDIS_DEFAULT)
    unavailable = _redis_unavailable(redis_url)
    if unavailable is not None:
        progress(f"notification queue: not measured: {unavailable}")
        return [MissingFigure("notification-queue", n, unavailable) for n in NAMES]
    with _database("postgresql", root) as (database_url, label, unavailable):
        if unavailable is not None:
            progress(f"notification queue: not measured: {unavailable}")
            return [MissingFigure("notification-queue", n, unavailable) for n in NAMES]
        assert database_url is not None
        return _measure(database_url, label, redis_url, events_per_repeat(scale), repeat, root)


def _spawn(settings: Any, redis_url: str, queue: str, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_ENV_PREFIX)}
    env[_ENV_PREFIX + "DATA_DIR"] = str(settings.data_dir)
    env[_ENV_PREFIX + "DATABASE_URL"] = settings.database_url
    env[_ENV_PREFIX + "NOTIFICATION_QUEUE_URL"] = redis_url
    env[_ENV_PREFIX + "NOTIFICATION_QUEUE_NAME"] = queue
    env[_ENV_PREFIX + "NOTIFICATION_INTERVAL_SECONDS"] = "0"
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "cli.main", "server", "notification-worker"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def _record(conn: Any, clinic_id: str) -> list[str]:
    """One event (as `notify` writes it) in its own transaction: a patient told in-app
    and by push. Returns its two delivery ids."""
    now = datetime.now(UTC)
    event_id = str(uuid.uuid4())
    ids = [str(uuid.uuid4()), str(uuid.uuid4())]
    patient = f"patient:{uuid.uuid4()}"
    with conn.transaction():
        conn.execute(
            "INSERT INTO notification_events (id, clinic_id, kind, dedupe_key, detail, "
            "created_at) VALUES (%s, %s, 'order.shipped', %s, %s, %s)",
            (event_id, clinic_id, f"bench:{event_id}", '{"order": "bench"}', now),
        )
        for delivery_id, channel in zip(ids, ("in_app", "push"), strict=True):
            conn.execute(
                "INSERT INTO notification_deliveries (id, event_id, clinic_id, channel, "
                "recipient, state, attempts, next_attempt_at, created_at) "
                "VALUES (%s, %s, %s, %s, %s, 'pending', 0, %s, %s)",
                (delivery_id, event_id, clinic_id, channel, patient, now, now),
            )
    return ids


def _measure(
    database_url: str, label: str, redis_url: str, events: int, repeat: int, root: Path
) -> list[Figure | MissingFigure]:
    import psycopg
    from redis import Redis
    from rq import Queue
    from rq.serializers import JSONSerializer
    from sqlalchemy.engine import make_url

    from sync_server import Settings, issue_enrolment_token, migrate

    queue_name = f"bench-notifications-{uuid.uuid4().hex[:8]}"
    plain_url = make_url(database_url).set(drivername="postgresql").render_as_string(False)
    rates: list[float] = []
    with scratch_dir(root, "notification-queue") as work:
        settings = Settings(data_dir=work / "server", database_url=database_url)
        migrate(settings)
        clinic_id = issue_enrolment_token(
            settings, clinic="bench", ttl=timedelta(minutes=5)
        ).clinic_id
        redis = Redis.from_url(redis_url)
        # What an instance's publisher does: one JSON job of ids per committed transaction.
        queue = Queue(queue_name, connection=redis, serializer=JSONSerializer)
        workers = [_spawn(settings, redis_url, queue_name, work / f"w{i}.log") for i in range(2)]
        layout = [_place(w.pid) for w in workers]
        conn = psycopg.connect(plain_url, autocommit=True)
        try:
            for r in range(repeat):
                batches = [_record(conn, clinic_id) for _ in range(events)]
                total = sum(len(b) for b in batches)
                started = time.perf_counter()
                for batch in batches:
                    queue.enqueue_call(
                        "sync_server.notifications.queue.consume", args=(batch,), result_ttl=0
                    )
                deadline = time.monotonic() + 300
                while True:
                    row = conn.execute(
                        "SELECT count(*) FROM notification_deliveries WHERE state <> 'sent'"
                    ).fetchone()
                    pending = row[0] if row else 0
                    if not pending:
                        break
                    if time.monotonic() > deadline or any(w.poll() is not None for w in workers):
                        raise RuntimeError(f"notification queue: {pending} deliveries unsent")
                    time.sleep(0.01)
                seconds = time.perf_counter() - started
                rates.append(total / seconds)
                progress(
                    f"notification queue: repeat {r + 1}/{repeat}: {total:,} deliveries in "
                    f"{seconds:.2f}s ({rates[-1]:,.0f}/s)"
                )
        finally:
            for worker in workers:
                worker.terminate()
            for worker in workers:
                try:
                    worker.wait(30)
                except subprocess.TimeoutExpired:
                    worker.kill()
                    worker.wait()
            conn.close()
            queue.delete(delete_jobs=True)
            redis.close()
    extra = {
        "database": label,
        "workers": WORKERS,
        "events": events,
        "deliveries": 2 * events,
        "channels": "in-app (a row in the database) and push (sandbox, in memory)",
        "queue": "rq on Redis",
        "layout": layout,
    }
    return [
        Figure(
            "notification-queue",
            NAMES[0],
            f"notification deliveries sent per second through the queue by {WORKERS} worker "
            f"processes ({label}, in-app and push channels)",
            "deliveries/s",
            rates,
            extra=extra,
        )
    ]
