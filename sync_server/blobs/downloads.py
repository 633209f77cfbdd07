"""Blob downloads: which stored blob a caller may read, and the audit of each read.

Devices and staff read their own clinic's blobs; an organisation-wide account names
the clinic. Another clinic's blob is answered exactly like one that does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from sync_server.audit.events import Actor, BlobDownloaded, purpose_of
from sync_server.audit.services import record_event
from sync_server.blobs.backends import BlobBackend
from sync_server.blobs.missing import blob_missing, mark_missing, storage_problem
from sync_server.blobs.tables import Blob
from sync_server.db import Database
from sync_server.errors import Invalid, NotFound
from sync_server.identity.principals import Principal
from sync_server.identity.tables import Clinic
from sync_server.sync.records import blob_patients

__all__ = ["StoredBlob", "locate_blob", "record_download"]


@dataclass(frozen=True, slots=True)
class StoredBlob:
    """A blob the caller may read: whose it is, and its size."""

    clinic_id: str
    sha256: str
    size: int


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


def locate_blob(
    *,
    database: Database,
    backend: BlobBackend,
    principal: Principal,
    sha256: str,
    clinic_id: str | None = None,
) -> StoredBlob:
    """The stored blob `sha256` the caller may read, checked against the storage.

    A blob the storage no longer holds at its size is marked missing (committed)
    before the refusal, so devices that hold it learn to upload it again.

    Args:
        database: The server's database (read, and written when the blob is lost).
        backend: The blob storage.
        principal: Who reads.
        sha256: The blob.
        clinic_id: The clinic, for organisation-wide accounts only.

    Raises:
        Invalid: ``clinic_required``: an organisation-wide account named no clinic.
        NotFound: ``blob_not_found``.
        Gone: ``blob_missing``: recorded, but the storage lost it (or holds other
            bytes); a device that holds it uploads it again.
        Unavailable: ``storage_unavailable``.
    """
    with database.read() as session:
        clinic = _reading_clinic(session, principal, clinic_id)
        blob = session.get(Blob, (clinic, sha256))
        if blob is None:
            raise NotFound("no such blob", code="blob_not_found")
        if blob.missing_since is not None:
            raise blob_missing(sha256)
        problem = storage_problem(backend, blob, hashed=False)
        size = blob.size
    if problem is not None:
        with database.write() as session:
            # Looked at again under the row's lock: a re-upload may have put the blob
            # back since (its completion holds the same lock).
            row = session.get(Blob, (clinic, sha256), with_for_update=True)
            if row is not None and row.missing_since is None:
                problem = storage_problem(backend, row, hashed=False)
                if problem is not None:
                    mark_missing(session=session, clinic_id=clinic, sha256=sha256, reason=problem)
        if problem is not None or row is None or row.missing_since is not None:
            raise blob_missing(sha256)
    return StoredBlob(clinic, sha256, size)


def record_download(
    *, session: Session, principal: Principal, blob: StoredBlob, request_id: str | None
) -> None:
    """Audit a download of `blob` (or of a range of it)."""
    record_event(
        session=session,
        event=BlobDownloaded(
            actor=Actor.of(principal),
            clinic_id=blob.clinic_id,
            patient_ids=blob_patients(
                session=session, clinic_id=blob.clinic_id, sha256=blob.sha256
            ),
            purpose=purpose_of(principal),
            sha256=blob.sha256,
        ),
        request_id=request_id,
    )
