"""Protocol pieces the devices and the server both speak, defined once.

Pure values and functions (no I/O): the sync media type, the bytes a device signs to
enrol and to log in with its key (each fresh and single-use: a time and a nonce), the
shape of content addresses and ids, and the sortable form of timestamps that both
sides compare as text.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

__all__ = [
    "SHA256_PATTERN",
    "SYNC_MEDIA_TYPE",
    "device_login_message",
    "enrolment_message",
    "is_sha256",
    "is_uuid",
    "sortable_time",
]

SYNC_MEDIA_TYPE = "application/vnd.coherency.sync"
"""The content type of a sync wire message (`crdt.encode_message`) over HTTP."""

SHA256_PATTERN = r"^[0-9a-f]{64}$"
"""A content address: a SHA-256 as 64 lowercase hex digits (a regex, for schemas)."""

_SHA256 = re.compile(SHA256_PATTERN)


def is_sha256(value: object) -> bool:
    """True if `value` is a SHA-256 written as 64 lowercase hex digits."""
    return isinstance(value, str) and _SHA256.fullmatch(value) is not None


def is_uuid(value: object) -> bool:
    """True if `value` is a UUID in canonical form (lowercase, hyphenated)."""
    if not isinstance(value, str):
        return False
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


def enrolment_message(token: str, device_id: str, issued_at: int, nonce: str) -> bytes:
    """The bytes a device signs to prove it holds its key when it enrols with `token`.

    `issued_at` (unix seconds) and `nonce` (16 to 64 URL-safe characters, new for every
    attempt) make each proof fresh and single-use: the server refuses a proof signed
    more than 5 minutes from its clock or a nonce it has seen, so a captured enrolment
    request cannot be replayed.
    """
    return f"coherency-enrol\n{token}\n{device_id}\n{issued_at}\n{nonce}".encode()


def device_login_message(device_id: str, issued_at: int, nonce: str) -> bytes:
    """The bytes a device signs to log in with its key (no refresh token needed)."""
    return f"coherency-device-login\n{device_id}\n{issued_at}\n{nonce}".encode()


def sortable_time(value: str | datetime) -> str:
    """A timestamp as fixed-width UTC text, so text order is time order (naive means UTC).

    Records keep the offset they were written with ("...+02:00", "...Z"); columns that
    are compared or sorted as text hold this form instead.
    """
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
