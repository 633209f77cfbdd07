"""Benchmark: a clinic's report (`sync_server.reports.figures.clinic_report`) on
PostgreSQL, for a clinic of `wounds_for(scale)` wounds (10,000 at the default scale)
with ten assessments each (100,000), spread over a year at irregular times, and a
month of appointments, visits, orders and invoices beside them.

The synthetic rows are bulk-inserted straight into the projection and domain tables
of a freshly migrated database (the report reads those tables; how they were written
does not matter to it). The report covers the year's last month, so every wound's
history up to then is read for the area-reduction rule.

- ``reports.clinic_report_ms``: one report (every figure), ms.
- ``reports.pdf_ms``: rendering that report as PDF, ms.

Without PostgreSQL the figures are reported missing, with the reason.
"""

from __future__ import annotations

import random
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks._bench_sync import MissingFigure, _database
from benchmarks._common import progress
from benchmarks._harness import Figure, scratch_dir

__all__ = ["NAMES", "run", "wounds_for"]

NAMES = ("reports.clinic_report_ms", "reports.pdf_ms")
ASSESSMENTS_PER_WOUND = 10
YEAR_START = datetime(2025, 1, 1, tzinfo=UTC)


def wounds_for(scale: int) -> int:
    """Wounds in the clinic: the scale itself, between 100 and 10,000."""
    return max(100, min(10_000, scale))


def run(*, scale: int, repeat: int, root: Path) -> list[Figure | MissingFigure]:
    """Measure the report figures on PostgreSQL (missing without it)."""
    with _database("postgresql", root) as (database_url, label, unavailable):
        if unavailable is not None:
            progress(f"reports: not measured: {unavailable}")
            return [MissingFigure("reports", name, unavailable) for name in NAMES]
        assert database_url is not None
        return _measure(database_url, label, wounds_for(scale), repeat, root)


def _id() -> str:
    return str(uuid.uuid4())


def _chunks(rows: list[dict[str, Any]], size: int = 5_000) -> Any:
    for at in range(0, len(rows), size):
        yield rows[at : at + size]


