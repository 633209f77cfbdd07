"""Moving one blob between a local blob store and a transport, resumably.

    send_blob(transport, blobs, sha256)          # resumes where the other side's copy
                                                 # stops; sends nothing it already holds
    fetch_blob(transport, blobs, sha256, size)   # verified before anything is stored;
                                                 # a cut download resumes from its byte

Written against the blob operations of a `SyncTransport` (`BlobTransport`), so the same
resumption and verification serve the central server, an edge box and a `MemoryHub`.
`upload_blob` and `download_blob` are the same over a plain request-level HTTP session
(`SyncHttp`), for code that talks to the server's blob routes directly.

Errors raised by the transport (after its own retries) propagate unchanged; calling
again resumes from where the other side stands. Refusals become `BlobError`
(`BlobNotFoundError`, `BlobCorruptError`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from crdt import is_sha256
from edge_sdk._blobs import CHUNK_SIZE, BlobStore
from edge_sdk._errors import BlobCorruptError, BlobError
from edge_sdk._transport import BlobDownload, BlobTransport

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

    from edge_sdk._http_blobs import SyncHttp

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "Progress",
    "download_blob",
    "fetch_blob",
    "send_blob",
    "upload_blob",
]

DEFAULT_CHUNK_SIZE = 8 * 1024 * 1024
"""Bytes per upload chunk unless the caller or the other side says otherwise."""

Progress = Callable[[int, int], None]
"""Called as `progress(bytes_done, total_bytes)` as a transfer advances."""

_MAX_STALLS = 5
"""Consecutive rounds without progress before a transfer gives up."""


# ------------------------------------------------------------------------ upload


def send_blob(
    transport: BlobTransport,
    blobs: BlobStore,
    sha256: str,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: Progress | None = None,
) -> int:
    """Upload a local blob, continuing any earlier, interrupted upload.

    The other side is asked first how much it holds, and only the rest is sent, read
    from the local store one chunk at a time (never the whole blob in memory). A blob
    the other side already holds is not sent at all.

    Args:
        transport: The other side.
        blobs: The local blob store holding the blob.
        sha256: The blob's hex SHA-256.
        chunk_size: Bytes per chunk, adjusted to the other side's limits.
        progress: Called with (bytes the other side holds, blob size) after each chunk.

    Returns:
        The number of bytes sent by this call.

    Raises:
        BlobNotFoundError: The local store has no such blob.
        BlobCorruptError: The local blob fails verification.
        BlobError: The other side refused the upload.
    """
    if chunk_size <= 0:
        raise ValueError("chunk_size must be positive")
    sha256 = _check_sha256(sha256)
    size = blobs.size(sha256)
    sent = 0
    stalls = 0
    while True:
        state = transport.declare_upload(sha256=sha256, size=size)
        if state.complete:
            if progress is not None:
                progress(size, size)
            return sent
        if state.upload_id is None:
            raise BlobError(f"the upload of blob {sha256} was answered without an upload id")
        if progress is not None:
            progress(state.offset, size)
        step = max(state.min_chunk_size, min(chunk_size, state.max_chunk_size))
        moved, complete = _send_chunks(
            transport, blobs, sha256, size, state.upload_id, state.offset, step, progress
        )
        sent += moved
        if complete:
            return sent
        # The other side's offset is not ours, or the upload is gone: ask again.
        stalls = 0 if moved else stalls + 1
        if stalls >= _MAX_STALLS:
            raise BlobError(
                f"upload of blob {sha256} makes no progress: the other side keeps "
                "moving its offset or discarding the upload"
            )


def _send_chunks(
    transport: BlobTransport,
    blobs: BlobStore,
    sha256: str,
    size: int,
    upload_id: str,
    offset: int,
    step: int,
    progress: Progress | None,
) -> tuple[int, bool]:
    """Send the blob from `offset` on; returns (bytes sent, whether it completed).

    Stops early (not complete) when the other side's offset differs from ours or the
    upload is gone, so the caller can ask where it stands.
    """
    sent = 0
    with contextlib.closing(_ChunkReader(blobs.open(sha256))) as reader:
        reader.skip(offset)
        while True:
            data = reader.read(step)
            if offset + len(data) > size:
                raise BlobCorruptError(f"local blob {sha256} is longer than its size {size}")
            if len(data) < step and offset + len(data) < size:
                raise BlobCorruptError(f"local blob {sha256} is shorter than its size {size}")
            state = transport.send_chunk(upload_id=upload_id, offset=offset, data=data)
            if state is None:  # gone, or the other side stands elsewhere
                return sent, False
            sent += len(data)
            if progress is not None:
                progress(state.offset, size)
            if state.complete:
                return sent, True
            if state.offset != offset + len(data):
                return sent, False
            offset = state.offset


class _ChunkReader:
    """Reads exact-size pieces from an iterator of byte chunks."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = b""

    def skip(self, count: int) -> None:
        """Discard the next `count` bytes (without keeping them)."""
        while count:
            if not self._pending:
                self._pending = next(self._chunks, b"")
                if not self._pending:
                    return
            taken = min(count, len(self._pending))
            self._pending = self._pending[taken:]
            count -= taken

    def read(self, count: int) -> bytes:
        """The next `count` bytes, or fewer at the end."""
        parts: list[bytes] = []
        wanted = count
        while wanted:
            if not self._pending:
                self._pending = next(self._chunks, b"")
                if not self._pending:
                    break
            piece = self._pending[:wanted]
            self._pending = self._pending[len(piece) :]
            parts.append(piece)
            wanted -= len(piece)
        return b"".join(parts)

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()


