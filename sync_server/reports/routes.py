"""Routes: a clinic's report for staff, as JSON or as a PDF.

Clinicians, staff and admins read reports of the clinics in their scope (their
organisation, and their clinic for a clinic-bound account); any other clinic answers
404 like a missing one. A report that lists wounds not on track is audited as a read
of those wounds (with their patients); its other figures are counts and sums that
read out no record, like ``/v1/staff/totals``, and are not audited.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response

from sync_server.db import Database
from sync_server.deps import DbDep, SettingsDep, StaffCaller
from sync_server.errors import Invalid
from sync_server.identity.principals import Principal
from sync_server.reports.access import staff_report
from sync_server.reports.figures import ClinicReport, month_period
from sync_server.reports.pdf import render_pdf
from sync_server.settings import Settings

__all__ = ["router"]

router = APIRouter(prefix="/v1/reports", tags=["reports"])

Start = Annotated[
    datetime | None, Query(description="The period's start (ISO 8601 with an offset).")
]
End = Annotated[datetime | None, Query(description="The period's end, exclusive.")]
Month = Annotated[
    str | None,
    Query(
        pattern=r"^\d{4}-\d{2}$",
        description="A calendar month (UTC), YYYY-MM, instead of start and end.",
    ),
]


def _report(
    db: Database,
    settings: Settings,
    caller: Principal,
    clinic_id: str,
    start: datetime | None,
    end: datetime | None,
    month: str | None,
) -> ClinicReport:
    if month is not None:
        if start is not None or end is not None:
            raise Invalid("give a month, or a start and an end", code="invalid_period")
        start, end = month_period(month)
    elif start is None or end is None:
        raise Invalid("give a month, or a start and an end", code="invalid_period")
    return staff_report(
        db=db, settings=settings, caller=caller, clinic_id=clinic_id, start=start, end=end
    )


@router.get("/clinics/{clinic_id}", response_model=ClinicReport, summary="A clinic's report")
def get_clinic_report(
    clinic_id: str,
    caller: StaffCaller,
    db: DbDep,
    settings: SettingsDep,
    start: Start = None,
    end: End = None,
    month: Month = None,
) -> ClinicReport:
    """A clinic's figures for a period (`month`, or `start` to `end`, at most 366
    days): wounds seen and healed, the area-reduction share and the wounds not on
    track, assessments per wound per month, appointments, visits, supplies and money
    (definitions: docs/reports.md). 400 ``invalid_period`` for a bad period; 404 for a
    clinic outside the caller's scope."""
    return _report(db, settings, caller, clinic_id, start, end, month)


@router.get(
    "/clinics/{clinic_id}/report.pdf",
    response_class=Response,
    summary="A clinic's report as PDF",
    responses={
        200: {
            "description": "The report, as a PDF document.",
            "content": {"application/pdf": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
def get_clinic_report_pdf(
    clinic_id: str,
    caller: StaffCaller,
    db: DbDep,
    settings: SettingsDep,
    start: Start = None,
    end: End = None,
    month: Month = None,
) -> Response:
    """The same report as `get_clinic_report`, rendered as a PDF with charts."""
    report = _report(db, settings, caller, clinic_id, start, end, month)
    return Response(
        content=render_pdf(report),
        media_type="application/pdf",
        headers={
            "content-disposition": f'attachment; filename="report-{clinic_id}.pdf"',
            "cache-control": "private, no-store",
        },
    )
