"""What a blob backend is: the `BlobBackend` protocol, its errors and its limits.

Blobs are content-addressed and kept per clinic: the key is ``{clinic_id}/{sha256}``,
so one clinic's holdings say nothing about another's, and the services scope every
lookup by the caller's clinic. The database (`Blob` rows) is the source of truth for
which clinic holds what; a backend only stores bytes.

An upload goes through a backend in four steps, driven by the upload service
(`sync_server.blobs.uploads`) with the upload's database row locked:

    handle = backend.start(upload_id)                       # once
    etag = backend.write_part(upload_id, handle, n, offset, data)   # per chunk
    backend.complete(upload_id, handle, etags, clinic, sha256, size)
    backend.abort(upload_id, handle)                        # on give-up

`complete` verifies the SHA-256 and size of the assembled bytes before anything is
visible at the final key; on a mismatch it raises `IntegrityError` and leaves nothing
behind. Storage failures (disk, network) raise `BlobBackendError`; each backend
translates its own driver's errors (OSError, botocore's) at its boundary.

    BlobBackendError          the storage cannot be used (disk, network, permissions)
    ├── UploadLostError       the upload's partial data is gone; start the upload again
    └── BlobMissingError      no blob at that key
    IntegrityError            the assembled bytes do not match the declared hash or size
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Protocol, runtime_checkable

from crdt import is_sha256

__all__ = [
    "READ_CHUNK",
    "BlobBackend",
    "BlobBackendError",
    "BlobMissingError",
    "IntegrityError",
    "UploadLostError",
    "hex_sha256",
    "safe_name",
]

READ_CHUNK = 1024 * 1024
"""Bytes per item yielded by `open` (and per read when hashing)."""

_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class BlobBackendError(Exception):
    """The blob storage cannot be used: a disk, network or permission failure."""


class UploadLostError(BlobBackendError):
    """The backend no longer holds the upload's partial data; the upload must restart."""


class BlobMissingError(BlobBackendError):
    """No blob is stored at that key."""


class IntegrityError(Exception):
    """The assembled upload does not have the declared SHA-256 or size.

    Nothing is left at the final key (nor in staging) when this is raised.
    """


@runtime_checkable
class BlobBackend(Protocol):
    """Where blob bytes live. Every method is blocking; call it from a worker thread.

    Attributes:
        min_part_size: The smallest chunk the backend accepts for any part but the
            last (0 when any size will do).
        max_parts: The most parts one upload may have (None for no limit).
    """

    min_part_size: int
    max_parts: int | None

    def start(self, upload_id: str) -> str | None:
        """Begin an upload; returns a handle to keep with it (None if not needed)."""
        ...

    def write_part(
        self, upload_id: str, handle: str | None, part_number: int, offset: int, data: bytes
    ) -> str | None:
        """Store part `part_number` (from 1) holding bytes `offset..offset+len(data)`.

        Writing the same part again replaces it, so a retried chunk is harmless.
        Returns the part's etag where the backend has one (S3), else None.

        Raises:
            UploadLostError: The upload's earlier parts are gone.
        """
        ...

    def complete(
        self,
        upload_id: str,
        handle: str | None,
        parts: Sequence[str | None],
        clinic_id: str,
        sha256: str,
        size: int,
    ) -> None:
        """Assemble the parts (etags in part order) into the blob at its final key.

        Raises:
            IntegrityError: The bytes' SHA-256 or size differ from `sha256`/`size`;
                the upload's data is discarded and nothing is at the final key.
            UploadLostError: The upload's parts are gone.
        """
        ...

    def abort(self, upload_id: str, handle: str | None) -> None:
        """Discard an upload's partial data (a no-op if there is none)."""
        ...

    def exists(self, clinic_id: str, sha256: str) -> bool:
        """Whether the clinic's blob is stored."""
        ...

    def size(self, clinic_id: str, sha256: str) -> int:
        """The stored blob's size in bytes.

        Raises:
            BlobMissingError: No such blob.
        """
        ...

    def open(
        self, clinic_id: str, sha256: str, start: int = 0, end: int | None = None
    ) -> Iterator[bytes]:
        """Yield bytes `start` (inclusive) to `end` (exclusive; None for the end of the
        blob) in chunks of up to 1 MiB. Nothing is read until the first item is taken.

        Raises:
            BlobMissingError: No such blob (on the first item).
        """
        ...

    def check(self) -> None:
        """Raise `BlobBackendError` if the storage is unusable (for readiness probes)."""
        ...


def safe_name(name: str, what: str) -> str:
    """`name` if it is safe as one storage path segment or key part.

    Raises:
        ValueError: It is not (empty, a dot file, a separator, too long).
    """
    if not _SAFE_NAME.fullmatch(name):
        raise ValueError(f"{what} {name!r} is not a safe storage name")
    return name


def hex_sha256(sha256: str) -> str:
    """`sha256` if it is 64 lowercase hex digits.

    Raises:
        ValueError: It is not.
    """
    if not is_sha256(sha256):
        raise ValueError(f"not a lowercase hex SHA-256: {sha256!r}")
    return sha256