def _seed(db: Any, wounds: int) -> str:
    from sqlalchemy import insert

    from crdt import sortable_time
    from sync_server.bookings.tables import Booking, Provider, WeeklyHours
    from sync_server.identity.tables import Clinic, Organisation
    from sync_server.payments.tables import Invoice
    from sync_server.sync.tables import AssessmentRow, PatientRow, WoundRow

    rng = random.Random(7)
    organisation, clinic = _id(), _id()
    patients = [_id() for _ in range(max(10, wounds // 5))]
    stamp = "2025-01-01T00:00:00.000000Z"
    with db.write() as session:
        session.add(Organisation(id=organisation, name="reports-bench"))
        session.flush()
        session.add(Clinic(id=clinic, organisation_id=organisation, name="Bench", feed_seq=0))
        session.flush()
        for chunk in _chunks(
            [
                dict(id=p, clinic_id=clinic, deleted=False, conflicted=False, updated_at=stamp,
                     record="{}", given_name="G", family_name="F", birth_date="1950-01-01",
                     sex="female", mrn=None)
                for p in patients
            ]
        ):  # fmt: skip
            session.execute(insert(PatientRow), chunk)
        wound_rows, assessment_rows = [], []
        for _ in range(wounds):
            wound, patient = _id(), rng.choice(patients)
            wound_rows.append(
                dict(id=wound, clinic_id=clinic, deleted=False, conflicted=False,
                     updated_at=stamp, record="{}", patient_id=patient, body_site="heel",
                     etiology="venous", status=rng.choice(["healed", "active", "active"]),
                     onset=None)
            )  # fmt: skip
            at = YEAR_START + timedelta(days=rng.uniform(0, 330))
            area = rng.uniform(2, 30)
            for _ in range(ASSESSMENTS_PER_WOUND):
                at += timedelta(days=rng.uniform(1, 9), minutes=rng.randrange(600))
                area *= rng.uniform(0.7, 1.05)
                assessment_rows.append(
                    dict(id=_id(), clinic_id=clinic, deleted=False, conflicted=False,
                         updated_at=stamp, record="{}", wound_id=wound, patient_id=patient,
                         captured_at=sortable_time(at), device_id="bench", clinician="RN",
                         area_cm2=round(area, 3), perimeter_cm=None, length_cm=None,
                         width_cm=None, max_depth_mm=None, mean_depth_mm=None,
                         volume_cm3=None, model_id=None)
                )  # fmt: skip
        for chunk in _chunks(wound_rows):
            session.execute(insert(WoundRow), chunk)
        for chunk in _chunks(assessment_rows):
            session.execute(insert(AssessmentRow), chunk)
        providers = [_id() for _ in range(5)]
        session.execute(
            insert(Provider),
            [dict(id=p, organisation_id=organisation, clinic_id=clinic, name=f"RN {n}",
                  kind="nurse") for n, p in enumerate(providers)],
        )  # fmt: skip
        session.execute(
            insert(WeeklyHours),
            [dict(id=_id(), provider_id=p, weekday=d, start_time="08:00", end_time="16:00",
                  timezone="Europe/Oslo") for p in providers for d in range(5)],
        )  # fmt: skip
        month = datetime(2025, 12, 1, 8, tzinfo=UTC)
        bookings = []
        for n, provider in enumerate(providers):
            for slot in range(300):
                starts = month + timedelta(days=slot // 10, minutes=30 * (slot % 10))
                bookings.append(
                    dict(id=_id(), organisation_id=organisation, clinic_id=clinic,
                         kind="appointment" if n else "visit", provider_id=provider,
                         patient_id=rng.choice(patients), service="review", starts_at=starts,
                         ends_at=starts + timedelta(minutes=30), intent_id=_id(),
                         state=rng.choice(["completed", "no_show", "cancelled", "booked"]),
                         late_cancellation=rng.random() < 0.2,
                         rating=rng.choice([None, 3, 4, 5]) if not n else None)
                )  # fmt: skip
        session.execute(insert(Booking), bookings)
        session.execute(
            insert(Invoice),
            [dict(id=_id(), organisation_id=organisation, clinic_id=clinic,
                  patient_id=rng.choice(patients), number=f"B-{n}", status="open",
                  currency="EUR", total=1000, paid=0, issued_at=month + timedelta(hours=n))
             for n in range(2_000)],
        )  # fmt: skip
    return clinic


def _measure(
    database_url: str, label: str, wounds: int, repeat: int, root: Path
) -> list[Figure | MissingFigure]:
    from sync_server import Settings, migrate
    from sync_server.db import open_database
    from sync_server.reports.figures import clinic_report
    from sync_server.reports.pdf import render_pdf

    with scratch_dir(root, "reports") as work:
        settings = Settings(data_dir=work / "server", database_url=database_url)
        migrate(settings)
        with open_database(settings, must_exist=True) as db:
            seeded = time.perf_counter()
            clinic = _seed(db, wounds)
            with db.write() as session:
                session.connection().exec_driver_sql("ANALYZE")
            progress(
                f"reports: seeded {wounds:,} wounds, {wounds * ASSESSMENTS_PER_WOUND:,} "
                f"assessments in {time.perf_counter() - seeded:.1f} s"
            )
            start, end = datetime(2025, 12, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)
            reports, pdfs = [], []
            for r in range(repeat):
                began = time.perf_counter()
                with db.read() as session:
                    report = clinic_report(session=session, clinic_id=clinic, start=start, end=end)
                reports.append((time.perf_counter() - began) * 1000)
                began = time.perf_counter()
                pdf = render_pdf(report)
                pdfs.append((time.perf_counter() - began) * 1000)
                progress(
                    f"reports: repeat {r + 1}/{repeat}: report {reports[-1]:.0f} ms "
                    f"({report.wounds.seen:,} wounds seen, {report.healing.known:,} with a "
                    f"4-week reduction), PDF {pdfs[-1]:.0f} ms ({len(pdf):,} bytes)"
                )
    extra = {
        "database": label,
        "wounds": wounds,
        "assessments": wounds * ASSESSMENTS_PER_WOUND,
        "spread_ms": round(max(reports) - min(reports), 1),
    }
    progress(f"reports: median {statistics.median(reports):.0f} ms on {label}")
    return [
        Figure("reports", NAMES[0], f"a clinic's monthly report, {wounds:,} wounds ({label})",
               "ms", reports, extra=extra),
        Figure("reports", NAMES[1], "that report rendered as PDF", "ms", pdfs, extra=extra),
    ]  # fmt: skip
