"""`coherency assessments ...`: list and show wound assessments (`scan capture` adds them)."""

from __future__ import annotations

import click

from cli._app import App, with_app
from cli._options import given, list_options
from cli._output import csv_option, emit, json_option, show_record, table
from crdt import WoundAssessment

__all__ = ["assessments"]


def _assessment_table(records: list[WoundAssessment]) -> None:
    table(
        ["id", "wound", "captured", "area cm²", "clinician", "quality"],
        (
            [
                a.id,
                a.wound_id,
                f"{a.captured_at:%Y-%m-%d %H:%M %Z}",
                a.measurements.area_cm2,
                a.clinician,
                ", ".join(a.quality_flags) or "ok",
            ]
            for a in records
        ),
        empty="no assessments",
    )


@click.group()
def assessments() -> None:
    """List and show wound assessments (`coherency scan capture` records them)."""


@assessments.command("list")
@click.option("--wound", "wound_id", help="Only this wound's assessments.")
@click.option("--patient", "patient_id", help="Only this patient's assessments.")
@list_options("assessments")
@json_option
@csv_option
@with_app
def assessments_list(
    app: App,
    wound_id: str | None,
    patient_id: str | None,
    include_deleted: bool,
    limit: int | None,
    as_json: bool,
    as_csv: bool,
) -> None:
    """List assessments, oldest first."""
    filters = given(wound_id=wound_id, patient_id=patient_id)
    found = app.client().assessments.list(include_deleted=include_deleted, limit=limit, **filters)
    emit(as_json, found, _assessment_table, as_csv=as_csv, csv_schema=WoundAssessment)


@assessments.command("show")
@click.argument("assessment_id")
@json_option
@with_app
def assessments_show(app: App, assessment_id: str, as_json: bool) -> None:
    """Show one assessment: its figures, model output, scan blobs and provenance."""
    emit(as_json, app.client().assessments.get(assessment_id), show_record)
