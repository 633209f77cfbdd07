"""The upload state machine (service): declare, send chunks, complete, abandon, purge."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import select

from sync_server.blobs.backends import BlobBackend, BlobBackendError
from sync_server.blobs.tables import Upload
from sync_server.db import Database, utcnow

__all__ = ["purge_stale_uploads"]

log = logging.getLogger("sync_server.blobs")


def purge_stale_uploads(
    db: Database,
    backend: BlobBackend,
    *,
    older_than: timedelta,
    now: datetime | None = None,
) -> int:
    """Discard uploads that received nothing for `older_than`, with their partial data.

    Meant to run periodically (any one worker); returns how many uploads went. A
    device whose upload was purged starts again on its next `POST /v1/blobs/uploads`.
    """
    cutoff = (now or utcnow()) - older_than
    with db.write() as session:
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
