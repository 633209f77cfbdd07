"""Several instances: new deliveries handed to queue workers through Redis (`rq`).

The outbox (``notification_deliveries``) stays the source of truth and the lease claim
in `sync_server.notifications.worker` stays the exactly-once guard; the queue only
carries delivery ids, so that a worker on any instance starts at once instead of at
its next sweep, and several workers share the load.

- Publishing (`install_publisher`): every session of the server's `Database` collects
  the ids of the deliveries it flushes; when its transaction commits, one job carrying
  them is put on the queue. A rolled-back transaction publishes nothing. A publish
  that fails (Redis down) is logged and dropped: the deliveries are in the database,
  and the periodic sweep (`deliver_due`) sends whatever is due, so a lost publish
  delays a message, it never loses it.
- Consuming (`run_worker`, ``coherency server notification-worker``): an rq worker
  whose job (`consume`) calls `deliver_ids`; ids already sent or held by another
  worker are skipped, so a duplicate publish sends once. Beside it a thread runs the
  sweep every ``notification_interval_seconds`` (0: never), which also takes over
  what a worker killed mid-send left behind once its lease expires.

Jobs are JSON (no pickles read from Redis): ``consume(ids)`` with a list of ids.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, SimpleWorker
from rq.serializers import JSONSerializer
from sqlalchemy.orm import Session, SessionTransaction

from sync_server.db import Database
from sync_server.errors import Invalid, Unavailable
from sync_server.notifications.channels import Channel
from sync_server.notifications.tables import NotificationDelivery
from sync_server.notifications.worker import Retry, deliver_due, deliver_ids
from sync_server.settings import Settings

__all__ = [
    "CHUNK",
    "Publisher",
    "consume",
    "install_publisher",
    "run_worker",
]

log = logging.getLogger("sync_server.notifications")

CHUNK = 500
"""At most this many ids per job (and per claim)."""

_PENDING = "coherency.notification_ids"
"""Where a session keeps the ids it flushed until its transaction ends (`Session.info`)."""


def _connect(url: str) -> Redis:
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise Invalid(
            "notification_queue_url must be a redis://, rediss:// or unix:// URL",
            code="invalid_queue_url",
        )
    return Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)


class Publisher:
    """Puts delivery ids on the queue named ``settings.notification_queue_name`` at
    ``settings.notification_queue_url``.

    Raises:
        Invalid: the URL is not a Redis URL (at construction).
    """

    def __init__(self, settings: Settings) -> None:
        if not settings.notification_queue_url:
            raise Invalid("no notification_queue_url is set", code="invalid_queue_url")
        self._queue = Queue(
            settings.notification_queue_name,
            connection=_connect(settings.notification_queue_url),
            serializer=JSONSerializer,
        )
        self.published = 0  # ids handed to Redis by this publisher
        self.dropped = 0  # ids whose publish failed (the sweep sends them)

    def publish(self, ids: Sequence[str]) -> bool:
        """Put `ids` on the queue, `CHUNK` per job. Returns False when Redis could not
        be reached (logged; nothing is lost: the sweep sends due deliveries)."""
        if not ids:
            return True
        try:
            for start in range(0, len(ids), CHUNK):
                chunk = list(ids[start : start + CHUNK])
                self._queue.enqueue_call(
                    "sync_server.notifications.queue.consume",
                    args=(chunk,),
                    result_ttl=0,
                    failure_ttl=86400,
                    timeout=600,
                )
                self.published += len(chunk)
        except RedisError as exc:
            self.dropped += len(ids)
            log.warning(
                "could not queue %d notification deliveries (the sweep sends them): %s",
                len(ids),
                type(exc).__name__,
            )
            return False
        return True

    def close(self) -> None:
        """Close the connection to Redis."""
        self._queue.connection.close()


def install_publisher(db: Database, publisher: Publisher) -> None:
    """Publish, through `publisher`, the ids of the deliveries each of `db`'s sessions
    flushed, after its transaction commits (none on rollback)."""

    def collect(session: Session, _context: Any) -> None:
        new = [obj.id for obj in session.new if isinstance(obj, NotificationDelivery)]
        if new:
            session.info.setdefault(_PENDING, []).extend(new)

    def committed(session: Session) -> None:
        ids = session.info.pop(_PENDING, None)
        if ids:
            publisher.publish(ids)

    def ended(session: Session, transaction: SessionTransaction) -> None:
        # Only the outermost transaction's end: a savepoint rolled back inside it (a
        # `notify` that lost its dedupe race) keeps what the transaction collected
        # before; a rolled-back transaction publishes nothing.
        if transaction.parent is None:
            session.info.pop(_PENDING, None)

    db.listen("after_flush", collect)
    db.listen("after_commit", committed)
    db.listen("after_transaction_end", ended)


@dataclass(slots=True)
class _Context:
    db: Database
    channels: Mapping[str, Channel]
    owner: str
    retry: Retry


_context: _Context | None = None


def consume(ids: list[str]) -> dict[str, int]:
    """The queue's job: send the deliveries `ids` (`deliver_ids`) in this worker
    process (set up by `run_worker`). Returns the counts of what was done.

    Raises:
        Invalid: `ids` is not a list of strings (a hostile or foreign job).
        Unavailable: not inside a worker set up by `run_worker`.
    """
    if not isinstance(ids, list) or not all(isinstance(i, str) and len(i) <= 64 for i in ids):
        raise Invalid("a notification job carries a list of delivery ids", code="invalid")
    context = _context
    if context is None:
        raise Unavailable("no notification worker is set up in this process", code="no_worker")
    totals = dict.fromkeys(_COUNTS, 0)
    for start in range(0, len(ids), CHUNK):
        run = deliver_ids(
            context.db,
            context.channels,
            ids[start : start + CHUNK],
            owner=context.owner,
            retry=context.retry,
        )
        for name in _COUNTS:
            totals[name] += getattr(run, name)
    return totals


_COUNTS = ("claimed", "sent", "retrying", "dead", "lost", "held")
"""The `DeliveryRun` counts a job returns."""


def _sweep(context: _Context, settings: Settings, stop: threading.Event) -> None:
    while not stop.wait(settings.notification_interval_seconds):
        try:
            deliver_due(
                context.db,
                context.channels,
                owner=context.owner,
                batch=settings.notification_batch,
                retry=context.retry,
            )
        except Exception:  # the sweep must never take the worker down
            log.exception("sending due notifications failed")


def run_worker(
    settings: Settings,
    *,
    channels: Callable[[Database], Mapping[str, Channel]],
    burst: bool = False,
    name: str | None = None,
) -> None:
    """Consume the notification queue in this process until stopped (SIGTERM or
    SIGINT: the job in hand is finished first), sending through `channels(db)`; with
    `burst`, return once the queue is empty. Beside it, the sweep runs every
    ``settings.notification_interval_seconds`` (never when 0).

    Raises:
        Invalid: no ``notification_queue_url`` is set, or it is not a Redis URL.
        Unavailable: Redis cannot be reached.
    """
    global _context
    if not settings.notification_queue_url:
        raise Invalid(
            "the notification worker needs notification_queue_url (a Redis URL)",
            code="invalid_queue_url",
        )
    connection = _connect(settings.notification_queue_url)
    try:
        connection.ping()
    except RedisError as exc:
        raise Unavailable(
            f"the notification queue cannot be reached: {type(exc).__name__}",
            code="queue_unreachable",
        ) from None
    db = Database(settings.resolved_database_url)
    owner = name or f"queue-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    context = _Context(db, channels(db), owner, Retry.of(settings))
    _context = context
    stop = threading.Event()
    sweeper = None
    if settings.notification_interval_seconds > 0:
        sweeper = threading.Thread(
            target=_sweep, args=(context, settings, stop), name="notification-sweep", daemon=True
        )
        sweeper.start()
    # rq installs its own SIGINT/SIGTERM handlers; a burst run inside a larger program
    # (a test, an operator's script) gets the program's back afterwards.
    handlers = {
        number: signal.getsignal(number)
        for number in (signal.SIGINT, signal.SIGTERM)
        if threading.current_thread() is threading.main_thread()
    }
    try:
        worker = SimpleWorker(
            [settings.notification_queue_name],
            connection=connection,
            name=owner,
            serializer=JSONSerializer,
            default_result_ttl=0,
        )
        worker.work(burst=burst, logging_level="WARNING")
    finally:
        for number, handler in handlers.items():
            signal.signal(number, handler)
        stop.set()
        if sweeper is not None:
            sweeper.join(timeout=30)
        _context = None
        db.dispose()
        connection.close()
