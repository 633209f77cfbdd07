"""What syncing with a server reports and takes: plain data, no network code.

Kept apart from the HTTP transport (which needs httpx, in the `[server]` extra) so
these types are importable from the base install.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from crdt import Rejection

__all__ = [
    "Enrollment",
    "ProgressCallback",
    "RetryPolicy",
    "SyncProgress",
    "SyncResult",
    "server_peer_id",
]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to try before giving up: exponential backoff with full jitter.

    Attempt n (from 0) waits a random time in [0, min(cap, base * 2**n)] before trying
    again; a 429/503 ``Retry-After`` is honoured when longer.
    """

    attempts: int = 8
    base_seconds: float = 0.2
    cap_seconds: float = 10.0
    timeout_seconds: float = 60.0  # per request (a long poll adds its wait)

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait before retry number `attempt` (0-based)."""
        return rng.uniform(0, min(self.cap_seconds, self.base_seconds * 2**attempt))


@dataclass(frozen=True, slots=True)
class SyncProgress:
    """Where a sync stands: `phase` is push, pull, upload or download."""

    phase: str
    done: int
    total: int | None  # None while unknown (the pull learns it from the first page)


ProgressCallback = Callable[[SyncProgress], None]


@dataclass(slots=True)
class SyncResult:
    """What one `sync` did."""

    pushed: list[str] = field(default_factory=list)  # documents the server took
    unchanged: int = 0  # pushed documents the server already had
    refused_by_server: list[Rejection] = field(default_factory=list)
    pulled: list[str] = field(default_factory=list)  # documents stored new or changed here
    unverified: int = 0  # of those, stored from the server's claim: verified in the background
    rejected: list[Rejection] = field(default_factory=list)  # pulled, refused here
    blobs_uploaded: list[str] = field(default_factory=list)
    blobs_downloaded: list[str] = field(default_factory=list)
    blob_errors: list[str] = field(default_factory=list)
    cursor: int = 0
    audit_acknowledged: int = 0  # the audit event the server acknowledged (0: none new)
    audit_error: str | None = None  # why the server refused the audit chain, if it did
    requests: int = 0
    retries: int = 0


@dataclass(frozen=True, slots=True)
class Enrollment:
    """A device's enrolment with a server."""

    server_url: str
    device_id: str
    clinic_id: str
    organisation_id: str
    server_public_key: bytes  # pinned at enrolment: the server's token key then
    artifact_public_key: bytes | None = None
    """Pinned: the key that signs the models the server publishes (None: enrolled
    before servers had one; learnt at the next model update, vouched for by
    `server_public_key`)."""
    token_public_key: bytes | None = None
    """The server's token key learnt since enrolment, each rotation vouched for by the
    key before it (`edge_sdk.follow_token_keys`); None: still `server_public_key`."""
    insecure_http: bool = False
    """The app opted in to plain ``http://`` to a host other than this machine."""

    @property
    def current_token_key(self) -> bytes:
        """The server token key pinned now: the one that vouches for new keys (the
        artifact key, the next token key)."""
        return self.token_public_key or self.server_public_key


def server_peer_id(enrollment: Enrollment) -> str:
    """The name under which what the enrolled server holds is tracked: ``server:`` and
    the start of the key pinned at enrolment (a key rotation keeps it)."""
    return "server:" + enrollment.server_public_key.hex()[:32]
