"""Blobs the storage lost: recorded in the database, gone (or damaged) in the storage.

A `Blob` row says the clinic holds a blob; the storage may disagree (a wiped bucket, a
deleted file, a disk returning other bytes). Whoever finds out (a download, a
``coherency server blobs check``) marks the row missing (`mark_missing`), with the
reason:

    absent          the storage has nothing at the blob's key
    size_mismatch   it has another number of bytes
    hash_mismatch   it has the right number of bytes, with another SHA-256

A missing blob is answered ``410 blob_missing`` to downloads; devices learn which of
their clinic's blobs are missing (`list_missing`, ``GET /v1/blobs/missing``) and one
that holds the blob uploads it again, which clears the mark (`sync_server.blobs.uploads`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from sync_server.blobs.backends import (
    BlobBackend,
    BlobBackendError,
    BlobMissingError,
    storage_unavailable,
)
from sync_server.blobs.tables import Blob
from sync_server.db import Database, utcnow
from sync_server.errors import Gone, Invalid
from sync_server.identity.principals import Principal

__all__ = [
    "CorruptBlobStream",
    "MissingPage",
    "MissingReason",
    "blob_missing",
    "list_missing",
    "mark_missing",
    "storage_problem",
    "verify_stream",
]

log = logging.getLogger("sync_server.blobs")

MissingReason = Literal["absent", "size_mismatch", "hash_mismatch"]


def blob_missing(sha256: str) -> Gone:
    """The refusal of a blob the clinic holds on record but the storage lost."""
    return Gone(
        f"blob {sha256} is recorded but the server's storage lost it; a device that "
        "holds it uploads it again at its next sync (POST /v1/blobs/uploads)",
        code="blob_missing",
    )


def mark_missing(*, session: Session, clinic_id: str, sha256: str, reason: MissingReason) -> bool:
    """Record that the storage lost the clinic's blob; returns whether it was newly
    marked (False: unknown blob, or already marked)."""
    blob = session.scalars(
        select(Blob).where(Blob.clinic_id == clinic_id, Blob.sha256 == sha256).with_for_update()
    ).one_or_none()
    if blob is None or blob.missing_since is not None:
        return False
    blob.missing_since = utcnow()
    blob.missing_reason = reason
    log.error("blob %s of clinic %s is missing from storage (%s)", sha256, clinic_id, reason)
    return True


def storage_problem(backend: BlobBackend, blob: Blob, *, hashed: bool) -> MissingReason | None:
    """What is wrong with the stored bytes of `blob`, or None when they are right.

    With `hashed`, the bytes are read (streamed, one chunk in memory) and hashed;
    otherwise only their size is checked.

    Raises:
        Unavailable: ``storage_unavailable``: the storage cannot be read.
    """
    try:
        size = backend.size(blob.clinic_id, blob.sha256)
        if size != blob.size:
            return "size_mismatch"
        if hashed:
            digest = hashlib.sha256()
            for chunk in backend.open(blob.clinic_id, blob.sha256):
                digest.update(chunk)
            if digest.hexdigest() != blob.sha256:
                return "hash_mismatch"
    except BlobMissingError:
        return "absent"
    except BlobBackendError as exc:
        raise storage_unavailable(exc) from exc
    return None


def verify_stream(
    chunks: Iterable[bytes],
    *,
    database: Database,
    clinic_id: str,
    sha256: str,
) -> Iterator[bytes]:
    """Pass a whole blob's bytes through, holding the last chunk back until the bytes
    have proved to have `sha256`.

    When they do not, the blob is marked missing (``hash_mismatch``) and the stream
    breaks off before its end: the client never receives a complete body it might
    trust, and asking again is answered ``410 blob_missing``.
    """
    digest = hashlib.sha256()
    held: bytes | None = None
    for chunk in chunks:
        digest.update(chunk)
        if held is not None:
            yield held
        held = chunk
    if digest.hexdigest() != sha256:
        with database.write() as session:
            mark_missing(
                session=session, clinic_id=clinic_id, sha256=sha256, reason="hash_mismatch"
            )
        raise CorruptBlobStream(f"stored blob {sha256} of clinic {clinic_id} has another SHA-256")
    if held is not None:
        yield held


class CorruptBlobStream(Exception):
    """Breaks off a download whose stored bytes turned out not to be the blob."""


@dataclass(frozen=True, slots=True)
class MissingPage:
    """One page of a clinic's missing blobs, in SHA-256 order."""

    sha256: list[str] = field(default_factory=list)
    next_after: str | None = None  # pass as `after` for the next page; None at the end


def list_missing(
    *, session: Session, principal: Principal, after: str | None, limit: int
) -> MissingPage:
    """The caller's clinic's blobs the storage lost, `limit` at a time after `after`.

    Raises:
        Invalid: ``no_clinic``: the caller belongs to no clinic.
    """
    if principal.clinic_id is None:
        raise Invalid("this caller belongs to no clinic", code="no_clinic")
    query = (
        select(Blob.sha256)
        .where(Blob.clinic_id == principal.clinic_id, Blob.missing_since.is_not(None))
        .order_by(Blob.sha256)
        .limit(limit + 1)
    )
    if after is not None:
        query = query.where(Blob.sha256 > after)
    found = list(session.scalars(query))
    more = len(found) > limit
    found = found[:limit]
    return MissingPage(sha256=found, next_after=found[-1] if more else None)
