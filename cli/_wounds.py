"""`coherency wounds ...`: record, list and show a patient's wounds."""

from __future__ import annotations

import click

from cli._app import App, with_app
from cli._options import choice, given, list_options
from cli._output import csv_option, emit, json_option, show_record, table
from crdt import Etiology, Wound, WoundStatus

__all__ = ["wounds"]


def _wound_table(records: list[Wound]) -> None:
    table(
        ["id", "patient", "site", "etiology", "status", "onset"],
        ([w.id, w.patient_id, w.body_site, w.etiology, w.status, w.onset] for w in records),
        empty="no wounds",
    )


@click.group()
def wounds() -> None:
    """Add, list and show wounds."""


@wounds.command("add")
@click.option("--patient", "patient_id", required=True, help="The patient's id.")
@click.option("--site", required=True, help="Body site, e.g. 'left heel'.")
@click.option("--etiology", type=choice(Etiology), help="The wound's cause (default unknown).")
@click.option("--status", type=choice(WoundStatus), help="Course of the wound (default active).")
@click.option("--onset", metavar="YYYY-MM-DD", help="When the wound appeared.")
@json_option
@with_app
def wounds_add(
    app: App,
    patient_id: str,
    site: str,
    etiology: str | None,
    status: str | None,
    onset: str | None,
    as_json: bool,
) -> None:
    """Record a wound of a patient."""
    values = given(
        patient_id=patient_id, body_site=site, etiology=etiology, status=status, onset=onset
    )
    emit(as_json, app.client().wounds.add(**values), show_record)


@wounds.command("list")
@click.option("--patient", "patient_id", help="Only this patient's wounds.")
@click.option("--status", type=choice(WoundStatus), help="Only wounds with this status.")
@list_options("wounds")
@json_option
@csv_option
@with_app
def wounds_list(
    app: App,
    patient_id: str | None,
    status: str | None,
    include_deleted: bool,
    limit: int | None,
    as_json: bool,
    as_csv: bool,
) -> None:
    """List wounds, oldest first."""
    filters = given(patient_id=patient_id, status=status)
    found = app.client().wounds.list(include_deleted=include_deleted, limit=limit, **filters)
    emit(as_json, found, _wound_table, as_csv=as_csv, csv_schema=Wound)


@wounds.command("show")
@click.argument("wound_id")
@json_option
@with_app
def wounds_show(app: App, wound_id: str, as_json: bool) -> None:
    """Show one wound."""
    emit(as_json, app.client().wounds.get(wound_id), show_record)
