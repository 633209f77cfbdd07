"""The upload state machine: a device declares a blob, sends it in chunks, and the last
chunk completes it once the server has checked its SHA-256.

    declare_upload ──► pending (offset 0) ──write_chunk──► pending (offset n) ─┐
         │                    ▲                                              │
         │ the clinic holds it └──────────── resume: declare again / status ◄┘
         ▼                                                                    │
      complete ◄──────────── the chunk that reaches the size, hash checked ◄──┘
                               (wrong hash: discarded, Unprocessable hash_mismatch;
                                storage lost the parts: discarded, Gone upload_lost)

One upload at a time per (clinic, blob): declaring a blob again resumes its upload. A
chunk must start at the server's offset (`OffsetMismatch` says where to send from); a
chunk sent twice is harmless. An upload nobody touched for a week is purged.

Blobs belong to a clinic: a caller sees only its own clinic's uploads, and another
clinic's upload is treated exactly like one that does not exist. Services here know
nothing of HTTP; `sync_server.blobs.routes` is the tus-like HTTP face of them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from sync_server.audit.events import Actor, BlobUploaded, purpose_of
from sync_server.audit.services import record_event
from sync_server.blobs.backends import (
    BlobBackend,
    BlobBackendError,
    IntegrityError,
    UploadLostError,
    storage_unavailable,
)
from sync_server.blobs.tables import Blob, Upload
from sync_server.db import Database, commit_then_raise, utcnow
from sync_server.errors import (
    Conflict,
    Forbidden,
    Gone,
    Invalid,
    NotFound,
    PayloadTooLarge,
    Unprocessable,
)
from sync_server.identity.principals import Principal
from sync_server.identity.tables import Clinic
from sync_server.settings import Settings
from sync_server.sync.records import blob_patients

__all__ = [
    "PREFERRED_CHUNK",
    "OffsetMismatch",
    "UploadStatus",
    "abandon_upload",
    "declare_upload",
    "purge_stale_uploads",
    "upload_status",
    "write_chunk",
]

log = logging.getLogger("sync_server.blobs")

PREFERRED_CHUNK = 8 * 1024 * 1024
"""The chunk size suggested to devices (within the backend's and settings' bounds)."""


@dataclass(frozen=True, slots=True)
class UploadStatus:
    """Where an upload stands, and the chunk sizes to send the rest in."""

    upload_id: str | None  # None once complete
    sha256: str
    size: int
    offset: int
    complete: bool
    chunk_size: int
    min_chunk_size: int
    max_chunk_size: int


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


def _status(
    settings: Settings,
    backend: BlobBackend,
    *,
    upload_id: str | None,
    sha256: str,
    size: int,
    offset: int,
) -> UploadStatus:
    maximum = settings.max_blob_chunk
    minimum = min(backend.min_part_size, maximum)
    return UploadStatus(
        upload_id=upload_id,
        sha256=sha256,
        size=size,
        offset=offset,
        complete=upload_id is None,
        chunk_size=max(minimum, min(PREFERRED_CHUNK, maximum)),
        min_chunk_size=minimum,
        max_chunk_size=maximum,
    )


def _pending(settings: Settings, backend: BlobBackend, upload: Upload) -> UploadStatus:
    return _status(
        settings,
        backend,
        upload_id=upload.id,
        sha256=upload.sha256,
        size=upload.size,
        offset=upload.offset,
    )


def _stored(settings: Settings, backend: BlobBackend, sha256: str, size: int) -> UploadStatus:
    return _status(settings, backend, upload_id=None, sha256=sha256, size=size, offset=size)


def _clinic_of(principal: Principal) -> str:
    if principal.clinic_id is None:  # devices always belong to a clinic
        raise Invalid("this caller belongs to no clinic", code="no_clinic")
    return principal.clinic_id


def _abort_quietly(backend: BlobBackend, upload_id: str, handle: str | None) -> None:
    try:
        backend.abort(upload_id, handle)
    except BlobBackendError as exc:
        log.warning("could not discard the data of upload %s: %s", upload_id, exc)


def _not_found(upload_id: str) -> NotFound:
    return NotFound(
        f"no upload {upload_id}; it may have completed or been discarded "
        "(POST /v1/blobs/uploads again to find out)",
        code="upload_not_found",
    )


def _find(session: Session, principal: Principal, upload_id: str) -> Upload:
    upload = session.get(Upload, upload_id)
    if upload is None or upload.clinic_id != principal.clinic_id:
        raise _not_found(upload_id)
    return upload


def declare_upload(
    *,
    database: Database,
    backend: BlobBackend,
    settings: Settings,
    principal: Principal,
    sha256: str,
    size: int,
) -> tuple[UploadStatus, bool]:
    """Declare a blob the caller's clinic is about to upload; returns where it stands
    and whether a new upload was started.

    - The clinic already holds it: complete, nothing to send.
    - An upload of it is in progress: that upload, at its offset (resume).
    - Otherwise: a new upload at offset 0 (created True); also for a blob recorded
      but marked missing (the storage lost it), whose upload replaces the lost bytes.

    Takes the database rather than a session: starting the backend's upload is a
    storage round trip (an S3 request) that must not hold a transaction, so this opens
    two short ones around it.

    Raises:
        PayloadTooLarge: ``blob_too_large``: over the server's `max_blob_size`.
        Forbidden: ``quota_exceeded``: a new upload would take the device or its
            clinic past a blob quota (open uploads, declared or stored bytes).
        Unavailable: ``storage_unavailable``.
    """
    clinic_id = _clinic_of(principal)
    if size > settings.max_blob_size:
        raise PayloadTooLarge(
            f"blob of {size} bytes is larger than the server's limit of "
            f"{settings.max_blob_size} bytes",
            code="blob_too_large",
        )

    def lookup(session: Session) -> UploadStatus | None:
        # One upload per (clinic, blob), and quotas counted once: this lock makes two
        # declarations in a clinic (PostgreSQL; SQLite already serialises writers) take
        # turns, so they agree on a single upload and cannot both fit the last byte.
        session.execute(select(Clinic.id).where(Clinic.id == clinic_id).with_for_update())
        blob = session.get(Blob, (clinic_id, sha256))
        if blob is not None and blob.missing_since is None:
            return _stored(settings, backend, blob.sha256, blob.size)
        # A blob the storage lost is taken again like a new one.
        for upload in session.scalars(
            select(Upload).where(Upload.clinic_id == clinic_id, Upload.sha256 == sha256)
        ):
            if upload.size == size:
                return _pending(settings, backend, upload)
            # Same hash, different size: one declaration is wrong; the new one gets
            # its chance and the old upload (which can never verify both) goes.
            _abort_quietly(backend, upload.id, upload.backend_ref)
            session.delete(upload)
        return None

    with database.write() as session:
        found = lookup(session)
        if found is None:
            _check_quota(session, settings, clinic_id=clinic_id, device_id=principal.id, size=size)
    if found is not None:
        return found, False

    # Start the backend's upload outside any transaction, then record it, unless
    # another request recorded one for this blob meanwhile.
    upload_id = uuid.uuid4().hex
    try:
        handle = backend.start(upload_id)
    except BlobBackendError as exc:
        raise storage_unavailable(exc) from exc
    new = Upload(
        id=upload_id,
        clinic_id=clinic_id,
        sha256=sha256,
        size=size,
        offset=0,
        parts=0,
        backend_ref=handle,
        part_etags="[]",
        created_by=principal.id,
    )
    with database.write() as session:
        found = lookup(session)
        if found is None:
            try:
                _check_quota(
                    session, settings, clinic_id=clinic_id, device_id=principal.id, size=size
                )
            except Forbidden:
                _abort_quietly(backend, upload_id, handle)
                raise
            session.add(new)
    if found is not None:
        _abort_quietly(backend, upload_id, handle)
        return found, False
    return _pending(settings, backend, new), True


def _check_quota(
    session: Session, settings: Settings, *, clinic_id: str, device_id: str, size: int
) -> None:
    """Refuse a new upload of `size` bytes past the device's or the clinic's quotas."""
    open_uploads = session.execute(
        select(Upload.created_by, func.count(), func.coalesce(func.sum(Upload.size), 0))
        .where(Upload.clinic_id == clinic_id)
        .group_by(Upload.created_by)
    ).all()
    device_open = sum(int(n) for who, n, _ in open_uploads if who == device_id)
    device_pending = sum(int(b) for who, _, b in open_uploads if who == device_id)
    clinic_pending = sum(int(b) for _, _, b in open_uploads)
    stored = session.execute(
        select(Blob.uploaded_by, func.coalesce(func.sum(Blob.size), 0))
        .where(Blob.clinic_id == clinic_id, Blob.missing_since.is_(None))
        .group_by(Blob.uploaded_by)
    ).all()
    device_stored = sum(int(b) for who, b in stored if who == device_id)
    clinic_stored = sum(int(b) for _, b in stored)
    checks = [
        (device_open + 1, settings.blob_quota_device_open_uploads, "open uploads of this device"),
        (
            device_pending + size,
            settings.blob_quota_device_pending_bytes,
            "bytes this device has declared in open uploads",
        ),
        (
            clinic_pending + size,
            settings.blob_quota_clinic_pending_bytes,
            "bytes this clinic's devices have declared in open uploads",
        ),
        (
            device_stored + device_pending + size,
            settings.blob_quota_device_bytes,
            "blob bytes this device has uploaded",
        ),
        (
            clinic_stored + clinic_pending + size,
            settings.blob_quota_clinic_bytes,
            "blob bytes this clinic holds",
        ),
    ]
    for would_be, quota, what in checks:
        if would_be > quota:
            raise Forbidden(
                f"this upload would make {would_be} {what}, over the quota of {quota}; "
                "finish or abandon open uploads first, or ask an administrator",
                code="quota_exceeded",
            )


def upload_status(
    *,
    session: Session,
    backend: BlobBackend,
    settings: Settings,
    principal: Principal,
    upload_id: str,
) -> UploadStatus:
    """Where an upload in progress stands.

    Raises:
        NotFound: ``upload_not_found``: no such upload in the caller's clinic (it may
            have completed or been discarded).
    """
    return _pending(settings, backend, _find(session, principal, upload_id))


def abandon_upload(
    *, database: Database, backend: BlobBackend, principal: Principal, upload_id: str
) -> None:
    """Discard an upload in progress and the bytes received so far.

    Takes the database: the upload is forgotten first (committed), then its data is
    discarded outside the transaction.

    Raises:
        NotFound: ``upload_not_found``.
    """
    with database.write() as session:
        upload = _find(session, principal, upload_id)
        handle = upload.backend_ref
        session.delete(upload)
    _abort_quietly(backend, upload_id, handle)


def write_chunk(
    *,
    session: Session,
    backend: BlobBackend,
    settings: Settings,
    principal: Principal,
    upload_id: str,
    offset: int,
    data: bytes,
    checksum: bytes | None = None,
    request_id: str | None = None,
) -> UploadStatus:
    """Write one chunk at `offset`; the chunk that reaches the declared size completes
    the upload, stored only if the whole blob has the declared SHA-256.

    Call it in a transaction of its own: when the completed blob does not verify, or
    the storage lost the upload's parts, the upload is discarded and that is committed
    before the refusal is raised.

    Args:
        session: The transaction; the upload's row is locked in it, so concurrent
            chunks at one offset take turns (the second sees the new offset).
        backend: Where the bytes go.
        settings: The chunk size limits.
        principal: The device uploading.
        upload_id: The upload.
        offset: Where this chunk starts; must be the server's offset.
        data: The chunk.
        checksum: The chunk's SHA-256 digest, if the device sent one.
        request_id: For the audit log.

    Raises:
        Unprocessable: ``checksum_mismatch`` (nothing written) or ``hash_mismatch``
            (the completed blob; discarded, nothing stored).
        NotFound: ``upload_not_found``.
        OffsetMismatch: ``offset_mismatch``: send from its `offset`.
        Invalid: ``beyond_declared_size``, ``empty_chunk``, ``chunk_too_small`` (under
            the backend's part minimum, not the last) or ``too_many_chunks``.
        Gone: ``upload_lost``: the storage lost the upload's data; start again.
        Unavailable: ``storage_unavailable``.
    """
    clinic_id = _clinic_of(principal)
    if checksum is not None and hashlib.sha256(data).digest() != checksum:
        raise Unprocessable(
            "the chunk does not match its Upload-Checksum; nothing was written",
            code="checksum_mismatch",
        )
    upload = session.scalars(
        select(Upload).where(Upload.id == upload_id).with_for_update()
    ).one_or_none()
    if upload is None or upload.clinic_id != clinic_id:
        raise _not_found(upload_id)
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
            return _pending(settings, backend, upload)
        backend.complete(
            upload.id, upload.backend_ref, etags, clinic_id, upload.sha256, upload.size
        )
    except IntegrityError as exc:
        log.warning("upload %s discarded: %s", upload.id, exc)
        _abort_quietly(backend, upload.id, upload.backend_ref)
        session.delete(upload)
        commit_then_raise(
            session,
            Unprocessable(
                f"the uploaded bytes do not have SHA-256 {upload.sha256} and size "
                f"{upload.size}; the upload was discarded and nothing was stored",
                code="hash_mismatch",
            ),
        )
    except UploadLostError as exc:
        log.warning("upload %s lost: %s", upload.id, exc)
        _abort_quietly(backend, upload.id, upload.backend_ref)
        session.delete(upload)
        commit_then_raise(
            session,
            Gone(
                f"the server no longer holds the data of upload {upload.id}; start again "
                "with POST /v1/blobs/uploads",
                code="upload_lost",
            ),
        )
    except BlobBackendError as exc:
        raise storage_unavailable(exc) from exc
    existing = session.get(Blob, (clinic_id, upload.sha256))
    if existing is not None and existing.missing_since is not None:
        log.info("blob %s of clinic %s uploaded again after it was lost", upload.sha256, clinic_id)
        existing.missing_since = None
        existing.missing_reason = None
        existing.size = upload.size
    elif existing is None:
        session.add(
            Blob(
                clinic_id=clinic_id,
                sha256=upload.sha256,
                size=upload.size,
                uploaded_by=principal.id,
            )
        )
    session.delete(upload)
    record_event(
        session=session,
        event=BlobUploaded(
            actor=Actor.of(principal),
            clinic_id=clinic_id,
            patient_ids=blob_patients(session=session, clinic_id=clinic_id, sha256=upload.sha256),
            purpose=purpose_of(principal),
            sha256=upload.sha256,
        ),
        request_id=request_id,
    )
    return _stored(settings, backend, upload.sha256, upload.size)


def purge_stale_uploads(
    *,
    database: Database,
    backend: BlobBackend,
    older_than: timedelta,
    now: datetime | None = None,
) -> int:
    """Discard uploads that received nothing for `older_than`, with their partial data.

    Meant to run periodically (any one worker); returns how many uploads went. A
    device whose upload was purged starts again on its next declaration.
    """
    cutoff = (now or utcnow()) - older_than
    with database.write() as session:
        stale = list(
            session.scalars(
                select(Upload).where(Upload.updated_at < cutoff).with_for_update(skip_locked=True)
            )
        )
        handles = [(upload.id, upload.backend_ref) for upload in stale]
        for upload in stale:
            session.delete(upload)
    for upload_id, handle in handles:
        try:
            backend.abort(upload_id, handle)
        except BlobBackendError as exc:
            log.warning("could not discard the data of stale upload %s: %s", upload_id, exc)
    if handles:
        log.info("discarded %d stale uploads", len(handles))
    return len(handles)
