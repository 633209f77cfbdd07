"""Errors the API returns on purpose: a status, a stable code and a clear message.

Every refusal is `{"error": {"code": ..., "message": ...}}`; a client never sees a
traceback, and input a client sent never produces a 5xx.
"""

from __future__ import annotations

__all__ = [
    "ApiError",
    "BadRequest",
    "Conflict",
    "Forbidden",
    "Gone",
    "NotFound",
    "PayloadTooLarge",
    "StorageUnavailable",
    "Unauthorized",
    "Unprocessable",
    "UnsupportedMediaType",
    "check_declared_length",
]


class ApiError(Exception):
    """An error answered with `status` and a JSON body."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class BadRequest(ApiError):
    status = 400
    code = "bad_request"


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"


class Forbidden(ApiError):
    status = 403
    code = "forbidden"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class Conflict(ApiError):
    status = 409
    code = "conflict"


class Gone(ApiError):
    status = 410
    code = "gone"


class PayloadTooLarge(ApiError):
    status = 413
    code = "payload_too_large"


class Unprocessable(ApiError):
    status = 422
    code = "unprocessable"


class UnsupportedMediaType(ApiError):
    status = 415
    code = "unsupported_media_type"


class StorageUnavailable(ApiError):
    """A dependency (blob storage) is down: the client may retry later."""

    status = 503
    code = "storage_unavailable"


def check_declared_length(content_length: str | None, limit: int, too_large: ApiError) -> None:
    """Refuse a request whose Content-Length is malformed (400) or over `limit` (`too_large`).

    The body is still counted as it streams in: a client may send more than it declared.
    """
    if content_length is None:
        return
    if not content_length.strip().isdigit():
        raise BadRequest("invalid Content-Length header", code="invalid_content_length")
    if int(content_length) > limit:
        raise too_large
