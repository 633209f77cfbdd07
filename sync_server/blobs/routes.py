"""Routes: content-addressed blobs, uploaded resumably and downloaded with ranges.

The upload protocol is tus-like. A device declares the blob (`POST /v1/blobs/uploads`
with its SHA-256 and size), sends it in chunks (`PATCH /v1/blobs/uploads/{id}` with an
`Upload-Offset` header), and after an interruption asks where the server stands (`HEAD`
or `GET` of the upload, or the same `POST` again) and continues from there. A chunk is
read whole before anything is written, so a cut connection writes nothing; the chunk
that reaches the declared size completes the upload, and the server stores the blob
only if its SHA-256 matches.

Blobs belong to a clinic: a caller sees only its own clinic's blobs, and another
clinic's blob is answered exactly like one that does not exist.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import re
import uuid
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from crdt import SHA256_PATTERN
from sync_server.blobs.backends import (
    BlobBackend,
    BlobBackendError,
    BlobMissingError,
    IntegrityError,
    UploadLostError,
)
from sync_server.blobs.tables import Blob, Upload
from sync_server.db import utcnow
from sync_server.deps import (
    AnyPrincipal,
    DeviceCaller,
    blob_backend,
    get_db,
    get_settings,
    request_id_of,
)
from sync_server.errors import (
    Conflict,
    Gone,
    Invalid,
    NotFound,
    PayloadTooLarge,
    RangeNotSatisfiable,
    Unavailable,
    Unprocessable,
    UnsupportedMediaType,
    check_declared_length,
)
from sync_server.identity.principals import Principal
from sync_server.identity.services import record_audit
from sync_server.identity.tables import Clinic
from sync_server.settings import Settings

__all__ = ["UploadCreate", "UploadState", "router"]

log = logging.getLogger("sync_server.blobs")

router = APIRouter(prefix="/v1/blobs", tags=["blobs"])

PREFERRED_CHUNK = 8 * 1024 * 1024
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


# ------------------------------------------------------------------------ schemas


class UploadCreate(BaseModel):
    """The blob a device is about to upload."""

    model_config = ConfigDict(extra="forbid")

    sha256: str = Field(pattern=SHA256_PATTERN, description="SHA-256 of the whole blob, hex.")
    size: int = Field(ge=0, description="The blob's size in bytes.")


class UploadState(BaseModel):
    """Where an upload stands, and how to send the rest of it."""

    upload_id: str | None = Field(description="Upload id for PATCH; null once complete.")
    sha256: str
    size: int = Field(description="Declared size of the blob in bytes.")
    offset: int = Field(description="Bytes the server holds; send the next chunk from here.")
    complete: bool = Field(description="True when the server holds the whole, verified blob.")
    chunk_size: int = Field(description="Suggested chunk size in bytes.")
    min_chunk_size: int = Field(
        description="Smallest chunk accepted for any chunk but the last (0: no minimum)."
    )
    max_chunk_size: int = Field(description="Largest chunk accepted (a bigger one gets 413).")


# ------------------------------------------------------------------------ helpers


def _chunk_limits(settings: Settings, backend: BlobBackend) -> dict[str, int]:
    maximum = settings.max_blob_chunk
    minimum = min(backend.min_part_size, maximum)
    return {
        "chunk_size": max(minimum, min(PREFERRED_CHUNK, maximum)),
        "min_chunk_size": minimum,
        "max_chunk_size": maximum,
    }


def _pending(settings: Settings, backend: BlobBackend, upload: Upload) -> UploadState:
    """The state of an upload in progress."""
    return UploadState(
        upload_id=upload.id,
        sha256=upload.sha256,
        size=upload.size,
        offset=upload.offset,
        complete=False,
        **_chunk_limits(settings, backend),
    )


def _stored(settings: Settings, backend: BlobBackend, sha256: str, size: int) -> UploadState:
    """The state of a blob the clinic holds: nothing left to send."""
    return UploadState(
        upload_id=None,
        sha256=sha256,
        size=size,
        offset=size,
        complete=True,
        **_chunk_limits(settings, backend),
    )


def _upload_headers(offset: int, size: int) -> dict[str, str]:
    return {"Upload-Offset": str(offset), "Upload-Length": str(size), "Cache-Control": "no-store"}


def _audit(
    session: Session,
    principal: Principal,
    *,
    clinic_id: str,
    action: str,
    target: str,
    request_id: str | None,
) -> None:
    record_audit(
        session,
        actor_kind=principal.kind,
        actor_id=principal.id,
        clinic_id=clinic_id,
        action=action,
        outcome="ok",
        target=target,
        request_id=request_id,
    )


def _device_clinic(principal: Principal) -> str:
    if principal.clinic_id is None:  # devices always belong to a clinic
        raise Invalid("this caller belongs to no clinic", code="no_clinic")
    return principal.clinic_id


def _find_upload(session: Session, principal: Principal, upload_id: str) -> Upload:
    upload = session.get(Upload, upload_id)
    if upload is None or upload.clinic_id != principal.clinic_id:
        raise NotFound(
            f"no upload {upload_id}; it may have completed or been discarded "
            "(POST /v1/blobs/uploads again to find out)",
            code="upload_not_found",
        )
    return upload


def _abort_quietly(backend: BlobBackend, upload_id: str, handle: str | None) -> None:
    try:
        backend.abort(upload_id, handle)
    except BlobBackendError as exc:
        log.warning("could not discard the data of upload %s: %s", upload_id, exc)


def _storage_error(exc: BlobBackendError) -> Unavailable:
    log.error("blob storage failure: %s", exc)
    return Unavailable("blob storage is unavailable; try again later", code="storage_unavailable")


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
    body: UploadCreate, principal: DeviceCaller, request: Request, response: Response
) -> UploadState:
    """Declare a blob by SHA-256 and size.

    - The clinic already holds it: 200 with `complete: true` (nothing to send).
    - An upload of it is in progress: 200 with that upload and its `offset` (resume).
    - Otherwise: 201 with a new `upload_id` at offset 0.

    Send the bytes with `PATCH /v1/blobs/uploads/{upload_id}`, chunks of at most
    `max_chunk_size` bytes and, for all but the last, at least `min_chunk_size`.
    """
    settings, db, backend = get_settings(request), get_db(request), blob_backend(request)
    clinic_id = _device_clinic(principal)
    if body.size > settings.max_blob_size:
        raise PayloadTooLarge(
            f"blob of {body.size} bytes is larger than the server's limit of "
            f"{settings.max_blob_size} bytes",
            code="blob_too_large",
        )

    def lookup(session: Session) -> UploadState | None:
        # One upload per (clinic, blob): this lock makes two POSTs of one blob
        # (PostgreSQL; SQLite already serialises writers) agree on a single upload.
        session.execute(
            select(Clinic.id).where(Clinic.id == clinic_id).with_for_update(key_share=True)
        )
        blob = session.get(Blob, (clinic_id, body.sha256))
        if blob is not None:
            return _stored(settings, backend, blob.sha256, blob.size)
        for upload in session.scalars(
            select(Upload).where(Upload.clinic_id == clinic_id, Upload.sha256 == body.sha256)
        ):
            if upload.size == body.size:
                return _pending(settings, backend, upload)
            # Same hash, different size: one declaration is wrong; the new one gets
            # its chance and the old upload (which can never verify both) goes.
            _abort_quietly(backend, upload.id, upload.backend_ref)
            session.delete(upload)
        return None

    with db.write() as session:
        found = lookup(session)
    if found is not None:
        response.status_code = 200
        return found

    # Start the backend's upload outside any transaction (an S3 round trip), then
    # record it, unless another request recorded one for this blob meanwhile.
    upload_id = uuid.uuid4().hex
    try:
        handle = backend.start(upload_id)
    except BlobBackendError as exc:
        raise _storage_error(exc) from exc
    new = Upload(
        id=upload_id,
        clinic_id=clinic_id,
        sha256=body.sha256,
        size=body.size,
        offset=0,
        parts=0,
        backend_ref=handle,
        part_etags="[]",
        created_by=principal.id,
    )
    with db.write() as session:
        found = lookup(session)
        if found is None:
            session.add(new)
    if found is not None:
        _abort_quietly(backend, upload_id, handle)
        response.status_code = 200
        return found
    response.headers.update(_upload_headers(0, body.size))
    response.headers["Location"] = f"/v1/blobs/uploads/{upload_id}"
    return _pending(settings, backend, new)


def _upload_state(request: Request, principal: Principal, upload_id: str) -> UploadState:
    settings, backend = get_settings(request), blob_backend(request)
    with get_db(request).read() as session:
        upload = _find_upload(session, principal, upload_id)
        return _pending(settings, backend, upload)


@router.get(
    "/uploads/{upload_id}",
    summary="Where an upload stands",
    response_model=UploadState,
    responses={404: {"description": "No such upload in the caller's clinic."}},
)
def get_upload(
    upload_id: UploadIdPath, principal: DeviceCaller, request: Request, response: Response
) -> UploadState:
    """The upload's current offset (also in the `Upload-Offset` header).

    404 once the upload has completed or been discarded: `POST /v1/blobs/uploads`
    again tells whether the blob is stored.
    """
    state = _upload_state(request, principal, upload_id)
    response.headers.update(_upload_headers(state.offset, state.size))
    return state


@router.head(
    "/uploads/{upload_id}",
    summary="Where an upload stands (headers only)",
    responses={200: {"description": "`Upload-Offset` and `Upload-Length` headers."}},
)
def head_upload(upload_id: UploadIdPath, principal: DeviceCaller, request: Request) -> Response:
    """The upload's current offset in `Upload-Offset` and its size in `Upload-Length`."""
    state = _upload_state(request, principal, upload_id)
    return Response(status_code=200, headers=_upload_headers(state.offset, state.size))


