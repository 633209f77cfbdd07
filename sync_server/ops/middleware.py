"""Operations: request ids, structured JSON logs, Prometheus metrics, the 500 catch-all.

`install_observability(app)` wraps the app in one pure-ASGI middleware that, for every
HTTP request:

- takes the client's ``X-Request-ID`` if it is a sane token (at most 64 characters of
  ``[A-Za-z0-9._-]``), else makes one; puts it on ``request.state.request_id``, in the
  response's ``X-Request-ID`` header, and (through a context variable and
  `RequestIdFilter`) in every log line written while the request runs;
- writes one access line on the ``sync_server.access`` logger: request id, method,
  route *template* (``/v1/patients/{patient_id}``, never the raw path or the query
  string, which may hold a patient's name), status, duration and the principal's kind
  and id. No request or response body is ever logged;
- counts the request in the app's own Prometheus registry (`Metrics`, on
  ``app.state.metrics``), so several apps in one process never collide;
- turns an unhandled exception into a logged traceback and a bare
  ``500 {"error": {"code": "internal", "message": "internal error", "request_id": ...}}``.

`configure_logging(level)` sends the ``sync_server`` and uvicorn loggers to stderr as
one JSON object per line (and silences uvicorn's own access log, whose lines carry the
raw path and query string); `coherency server run` calls it.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Final

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "REQUEST_ID_HEADER",
    "Metrics",
    "RequestIdFilter",
    "configure_logging",
    "current_request_id",
    "install_observability",
    "json_log_handler",
]

REQUEST_ID_HEADER: Final = "X-Request-ID"
UNMATCHED_ROUTE: Final = "<unmatched>"
"""The route label of a request no route matched (its raw path is never recorded)."""
CLIENT_CLOSED_REQUEST: Final = 499
"""The status recorded for a request cancelled before any response started."""

# Probes and scrapes arrive every few seconds; their successes are logged at DEBUG.
PROBE_ROUTES: Final = frozenset({"/healthz", "/readyz", "/metrics"})
DIRECTIONS: Final = ("push", "pull")
OUTCOMES: Final = ("accepted", "unchanged", "rejected")
# HTTP latency buckets (seconds), up to the longest long poll.
DURATION_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip

_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "coherency_request_id", default=None
)

log = logging.getLogger("sync_server")
access_log = logging.getLogger("sync_server.access")


def current_request_id() -> str | None:
    """The id of the request being handled in this context, if any."""
    return _request_id.get()


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


# ----------------------------------------------------------------------------- logs
class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` (the current request's, or None) to every record it sees.

    Attach it to a handler, not a logger: handler filters also see the records that
    child loggers propagate.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Stamp the record; never drops one."""
        if not hasattr(record, "request_id"):
            record.request_id = _request_id.get()
        return True


def json_log_handler(stream: IO[str] | None = None) -> logging.Handler:
    """A handler writing one JSON object per line (with the request id) to `stream`.

    Args:
        stream: Where to write; stderr by default.
    """
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(
        JsonFormatter(
            "%(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp="time",
            # uvicorn adds an ANSI-coloured copy of some messages.
            reserved_attrs=[*RESERVED_ATTRS, "color_message"],
        )
    )
    handler.addFilter(RequestIdFilter())
    return handler


# The loggers `configure_logging` owns: the server's own and uvicorn's.
_LOGGERS: Final = ("sync_server", "uvicorn", "uvicorn.error", "uvicorn.access")


def configure_logging(level: str | int = "INFO", *, stream: IO[str] | None = None) -> None:
    """Log the server (and uvicorn) as JSON lines on `stream` (stderr) at `level`.

    Idempotent: calling it again replaces the handler it installed before.

    Raises:
        ValueError: `level` is not a logging level name or number.
    """
    if isinstance(level, str):
        resolved = logging.getLevelNamesMapping().get(level.strip().upper())
        if resolved is None:
            raise ValueError(f"unknown log level {level!r} (use DEBUG, INFO, WARNING, ERROR)")
        level = resolved
    handler = json_log_handler(stream)
    handler._coherency = True  # type: ignore[attr-defined]  # marks the one we own
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if getattr(h, "_coherency", False)]:
            logger.removeHandler(old)
        if name in ("sync_server", "uvicorn"):
            # Children (sync_server.access, uvicorn.error, ...) propagate up to these.
            logger.addHandler(handler)
            logger.propagate = False
        elif name == "uvicorn.access":
            # The app writes its own access lines (route templates, never raw paths or
            # query strings); uvicorn logs access only if this logger has handlers.
            logger.handlers.clear()
            logger.propagate = False
        else:
            logger.handlers.clear()
            logger.propagate = True
        logger.setLevel(level)


# -------------------------------------------------------------------------- metrics
class Metrics:
    """The app's Prometheus metrics, in a registry of its own.

    Routes reach it as ``request.app.state.metrics``::

        request.app.state.metrics.count_documents("push", "accepted", 10)
        with request.app.state.metrics.long_poll():
            await wait_for_changes()
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.http_requests = Counter(
            "coherency_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.http_request_duration = Histogram(
            "coherency_http_request_duration_seconds",
            "Time to answer an HTTP request, by method and route template.",
            ["method", "route"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.http_requests_in_flight = Gauge(
            "coherency_http_requests_in_flight",
            "HTTP requests being handled now (long polls included).",
            registry=self.registry,
        )
        self.sync_documents = Counter(
            "coherency_sync_documents",
            "Documents pushed to or pulled from the server, by outcome.",
            ["direction", "outcome"],
            registry=self.registry,
        )
        self.sync_long_polls_waiting = Gauge(
            "coherency_sync_long_polls_waiting",
            "Pulls waiting in a long poll now.",
            registry=self.registry,
        )
        for direction in DIRECTIONS:  # every series exists from the start, at 0
            for outcome in OUTCOMES:
                self.sync_documents.labels(direction=direction, outcome=outcome)

    def count_documents(self, direction: str, outcome: str, n: int = 1) -> None:
        """Count `n` documents of a push or pull with their outcome.

        Args:
            direction: ``"push"`` or ``"pull"``.
            outcome: ``"accepted"``, ``"unchanged"`` or ``"rejected"``.
            n: How many documents (0 counts nothing).

        Raises:
            ValueError: An unknown direction or outcome, or a negative `n`.
        """
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, not {direction!r}")
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, not {outcome!r}")
        if n < 0:
            raise ValueError(f"cannot count a negative number of documents ({n})")
        if n:
            self.sync_documents.labels(direction=direction, outcome=outcome).inc(n)

    @contextmanager
    def long_poll(self) -> Iterator[None]:
        """Count a pull as waiting in a long poll while the block runs."""
        self.sync_long_polls_waiting.inc()
        try:
            yield
        finally:
            self.sync_long_polls_waiting.dec()


# ----------------------------------------------------------------------- middleware
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
        token = _request_id.set(request_id)
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
            _request_id.reset(token)

    def _record(self, scope: Scope, status: int, elapsed: float, request_id: str) -> None:
        method = str(scope["method"])
        route = _route_template(scope)
        self.metrics.http_requests.labels(method=method, route=route, status=str(status)).inc()
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
