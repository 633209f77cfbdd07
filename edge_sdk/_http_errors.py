"""Reading the server's error answers: ``{"error": {"code": ..., "message": ...}}``."""

from __future__ import annotations

import contextlib
from typing import Any, Protocol

from edge_sdk._errors import SyncError

__all__ = ["ErrorAnswer", "error_code", "error_text", "raise_for_status"]


class ErrorAnswer(Protocol):
    """What is read of an answer (an `httpx.Response` fits)."""

    @property
    def status_code(self) -> int: ...

    def json(self) -> Any: ...


def error_code(response: ErrorAnswer) -> str:
    """The error code the server gave (e.g. ``device_revoked``), or "" if none."""
    with contextlib.suppress(Exception):  # not JSON, not an error body, or unread
        return str(response.json()["error"]["code"])
    return ""


def error_text(response: ErrorAnswer) -> str:
    """The server's error as one line: ``message (code, HTTP status)``."""
    with contextlib.suppress(Exception):  # not JSON, not an error body, or unread
        error = response.json()["error"]
        return f"{error['message']} ({error['code']}, HTTP {response.status_code})"
    return f"HTTP {response.status_code}"


def raise_for_status(response: ErrorAnswer, what: str) -> None:
    """Raise `SyncError` naming `what` if the server refused the request (4xx/5xx)."""
    if response.status_code >= 400:
        raise SyncError(f"the server refused the {what}: {error_text(response)}")