@router.delete(
    "/uploads/{upload_id}",
    summary="Abandon an upload",
    status_code=204,
    responses={404: {"description": "No such upload in the caller's clinic."}},
)
def delete_upload(upload_id: UploadIdPath, principal: DeviceCaller, request: Request) -> Response:
    """Discard an upload in progress and the bytes received so far."""
    backend = blob_backend(request)
    with get_db(request).write() as session:
        upload = _find_upload(session, principal, upload_id)
        handle = upload.backend_ref
        session.delete(upload)
    _abort_quietly(backend, upload_id, handle)
    return Response(status_code=204)


class OffsetMismatch(Conflict):
    """A chunk sent at another offset than the server's: send from `offset`."""

    code = "offset_mismatch"

    def __init__(self, *, sent_at: int, offset: int, size: int) -> None:
        super().__init__(
            f"this chunk starts at {sent_at} but the server holds {offset} bytes; "
            f"send from offset {offset}"
        )
        self.offset = offset
        self.size = size

    def details(self) -> dict[str, Any]:
        """The server's offset, beside the error."""
        return {"offset": self.offset}


@dataclass(frozen=True)
class _ChunkOutcome:
    state: UploadState | None = None
    mismatch: str | None = None
    lost: str | None = None


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
) -> Any:
    """Write the body at `Upload-Offset`, which must equal the server's offset.

    The whole chunk is read before anything is written: a connection cut mid-chunk
    leaves the offset where it was. A stale offset gets 409 with the server's offset
    (body `offset` and `Upload-Offset` header); send from there. The chunk that
    reaches the declared size completes the upload: the server checks the blob's
    SHA-256 and answers `complete: true`, or 422 `hash_mismatch`, in which case the
    upload is discarded and nothing is stored.
    """
    settings, db, backend = get_settings(request), get_db(request), blob_backend(request)
    clinic_id = _device_clinic(principal)
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
    expected_digest = _parse_checksum(upload_checksum)
    data = await _read_chunk(request, settings.max_blob_chunk)
    if expected_digest is not None and hashlib.sha256(data).digest() != expected_digest:
        raise Unprocessable(
            "the chunk does not match its Upload-Checksum; nothing was written",
            code="checksum_mismatch",
        )

    def apply() -> _ChunkOutcome:
        with db.write() as session:
            return _apply_chunk(
                session,
                backend,
                settings,
                principal,
                clinic_id,
                upload_id,
                offset,
                data,
                request_id_of(request),
            )

    try:
        outcome = await run_in_threadpool(apply)
    except OffsetMismatch as exc:
        exc.headers.update(_upload_headers(exc.offset, exc.size))
        raise
    except BlobBackendError as exc:
        raise _storage_error(exc) from exc
    if outcome.lost is not None:
        raise Gone(outcome.lost, code="upload_lost")
    if outcome.mismatch is not None:
        raise Unprocessable(outcome.mismatch, code="hash_mismatch")
    assert outcome.state is not None
    response.headers.update(_upload_headers(outcome.state.offset, outcome.state.size))
    return outcome.state


