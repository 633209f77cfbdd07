"""Benchmark: a clinic's report (`sync_server.reports.figures.clinic_report`) on
PostgreSQL, for a clinic of `wounds_for(scale)` wounds (10,000 at the default scale)
with ten assessments each (100,000), spread over a year at irregular times, and a
month of appointments, visits, orders and invoices beside them.

The synthetic rows are bulk-inserted straight into the projection and domain tables
of a freshly migrated database (`tests/server/reports_bench_seed.py`; the report reads
those tables, how they were written does not matter to it). The report covers the
year's last month, so every wound's history up to then is read for the
area-reduction rule. Each report is made as the CLI makes it (`monthly_report`: open
the database, check its schema, compute).

- ``reports.clinic_report_ms``: one report (every figure), ms.
- ``reports.with_pdf_ms``: the same report written as a PDF file, ms.

Without PostgreSQL the figures are reported missing, with the reason.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from benchmarks._bench_sync import MissingFigure, _database
from benchmarks._common import progress
from benchmarks._harness import Figure, scratch_dir

__all__ = ["NAMES", "run", "wounds_for"]

NAMES = ("reports.clinic_report_ms", "reports.with_pdf_ms")
MONTH = "2025-12"


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


def _measure(
    database_url: str, label: str, wounds: int, repeat: int, root: Path
) -> list[Figure | MissingFigure]:
    from sync_server import Settings, migrate, monthly_report
    from tests.server.reports_bench_seed import ASSESSMENTS_PER_WOUND, seed_clinic

    with scratch_dir(root, "reports") as work:
        settings = Settings(data_dir=work / "server", database_url=database_url)
        migrate(settings)
        seeded = time.perf_counter()
        clinic = seed_clinic(settings, wounds)
        progress(
            f"reports: seeded {wounds:,} wounds, {wounds * ASSESSMENTS_PER_WOUND:,} "
            f"assessments in {time.perf_counter() - seeded:.1f} s"
        )
        reports, pdfs = [], []
        pdf = work / "report.pdf"
        for r in range(repeat):
            began = time.perf_counter()
            made = monthly_report(settings, clinic=clinic, month=MONTH)
            reports.append((time.perf_counter() - began) * 1000)
            began = time.perf_counter()
            monthly_report(settings, clinic=clinic, month=MONTH, pdf=pdf)
            pdfs.append((time.perf_counter() - began) * 1000)
            report = made.report
            progress(
                f"reports: repeat {r + 1}/{repeat}: report {reports[-1]:.0f} ms "
                f"({report.wounds.seen:,} wounds seen, {report.healing.known:,} with a "
                f"4-week reduction), with its PDF {pdfs[-1]:.0f} ms "
                f"({pdf.stat().st_size:,} bytes)"
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
        Figure("reports", NAMES[1], "the same report written as PDF", "ms", pdfs, extra=extra),
    ]  # fmt: skip
