"""The observability middleware: request ids, the access log, metrics, the 500 catch-all.

`install_observability(app)` wraps the app in one pure-ASGI middleware that, for every
HTTP request:

- takes the client's ``X-Request-ID`` if it is a sane token (at most 64 characters of
  ``[A-Za-z0-9._-]``), else makes one; puts it on ``request.state.request_id``, in the
  response's ``X-Request-ID`` header, and (through `sync_server.ops.logs`) in every
  log line written while the request runs;
- writes one access line on the ``sync_server.access`` logger: request id, method,
  route *template* (``/v1/patients/{patient_id}``, never the raw path or the query
  string, which may hold a patient's name), status, duration, whether the request
  waited in a long poll, and the principal's kind and id. No request or response body
  is ever logged;
- counts the request in the app's own Prometheus registry (`Metrics`, on
  ``app.state.metrics``), so several apps in one process never collide; a pull that
  waited in a long poll is counted but not timed here (its wait has a histogram of its
  own, ``coherency_long_poll_duration_seconds``);
- turns an unhandled exception into a logged traceback and a bare
  ``500 {"error": {"code": "internal", "message": "internal error", "request_id": ...}}``.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Final

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sync_server.ops.logs import bound_request_id
from sync_server.ops.metrics import Metrics

__all__ = ["REQUEST_ID_HEADER", "ObservabilityMiddleware", "install_observability"]

REQUEST_ID_HEADER: Final = "X-Request-ID"
UNMATCHED_ROUTE: Final = "<unmatched>"
"""The route label of a request no route matched (its raw path is never recorded)."""
CLIENT_CLOSED_REQUEST: Final = 499
"""The status recorded for a request cancelled before any response started."""

# Probes and scrapes arrive every few seconds; their successes are logged at DEBUG.
PROBE_ROUTES: Final = frozenset({"/healthz", "/readyz", "/metrics"})

_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")

log = logging.getLogger("sync_server")
access_log = logging.getLogger("sync_server.access")


def _request_id_from(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's request id if it is a sane token, else a new one."""
    for name, value in headers:
        if name.lower() == b"x-request-id":
            try:
                given = value.decode("ascii")
            except UnicodeDecodeError:
                break
            if _SANE_REQUEST_ID.fullmatch(given):
                return given
            break
    return uuid.uuid4().hex


def _route_template(scope: Scope) -> str:
    """The template of the route that matched (``/v1/patients/{patient_id}``)."""
    route = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    return template if isinstance(template, str) and template else UNMATCHED_ROUTE


def _principal_of(scope: Scope) -> tuple[str | None, str | None]:
    """The kind and id of the caller the route authenticated, if any."""
    state = scope.get("state")
    principal = state.get("principal") if isinstance(state, dict) else None
    if principal is None:
        return None, None
    return getattr(principal, "kind", None), getattr(principal, "id", None)


def _was_long_poll(scope: Scope) -> bool:
    """Whether the route waited in a long poll (it sets ``request.state.long_poll``)."""
    state = scope.get("state")
    return isinstance(state, dict) and bool(state.get("long_poll"))


_INTERNAL_ERROR_HEADERS: Final = [(b"content-type", b"application/json")]


class ObservabilityMiddleware:
    """Request id, access log, metrics and the 500 catch-all (see the module docs)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id_from(scope.get("headers", []))
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        client = scope.get("client")
        with bound_request_id(request_id, client[0][:64] if client else None):
            await self._observe(scope, receive, send, request_id)

    async def _observe(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        # Stays 499 ("client closed request", as nginx logs it) if no response starts:
        # the request was cancelled, typically by the client going away mid long poll.
        status = CLIENT_CLOSED_REQUEST
        response_started = False
        header = (REQUEST_ID_HEADER.lower().encode(), request_id.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = int(message["status"])
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != header[0]]
                message = {**message, "headers": [*headers, header]}
            await send(message)

        started = time.perf_counter()
        self.metrics.http_requests_in_flight.inc()
        try:
            try:
                await self.app(scope, receive, send_with_id)
            except Exception:
                log.exception("unhandled error in %s %s", scope["method"], _route_template(scope))
                if response_started:  # too late for a 500; let the server drop it
                    raise
                status = 500
                body = json.dumps(
                    {
                        "error": {
                            "code": "internal",
                            "message": "internal error",
                            "request_id": request_id,
                        }
                    }
                ).encode()
                await send_with_id(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [
                            *_INTERNAL_ERROR_HEADERS,
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body, "more_body": False})
        finally:
            elapsed = time.perf_counter() - started
            self.metrics.http_requests_in_flight.dec()
            self._record(scope, status, elapsed, request_id)

    def _record(self, scope: Scope, status: int, elapsed: float, request_id: str) -> None:
        method = str(scope["method"])
        route = _route_template(scope)
        self.metrics.http_requests.labels(method=method, route=route, status=str(status)).inc()
        long_poll = _was_long_poll(scope)
        if not long_poll:  # its wait is in the long-poll histogram
            self.metrics.http_request_duration.labels(method=method, route=route).observe(elapsed)
        kind, principal_id = _principal_of(scope)
        quiet = route in PROBE_ROUTES and status < 400
        access_log.log(
            logging.DEBUG if quiet else logging.INFO,
            "%s %s %s",
            method,
            route,
            status,
            extra={
                "request_id": request_id,
                "method": method,
                "route": route,
                "status": status,
                "duration_ms": round(elapsed * 1000, 3),
                "long_poll": long_poll,
                "principal_kind": kind,
                "principal_id": principal_id,
            },
        )


def install_observability(app: FastAPI) -> Metrics:
    """Add request ids, the access log, metrics and the 500 catch-all to `app`.

    Stores the app's `Metrics` on ``app.state.metrics`` and returns it. Call it after
    every other middleware is added: the middleware added last is the outermost, and
    this one should see (and time) everything the others do.
    """
    metrics = Metrics()
    app.state.metrics = metrics
    app.add_middleware(ObservabilityMiddleware, metrics=metrics)
    return metrics
