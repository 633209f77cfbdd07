"""Signed gateway webhooks, Stripe-style: the ``Coherency-Signature`` header is
``t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" under the webhook secret>``.
A delivery is accepted only with a valid signature made within `TOLERANCE` of now (a
replayed old delivery is refused); applying an event is once per event id
(`sync_server.payments.charging.apply_event`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from sync_server.errors import Invalid, Unauthorized

__all__ = ["SIGNATURE_HEADER", "TOLERANCE", "WebhookEventIn", "signature_header", "verified_event"]

SIGNATURE_HEADER = "coherency-signature"
TOLERANCE = 300
"""Seconds a signed delivery stays acceptable."""


def _digest(secret: str, body: bytes, stamp: int) -> str:
    message = str(stamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_header(secret: str, body: bytes, stamp: int) -> str:
    """The signature header of `body` delivered at `stamp` (unix seconds)."""
    return f"t={stamp},v1={_digest(secret, body, stamp)}"


@dataclass(frozen=True, slots=True)
class WebhookEventIn:
    """A verified webhook event."""

    id: str
    type: str
    data: dict[str, Any]


def verified_event(
    *, secret: str, body: bytes, header: str | None, now: int, tolerance: int = TOLERANCE
) -> WebhookEventIn:
    """The event in `body` if `header` signs it with `secret` within `tolerance`.

    Raises:
        Invalid: ``bad_signature_header`` or ``bad_event``: malformed (400).
        Unauthorized: ``bad_signature``: not signed with the secret, or too old (401).
    """
    if not header:
        raise Invalid("the webhook has no signature header", code="bad_signature_header")
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        parts.setdefault(name, []).append(value)
    try:
        stamp = int(parts["t"][0])
    except (KeyError, ValueError, IndexError):
        raise Invalid(
            "the signature header has no timestamp", code="bad_signature_header"
        ) from None
    signatures = parts.get("v1") or []
    if not signatures:
        raise Invalid("the signature header has no v1 signature", code="bad_signature_header")
    if abs(now - stamp) > tolerance:
        raise Unauthorized("the webhook's timestamp is outside the tolerance", code="bad_signature")
    expected = _digest(secret, body, stamp)
    if not any(hmac.compare_digest(expected, s) for s in signatures):
        raise Unauthorized("the webhook's signature does not match", code="bad_signature")
    try:
        payload = json.loads(body)
        event = WebhookEventIn(str(payload["id"]), str(payload["type"]), dict(payload["data"]))
    except (ValueError, KeyError, TypeError):
        raise Invalid("the webhook body is not an event", code="bad_event") from None
    if not event.id or len(event.id) > 100:
        raise Invalid("the webhook event id is not valid", code="bad_event")
    return event
