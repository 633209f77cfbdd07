"""Routes: the dashboard's patients: search by name or MRN, and a patient's page (their
wounds, notes and the records still conflicted on devices).

The search text is POSTed, never put in a URL (it may hold a name), and is not audited;
the patients it found are, like ``GET /v1/patients``. A patient's page is audited like
``GET /v1/patients/{id}`` plus the reads of their wounds and notes, with the purpose the
API would use (``break-glass`` under a grant).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse

from sync_server.dashboard.patients import patient_view
from sync_server.dashboard.web import CsrfChecked, PageDep, render
from sync_server.deps import DbDep, RequestIdDep
from sync_server.sync.listing import notes_page
from sync_server.sync.records import page, record_read, search_patients, visible_record
from sync_server.sync.tables import PatientRow

__all__ = ["router"]

router = APIRouter()

_RESULTS = 50


@router.get("/patients", response_class=HTMLResponse)
def patients_page(request: Request, page_: PageDep) -> HTMLResponse:
    """The patients search form."""
    return render(request, "patients.html", {"nav": "patients", "results": None}, page=page_)


@router.post("/patients/search", response_class=HTMLResponse)
def search(
    request: Request,
    page_: CsrfChecked,
    db: DbDep,
    request_id: RequestIdDep,
    q: Annotated[str, Form(max_length=200)] = "",
) -> HTMLResponse:
    """Patients whose names start with the words of `q`, or whose MRN is `q` (the
    results alone for htmx, else the whole page)."""
    with db.read() as session:
        query = search_patients(
            session=session,
            principal=page_.caller,
            q=q,
            clinic_id=None,
            include_deleted=False,
        )
        results = page(session=session, query=query, limit=_RESULTS + 1, offset=0)
    shown = results[:_RESULTS]
    with db.write() as session:
        record_read(
            session=session,
            principal=page_.caller,
            clinic_id=page_.caller.clinic_id,
            collection="patients",
            record_ids=tuple(row.id for row in shown),
            patient_ids=tuple(row.id for row in shown),
            request_id=request_id,
        )
    context = {
        "nav": "patients",
        "q": q,
        "results": shown,
        "more": len(results) > _RESULTS,
    }
    template = "patient_results.html" if request.headers.get("hx-request") else "patients.html"
    return render(request, template, context, page=page_)


@router.get("/patients/{patient_id}", response_class=HTMLResponse)
def patient_page(
    request: Request, patient_id: str, page_: PageDep, db: DbDep, request_id: RequestIdDep
) -> HTMLResponse:
    """A patient: details, wounds (with their latest figures), notes, and records
    still conflicted on devices."""
    patient, purpose = visible_record(
        database=db,
        principal=page_.caller,
        table=PatientRow,
        record_id=patient_id[:64],
        collection="patients",
        request_id=request_id,
    )
    with db.read() as session:
        view = patient_view(session=session, patient=patient)
    notes, more_notes = notes_page(
        db.read,
        clinic_id=patient.clinic_id,
        patient_id=patient.id,
        wound_id=None,
        include_deleted=False,
        limit=50,
    )
    with db.write() as session:
        for collection, ids in (
            ("patients", (patient.id,)),
            ("wounds", tuple(w.id for w in view.wounds)),
            ("notes", tuple(n.id for n in notes)),
        ):
            record_read(
                session=session,
                principal=page_.caller,
                clinic_id=patient.clinic_id,
                collection=collection,
                record_ids=ids,
                patient_ids=(patient.id,),
                purpose=purpose,
                request_id=request_id,
            )
    return render(
        request,
        "patient.html",
        {
            "nav": "patients",
            "view": view,
            "notes": notes,
            "more_notes": more_notes is not None,
            "break_glass": purpose == "break-glass",
        },
        page=page_,
    )
