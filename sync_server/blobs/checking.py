"""``coherency server blobs check``: every recorded blob against the storage.

Walks the `Blob` rows a page at a time (keyset order, never all in memory), asks the
storage for each blob's size and, unless told not to, streams its bytes through
SHA-256. A blob that is absent, of another size or of another hash is marked missing
(`sync_server.blobs.missing`), so devices that hold it upload it again; one marked
missing that the storage holds intact again (restored from a backup) is cleared.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from sync_server.blobs.backends import BlobBackend, BlobBackendError, make_blob_backend
from sync_server.blobs.missing import mark_missing, storage_problem
from sync_server.blobs.tables import Blob
from sync_server.db import Database, open_database
from sync_server.errors import NotFound, Unavailable
from sync_server.identity.tables import Clinic
from sync_server.migrating import require_schema
from sync_server.settings import Settings
from sync_server.sync.records import blob_assessments

__all__ = ["BlobCheckReport", "BlobProblem", "check_blob_storage", "check_blobs"]

_PAGE = 200


@dataclass(frozen=True, slots=True)
class BlobProblem:
    """A recorded blob the storage does not hold as recorded.

    Attributes:
        reason: ``absent``, ``size_mismatch`` or ``hash_mismatch``.
        newly_marked: Marked missing by this check (False: already marked).
        assessments: Ids of the clinic's assessments that refer to the blob.
    """

    clinic_id: str
    sha256: str
    size: int
    reason: str
    newly_marked: bool
    assessments: tuple[str, ...]


@dataclass(slots=True)
class BlobCheckReport:
    """What `check_blobs` found: `ok` when the storage holds every recorded blob."""

    checked: int = 0
    hashed: bool = True
    problems: list[BlobProblem] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)  # were missing, found intact again

    @property
    def ok(self) -> bool:
        """True when no blob is missing or damaged."""
        return not self.problems


def check_blobs(
    *,
    database: Database,
    backend: BlobBackend,
    clinic_id: str | None = None,
    hashed: bool = True,
) -> BlobCheckReport:
    """Check every recorded blob (of one clinic, or of all) against the storage, and
    mark the ones it lost missing.

    Storage is read outside any transaction; each page's marks are written in one
    short transaction.

    Raises:
        NotFound: ``clinic_not_found``: no such clinic.
        Unavailable: ``storage_unavailable``: the storage cannot be read.
    """
    report = BlobCheckReport(hashed=hashed)
    if clinic_id is not None:
        with database.read() as session:
            if session.get(Clinic, clinic_id) is None:
                raise NotFound(f"no clinic {clinic_id}", code="clinic_not_found")
    position: tuple[str, str] | None = None
    while True:
        query = select(Blob).order_by(Blob.clinic_id, Blob.sha256).limit(_PAGE)
        if clinic_id is not None:
            query = query.where(Blob.clinic_id == clinic_id)
        if position is not None:
            query = query.where(tuple_(Blob.clinic_id, Blob.sha256) > position)
        with database.read() as session:
            page = list(session.scalars(query))
            session.expunge_all()
        if not page:
            return report
        position = (page[-1].clinic_id, page[-1].sha256)
        found = [(blob, storage_problem(backend, blob, hashed=hashed)) for blob in page]
        report.checked += len(page)
        with database.write() as session:
            for blob, problem in found:
                if problem is None:
                    if blob.missing_since is not None and _clear(session, blob):
                        report.restored.append(blob.sha256)
                    continue
                newly = mark_missing(
                    session=session, clinic_id=blob.clinic_id, sha256=blob.sha256, reason=problem
                )
                report.problems.append(
                    BlobProblem(
                        clinic_id=blob.clinic_id,
                        sha256=blob.sha256,
                        size=blob.size,
                        reason=problem,
                        newly_marked=newly,
                        assessments=blob_assessments(
                            session=session, clinic_id=blob.clinic_id, sha256=blob.sha256
                        ),
                    )
                )


def _clear(session: Session, blob: Blob) -> bool:
    """Clear the missing mark of a blob found intact again; whether it was still set."""
    row = session.get(Blob, (blob.clinic_id, blob.sha256), with_for_update=True)
    if row is None or row.missing_since is None:
        return False
    row.missing_since = None
    row.missing_reason = None
    return True


def check_blob_storage(
    settings: Settings, *, clinic_id: str | None = None, hashed: bool = True
) -> BlobCheckReport:
    """`check_blobs` on the settings' database and blob storage (what ``coherency
    server blobs check`` does).

    Raises:
        NotFound: No database, or no such clinic.
        Conflict: The database is not migrated.
        Unavailable: The database or the storage cannot be used.
    """
    with open_database(settings, must_exist=True) as database:
        require_schema(database)  # before the storage: a wrong folder creates nothing
        try:
            backend = make_blob_backend(settings)
        except (BlobBackendError, ValueError) as exc:
            raise Unavailable(
                f"blob storage is unavailable: {exc}", code="storage_unavailable"
            ) from exc
        return check_blobs(database=database, backend=backend, clinic_id=clinic_id, hashed=hashed)