def _parse_checksum(header: str | None) -> bytes | None:
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


async def _read_chunk(request: Request, limit: int) -> bytes:
    """The whole request body, refused (413) past `limit` bytes."""
    too_large = PayloadTooLarge(
        f"a chunk may be at most {limit} bytes; send smaller chunks", code="chunk_too_large"
    )
    check_declared_length(request.headers.get("content-length"), limit, too_large)
    body = bytearray()
    try:
        async for piece in request.stream():
            body += piece
            if len(body) > limit:
                raise too_large
    except ClientDisconnect:
        raise Invalid(
            "the connection closed before the whole chunk arrived; nothing was written",
            code="incomplete_chunk",
        ) from None
    return bytes(body)


def _apply_chunk(
    session: Session,
    backend: BlobBackend,
    settings: Settings,
    principal: Principal,
    clinic_id: str,
    upload_id: str,
    offset: int,
    data: bytes,
    request_id: str | None,
) -> _ChunkOutcome:
    """Write one chunk and, if it is the last, complete the upload (in `session`)."""
    # The row lock (PostgreSQL; SQLite's BEGIN IMMEDIATE serialises writers) makes
    # concurrent chunks at one offset take turns: the second sees the new offset.
    upload = session.scalars(
        select(Upload).where(Upload.id == upload_id).with_for_update()
    ).one_or_none()
    if upload is None or upload.clinic_id != clinic_id:
        raise NotFound(
            f"no upload {upload_id}; it may have completed or been discarded "
            "(POST /v1/blobs/uploads again to find out)",
            code="upload_not_found",
        )
    if offset != upload.offset:
        raise OffsetMismatch(sent_at=offset, offset=upload.offset, size=upload.size)
    end = offset + len(data)
    if end > upload.size:
        raise Invalid(
            f"this chunk ends at byte {end}, past the declared size of {upload.size} bytes",
            code="beyond_declared_size",
        )
    final = end == upload.size
    if not data and not final:
        raise Invalid("empty chunk", code="empty_chunk")
    if not final and len(data) < backend.min_part_size:
        raise Invalid(
            f"this server keeps blobs in S3-compatible storage: every chunk except the last "
            f"must be at least {backend.min_part_size} bytes (5 MiB); this one has "
            f"{len(data)}",
            code="chunk_too_small",
        )
    etags: list[str | None] = json.loads(upload.part_etags)
    try:
        if data:
            part_number = upload.parts + 1
            if backend.max_parts is not None and part_number > backend.max_parts:
                raise Invalid(
                    f"an upload may have at most {backend.max_parts} chunks; use bigger ones",
                    code="too_many_chunks",
                )
            etag = backend.write_part(upload.id, upload.backend_ref, part_number, offset, data)
            etags.append(etag)
            upload.parts = part_number
            upload.part_etags = json.dumps(etags)
        upload.offset = end
        upload.updated_at = utcnow()
        if not final:
            return _ChunkOutcome(state=_pending(settings, backend, upload))
        backend.complete(
            upload.id, upload.backend_ref, etags, clinic_id, upload.sha256, upload.size
        )
    except IntegrityError as exc:
        log.warning("upload %s discarded: %s", upload.id, exc)
        _abort_quietly(backend, upload.id, upload.backend_ref)
        session.delete(upload)
        return _ChunkOutcome(
            mismatch=f"the uploaded bytes do not have SHA-256 {upload.sha256} and size "
            f"{upload.size}; the upload was discarded and nothing was stored"
        )
    except UploadLostError as exc:
        log.warning("upload %s lost: %s", upload.id, exc)
        _abort_quietly(backend, upload.id, upload.backend_ref)
        session.delete(upload)
        return _ChunkOutcome(
            lost=f"the server no longer holds the data of upload {upload.id}; start again "
            "with POST /v1/blobs/uploads"
        )
    if session.get(Blob, (clinic_id, upload.sha256)) is None:
        session.add(
            Blob(
                clinic_id=clinic_id,
                sha256=upload.sha256,
                size=upload.size,
                uploaded_by=principal.id,
            )
        )
    session.delete(upload)
    _audit(
        session,
        principal,
        clinic_id=clinic_id,
        action="blob-upload",
        target=upload.sha256,
        request_id=request_id,
    )
    return _ChunkOutcome(state=_stored(settings, backend, upload.sha256, upload.size))


