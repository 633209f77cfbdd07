"""Signed device assertions: what makes a proof signed by a device key fresh and
single-use, for enrolment (`crdt.enrolment_message`) and device login
(`crdt.device_login_message`) alike.

Each proof carries the time it was signed (`issued_at`, unix seconds) and a random
nonce. The server accepts it only within `ASSERTION_MAX_SKEW_SECONDS` of its own clock,
and each nonce once: `claim_nonce` records it (in `used_nonces`, kept as long as the
proof could still be accepted, shared by every worker). A captured request is useless
after five minutes, and refused as a replay before that.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.orm import Session

from sync_server.db import insert_unless_taken, utcnow
from sync_server.errors import Invalid
from sync_server.identity.tables import UsedNonce

__all__ = [
    "ASSERTION_MAX_SKEW_SECONDS",
    "MAX_NONCE_LENGTH",
    "MIN_NONCE_LENGTH",
    "check_nonce",
    "claim_nonce",
    "is_fresh",
]

ASSERTION_MAX_SKEW_SECONDS = 300
MIN_NONCE_LENGTH = 16
MAX_NONCE_LENGTH = 64
_NONCE_RE = re.compile(rf"[A-Za-z0-9_\-]{{{MIN_NONCE_LENGTH},{MAX_NONCE_LENGTH}}}")


def check_nonce(nonce: str) -> None:
    """Refuse a nonce that is not 16 to 64 URL-safe characters.

    Raises:
        Invalid: ``invalid_nonce``.
    """
    if not _NONCE_RE.fullmatch(nonce):
        raise Invalid(
            f"nonce must be {MIN_NONCE_LENGTH} to {MAX_NONCE_LENGTH} URL-safe characters",
            code="invalid_nonce",
        )


def is_fresh(issued_at: int) -> bool:
    """Whether a proof signed at `issued_at` is within 5 minutes of the server's clock."""
    return abs(time.time() - issued_at) <= ASSERTION_MAX_SKEW_SECONDS


def claim_nonce(*, session: Session, nonce: str, device_id: str, issued_at: int) -> bool:
    """Record `nonce` as used by `device_id`; False if it was already used.

    Call it only for a proof whose signature verified (so nobody else can fill the
    table). Expired nonces are dropped on the way.
    """
    session.execute(
        delete(UsedNonce)
        .where(UsedNonce.expires_at < utcnow())
        .execution_options(synchronize_session=False)
    )
    if session.get(UsedNonce, nonce) is not None:
        return False
    used = UsedNonce(
        nonce=nonce,
        device_id=device_id,
        # Kept as long as the proof could still be accepted.
        expires_at=datetime.fromtimestamp(issued_at, UTC)
        + timedelta(seconds=ASSERTION_MAX_SKEW_SECONDS + 1),
    )
    return insert_unless_taken(session, used)  # False: a concurrent request claimed it