# ------------------------------------------------------------------------ download


def fetch_blob(
    transport: BlobTransport,
    blobs: BlobStore,
    sha256: str,
    size: int,
    *,
    progress: Progress | None = None,
) -> None:
    """Fetch a blob into the local store.

    The bytes stream straight into `blobs.put_stream` (encrypted as they arrive;
    nothing is written in plaintext) and are hashed on the way: unless the SHA-256
    and size match, the store keeps nothing. A transfer cut mid-body is resumed from
    the last byte received. A blob already in the store is not fetched.

    Args:
        transport: The other side.
        blobs: The local blob store to put the blob in.
        sha256: The blob's hex SHA-256.
        size: The blob's size in bytes (from the record that refers to it).
        progress: Called with (bytes received, size) as bytes arrive.

    Raises:
        BlobNotFoundError: The other side does not hold the blob (for this clinic).
        BlobCorruptError: The bytes received do not match `sha256` and `size`.
        BlobError: The other side refused the download, or it kept breaking off.
    """
    sha256 = _check_sha256(sha256)
    if size < 0:
        raise ValueError("size must not be negative")
    if blobs.exists(sha256):
        if progress is not None:
            progress(size, size)
        return
    raw = _DownloadStream(transport, sha256, size, progress)
    with io.BufferedReader(raw, buffer_size=CHUNK_SIZE) as stream:
        blobs.put_stream(stream)


class _DownloadStream(io.RawIOBase):
    """The blob's bytes from the other side, resumed from the next byte after a cut,
    verified against the expected hash and size before end of stream is reported."""

    def __init__(
        self, transport: BlobTransport, sha256: str, size: int, progress: Progress | None
    ) -> None:
        super().__init__()
        self._transport = transport
        self._sha256 = sha256
        self._size = size
        self._progress = progress
        self._hasher = hashlib.sha256()
        self._received = 0
        self._download: BlobDownload | None = None
        self._skip = 0
        self._pending = memoryview(b"")
        self._stalls = 0
        self._verified = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        target = memoryview(buffer).cast("B")
        while not self._pending:
            piece = self._next_piece()
            if piece is None:
                return 0
            self._pending = memoryview(piece)
        count = min(len(target), len(self._pending))
        target[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count

    def close(self) -> None:
        self._drop()
        super().close()

    def _next_piece(self) -> bytes | None:
        """The next bytes of the blob, or None at its verified end."""
        while True:
            if self._received == self._size and self._download is None:
                self._verify()
                return None
            if self._download is None:
                self._open()
            assert self._download is not None
            try:
                piece = next(self._download.chunks, None)
            except ConnectionError as exc:
                self._drop()
                self._stall(exc)
                continue
            if piece is None:  # the body ended
                self._drop()
                if self._received < self._size:
                    self._stall(None)
                continue
            if self._skip:  # the other side ignored our start: drop what we have
                dropped = min(self._skip, len(piece))
                self._skip -= dropped
                piece = piece[dropped:]
            if not piece:
                continue
            if self._received + len(piece) > self._size:
                raise BlobCorruptError(
                    f"the server sent more than the {self._size} bytes of blob {self._sha256}"
                )
            self._received += len(piece)
            self._hasher.update(piece)
            self._stalls = 0
            if self._progress is not None:
                self._progress(self._received, self._size)
            return piece

    def _verify(self) -> None:
        if self._verified:
            return
        if self._hasher.hexdigest() != self._sha256:
            raise BlobCorruptError(
                f"the bytes received for blob {self._sha256} have SHA-256 "
                f"{self._hasher.hexdigest()}; nothing was stored"
            )
        self._verified = True

    def _stall(self, cause: BaseException | None) -> None:
        self._stalls += 1
        if self._stalls >= _MAX_STALLS:
            raise BlobError(
                f"download of blob {self._sha256} keeps breaking off at byte "
                f"{self._received} of {self._size}"
            ) from cause

    def _open(self) -> None:
        download = self._transport.download(sha256=self._sha256, start=self._received)
        try:
            if download.size is not None and download.size != self._size:
                raise BlobCorruptError(
                    f"the server's blob {self._sha256} has {download.size} bytes, not {self._size}"
                )
            if download.start == 0:
                self._skip = self._received
            elif download.start != self._received:
                raise BlobError(f"the server answered a different range of {self._sha256}")
        except BaseException:
            download.close()
            raise
        self._download = download

    def _drop(self) -> None:
        download, self._download = self._download, None
        if download is not None:
            download.close()


# ------------------------------------------------------------------------ over HTTP


def upload_blob(
    http: SyncHttp,
    blobs: BlobStore,
    sha256: str,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: Progress | None = None,
) -> int:
    """`send_blob` over the server's blob routes through a request-level session."""
    from edge_sdk._http_blobs import HttpBlobs

    return send_blob(HttpBlobs(http), blobs, sha256, chunk_size=chunk_size, progress=progress)


def download_blob(
    http: SyncHttp,
    blobs: BlobStore,
    sha256: str,
    size: int,
    *,
    progress: Progress | None = None,
) -> None:
    """`fetch_blob` over the server's blob routes through a request-level session."""
    from edge_sdk._http_blobs import HttpBlobs

    fetch_blob(HttpBlobs(http), blobs, sha256, size, progress=progress)


def _check_sha256(sha256: str) -> str:
    normalized = sha256.lower()
    if not is_sha256(normalized):
        raise ValueError(f"not a hex SHA-256: {sha256!r}")
    return normalized
