"""`SyncTransport`: how a replica reaches the replica it syncs with. No network code.

The sync algorithm (`sync_replica`) is written against this protocol only. Backends:
`HttpTransport` (the central server's HTTP API, or an edge box speaking it) and
`MemoryTransport` (a `MemoryHub` in the same process: tests, examples, demos). A
transport moves bytes and answers; it does not decide what to send.

Failures: a transport raises the SDK's own errors, never its library's: refusals as
`SyncError` (or `BlobError` for blobs), a feed behind the cursor as `CursorAheadError`,
no answer as `ServerUnreachableError`, a revoked device as `DeviceRevokedError`. A
blob download whose connection breaks mid-body raises `ConnectionError` from its
chunks; the caller resumes from the next byte.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from crdt import Checkpoint, Rejection

__all__ = [
    "AuditReceipt",
    "BlobDownload",
    "BlobTransport",
    "ChainedEvent",
    "PushAnswer",
    "ReportsMissingBlobs",
    "SyncTransport",
    "UploadState",
]


@dataclass(frozen=True, slots=True)
class ChainedEvent:
    """One event of a device's audit chain: its number, canonical bytes and hash."""

    seq: int
    canonical: bytes
    hash: bytes


@dataclass(frozen=True, slots=True)
class AuditReceipt:
    """The other side's answer to an audit push: it holds the device's chain up to
    `head_seq`, its log's leaf `leaf_index` (bytes `leaf`) names that head, and the
    signed `checkpoint` covers that leaf (`inclusion`: the RFC 9162 audit path).

    Attributes:
        public_key: The key the checkpoint claims to be signed with (checked against
            the pinned key when there is one).
    """

    head_seq: int
    head_hash: bytes
    checkpoint: Checkpoint
    leaf_index: int
    leaf: bytes
    inclusion: list[bytes]
    public_key: bytes


@dataclass(frozen=True, slots=True)
class PushAnswer:
    """The other side's answer to a push, document by document."""

    accepted: list[str]  # stored new or changed
    unchanged: list[str]  # it already held all of it
    rejected: list[Rejection]  # not stored at all, and why


@dataclass(frozen=True, slots=True)
class UploadState:
    """Where a blob upload stands on the other side, and how to send the rest.

    Attributes:
        upload_id: The upload to send chunks to; None once complete.
        offset: Bytes the other side holds; the next chunk starts here.
        complete: True when the other side holds the whole, verified blob.
        chunk_size: Suggested bytes per chunk.
        min_chunk_size: Smallest chunk accepted for any chunk but the last.
        max_chunk_size: Largest chunk accepted.
    """

    upload_id: str | None
    offset: int
    complete: bool
    chunk_size: int
    min_chunk_size: int
    max_chunk_size: int


@dataclass(frozen=True, slots=True)
class BlobDownload:
    """A blob's bytes as they arrive, from `start` to its end.

    Attributes:
        start: Offset of the first byte in `chunks` (0 if the other side ignored the
            requested start and sends the whole blob).
        size: The blob's full size on the other side, when it says.
        chunks: The bytes in pieces; raises `ConnectionError` if the transfer breaks.
        close: Releases the connection; call it when done, whatever happened.
    """

    start: int
    size: int | None
    chunks: Iterator[bytes]
    close: Callable[[], None]


class BlobTransport(Protocol):
    """The blob half of a transport: uploads that resume, downloads from an offset."""

    def declare_upload(self, *, sha256: str, size: int) -> UploadState:
        """Start or resume the upload of a blob, or learn it is already held."""
        ...

    def send_chunk(self, *, upload_id: str, offset: int, data: bytes) -> UploadState | None:
        """Send the bytes at `offset` of an upload; None when the upload is gone or the
        other side stands at another offset (declare again to learn where)."""
        ...

    def download(self, *, sha256: str, start: int) -> BlobDownload:
        """The blob's bytes from `start` on.

        Raises:
            BlobMissingError: The other side recorded the blob but lost it.
            BlobNotFoundError: The other side has no such blob (for this clinic).
        """
        ...


@runtime_checkable
class ReportsMissingBlobs(Protocol):
    """A transport that can say which of the clinic's blobs the other side lost (its
    storage no longer holds them): the sync uploads again the ones the device holds.
    Optional: a transport without it is never asked."""

    def missing_blobs(self) -> list[str]:
        """SHA-256 of the clinic's blobs the other side recorded but lost."""
        ...


class SyncTransport(BlobTransport, Protocol):
    """How a replica reaches the replica it syncs with (the central server, an edge
    box, an in-memory hub): documents up and down, and blobs, resumably."""

    @property
    def peer_id(self) -> str:
        """A stable name of the other side: what it holds, and the cursor in its
        change feed, are kept under this name."""
        ...

    @property
    def requests(self) -> int:
        """Exchanges made so far (retries included)."""
        ...

    @property
    def retries(self) -> int:
        """Exchanges repeated so far after a failure."""
        ...

    def push(self, message: bytes) -> PushAnswer:
        """Send one `crdt` wire message of DOC entries; the answer per document."""
        ...

    def push_audit(self, events: Sequence[ChainedEvent]) -> AuditReceipt:
        """Append these events (the next ones of the device's audit chain; ones the
        other side already holds are accepted again unchanged) to its copy.

        Raises:
            AuditPushError: They do not continue the chain the other side holds.
        """
        ...

    def directory(self) -> dict[str, bytes]:
        """The devices that may author the replica's clinic's records: device id to
        Ed25519 public key (enrolled and not revoked). The replica checks every
        change it receives against it."""
        ...

    def pull(self, *, cursor: int, limit: int, wait: float) -> bytes:
        """One wire message of the documents changed after `cursor` (at most `limit`).

        Its control fields: `cursor` (ask from there next), `more` (another page is
        ready) and `feed` (the newest sequence). With `wait` > 0 and nothing new, the
        answer waits up to that many seconds for a change.

        A transport whose `record_hints` attribute is true also takes ``records=True``
        (see `crdt.RecordHint`); others are never asked to.

        Raises:
            CursorAheadError: The other side's feed is behind `cursor`.
        """
        ...
