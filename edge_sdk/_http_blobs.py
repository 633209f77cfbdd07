"""The sync server's blob routes as a transport's blob operations (`BlobTransport`).

- declare: ``POST /v1/blobs/uploads`` with the blob's SHA-256 and size answers where
  the server stands (a new upload, one to resume at its offset, or `complete` when the
  clinic already holds the blob);
- a chunk: ``PATCH /v1/blobs/uploads/{id}`` at ``Upload-Offset`` with an
  ``Upload-Checksum``; 404/409/410 mean "gone, or the server stands elsewhere";
- download: ``GET /v1/blobs/{sha256}``, with ``Range: bytes=N-`` to carry on after a
  cut connection; 410 ``blob_missing`` when the server's storage lost the blob;
- missing: ``GET /v1/blobs/missing``, the clinic's blobs the server lost, a page at a
  time (none from a server or edge box without the route).

`HttpBlobs` works over any request-level session (`SyncHttp`): `HttpTransport` hands it
itself; tests of the server's routes hand it a plain one.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

import httpx

from edge_sdk._errors import BlobCorruptError, BlobError, BlobMissingError, BlobNotFoundError
from edge_sdk._http_errors import error_text
from edge_sdk._transport import BlobDownload, UploadState

__all__ = ["HttpBlobs", "SyncHttp", "SyncResponse"]

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")
_MISSING_PAGE = 1000


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

    Implementations add the base URL and the bearer token, and may retry connection
    errors and 5xx answers. 4xx answers are returned, not raised.
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


class HttpBlobs:
    """Blob operations over the server's ``/v1/blobs`` routes."""

    def __init__(self, http: SyncHttp) -> None:
        self._http = http

    def declare_upload(self, *, sha256: str, size: int) -> UploadState:
        """``POST /v1/blobs/uploads``: start or resume an upload, or learn it is held."""
        response = self._http.request(
            "POST", "/v1/blobs/uploads", json={"sha256": sha256, "size": size}
        )
        try:
            if response.status_code not in (200, 201):
                raise BlobError(f"the server refused to take blob {sha256}: {error_text(response)}")
            return _upload_state(response, f"the upload of blob {sha256}")
        finally:
            response.close()

    def send_chunk(self, *, upload_id: str, offset: int, data: bytes) -> UploadState | None:
        """``PATCH /v1/blobs/uploads/{id}`` at `offset`, with the chunk's checksum."""
        digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
        response = self._http.request(
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
            if status in (404, 409, 410):  # gone, or the server stands elsewhere
                return None
            if status != 200:
                raise BlobError(
                    f"the server refused a chunk of upload {upload_id}: {error_text(response)}"
                )
            return _upload_state(response, f"a chunk of upload {upload_id}")
        finally:
            response.close()

    def missing_blobs(self) -> list[str]:
        """``GET /v1/blobs/missing``, every page: the clinic's blobs the server lost.

        A server (or edge box) without the route (404) has none to report.
        """
        found: list[str] = []
        params: dict[str, Any] = {"limit": _MISSING_PAGE}
        while True:
            response = self._http.request("GET", "/v1/blobs/missing", params=params)
            try:
                if response.status_code == 404:
                    return found
                if response.status_code != 200:
                    raise BlobError(
                        f"the server refused to list missing blobs: {error_text(response)}"
                    )
                body: Any = response.json()
                try:
                    page = [str(sha) for sha in body["sha256"]]
                    after = body["next_after"]
                except (KeyError, TypeError) as exc:
                    raise BlobError(f"unexpected list of missing blobs: {body!r}") from exc
            finally:
                response.close()
            found += page
            if after is None or not page:
                return found
            params = {"limit": _MISSING_PAGE, "after": str(after)}

    def download(self, *, sha256: str, start: int) -> BlobDownload:
        """``GET /v1/blobs/{sha256}``, from byte `start` on (a ``Range`` request)."""
        headers = {"Range": f"bytes={start}-"} if start else None
        response = self._http.request("GET", f"/v1/blobs/{sha256}", headers=headers, stream=True)
        size: int | None
        try:
            status = response.status_code
            if status == 404:
                raise BlobNotFoundError(f"the server has no blob {sha256}")
            if status == 410:
                response.read()
                raise BlobMissingError(
                    f"the server recorded blob {sha256} but its storage lost it: "
                    f"{error_text(response)}"
                )
            if status == 416:
                raise BlobCorruptError(f"the server's blob {sha256} ends before byte {start}")
            if status == 206:
                match = _CONTENT_RANGE.fullmatch(response.headers.get("content-range", ""))
                if match is None:
                    raise BlobError(f"the server answered an unusable range of {sha256}")
                first, size = int(match[1]), int(match[3])
            elif status == 200:
                first = 0
                length = response.headers.get("content-length")
                size = int(length) if length is not None else None
            else:
                response.read()
                raise BlobError(f"the server refused to send blob {sha256}: {error_text(response)}")
        except BaseException:
            response.close()
            raise
        return BlobDownload(first, size, _pieces(response), response.close)


def _pieces(response: SyncResponse) -> Iterator[bytes]:
    """The body's bytes; a connection that breaks mid-body is a `ConnectionError`."""
    try:
        yield from response.iter_bytes()
    except httpx.TransportError as exc:
        raise ConnectionError(f"the download broke off: {exc}") from exc


def _upload_state(response: SyncResponse, what: str) -> UploadState:
    body: Any = None
    try:
        body = response.json()
        return UploadState(
            upload_id=body["upload_id"],
            offset=int(body["offset"]),
            complete=bool(body["complete"]),
            chunk_size=int(body["chunk_size"]),
            min_chunk_size=int(body["min_chunk_size"]),
            max_chunk_size=int(body["max_chunk_size"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise BlobError(f"unexpected answer to {what}: {body!r}") from exc
