"""Moving blobs between a device's blob store and the sync server, resumably.

    upload_blob(http, blobs, sha256)          # send a local blob; resumes where the
                                              # server's copy stops
    download_blob(http, blobs, sha256, size)  # fetch a blob into the local store,
                                              # verified before anything is stored

The HTTP layer is a parameter (`SyncHttp`): the sync client supplies one with the
device's access token and retries, tests supply a plain one. Nothing here imports an
HTTP library at module level, so the base install can import it.

Upload protocol (the server's `/v1/blobs` routes): `POST /v1/blobs/uploads` with the
blob's SHA-256 and size answers where the server stands (a new upload, an upload to
resume at its offset, or `complete` when the clinic already holds the blob); each
chunk is a `PATCH /v1/blobs/uploads/{id}` at `Upload-Offset`, with an
`Upload-Checksum`. Download: `GET /v1/blobs/{sha256}`, with `Range: bytes=N-` to carry
on after a cut connection.

Transport errors raised by `http` (after its own retries) propagate unchanged; calling
the function again resumes from where the server stands. Refusals become `BlobError`
(`BlobNotFoundError`, `BlobCorruptError`).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from crdt import is_sha256
from edge_sdk._blobs import CHUNK_SIZE, BlobStore
from edge_sdk._errors import BlobCorruptError, BlobError, BlobNotFoundError

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "Progress",
    "SyncHttp",
    "SyncResponse",
    "download_blob",
    "upload_blob",
]

DEFAULT_CHUNK_SIZE = 8 * 1024 * 1024
"""Bytes per upload chunk unless the caller or the server says otherwise."""

Progress = Callable[[int, int], None]
"""Called as `progress(bytes_done, total_bytes)` as a transfer advances."""

_MAX_STALLS = 5
"""Consecutive rounds without progress before a transfer gives up."""
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


class SyncResponse(Protocol):
    """What `SyncHttp.request` returns (an `httpx.Response` fits)."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    def json(self) -> Any:
        """The body parsed as JSON (only for responses requested without `stream`)."""
        ...

    def read(self) -> bytes:
        """The whole body (reads the rest of a `stream` response)."""
        ...

    def iter_bytes(self) -> Iterator[bytes]:
        """The body, in pieces as they arrive (for responses requested with `stream`)."""
        ...

    def close(self) -> None:
        """Release the connection (required after a `stream` request)."""
        ...


class SyncHttp(Protocol):
    """An authenticated HTTP session with the sync server.

    Implementations add the base URL and the bearer token, and retry connection
    errors and 5xx answers with backoff. 4xx answers are returned, not raised.
    """

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        stream: bool = False,
    ) -> SyncResponse:
        """Send one request to `path` (e.g. ``/v1/blobs/uploads``).

        With `stream=True` the body is not read: iterate `iter_bytes()`, then `close()`.
        """
        ...


# ------------------------------------------------------------------------ upload


@dataclass(frozen=True)
class _UploadState:
    upload_id: str | None
    offset: int
    complete: bool
    chunk_size: int
    min_chunk_size: int
    max_chunk_size: int


