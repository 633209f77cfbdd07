"""The operator's report (``coherency server report``): a clinic's month read straight
from the database, optionally as a PDF and with its tables as Parquet.

Like the other operator commands it opens the settings' database, checks its schema
is the newest, and closes the database again; the Parquet export is audited with the
system as the actor.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from sync_server.audit.events import OPERATIONS, Actor
from sync_server.db import open_database
from sync_server.errors import Invalid, NotFound
from sync_server.identity.tables import Clinic
from sync_server.migrating import require_schema
from sync_server.reports.exports import ParquetExport, export_parquet
from sync_server.reports.figures import ClinicReport, clinic_report, month_period
from sync_server.reports.pdf import render_pdf
from sync_server.settings import Settings

__all__ = ["MonthlyReport", "monthly_report"]


@dataclass(frozen=True, slots=True)
class MonthlyReport:
    """What `monthly_report` made: the figures, the PDF written (if asked) and the
    Parquet export (if asked)."""

    report: ClinicReport
    pdf: Path | None
    parquet: ParquetExport | None


def monthly_report(
    settings: Settings,
    *,
    clinic: str,
    month: str,
    pdf: Path | None = None,
    parquet: Path | None = None,
    identified: bool = False,
) -> MonthlyReport:
    """Clinic `clinic`'s (its id, or a name naming one clinic) figures for calendar
    month `month` (``YYYY-MM``, UTC); with `pdf`, the report written there as PDF;
    with `parquet`, the clinic's tables exported into that folder (names of patients
    only when `identified`; MRNs never).

    Raises:
        Invalid: ``invalid_month``; ``ambiguous`` (several clinics of that name);
            ``invalid_folder``.
        NotFound: ``clinic_not_found``; or no database.
        Conflict: The database is not migrated.
        Unavailable: The database cannot be used.
    """
    start, end = month_period(month)
    with open_database(settings, must_exist=True) as database:
        require_schema(database)
        with database.read() as session:
            found = session.get(Clinic, clinic)
            named = session.scalars(select(Clinic).where(Clinic.name == clinic)).all()
            if found is None and len(named) > 1:
                raise Invalid(f"{len(named)} clinics are named {clinic!r}", code="ambiguous")
            found = found or (named[0] if named else None)
            if found is None:
                raise NotFound(f"no clinic {clinic!r}", code="clinic_not_found")
            report = clinic_report(
                session=session,
                clinic_id=found.id,
                start=start,
                end=end,
                weeks=settings.dashboard_healing_weeks,
                threshold_percent=settings.dashboard_healing_threshold_percent,
            )
        if pdf is not None:
            pdf.write_bytes(render_pdf(report))
        exported = None
        if parquet is not None:
            exported = export_parquet(
                database,
                clinic_id=found.id,
                folder=parquet,
                actor=Actor("system"),
                purpose=OPERATIONS,
                identified=identified,
            )
    return MonthlyReport(report=report, pdf=pdf, parquet=exported)
