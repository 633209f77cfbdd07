"""Callbacks the SDK makes to the app: one registry, one subscription handle.

Every place the SDK calls the app back (access events, live queries and record
observers, sync status, decisions) keeps its callbacks in a `Listeners`. A callback
is registered with `Listeners.add`, which returns a `Subscription` to cancel it.

Where a callback runs is the app's choice, per callback: ``deliver=None`` calls it in
the thread that noticed the change (a sync thread, the thread that wrote); any
``deliver`` callable is handed a zero-argument function to run where the app wants
it, for example ``loop.call_soon_threadsafe`` (asyncio), ``executor.submit``, or a UI
toolkit's "run on the main thread".

A callback that raises is logged (with its traceback) and does not reach the code that
notified: the change it was told about has already happened, and the writer must not
see an error for a write that committed (a caller who retried would write twice).
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Deliver", "Listeners", "Subscription"]

_log = logging.getLogger("edge_sdk")

T = TypeVar("T")

Deliver = Callable[[Callable[[], None]], object]
"""Runs a zero-argument callback where the app wants it (for example
``loop.call_soon_threadsafe`` or ``executor.submit``)."""


class Subscription:
    """A registered callback; `cancel` it (or leave its ``with`` block) to stop it.

    Cancelling is idempotent and takes effect at once: a notification already being
    delivered may finish, no new one starts.
    """

    def __init__(self, cancel: Callable[[], None]) -> None:
        self._cancel: Callable[[], None] | None = cancel
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        """False once cancelled."""
        return self._cancel is not None

    def cancel(self) -> None:
        """Stop the callback (again is a no-op)."""
        with self._lock:
            cancel, self._cancel = self._cancel, None
        if cancel is not None:
            cancel()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


class _Entry(Generic[T]):
    __slots__ = ("active", "callback", "deliver")

    def __init__(self, callback: Callable[[T], None], deliver: Deliver | None) -> None:
        self.callback = callback
        self.deliver = deliver
        self.active = True


class Listeners(Generic[T]):
    """The callbacks registered for one kind of notification.

    Thread-safe: callbacks may be added, cancelled and notified from any thread, and a
    callback may add or cancel callbacks (its own included) while it runs.
    """

    def __init__(self, what: str) -> None:
        self._what = what  # named in the log line when a callback fails
        self._entries: list[_Entry[T]] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, callback: Callable[[T], None], *, deliver: Deliver | None = None) -> Subscription:
        """Call `callback` with each notified value (through `deliver`, if given)."""
        entry = _Entry(callback, deliver)
        with self._lock:
            self._entries = [*self._entries, entry]

        def cancel() -> None:
            entry.active = False
            with self._lock:
                self._entries = [e for e in self._entries if e is not entry]

        return Subscription(cancel)

    def notify(self, value: T) -> None:
        """Tell every active callback about `value`; a failing callback is logged."""
        for entry in self._entries:  # a snapshot: the list is replaced, never mutated
            if entry.deliver is None:
                self._run(entry, value)
            else:
                entry.deliver(functools.partial(self._run, entry, value))

    def _run(self, entry: _Entry[T], value: T) -> None:
        if not entry.active:
            return
        try:
            entry.callback(value)
        except Exception:
            _log.exception("a %s callback failed (the change it was told of stands)", self._what)