def upload_blob(
    http: SyncHttp,
    blobs: BlobStore,
    sha256: str,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: Progress | None = None,
) -> int:
    """Upload a local blob to the server, continuing any earlier, interrupted upload.

    The server is asked first how much it holds, and only the rest is sent, read
    from the local store one chunk at a time (never the whole blob in memory). A blob
    the clinic already holds is not sent at all.

    Args:
        http: The session with the server.
        blobs: The local blob store holding the blob.
        sha256: The blob's hex SHA-256.
        chunk_size: Bytes per request, adjusted to the server's limits.
        progress: Called with (bytes the server holds, blob size) after each chunk.

    Returns:
        The number of bytes sent by this call.

    Raises:
        BlobNotFoundError: The local store has no such blob.
        BlobCorruptError: The local blob fails verification.
        BlobError: The server refused the upload.
    """
    if chunk_size <= 0:
        raise ValueError("chunk_size must be positive")
    sha256 = _check_sha256(sha256)
    size = blobs.size(sha256)
    sent = 0
    stalls = 0
    while True:
        state = _declare(http, sha256, size)
        if state.complete:
            if progress is not None:
                progress(size, size)
            return sent
        assert state.upload_id is not None
        if progress is not None:
            progress(state.offset, size)
        step = max(state.min_chunk_size, min(chunk_size, state.max_chunk_size))
        moved, complete = _send_chunks(
            http, blobs, sha256, size, state.upload_id, state.offset, step, progress
        )
        sent += moved
        if complete:
            return sent
        # The server's offset is not ours, or the upload is gone: ask again.
        stalls = 0 if moved else stalls + 1
        if stalls >= _MAX_STALLS:
            raise BlobError(
                f"upload of blob {sha256} makes no progress: the server keeps "
                "moving its offset or discarding the upload"
            )


