"""What one connection or request may hold of the server: time to send its headers,
time between body chunks, and bytes of body per route.

A client that opens connections and sends nothing, or trickles its headers or body a
byte at a time, must not hold the server's connections for ever (slowloris); a login
must not be a 256 MiB JSON document.

- `GuardedH11Protocol`: uvicorn's HTTP/1.1 protocol with a deadline for the request
  line and headers of each request (uvicorn itself only times out idle keep-alive
  connections). Used by `serve` and `ThreadedServer`.
- `BodyLimitMiddleware`: per-route caps on the body (``Content-Length`` refused at
  once, chunked bodies counted as they stream) and a deadline for each body chunk.
  Routes that stream big bodies (sync pushes, blob chunks, model uploads) get their
  own caps; every other route (JSON) gets `Settings.max_json_body`.

Refusals use the server's error shape: 413 ``payload_too_large`` and 408
``body_timeout``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

import h11
from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = [
    "HEADER_TIMEOUT_SECONDS",
    "BodyError",
    "BodyLimitMiddleware",
    "GuardedH11Protocol",
    "RouteCap",
    "guarded_protocol",
]

log = logging.getLogger("sync_server.limits")

HEADER_TIMEOUT_SECONDS = 10.0
"""How long a client may take to send a request's line and headers."""

RouteCap = tuple[str, str, int]
"""(method, path prefix, most body bytes) for routes with their own cap."""


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing connections whose headers do not arrive in time.

    The deadline starts when the connection opens and again whenever a new request
    begins on a kept-alive connection; it stops once the headers are complete.
    """

    header_timeout = HEADER_TIMEOUT_SECONDS

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_deadline: asyncio.TimerHandle | None = None
        self._arm_header_deadline()

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE and self._header_deadline is None:
            self._arm_header_deadline()  # a new request starts on a kept-alive connection
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._disarm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        super().connection_lost(exc)

    def _arm_header_deadline(self) -> None:
        self._header_deadline = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _disarm_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            log.info("closing a connection whose request headers did not arrive in time")
            self.transport.close()


def guarded_protocol(header_timeout: float) -> type[GuardedH11Protocol]:
    """`GuardedH11Protocol` with its own header deadline (for one server's config)."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"header_timeout": header_timeout})


class BodyLimitMiddleware:
    """Per-route body caps and a deadline between body chunks (pure ASGI)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        default_cap: Callable[[], int],
        route_caps: Callable[[], Sequence[RouteCap]],
        chunk_timeout: Callable[[], float],
    ) -> None:
        self.app = app
        self._default_cap = default_cap
        self._route_caps = route_caps
        self._chunk_timeout = chunk_timeout

    def cap_for(self, method: str, path: str) -> int:
        """The most body bytes a request to `method` `path` may send."""
        for route_method, prefix, cap in self._route_caps():
            if method == route_method and path.startswith(prefix):
                return cap
        return self._default_cap()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cap = self.cap_for(str(scope["method"]), str(scope["path"]))
        declared = _content_length(scope)
        if declared is not None and declared > cap:
            await _refuse(send, 413, "payload_too_large", _too_large(cap))
            return
        timeout = self._chunk_timeout()
        received = 0
        started = False
        body_done = False

        async def guarded_receive() -> Message:
            nonlocal received, body_done
            if body_done:
                # Past the body, receive() only waits for the client to go away (a
                # streaming download listens for that as long as it runs): no deadline.
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), timeout)
            except TimeoutError:
                raise BodyError(408, "body_timeout", "the request body stopped arriving") from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    raise BodyError(413, "payload_too_large", _too_large(cap))
                body_done = not message.get("more_body", False)
            else:
                body_done = True
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, guarded_receive, watched_send)
        except BodyError as exc:
            if started:
                raise
            await _refuse(send, exc.status, exc.code, exc.message)


class BodyError(HTTPException):
    """A body over its cap, or one that stopped arriving.

    An `HTTPException` so that FastAPI's body parsing passes it on unchanged (it turns
    other errors into 400) and the app answers it in its error shape with `code`.
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(status_code=status, detail=message, headers={"connection": "close"})
        self.status = status
        self.code = code
        self.message = message


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() else None
    return None


def _too_large(cap: int) -> str:
    return f"the request body may be at most {cap} bytes on this route"


async def _refuse(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    headers: list[Any] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
