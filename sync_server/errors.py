"""The server's one error tree: what a service refuses, with a stable code and a message.

Services raise these and know nothing of HTTP. The app's one handler
(`sync_server.app`) turns them into ``{"error": {"code": ..., "message": ...}}`` with
the status of their class; ``coherency server`` turns them into one ``error:`` line and
an exit code. A client never sees a traceback, and input a client sent never produces
a 5xx.

    ServerError                   every refusal: `code` (stable) and `message`
    ├── Invalid                   the input is malformed or out of bounds
    │   ├── PayloadTooLarge       more bytes than the server takes
    │   ├── UnsupportedMediaType  a body of a type the operation does not take
    │   ├── RangeNotSatisfiable   a byte range that starts past the end
    │   └── Unprocessable         well-formed, but refused for what it says
    ├── Unauthorized              no valid credentials
    ├── Forbidden                 valid credentials, not allowed to do this
    ├── NotFound                  no such thing (or one the caller may not see)
    │   └── Gone                  it was there and is gone for good: start again
    ├── Conflict                  the server's current state refuses it
    │   └── ChainBroken           a device's audit events do not continue its chain
    ├── TooManyRequests           too many attempts: retry after `retry_after` seconds
    └── Unavailable               a dependency (storage, database) is down: retry later
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ChainBroken",
    "Conflict",
    "Forbidden",
    "Gone",
    "Invalid",
    "NotFound",
    "PayloadTooLarge",
    "RangeNotSatisfiable",
    "ServerError",
    "TooManyRequests",
    "Unauthorized",
    "Unavailable",
    "Unprocessable",
    "UnsupportedMediaType",
]


class ServerError(Exception):
    """A refusal with a stable `code` (what clients branch on) and a clear `message`.

    Attributes:
        code: A stable snake_case code; each class has a default.
        message: One or more sentences for a person.
        headers: Response headers a protocol defines for this refusal (tus
            ``Upload-Offset``, ``Content-Range``). Only the HTTP layer sets them.
    """

    code: str = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.headers: dict[str, str] = {}

    def details(self) -> dict[str, Any]:
        """Fields answered beside ``error`` (none by default)."""
        return {}


class Invalid(ServerError):
    """The input is malformed or out of bounds."""

    code = "bad_request"


class PayloadTooLarge(Invalid):
    """More bytes than the server takes."""

    code = "payload_too_large"


class UnsupportedMediaType(Invalid):
    """A body of a type the operation does not take."""

    code = "unsupported_media_type"


class RangeNotSatisfiable(Invalid):
    """A byte range that starts past the end of what it ranges over."""

    code = "range_not_satisfiable"


class Unprocessable(Invalid):
    """Well-formed input, refused for what it says (a weak password, a bad manifest)."""

    code = "unprocessable"


class Unauthorized(ServerError):
    """No valid credentials: missing, expired, unknown or wrong."""

    code = "unauthorized"


class Forbidden(ServerError):
    """Valid credentials that may not do this (a revoked device, a wrong role)."""

    code = "forbidden"


class NotFound(ServerError):
    """No such thing, or one the caller may not see (its existence is not revealed)."""

    code = "not_found"


class Gone(NotFound):
    """It was there and is gone for good (a lost upload): start again."""

    code = "gone"


class Conflict(ServerError):
    """The server's current state refuses it (a taken name, a stale offset)."""

    code = "conflict"


class ChainBroken(Conflict):
    """A device's audit events do not continue the chain the server holds for it:
    `seq` is where it breaks, `server_seq` the last event the server holds."""

    code = "audit_chain_broken"

    def __init__(self, message: str, *, seq: int = 0, server_seq: int = 0) -> None:
        super().__init__(message)
        self.seq = seq
        self.server_seq = server_seq

    def details(self) -> dict[str, Any]:
        return {"seq": self.seq, "server_seq": self.server_seq}


class TooManyRequests(ServerError):
    """Too many attempts from this client or on this account: retry after `retry_after`
    seconds (answered with a ``Retry-After`` header). Decided before any credential is
    looked at, so it says nothing about whether they were right."""

    code = "too_many_requests"

    def __init__(self, message: str, *, retry_after: int = 1, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = max(1, retry_after)
        self.headers["Retry-After"] = str(self.retry_after)

    def details(self) -> dict[str, Any]:
        return {"retry_after": self.retry_after}


class Unavailable(ServerError):
    """A dependency (blob storage, the database) is down: the caller may retry later."""

    code = "unavailable"
