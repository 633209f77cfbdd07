"""Structured logs: one JSON object per line, each stamped with the request id and the
worker that wrote it.

The observability middleware binds each request's id (`bound_request_id`) for as long
as the request runs; `RequestIdFilter` adds it to every log record a handler sees,
with ``worker`` (the process id) and, when the server runs several workers,
``worker_index`` (0, 1, ...: the slot the worker holds, `set_worker_index`; a worker
uvicorn restarts takes over the slot of the one it replaces).
`configure_logging(level)` sends the ``sync_server`` and uvicorn loggers to stderr as
JSON lines (and silences uvicorn's own access log, whose lines carry the raw path and
query string); `coherency server run` calls it.
"""

from __future__ import annotations

import contextvars
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Final

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

__all__ = [
    "RequestIdFilter",
    "bound_request_id",
    "configure_logging",
    "current_client_address",
    "current_request_id",
    "json_log_handler",
    "set_worker_index",
]

_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "coherency_request_id", default=None
)


_client_address: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "coherency_client_address", default=None
)


_worker_index: int | None = None


def set_worker_index(index: int | None) -> None:
    """Stamp this process's log lines with ``worker_index`` (None: leave it out)."""
    global _worker_index
    _worker_index = index


def current_request_id() -> str | None:
    """The id of the request being handled in this context, if any."""
    return _request_id.get()


def current_client_address() -> str | None:
    """The network address of the client whose request is being handled, if any."""
    return _client_address.get()


@contextmanager
def bound_request_id(request_id: str, client_address: str | None = None) -> Iterator[None]:
    """Make `request_id` (and the client's address) current while the block runs."""
    token = _request_id.set(request_id)
    address_token = _client_address.set(client_address)
    try:
        yield
    finally:
        _client_address.reset(address_token)
        _request_id.reset(token)


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` (the current request's, or None) and ``worker`` (this
    process's id; ``worker_index`` too if set) to every record it sees.

    Attach it to a handler, not a logger: handler filters also see the records that
    child loggers propagate.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Stamp the record; never drops one."""
        if not hasattr(record, "request_id"):
            record.request_id = _request_id.get()
        record.worker = record.process or os.getpid()  # the pid that made the record
        if _worker_index is not None:
            record.worker_index = _worker_index
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
