"""Routes: content-addressed blobs, uploaded resumably and downloaded with ranges.

The HTTP face of the upload state machine (`sync_server.blobs.uploads`), tus-like. A
device declares the blob (`POST /v1/blobs/uploads` with its SHA-256 and size), sends it
in chunks (`PATCH /v1/blobs/uploads/{id}` with an `Upload-Offset` header), and after an
interruption asks where the server stands (`HEAD` or `GET` of the upload, or the same
`POST` again) and continues from there. A chunk is read whole before anything is
written, so a cut connection writes nothing; the chunk that reaches the declared size
completes the upload, and the server stores the blob only if its SHA-256 matches.

Blobs belong to a clinic: a caller sees only its own clinic's blobs, and another
clinic's blob is answered exactly like one that does not exist.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from crdt import SHA256_PATTERN
from sync_server.blobs.backends import BlobBackend
from sync_server.blobs.downloads import locate_blob, record_download
from sync_server.blobs.missing import list_missing, verify_stream
from sync_server.blobs.schemas import MissingBlobs, UploadCreate, UploadState
from sync_server.blobs.uploads import (
    OffsetMismatch,
    UploadStatus,
    abandon_upload,
    declare_upload,
    upload_status,
    write_chunk,
)
from sync_server.bodies import read_body
from sync_server.db import Database
from sync_server.deps import (
    AnyPrincipal,
    BlobsDep,
    DbDep,
    DeviceCaller,
    RequestIdDep,
    SettingsDep,
)
from sync_server.errors import (
    Invalid,
    PayloadTooLarge,
    RangeNotSatisfiable,
    UnsupportedMediaType,
)
from sync_server.identity.principals import Principal
from sync_server.settings import Settings

__all__ = ["router"]

router = APIRouter(prefix="/v1/blobs", tags=["blobs"])

_CHUNK_TYPES = frozenset({"application/octet-stream", "application/offset+octet-stream"})
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_OFFSET = re.compile(r"\d{1,19}")

Sha256Path = Annotated[
    str,
    Path(pattern=SHA256_PATTERN, description="The blob's SHA-256, 64 lowercase hex digits."),
]
UploadIdPath = Annotated[
    str,
    Path(pattern=r"^[0-9a-f]{32}$", description="The upload id from `POST /v1/blobs/uploads`."),
]
ClinicQuery = Annotated[
    str | None,
    Query(description="For organisation-wide staff only: the clinic whose blob to read."),
]


def _upload_headers(offset: int, size: int) -> dict[str, str]:
    return {"Upload-Offset": str(offset), "Upload-Length": str(size), "Cache-Control": "no-store"}


# ------------------------------------------------------------------------ uploads


@router.post(
    "/uploads",
    summary="Start (or resume) a blob upload",
    response_model=UploadState,
    status_code=201,
    responses={
        200: {"model": UploadState, "description": "Already stored, or an upload to resume."},
        413: {"description": "The blob is larger than the server accepts."},
    },
)
def create_upload(
    body: UploadCreate,
    principal: DeviceCaller,
    response: Response,
    db: DbDep,
    backend: BlobsDep,
    settings: SettingsDep,
) -> UploadState:
    """Declare a blob by SHA-256 and size.

    - The clinic already holds it: 200 with `complete: true` (nothing to send).
    - An upload of it is in progress: 200 with that upload and its `offset` (resume).
    - Otherwise: 201 with a new `upload_id` at offset 0.

    Send the bytes with `PATCH /v1/blobs/uploads/{upload_id}`, chunks of at most
    `max_chunk_size` bytes and, for all but the last, at least `min_chunk_size`.
    """
    status, created = declare_upload(
        database=db,
        backend=backend,
        settings=settings,
        principal=principal,
        sha256=body.sha256,
        size=body.size,
    )
    if not created:
        response.status_code = 200
    else:
        response.headers.update(_upload_headers(0, body.size))
        response.headers["Location"] = f"/v1/blobs/uploads/{status.upload_id}"
    return UploadState.model_validate(status)


def _status(
    db: Database, backend: BlobBackend, settings: Settings, principal: Principal, upload_id: str
) -> UploadStatus:
    with db.read() as session:
        return upload_status(
            session=session,
            backend=backend,
            settings=settings,
            principal=principal,
            upload_id=upload_id,
        )


@router.get(
    "/uploads/{upload_id}",
    summary="Where an upload stands",
    response_model=UploadState,
    responses={404: {"description": "No such upload in the caller's clinic."}},
)
def get_upload(
    upload_id: UploadIdPath,
    principal: DeviceCaller,
    response: Response,
    db: DbDep,
    backend: BlobsDep,
    settings: SettingsDep,
) -> UploadState:
    """The upload's current offset (also in the `Upload-Offset` header).

    404 once the upload has completed or been discarded: `POST /v1/blobs/uploads`
    again tells whether the blob is stored.
    """
    status = _status(db, backend, settings, principal, upload_id)
    response.headers.update(_upload_headers(status.offset, status.size))
    return UploadState.model_validate(status)


@router.head(
    "/uploads/{upload_id}",
    summary="Where an upload stands (headers only)",
    responses={200: {"description": "`Upload-Offset` and `Upload-Length` headers."}},
)
def head_upload(
    upload_id: UploadIdPath,
    principal: DeviceCaller,
    db: DbDep,
    backend: BlobsDep,
    settings: SettingsDep,
) -> Response:
    """The upload's current offset in `Upload-Offset` and its size in `Upload-Length`."""
    status = _status(db, backend, settings, principal, upload_id)
    return Response(status_code=200, headers=_upload_headers(status.offset, status.size))


