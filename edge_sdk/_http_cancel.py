"""Interrupting requests in flight from another thread: `Interrupter`.

httpx has no way to cancel a synchronous request from another thread, and closing a
socket does not wake a thread blocked reading it. Shutting the socket down does: the
read returns at once, and httpx raises a transport error. So the retry wrapper puts
httpcore's ``trace`` request extension on every request, and the trace hands over
each connection's network stream as it opens (``connection.connect_tcp.complete``,
``connection.start_tls.complete``); `Interrupter.interrupt` shuts down every socket
still open, and the retry wrapper, seeing the interruption, raises
`SyncCancelledError` instead of trying again. Until `resume`, every new request (and
every backoff wait) fails the same way, so a request that was about to start when
the interruption came does not slip through.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import weakref
from collections.abc import Callable
from typing import Any

from edge_sdk._errors import SyncCancelledError

__all__ = ["TRACE", "Interrupter"]

TRACE = "trace"
"""The httpcore request extension that reports a connection's events."""

_OPENED = ("connection.connect_tcp.complete", "connection.start_tls.complete")

Trace = Callable[[str, dict[str, Any]], None]


class Interrupter:
    """The interruption state of one HTTP transport, and the sockets it opened."""

    def __init__(self) -> None:
        self._interrupted = threading.Event()
        self._lock = threading.Lock()
        self._sockets: weakref.WeakSet[socket.socket] = weakref.WeakSet()

    @property
    def interrupted(self) -> bool:
        """True from `interrupt` until `resume`."""
        return self._interrupted.is_set()

    def interrupt(self) -> None:
        """Abandon the requests in flight, and refuse new ones until `resume`."""
        with self._lock:
            self._interrupted.set()
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)

    def resume(self) -> None:
        """Let requests through again."""
        self._interrupted.clear()

    def check(self, what: str) -> None:
        """Raise `SyncCancelledError` if interrupted.

        Raises:
            SyncCancelledError: The transport was interrupted.
        """
        if self._interrupted.is_set():
            raise SyncCancelledError(f"{what} was interrupted")

    def sleep(self, seconds: float) -> None:
        """Wait `seconds` (a backoff), cut short by an interruption.

        Raises:
            SyncCancelledError: The transport was interrupted before or during the wait.
        """
        self.check("the wait before a retry")
        if self._interrupted.wait(seconds):
            self.check("the wait before a retry")

    def trace(self, chained: Trace | None) -> Trace:
        """A ``trace`` extension that records each socket opened (and calls `chained`)."""

        def trace(event: str, info: dict[str, Any]) -> None:
            if event in _OPENED:
                self._opened(info.get("return_value"))
            if chained is not None:
                chained(event, info)

        return trace

    def _opened(self, stream: Any) -> None:
        sock = None
        with contextlib.suppress(Exception):  # a stream without a socket: nothing to shut
            sock = stream.get_extra_info("socket")
        if not isinstance(sock, socket.socket):
            return
        with self._lock:
            self._sockets.add(sock)
            interrupted = self._interrupted.is_set()
        if interrupted:  # opened just as the interruption came
            _shut(sock)


def _shut(sock: socket.socket) -> None:
    # The plain socket's shutdown, also for a TLS socket: its own would drop the TLS
    # state under the thread that is reading it.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