# ------------------------------------------------------------------------ downloads


def _reading_clinic(session: Session, principal: Principal, clinic_id: str | None) -> str:
    """The clinic whose blobs the caller reads: its own, or (org-wide staff) the named one."""
    if principal.clinic_id is not None:
        if clinic_id is not None and clinic_id != principal.clinic_id:
            raise NotFound("no such blob", code="blob_not_found")
        return principal.clinic_id
    if clinic_id is None:
        raise Invalid(
            "an organisation-wide account must name the clinic: ?clinic_id=...",
            code="clinic_required",
        )
    clinic = session.get(Clinic, clinic_id)
    if clinic is None or clinic.organisation_id != principal.organisation_id:
        raise NotFound("no such blob", code="blob_not_found")
    return clinic_id


def _stored_blob(
    request: Request, principal: Principal, sha256: str, clinic_id: str | None
) -> tuple[str, int]:
    """(clinic, size) of a blob the caller may read; 404 if none, 503 if storage lost it."""
    with get_db(request).read() as session:
        clinic = _reading_clinic(session, principal, clinic_id)
        blob = session.get(Blob, (clinic, sha256))
        if blob is None:
            raise NotFound("no such blob", code="blob_not_found")
        size = blob.size
    try:
        stored = blob_backend(request).size(clinic, sha256)
    except BlobMissingError:
        stored = -1
    except BlobBackendError as exc:
        raise _storage_error(exc) from exc
    if stored != size:
        log.error(
            "blob %s of clinic %s: recorded %d bytes, storage has %d", sha256, clinic, size, stored
        )
        raise Unavailable(
            "the blob is recorded but its storage is unavailable", code="blob_unavailable"
        )
    return clinic, size


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


