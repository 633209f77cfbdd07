"""The HTTP status each class of the server's error tree (`sync_server.errors`) is
answered with: one table for the app's handler, the idempotency store that keeps an
answer to replay it, and the dashboard's in-place refusals."""

from __future__ import annotations

from sync_server.errors import (
    Conflict,
    Forbidden,
    Gone,
    Invalid,
    NotFound,
    PayloadTooLarge,
    RangeNotSatisfiable,
    ServerError,
    TooManyRequests,
    Unauthorized,
    Unavailable,
    Unprocessable,
    UnsupportedMediaType,
)

__all__ = ["STATUS_CODES", "status_code_of"]

STATUS_CODES: dict[type[ServerError], int] = {
    Invalid: 400,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    Gone: 410,
    PayloadTooLarge: 413,
    UnsupportedMediaType: 415,
    RangeNotSatisfiable: 416,
    Unprocessable: 422,
    TooManyRequests: 429,
    Unavailable: 503,
}
"""The HTTP status of each class of the error tree (a subclass not listed takes its
nearest listed base's)."""


def status_code_of(error: ServerError) -> int:
    """The HTTP status `error` is answered with."""
    for cls in type(error).__mro__:
        if cls in STATUS_CODES:
            return STATUS_CODES[cls]
    return 500  # a bare ServerError: a bug in the server, not the client's fault
