"""A clinic's report as staff read it: the caller's scope checked, the figures
computed with the server's healing settings, and the read audited.

The API routes (`sync_server.reports.routes`) and the dashboard's reports page both
read reports through `staff_report`, so both keep to the same scope and audit: a
clinic outside the caller's scope is a `NotFound` like a missing one; a report that
lists wounds not on track is audited as a read of those wounds (with their patients);
its other figures are counts and sums that read out no record and are not audited.
"""

from __future__ import annotations

from datetime import datetime

from sync_server.audit.services import record_read
from sync_server.bookings.directory import clinic_in_scope
from sync_server.db import Database
from sync_server.identity.principals import Principal
from sync_server.reports.figures import ClinicReport, clinic_report
from sync_server.settings import Settings

__all__ = ["staff_report"]


def staff_report(
    *,
    db: Database,
    settings: Settings,
    caller: Principal,
    clinic_id: str,
    start: datetime,
    end: datetime,
) -> ClinicReport:
    """The report of `clinic_id` for [start, end), read as `caller`, audited.

    Raises:
        NotFound: The clinic is missing or outside the caller's scope.
        Invalid: ``invalid_period``: a bad period (see `clinic_report`).
    """
    with db.read() as session:
        clinic_in_scope(session=session, principal=caller, clinic_id=clinic_id)
        report = clinic_report(
            session=session,
            clinic_id=clinic_id,
            start=start,
            end=end,
            weeks=settings.dashboard_healing_weeks,
            threshold_percent=settings.dashboard_healing_threshold_percent,
        )
    if not report.healing.not_on_track:
        return report  # figures only: no record is read out
    with db.write() as session:
        record_read(
            session=session,
            caller=caller,
            collection="wounds",
            records=[(w.wound_id, w.patient_id) for w in report.healing.not_on_track],
            clinic_id=clinic_id,
        )
    return report
