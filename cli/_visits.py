"""`coherency visits ...`: ask the server for a caregiver visit at home, review one,
and list them (each an intent, pending until `coherency sync` brings the decision)."""

from __future__ import annotations

from datetime import datetime

import click

from cli._app import App, with_app
from cli._intents import STATES, TIME, show_status, status_table
from cli._output import csv_option, emit, json_option

__all__ = ["visits"]


@click.group()
def visits() -> None:
    """Book, review and list caregiver visits (decided by the server)."""


@visits.command("request")
@click.option("--patient", "patient_id", required=True, help="The patient's id.")
@click.option("--skill", required=True, help="What the caregiver must do, e.g. compression.")
@click.option("--area", required=True, help="The area the patient lives in.")
@click.option("--at", "starts_at", type=TIME, required=True, help="Start, ISO with UTC offset.")
@click.option(
    "--minutes",
    "duration_minutes",
    type=click.IntRange(5, 480),
    default=60,
    show_default=True,
    help="How long (a multiple of 5).",
)
@click.option("--caregiver", "caregiver_id", help="This caregiver (id), else the best free one.")
@click.option("--language", help="A language the caregiver should speak.")
@click.option("--flexible", is_flag=True, help="Let the server book the nearest free fit.")
@json_option
@with_app
def visits_request(
    app: App,
    patient_id: str,
    skill: str,
    area: str,
    starts_at: datetime,
    duration_minutes: int,
    caregiver_id: str | None,
    language: str | None,
    flexible: bool,
    as_json: bool,
) -> None:
    """Ask for a caregiver visit (pending until the server decides)."""
    status = app.client().bookings.request_visit(
        patient_id,
        skill,
        area,
        starts_at,
        duration_minutes=duration_minutes,
        caregiver_id=caregiver_id,
        language=language,
        flexible=flexible,
    )
    emit(as_json, status, show_status)


@visits.command("review")
@click.argument("booking_id")
@click.option("--rating", type=click.IntRange(1, 5), required=True, help="1 (poor) to 5.")
@click.option("--comment", help="What went well or not.")
@json_option
@with_app
def visits_review(
    app: App, booking_id: str, rating: int, comment: str | None, as_json: bool
) -> None:
    """Review a visit (once; pending until the server records it)."""
    emit(as_json, app.client().bookings.review_visit(booking_id, rating, comment), show_status)


@visits.command("list")
@click.option("--state", type=click.Choice(STATES), help="Only intents in this state.")
@click.option("--patient", "patient_id", help="Only this patient's.")
@json_option
@csv_option
@with_app
def visits_list(
    app: App, state: str | None, patient_id: str | None, as_json: bool, as_csv: bool
) -> None:
    """List visit requests and reviews, and their decisions."""
    found = app.client().list_intents("visit", state, patient_id=patient_id)
    emit(as_json, found, lambda ss: status_table(ss, empty="no visit intents"), as_csv=as_csv)
