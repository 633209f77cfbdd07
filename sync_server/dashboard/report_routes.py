"""Routes: the dashboard's reports page and its PDF.

``GET /dashboard/reports`` shows a picker of the clinics in the caller's scope and a
month (a GET form: only the clinic id and the month go in the URL, never patient
data); given both, it shows that clinic's report for the month: the figures as
tables, bar charts as inline SVG (each with a title, a description and the same data
as a table), the wounds not on track linking to their wound pages, and a link to
``GET /dashboard/reports/{clinic_id}/{month}.pdf``, the same PDF as
``GET /v1/reports/clinics/{id}/report.pdf`` for a signed-in browser.

Both read through `sync_server.reports.access.staff_report`, as the API routes do:
the same scope (a clinic outside it is the dashboard's Not found page) and the same
audit (a read of the wounds not on track, with their patients).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse

from sync_server.dashboard.report_charts import report_charts
from sync_server.dashboard.web import PageDep, render
from sync_server.db import utcnow
from sync_server.deps import DbDep, SettingsDep
from sync_server.identity.tenancy import list_clinics
from sync_server.reports.access import staff_report
from sync_server.reports.figures import month_period
from sync_server.reports.pdf import render_pdf

__all__ = ["router"]

router = APIRouter()

_MONTH = r"^\d{4}-\d{2}$"
_ID = r"^[A-Za-z0-9-]{1,64}$"


@router.get("/reports", response_class=HTMLResponse)
def reports_page(
    request: Request,
    page_: PageDep,
    db: DbDep,
    settings: SettingsDep,
    clinic_id: Annotated[str | None, Query(pattern=_ID)] = None,
    month: Annotated[str | None, Query(pattern=_MONTH)] = None,
) -> HTMLResponse:
    """The clinic and month picker and, given both, the clinic's report for the month
    (404 for a clinic outside the caller's scope, 400 for a bad month)."""
    with db.read() as session:
        clinics = [(c.id, c.name) for c in list_clinics(session=session, principal=page_.caller)]
    chosen_month = month or f"{utcnow():%Y-%m}"
    report = None
    if clinic_id is not None:
        start, end = month_period(chosen_month)
        report = staff_report(
            db=db,
            settings=settings,
            caller=page_.caller,
            clinic_id=clinic_id,
            start=start,
            end=end,
        )
    return render(
        request,
        "reports.html",
        {
            "nav": "reports",
            "clinics": clinics,
            "clinic_id": clinic_id,
            "month": chosen_month,
            "report": report,
            "charts": report_charts(report) if report is not None else (),
        },
        page=page_,
    )


@router.get("/reports/{clinic_id}/{month}.pdf", response_class=Response)
def report_pdf(
    clinic_id: str,
    month: str,
    page_: PageDep,
    db: DbDep,
    settings: SettingsDep,
) -> Response:
    """The clinic's report for the month as a PDF (404 outside the caller's scope,
    400 for a bad month)."""
    start, end = month_period(month[:20])
    report = staff_report(
        db=db,
        settings=settings,
        caller=page_.caller,
        clinic_id=clinic_id[:64],
        start=start,
        end=end,
    )
    return Response(
        content=render_pdf(report),
        media_type="application/pdf",
        headers={
            "content-disposition": (
                f'attachment; filename="report-{report.clinic_id}-{start:%Y-%m}.pdf"'
            )
        },
    )
