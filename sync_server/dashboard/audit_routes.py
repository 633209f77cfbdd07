"""Routes: the dashboard's audit pages.

- ``GET /dashboard/audit`` (staff and admins, like the API's audit log reads; 403
  ``audit_readers_only`` for clinicians): the log's newest signed checkpoint (signed now
  if the log grew since, as ``GET /v1/audit/checkpoint`` does); ``POST
  /dashboard/audit/verify`` verifies the log now with `sync_server.audit.verify.verify_log`,
  the check ``coherency audit verify`` runs.
- ``GET /dashboard/patients/{id}/disclosures?page=`` : a patient's accounting of
  disclosures (`sync_server.audit.disclosures.disclosures`, the service of ``GET
  /v1/audit/disclosures``: staff and admins of the patient's clinic), 50 events a page,
  audited like the API as a read of the audit (``AuditSearched``).
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from sync_server.audit.disclosures import disclosures, record_audit_read, require_audit_reader
from sync_server.audit.log import current_checkpoint
from sync_server.audit.verify import verify_log
from sync_server.dashboard.web import CsrfChecked, PageDep, render
from sync_server.db import Database
from sync_server.deps import ArtifactKeyDep, DbDep
from sync_server.models.signing import ArtifactKey

__all__ = ["PAGE_SIZE", "router"]

router = APIRouter()

PAGE_SIZE = 50
"""Disclosures shown per page."""
_MOST = 10_000  # the API's default limit: pages go no further


def _checkpoint(db: Database, key: ArtifactKey) -> dict[str, Any]:
    """The audit page's checkpoint part: the newest signed checkpoint (signed now if the
    log grew since) and the key that signs it."""
    with db.write() as session:
        checkpoint = current_checkpoint(session=session, signer=key)
    return {
        "nav": "audit",
        "checkpoint": checkpoint,
        "key_id": key.public_key_bytes[:8].hex(),
        "public_key": key.public_key_bytes.hex(),
    }


@router.get("/audit", response_class=HTMLResponse)
def audit_page(request: Request, page_: PageDep, db: DbDep, key: ArtifactKeyDep) -> HTMLResponse:
    """The newest signed checkpoint, and a button that verifies the log (reading the
    whole log takes seconds on a big one, so it runs when asked, not on every view)."""
    require_audit_reader(page_.caller)
    return render(request, "audit.html", _checkpoint(db, key) | {"report": None}, page=page_)


@router.post("/audit/verify", response_class=HTMLResponse)
def verify_page(
    request: Request, page_: CsrfChecked, db: DbDep, key: ArtifactKeyDep
) -> HTMLResponse:
    """Verify the whole log now (`verify_log`, the check ``coherency audit verify``
    runs): the result alone for htmx, else the audit page with it."""
    require_audit_reader(page_.caller)
    started = time.perf_counter()
    with db.read() as session:
        report = verify_log(session=session, public_key=key.public_key_bytes)
    context = {"report": report, "seconds": time.perf_counter() - started}
    if request.headers.get("hx-request"):
        return render(request, "audit_verification.html", context, page=page_)
    return render(request, "audit.html", _checkpoint(db, key) | context, page=page_)


@router.get("/patients/{patient_id}/disclosures", response_class=HTMLResponse)
def disclosures_page(
    request: Request,
    patient_id: str,
    page_: PageDep,
    db: DbDep,
    number: Annotated[int, Query(alias="page", ge=1, le=_MOST // PAGE_SIZE)] = 1,
) -> HTMLResponse:
    """Who read or changed the patient's records, when and for what purpose, oldest
    first, one page."""
    end = number * PAGE_SIZE
    with db.read() as session:
        patient, entries = disclosures(
            session=session,
            principal=page_.caller,
            patient_id=patient_id[:64],
            limit=min(end + 1, _MOST),
        )
    shown = entries[end - PAGE_SIZE : end]
    with db.write() as session:
        record_audit_read(
            session=session,
            principal=page_.caller,
            scope="disclosures",
            clinic_id=patient.clinic_id,
            filters={"patient_id": patient.id},
            rows=len(shown),
        )
    return render(
        request,
        "disclosures.html",
        {
            "nav": "patients",
            "patient_id": patient.id,
            "entries": shown,
            "number": number,
            "first": end - PAGE_SIZE + 1,
            "more": len(entries) > end,
        },
        page=page_,
    )
