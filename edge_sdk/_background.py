"""`BackgroundSync`: the sync loop, in a daemon thread, that an app starts and stops.

Made by `EdgeClient.start_sync`; `watch_sync` and ``coherency sync --watch`` run this
same loop. Each round is one `EdgeClient.sync` whose pull long-polls (`wait`):

- an outage (`ServerUnreachableError`, after the retry policy's own backoff) is waited
  out: the next round starts `pause` seconds later;
- a local write that leaves records to push wakes a long poll in progress (the
  transport is interrupted), and the next round starts `push_delay` seconds later, so
  a burst of writes goes up in one push;
- anything else (a revoked device, refused credentials, an untrusted edge box, a
  server URL or certificate that cannot work, a refusal) is something retrying cannot
  fix: the loop ends, the status says why, and `stop` raises it.

`stop` interrupts the transport: a long poll in flight is abandoned at once (an
`HttpTransport` shuts its sockets down; a `MemoryTransport` wakes its hub). A
transport that cannot be interrupted is long-polled in slices of a second instead.
Nothing is lost: a pull page is applied in one transaction or not at all, and a push
whose answer was cut is sent again (merges are idempotent).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

from edge_sdk._errors import ServerUnreachableError, SyncCancelledError
from edge_sdk._notify import Deliver, Listeners, Subscription
from edge_sdk._sync_status import StatusTracker, SyncStatus
from edge_sdk._sync_types import SyncResult
from edge_sdk._transport import SyncTransport

__all__ = ["BackgroundSync", "SyncRound"]

_log = logging.getLogger("edge_sdk.sync")

SyncRound = Callable[[SyncTransport, float], SyncResult]
"""One sync through a transport, long-polling up to the given seconds."""

SLICE_SECONDS = 1.0
"""Longest wait of one pull through a transport that cannot be interrupted."""


class BackgroundSync:
    """A running sync loop (see the module doc); `stop` it, or use it as a context
    manager. Made by `EdgeClient.start_sync`.

    Attributes:
        error: The error that ended the loop by itself (one retrying cannot fix:
            `DeviceRevokedError`, `AuthenticationError`, `NotEnrolledError`,
            `UntrustedEdgeBoxError`, ...), or None.
    """

    def __init__(
        self,
        sync: SyncRound,
        transport: SyncTransport,
        status: StatusTracker,
        *,
        wait: float = 25.0,
        pause: float = 5.0,
        push_delay: float = 0.5,
    ) -> None:
        if wait < 0 or pause < 0 or push_delay < 0:
            raise ValueError("wait, pause and push_delay must not be negative")
        self._sync = sync
        self._transport = _Watched(transport)
        self._interruptible = callable(getattr(transport, "interrupt", None))
        self._status = status
        self._wait = wait if self._interruptible else min(wait, SLICE_SECONDS)
        self._pause = pause
        self._push_delay = push_delay
        self._results: Listeners[SyncResult] = Listeners("sync result")
        self._outages: Listeners[ServerUnreachableError] = Listeners("sync outage")
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._finished = False
        self._woken = False
        self._reported = False
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="edge-sdk-sync", daemon=True)
        self._watch: Subscription | None = None

    # ------------------------------------------------------------ the app's side
    def on_result(
        self, callback: Callable[[SyncResult], None], *, deliver: Deliver | None = None
    ) -> Subscription:
        """Call `callback` with each round that moved or refused something.

        Args:
            callback: Told each `SyncResult` that pushed, pulled or refused records.
            deliver: Where it runs (see `edge_sdk.Deliver`); None: the loop's thread.

        Returns:
            The subscription; cancel it to stop the calls.
        """
        return self._results.add(callback, deliver=deliver)

    def on_unreachable(
        self, callback: Callable[[ServerUnreachableError], None], *, deliver: Deliver | None = None
    ) -> Subscription:
        """Call `callback` with each outage the loop waits out (the status says so too).

        Args:
            callback: Told each `ServerUnreachableError`.
            deliver: Where it runs (see `edge_sdk.Deliver`); None: the loop's thread.

        Returns:
            The subscription; cancel it to stop the calls.
        """
        return self._outages.add(callback, deliver=deliver)

    @property
    def running(self) -> bool:
        """True until the loop has ended (stopped, or by an error)."""
        return self._thread.is_alive()

    def start(self) -> BackgroundSync:
        """Start the loop (once); returns self."""
        self._watch = self._status.subscribe(self._status_changed, None)
        self._status.loop_running(True)
        self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the loop ends by itself (an error) or is stopped; True if it has."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop the loop, abandoning a long poll in flight, and wait for its thread.

        Stopping loses nothing (see the module doc). Stopping again is a no-op. A loop
        whose thread has not ended within `timeout` seconds ends by itself later.

        Raises:
            EdgeError: The error that ended the loop by itself (once; see `error`).
        """
        with self._lock:
            self._stopping.set()
            if not self._finished:
                _interrupt(self._transport.inner)
        if self._thread.ident is not None:
            self._thread.join(timeout)
        if self.error is not None and not self._reported:
            self._reported = True
            raise self.error

    def __enter__(self) -> BackgroundSync:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is None:
            self.stop()
            return
        try:
            self.stop()
        except Exception:  # the block's own exception is the one to see
            _log.exception("the background sync had ended with an error")

    # ------------------------------------------------------------ the loop
    def _run(self) -> None:
        try:
            while self._round():
                pass
        finally:
            if self._watch is not None:
                self._watch.cancel()
            with self._lock:
                self._finished = True
                _resume(self._transport.inner)  # a later `sync` must not be refused
            self._status.loop_running(False, self.error)

    def _round(self) -> bool:
        """One sync; False when the loop ends."""
        with self._lock:
            if self._stopping.is_set():
                return False
            _resume(self._transport.inner)
            self._woken = False
        try:
            result = self._sync(self._transport, self._wait)
        except SyncCancelledError:
            if self._woken and not self._stopping.is_set():
                self._stopping.wait(self._push_delay)  # let a burst of writes gather
            return True
        except ServerUnreachableError as exc:
            self._outages.notify(exc)
            self._stopping.wait(self._pause)
            return True
        except Exception as exc:  # retrying cannot fix it: said through status and stop()
            _log.warning("background sync stopped: %s: %s", type(exc).__name__, exc)
            self.error = exc
            return False
        if result.pushed or result.pulled or result.refused_by_server or result.rejected:
            self._results.notify(result)
        return True

    def _status_changed(self, status: SyncStatus) -> None:
        """A commit changed the status: records waiting wake a long poll to push them."""
        if status.pending_records == 0 or not self._transport.polling:
            return
        with self._lock:
            if self._stopping.is_set() or self._finished or not self._transport.polling:
                return
            self._woken = True
            _interrupt(self._transport.inner)


class _Watched:
    """The loop's transport, as `sync_replica` sees it: the same, but it knows when a
    long poll is in progress (the only request a local write may cut short)."""

    def __init__(self, inner: SyncTransport) -> None:
        self.inner = inner
        self.polling = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def pull(self, **kwargs: Any) -> bytes:
        waiting = float(kwargs.get("wait", 0.0)) > 0
        self.polling = waiting
        try:
            data: bytes = self.inner.pull(**kwargs)
            return data
        finally:
            if waiting:
                self.polling = False


def _interrupt(transport: SyncTransport) -> None:
    interrupt = getattr(transport, "interrupt", None)
    if callable(interrupt):
        interrupt()


def _resume(transport: SyncTransport) -> None:
    resume = getattr(transport, "resume", None)
    if callable(resume):
        resume()
