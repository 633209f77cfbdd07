"""Wake-ups for long-polling pulls when a clinic's change feed moves.

The change feed itself is in the database (`Clinic.feed_seq`, `Document.seq`); this
module only tells waiting pulls that it is worth looking again. A waiter always
re-reads the database after waking (and wakes on its own after its timeout), so a lost
or spurious signal costs latency, never correctness.

- SQLite (one process): pushes call `published(clinic_id)` after their commit, which
  wakes waiters of this process.
- PostgreSQL (any number of workers): pushes call `notify_in(session, clinic_id)`
  inside their transaction; PostgreSQL delivers the NOTIFY at commit to every worker's
  listener connection, which wakes that worker's waiters.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import defaultdict
from typing import Protocol

import psycopg
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from sync_server.db import Database

__all__ = ["CHANNEL", "Feed", "LocalFeed", "PostgresFeed", "make_feed"]

CHANNEL = "coherency_feed"
log = logging.getLogger("sync_server.feed")


class Feed(Protocol):
    """What routes need from the feed notifier."""

    healthy: bool

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def notify_in(self, session: Session, clinic_id: str) -> None:
        """Inside a writing transaction: announce a change to `clinic_id` at commit."""
        ...

    def published(self, clinic_id: str) -> None:
        """After a commit that changed `clinic_id`'s feed."""
        ...

    def subscribe(self, clinic_id: str) -> asyncio.Event:
        """An event set at the next announcement for `clinic_id` (take it, then re-read)."""
        ...


class LocalFeed:
    """In-process wake-ups (SQLite: a single server process)."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._events: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self.healthy = True

    async def start(self) -> None:
        """Bind to the running event loop."""
        self._loop = asyncio.get_running_loop()

    async def stop(self) -> None:
        """Wake every waiter so shutdown does not wait for long polls."""
        for clinic_id in list(self._events):
            self._wake(clinic_id)

    def notify_in(self, session: Session, clinic_id: str) -> None:
        """Nothing to do inside the transaction on SQLite."""

    def published(self, clinic_id: str) -> None:
        """Wake this process's waiters of `clinic_id` (from any thread)."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake, clinic_id)

    def subscribe(self, clinic_id: str) -> asyncio.Event:
        """The event the next wake-up of `clinic_id` sets (call on the event loop)."""
        return self._events[clinic_id]

    def _wake(self, clinic_id: str) -> None:
        event = self._events.pop(clinic_id, None)
        if event is not None:
            event.set()


class PostgresFeed(LocalFeed):
    """Wake-ups across workers through PostgreSQL LISTEN/NOTIFY.

    A thread holds one autocommit connection that LISTENs on `CHANNEL` and hands each
    notification to the event loop. If the connection drops, it reconnects with
    backoff and wakes every waiter (they re-read the database, so nothing is missed).
    """

    def __init__(self, dsn: str) -> None:
        super().__init__()
        self._dsn = dsn
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._listening = threading.Event()
        self.healthy = False

    async def start(self) -> None:
        """Start the listener thread and wait (briefly) until it listens."""
        await super().start()
        self._thread = threading.Thread(target=self._listen, name="feed-listener", daemon=True)
        self._thread.start()
        await asyncio.get_running_loop().run_in_executor(None, self._listening.wait, 10)

    async def stop(self) -> None:
        """Stop the listener thread."""
        self._stop.set()
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 10)
        await super().stop()

    def notify_in(self, session: Session, clinic_id: str) -> None:
        """Queue a NOTIFY that PostgreSQL delivers when the transaction commits."""
        session.execute(
            text("SELECT pg_notify(:channel, :clinic)"),
            {
                "channel": CHANNEL,
                "clinic": clinic_id,
            },
        )

    def published(self, clinic_id: str) -> None:
        """Nothing: the NOTIFY reaches this worker's listener too."""

    def _listen(self) -> None:
        delay = 0.1
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._dsn, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.healthy = True
                    self._listening.set()
                    delay = 0.1
                    self._wake_all()  # anything sent while we were not listening
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=0.5, stop_after=100):
                            self._deliver(note.payload)
            except psycopg.Error as exc:
                self.healthy = False
                log.warning("feed listener lost its connection: %s", exc)
                self._stop.wait(delay)
                delay = min(delay * 2, 5.0)
        self.healthy = False

    def _deliver(self, clinic_id: str) -> None:
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # loop closing during shutdown
                self._loop.call_soon_threadsafe(self._wake, clinic_id)

    def _wake_all(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._wake_everyone)

    def _wake_everyone(self) -> None:
        for clinic_id in list(self._events):
            self._wake(clinic_id)


def make_feed(db: Database) -> LocalFeed:
    """The notifier for `db`: LISTEN/NOTIFY on PostgreSQL, in-process on SQLite."""
    if db.sqlite:
        return LocalFeed()
    url = make_url(db.url).set(drivername="postgresql")
    return PostgresFeed(url.render_as_string(hide_password=False))
