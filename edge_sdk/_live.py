"""Live queries and record observers: the app is called with a new result when it changes.

Every committed store transaction that stored documents tells the replica's
``commits`` listeners what it stored (`edge_sdk._store.Written`: collections, and ids
per collection). A live query is one of those listeners: when its collection was
written it runs its query again (a record observer only when its record was), compares
the result with the last one it delivered (the records' JSON, so a change of any field,
deletion, or a new or vanished record counts) and calls the app only when it differs.
So a batch of writes, a sync page or a bundle import (each one transaction) gives at
most one call, and a transaction that did not change the result gives none.

- The first result is delivered when subscribing.
- Records stored unverified (a first sync's deferred verification) are left out until
  they are verified; the verification's commit then shows them, once.
- Re-running happens after the commit, outside the store's lock, in the committing
  thread; the query reads under the store's lock so it never sees another thread's
  transaction half-written. The app's callback runs through ``deliver``.
- Audit: each result handed to the app is one ``live`` (``observe``) access with the
  ids of the records delivered, journalled before the callback runs. A re-run whose
  result did not change shows the app nothing and is not journalled.
"""

from __future__ import annotations

import asyncio
import builtins
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Generic, TypeVar

from crdt import Record
from edge_sdk._errors import InvalidArgumentError
from edge_sdk._notify import Deliver, Listeners, Subscription
from edge_sdk._query import Query, QuerySource
from edge_sdk._replica import Replica
from edge_sdk._store import Written

__all__ = ["live_results", "observe_record", "watch_query"]

R = TypeVar("R", bound=Record)
T = TypeVar("T")


class _Live(Generic[T]):
    """One live query or observer: re-runs on commits that may change it, delivers on change."""

    def __init__(
        self,
        replica: Replica,
        *,
        collection: str,
        action: str,
        record_id: str | None,
        read: Callable[[], list[str]],
        result: Callable[[list[str]], T],
        callback: Callable[[T], None],
        deliver: Deliver | None,
    ) -> None:
        self._replica = replica
        self._collection = collection
        self._action = action
        self._record_id = record_id
        self._read = read  # the result as the projection's JSON texts
        self._result = result
        self._last: list[str] | None = None
        self._version = 0
        self._delivered = 0
        self._delivering = threading.RLock()
        self._out: Listeners[T] = Listeners(f"{action} {collection}")
        self.output = self._out.add(callback, deliver=deliver)

    def committed(self, written: Written) -> None:
        """A transaction committed: run again if it wrote what this watches."""
        ids = written.ids.get(self._collection)
        if ids is None or (self._record_id is not None and self._record_id not in ids):
            return
        self.refresh()

    def refresh(self) -> None:
        """Run again; deliver the result if it differs from the last one delivered."""
        store = self._replica.store
        with store.consistent():  # no other thread's transaction half-written
            raw = self._read()
            if raw == self._last:
                return
            self._last = raw
            self._version += 1
            version = self._version
        try:
            value = self._result(raw)
            with self._replica.access(self._action, self._collection) as access:
                access.record_ids.extend(_ids(value))
        except BaseException:
            self._last = None  # not delivered: the next commit tries again
            raise
        with self._delivering:
            if version <= self._delivered:
                return  # another thread delivered a newer result meanwhile
            self._delivered = version
            self._out.notify(value)


def _ids(value: object) -> list[str]:
    if isinstance(value, Record):
        return [value.id]
    if isinstance(value, list):
        return [record.id for record in value if isinstance(record, Record)]
    return []


def _subscribe(replica: Replica, live: _Live[Any]) -> Subscription:
    commits = replica.commits.add(live.committed)
    try:
        live.refresh()  # the first result, in this thread
    except BaseException:
        commits.cancel()
        raise

    def cancel() -> None:
        commits.cancel()
        live.output.cancel()  # a delivery already running may finish

    return Subscription(cancel)


def watch_query(
    replica: Replica,
    query: Query[R],
    callback: Callable[[builtins.list[R]], None],
    *,
    deliver: Deliver | None = None,
) -> Subscription:
    """Call `callback` with the records of `query` now and whenever they change."""
    collection = query._collection
    if collection._replica is not replica:
        raise InvalidArgumentError("this query is of another client's collection")
    where, params = query._sql()
    order_by, spec = query._order_sql(), query._spec

    def read() -> list[str]:
        return replica.store.query_json(
            collection.name,
            where,
            params,
            order_by=order_by,
            limit=spec.limit,
            offset=spec.offset,
            settle=None,
        )

    live: _Live[builtins.list[R]] = _Live(
        replica,
        collection=collection.name,
        action="live",
        record_id=None,
        read=read,
        result=lambda raw: [collection._parse(text) for text in raw],
        callback=callback,
        deliver=deliver,
    )
    return _subscribe(replica, live)


def observe_record(
    collection: QuerySource[R],
    record_id: str,
    callback: Callable[[R | None], None],
    *,
    deliver: Deliver | None = None,
) -> Subscription:
    """Call `callback` with record `record_id` (None: absent or deleted) now and
    whenever it changes."""
    replica = collection._replica

    def read() -> list[str]:
        return replica.store.query_json(collection.name, ["id = ?"], [record_id], settle=None)

    def result(raw: Sequence[str]) -> R | None:
        record = collection._parse(raw[0]) if raw else None
        return None if record is None or record.deleted else record

    live: _Live[R | None] = _Live(
        replica,
        collection=collection.name,
        action="observe",
        record_id=record_id,
        read=read,
        result=result,
        callback=callback,
        deliver=deliver,
    )
    return _subscribe(replica, live)


async def live_results(
    subscribe: Callable[[Callable[[T], None], Deliver], Subscription],
) -> AsyncIterator[T]:
    """The results `subscribe(callback, deliver)` delivers, on the running event loop
    (only the newest if the consumer is slow); cancelled when the iteration ends."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[T] = asyncio.Queue()
    subscription = subscribe(queue.put_nowait, loop.call_soon_threadsafe)
    try:
        while True:
            result: T = await queue.get()
            while not queue.empty():  # only the newest matters
                result = queue.get_nowait()
            yield result
    finally:
        subscription.cancel()