ClinicQuery = Annotated[
    str | None,
    Query(description="For organisation-wide staff only: the clinic whose blob to read."),
]


@router.get(
    "/{sha256}",
    summary="Download a blob",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "The whole blob."},
        206: {"content": {"application/octet-stream": {}}, "description": "The range asked."},
        404: {"description": "No such blob in the caller's clinic."},
        416: {"description": "The range starts past the end of the blob."},
    },
)
def download_blob(
    sha256: Sha256Path,
    principal: AnyPrincipal,
    request: Request,
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
    """
    clinic, size = _stored_blob(request, principal, sha256, clinic_id)
    span = _parse_range(range_header, size)
    with get_db(request).write() as session:
        _audit(
            session,
            principal,
            clinic_id=clinic,
            action="blob-download",
            target=sha256,
            request_id=request_id_of(request),
        )
    headers = _blob_headers(sha256)
    start, end = span if span is not None else (0, size)
    headers["Content-Length"] = str(end - start)
    if span is not None:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    chunks = blob_backend(request).open(clinic, sha256, start, end)
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
    },
)
def head_blob(
    sha256: Sha256Path, principal: AnyPrincipal, request: Request, clinic_id: ClinicQuery = None
) -> Response:
    """The blob's size in `Content-Length`, with its `ETag`; no body."""
    _, size = _stored_blob(request, principal, sha256, clinic_id)
    headers = _blob_headers(sha256)
    headers["Content-Length"] = str(size)
    return Response(status_code=200, headers=headers)