@router.delete(
    "/uploads/{upload_id}",
    summary="Abandon an upload",
    status_code=204,
    responses={404: {"description": "No such upload in the caller's clinic."}},
)
def delete_upload(
    upload_id: UploadIdPath, principal: DeviceCaller, db: DbDep, backend: BlobsDep
) -> Response:
    """Discard an upload in progress and the bytes received so far."""
    abandon_upload(database=db, backend=backend, principal=principal, upload_id=upload_id)
    return Response(status_code=204)


@router.patch(
    "/uploads/{upload_id}",
    summary="Send the next chunk of an upload",
    response_model=UploadState,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
    responses={
        400: {"description": "Bad offset header, chunk past the size, or too small."},
        404: {"description": "No such upload in the caller's clinic."},
        409: {"description": "`Upload-Offset` is not the server's offset (given in the body)."},
        410: {"description": "The upload's stored data is gone: start again with POST."},
        413: {"description": "The chunk is larger than `max_chunk_size`."},
        415: {"description": "The body is not `application/octet-stream`."},
        422: {"description": "The completed blob's SHA-256 differs (`hash_mismatch`)."},
    },
)
async def patch_upload(
    upload_id: UploadIdPath,
    principal: DeviceCaller,
    request: Request,
    response: Response,
    db: DbDep,
    backend: BlobsDep,
    settings: SettingsDep,
    request_id: RequestIdDep,
    upload_offset: Annotated[
        str | None,
        Header(alias="Upload-Offset", description="Offset of this chunk's first byte."),
    ] = None,
    upload_checksum: Annotated[
        str | None,
        Header(
            alias="Upload-Checksum",
            description="Optional `sha256 <base64 digest of this chunk>`; a chunk that "
            "does not match is refused (422 `checksum_mismatch`) and nothing is written.",
        ),
    ] = None,
) -> UploadState:
    """Write the body at `Upload-Offset`, which must equal the server's offset.

    The whole chunk is read before anything is written: a connection cut mid-chunk
    leaves the offset where it was. A stale offset gets 409 with the server's offset
    (body `offset` and `Upload-Offset` header); send from there. The chunk that
    reaches the declared size completes the upload: the server checks the blob's
    SHA-256 and answers `complete: true`, or 422 `hash_mismatch`, in which case the
    upload is discarded and nothing is stored.
    """
    if upload_offset is None or not _OFFSET.fullmatch(upload_offset.strip()):
        raise Invalid(
            "the Upload-Offset header must be the chunk's offset, a non-negative integer",
            code="invalid_offset",
        )
    offset = int(upload_offset.strip())
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in _CHUNK_TYPES:
        raise UnsupportedMediaType(
            "send the chunk as Content-Type: application/octet-stream",
            code="unsupported_media_type",
        )
    checksum = _parse_checksum(upload_checksum)
    limit = settings.max_blob_chunk
    data = await read_body(
        request,
        limit=limit,
        too_large=PayloadTooLarge(
            f"a chunk may be at most {limit} bytes; send smaller chunks", code="chunk_too_large"
        ),
        incomplete=Invalid(
            "the connection closed before the whole chunk arrived; nothing was written",
            code="incomplete_chunk",
        ),
    )

    def write() -> UploadStatus:
        with db.write() as session:
            return write_chunk(
                session=session,
                backend=backend,
                settings=settings,
                principal=principal,
                upload_id=upload_id,
                offset=offset,
                data=data,
                checksum=checksum,
                request_id=request_id,
            )

    try:
        status = await run_in_threadpool(write)
    except OffsetMismatch as exc:
        exc.headers.update(_upload_headers(exc.offset, exc.size))
        raise
    response.headers.update(_upload_headers(status.offset, status.size))
    return UploadState.model_validate(status)


def _parse_checksum(header: str | None) -> bytes | None:
    """The digest of an ``Upload-Checksum: sha256 <base64>`` header, if one was sent.

    Raises:
        Invalid: ``invalid_checksum``: another algorithm, or not a 32-byte digest.
    """
    if header is None:
        return None
    algorithm, _, value = header.strip().partition(" ")
    if algorithm.lower() != "sha256":
        raise Invalid("Upload-Checksum must be 'sha256 <base64 digest>'", code="invalid_checksum")
    try:
        digest = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        digest = b""
    if len(digest) != 32:
        raise Invalid("Upload-Checksum must be 'sha256 <base64 digest>'", code="invalid_checksum")
    return digest


# ------------------------------------------------------------------------ missing


