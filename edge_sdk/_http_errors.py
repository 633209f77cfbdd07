"""Reading the server's error answers: ``{"error": {"code": ..., "message": ...}}``."""

from __future__ import annotations

import contextlib
from typing import Any, Protocol

__all__ = ["ErrorAnswer", "error_code", "error_text"]


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