def _declare(http: SyncHttp, sha256: str, size: int) -> _UploadState:
    response = http.request("POST", "/v1/blobs/uploads", json={"sha256": sha256, "size": size})
    try:
        if response.status_code not in (200, 201):
            raise BlobError(f"the server refused to take blob {sha256}: {_describe(response)}")
        body = response.json()
    finally:
        response.close()
    try:
        return _UploadState(
            upload_id=body["upload_id"],
            offset=int(body["offset"]),
            complete=bool(body["complete"]),
            chunk_size=int(body["chunk_size"]),
            min_chunk_size=int(body["min_chunk_size"]),
            max_chunk_size=int(body["max_chunk_size"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise BlobError(f"unexpected answer to the upload of blob {sha256}: {body!r}") from exc


def _send_chunks(
    http: SyncHttp,
    blobs: BlobStore,
    sha256: str,
    size: int,
    upload_id: str,
    offset: int,
    step: int,
    progress: Progress | None,
) -> tuple[int, bool]:
    """Send the blob from `offset` on; returns (bytes sent, whether it completed).

    Stops early (not complete) when the server's offset differs from ours or the
    upload is gone, so the caller can ask the server where it stands.
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
            digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
            response = http.request(
                "PATCH",
                f"/v1/blobs/uploads/{upload_id}",
                content=data,
                headers={
                    "Content-Type": "application/octet-stream",
                    "Upload-Offset": str(offset),
                    "Upload-Checksum": f"sha256 {digest}",
                },
            )
            try:
                status = response.status_code
                body = response.json() if status == 200 else None
                refusal = "" if status == 200 else _describe(response)
            finally:
                response.close()
            if status in (404, 409, 410):  # gone, or the server stands elsewhere
                return sent, False
            if status != 200 or not isinstance(body, dict):
                raise BlobError(f"the server refused a chunk of blob {sha256}: {refusal}")
            sent += len(data)
            server_offset = int(body["offset"])
            if progress is not None:
                progress(server_offset, size)
            if body.get("complete"):
                return sent, True
            if server_offset != offset + len(data):
                return sent, False
            offset = server_offset


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


def download_blob(
    http: SyncHttp,
    blobs: BlobStore,
    sha256: str,
    size: int,
    *,
    progress: Progress | None = None,
) -> None:
    """Fetch a blob from the server into the local store.

    The bytes stream straight into `blobs.put_stream` (encrypted as they arrive;
    nothing is written in plaintext) and are hashed on the way: unless the SHA-256
    and size match, the store keeps nothing. A connection cut mid-body is resumed
    with a `Range` request from the last byte received. A blob already in the store
    is not fetched.

    Args:
        http: The session with the server.
        blobs: The local blob store to put the blob in.
        sha256: The blob's hex SHA-256.
        size: The blob's size in bytes (from the record that refers to it).
        progress: Called with (bytes received, size) as bytes arrive.

    Raises:
        BlobNotFoundError: The server does not hold the blob (for this clinic).
        BlobCorruptError: The bytes received do not match `sha256` and `size`.
        BlobError: The server refused the download, or it kept failing.
    """
    sha256 = _check_sha256(sha256)
    if size < 0:
        raise ValueError("size must not be negative")
    if blobs.exists(sha256):
        if progress is not None:
            progress(size, size)
        return
    raw = _DownloadStream(http, sha256, size, progress)
    with io.BufferedReader(raw, buffer_size=CHUNK_SIZE) as stream:
        blobs.put_stream(stream)


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean the connection broke while a body was streaming."""
    try:
        import httpx
    except ImportError:  # pragma: no cover - the sync extra installs httpx
        return (OSError,)
    return (OSError, httpx.TransportError)


class _DownloadStream(io.RawIOBase):
    """The blob's bytes from the server, resumed with Range requests after a cut,
    verified against the expected hash and size before end of stream is reported."""

    def __init__(self, http: SyncHttp, sha256: str, size: int, progress: Progress | None) -> None:
        super().__init__()
        self._http = http
        self._sha256 = sha256
        self._size = size
        self._progress = progress
        self._hasher = hashlib.sha256()
        self._received = 0
        self._response: SyncResponse | None = None
        self._pieces: Iterator[bytes] | None = None
        self._skip = 0
        self._pending = memoryview(b"")
        self._stalls = 0
        self._verified = False
        self._errors = _transport_errors()

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
            if self._received == self._size and self._pieces is None:
                self._verify()
                return None
            if self._pieces is None:
                self._open()
            assert self._pieces is not None
            try:
                piece = next(self._pieces, None)
            except self._errors as exc:
                self._drop()
                self._stall(exc)
                continue
            if piece is None:  # the body ended
                self._drop()
                if self._received < self._size:
                    self._stall(None)
                continue
            if self._skip:  # the server ignored our Range: drop what we already have
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
        headers = {"Range": f"bytes={self._received}-"} if self._received else None
        response = self._http.request(
            "GET", f"/v1/blobs/{self._sha256}", headers=headers, stream=True
        )
        try:
            self._check_response(response)
        except BaseException:
            response.close()
            raise
        self._response = response
        self._pieces = iter(response.iter_bytes())

    def _check_response(self, response: SyncResponse) -> None:
        status = response.status_code
        if status == 404:
            raise BlobNotFoundError(f"the server has no blob {self._sha256}")
        if status == 416:
            raise BlobCorruptError(
                f"the server's blob {self._sha256} is shorter than its size {self._size}"
            )
        if status == 206:
            match = _CONTENT_RANGE.fullmatch(response.headers.get("content-range", ""))
            if match is None or int(match[1]) != self._received:
                raise BlobError(f"the server answered a different range of {self._sha256}")
            total = int(match[3])
        elif status == 200:
            self._skip = self._received
            total = int(response.headers.get("content-length", self._size))
        else:
            response.read()
            raise BlobError(
                f"the server refused to send blob {self._sha256}: {_describe(response)}"
            )
        if total != self._size:
            raise BlobCorruptError(
                f"the server's blob {self._sha256} has {total} bytes, not {self._size}"
            )

    def _drop(self) -> None:
        response, self._response, self._pieces = self._response, None, None
        if response is not None:
            response.close()


# ------------------------------------------------------------------------ helpers


def _describe(response: SyncResponse) -> str:
    """`status code: message` from a server error response."""
    try:
        error = response.json().get("error", {})
        return f"{response.status_code} {error.get('code')}: {error.get('message')}"
    except Exception:  # not JSON, or a stream: the status says enough
        return f"HTTP {response.status_code}"


def _check_sha256(sha256: str) -> str:
    normalized = sha256.lower()
    if not is_sha256(normalized):
        raise ValueError(f"not a hex SHA-256: {sha256!r}")
    return normalized