@router.get(
    "/missing",
    summary="The clinic's blobs the storage lost",
    response_model=MissingBlobs,
)
def get_missing(
    principal: DeviceCaller,
    db: DbDep,
    after: Annotated[
        str | None,
        Query(pattern=SHA256_PATTERN, description="Page after this SHA-256 (`next_after`)."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Most hashes in one page.")] = 500,
) -> MissingBlobs:
    """SHA-256 of the caller's clinic's blobs that the server recorded but its storage
    lost (or holds damaged), in order, a page at a time.

    A device that holds one of them uploads it again (`POST /v1/blobs/uploads`, as for
    a new blob); the blob leaves this list once the upload completes.
    """
    with db.read() as session:
        page = list_missing(session=session, principal=principal, after=after, limit=limit)
    return MissingBlobs(sha256=page.sha256, next_after=page.next_after)


# ------------------------------------------------------------------------ downloads


def _parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """A single `bytes=` range as (start, end exclusive); None to send everything.

    Forms other than one byte range are ignored (the whole blob is sent), as
    RFC 9110 allows.

    Raises:
        RangeNotSatisfiable: The range starts past the end.
    """
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None or not (match[1] or match[2]):
        return None
    if match[1]:
        start = int(match[1])
        if match[2] and int(match[2]) < start:
            return None
        if start >= size:
            raise _unsatisfiable(size)
        last = int(match[2]) if match[2] else size - 1
        return start, min(last + 1, size)
    suffix = int(match[2])
    if suffix == 0 or size == 0:
        raise _unsatisfiable(size)
    return max(0, size - suffix), size


def _unsatisfiable(size: int) -> RangeNotSatisfiable:
    error = RangeNotSatisfiable(
        f"the blob has {size} bytes; the range starts past its end",
        code="range_not_satisfiable",
    )
    error.headers["Content-Range"] = f"bytes */{size}"
    return error


def _blob_headers(sha256: str) -> dict[str, str]:
    digest = base64.b64encode(bytes.fromhex(sha256)).decode()
    return {
        "Accept-Ranges": "bytes",
        "ETag": f'"{sha256}"',
        "Repr-Digest": f"sha-256=:{digest}:",
        "Cache-Control": "private, no-store",
    }


@router.get(
    "/{sha256}",
    summary="Download a blob",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "The whole blob."},
        206: {"content": {"application/octet-stream": {}}, "description": "The range asked."},
        404: {"description": "No such blob in the caller's clinic."},
        410: {"description": "Recorded, but the storage lost it (`blob_missing`)."},
        416: {"description": "The range starts past the end of the blob."},
    },
)
def download_blob(
    sha256: Sha256Path,
    principal: AnyPrincipal,
    db: DbDep,
    backend: BlobsDep,
    request_id: RequestIdDep,
    clinic_id: ClinicQuery = None,
    range_header: Annotated[
        str | None,
        Header(alias="Range", description="One range, `bytes=a-b`, `bytes=a-` or `bytes=-n`."),
    ] = None,
) -> Response:
    """Stream the blob, or one byte range of it (206) so a download can resume.

    The response carries `ETag` (the SHA-256) and `Repr-Digest` (RFC 9530) of the
    whole blob; check it before trusting the bytes. Devices and staff read their own
    clinic's blobs; each download is audited.

    A blob the storage lost is answered 410 `blob_missing` (and listed by
    `GET /v1/blobs/missing` until a device uploads it again). The server checks a
    whole blob's SHA-256 as it sends it: bytes that turn out not to be the blob mark
    it missing and the body breaks off before its end.
    """
    blob = locate_blob(
        database=db, backend=backend, principal=principal, sha256=sha256, clinic_id=clinic_id
    )
    span = _parse_range(range_header, blob.size)
    with db.write() as session:
        record_download(session=session, principal=principal, blob=blob, request_id=request_id)
    headers = _blob_headers(sha256)
    start, end = span if span is not None else (0, blob.size)
    headers["Content-Length"] = str(end - start)
    if span is not None:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{blob.size}"
    chunks = backend.open(blob.clinic_id, sha256, start, end)
    if span is None:  # the whole blob: check its hash before the last chunk goes out
        chunks = verify_stream(chunks, database=db, clinic_id=blob.clinic_id, sha256=sha256)
    return StreamingResponse(
        chunks,
        status_code=200 if span is None else 206,
        media_type="application/octet-stream",
        headers=headers,
    )


@router.head(
    "/{sha256}",
    summary="Whether a blob is stored, and its size",
    responses={
        200: {"description": "Stored: `Content-Length` is its size."},
        404: {"description": "No such blob in the caller's clinic."},
        410: {"description": "Recorded, but the storage lost it (`blob_missing`)."},
    },
)
def head_blob(
    sha256: Sha256Path,
    principal: AnyPrincipal,
    db: DbDep,
    backend: BlobsDep,
    clinic_id: ClinicQuery = None,
) -> Response:
    """The blob's size in `Content-Length`, with its `ETag`; no body."""
    blob = locate_blob(
        database=db, backend=backend, principal=principal, sha256=sha256, clinic_id=clinic_id
    )
    headers = _blob_headers(sha256)
    headers["Content-Length"] = str(blob.size)
    return Response(status_code=200, headers=headers)
