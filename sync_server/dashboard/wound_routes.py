"""Routes: the dashboard's wound page: the wound's timeline of assessments, its healing
curve with the area reduction at `Settings.dashboard_healing_weeks` (flagged when not
on track), and its tissue composition over time (`sync_server.dashboard.healing`).

Scoped and audited like ``GET /v1/wounds/{id}/assessments``: another clinic's wound is
a 404 (audited as a refused read); a page shown is audited as a read of the wound and
of the assessments on it, for the purpose the API would use (``break-glass`` under a
grant).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from sync_server.dashboard.healing import wound_view
from sync_server.dashboard.web import PageDep, render
from sync_server.deps import DbDep, RequestIdDep, SettingsDep
from sync_server.sync.records import record_read, visible_record
from sync_server.sync.tables import WoundRow

__all__ = ["router"]

router = APIRouter()


@router.get("/wounds/{wound_id}", response_class=HTMLResponse)
def wound_page(
    request: Request,
    wound_id: str,
    page_: PageDep,
    db: DbDep,
    settings: SettingsDep,
    request_id: RequestIdDep,
) -> HTMLResponse:
    """A wound: its details, the timeline of its assessments, the healing curve with
    the area reduction at the configured week, and the tissue composition over time."""
    wound, purpose = visible_record(
        database=db,
        principal=page_.caller,
        table=WoundRow,
        record_id=wound_id[:64],
        collection="wounds",
        request_id=request_id,
    )
    with db.read() as session:
        view = wound_view(session=session, wound=wound, settings=settings)
    with db.write() as session:
        for collection, ids in (
            ("wounds", (wound.id,)),
            ("assessments", tuple(a.id for a in view.assessments)),
        ):
            record_read(
                session=session,
                principal=page_.caller,
                clinic_id=wound.clinic_id,
                collection=collection,
                record_ids=ids,
                patient_ids=(wound.patient_id,),
                purpose=purpose,
                request_id=request_id,
            )
    return render(
        request,
        "wound.html",
        {"nav": "patients", "view": view, "break_glass": purpose == "break-glass"},
        page=page_,
    )
