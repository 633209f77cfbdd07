"""`coherency appointments ...`: free slots, and asking the server to book, move or
cancel an appointment (each an intent, pending until `coherency sync` brings the
server's decision)."""

from __future__ import annotations

from datetime import date, datetime

import click

from cli._app import App, with_app
from cli._intents import STATES, TIME, DayType, show_status, status_table
from cli._output import csv_option, emit, json_option, table
from crdt import Availability

__all__ = ["appointments"]


def _slot_table(days: list[Availability], names: dict[str, str]) -> None:
    for held in days:
        click.echo(f"{held.day} ({held.timezone}), as of {held.generated_at.isoformat()}")
    table(
        ["day", "starts", "ends", "provider", "service"],
        (
            [
                held.day,
                slot.starts_at.strftime("%H:%M"),
                slot.ends_at.strftime("%H:%M"),
                names.get(slot.provider_id, slot.provider_id),
                slot.service,
            ]
            for held in days
            for slot in held.slots
        ),
        empty="no free slots synced for that (run `coherency sync`)",
    )


@click.group()
def appointments() -> None:
    """Free slots; book, move, cancel and list appointments (decided by the server)."""


@appointments.command("slots")
@click.option("--day", type=DayType(), help="Only this day (YYYY-MM-DD).")
@click.option("--service", help="Only slots of this service code.")
@click.option("--provider", "provider_id", help="Only slots with this provider's id.")
@json_option
@with_app
def appointments_slots(
    app: App, day: date | None, service: str | None, provider_id: str | None, as_json: bool
) -> None:
    """Show the free slots as last synced, each day with when the server wrote it."""
    client = app.client()
    days = client.bookings.free_slots(day=day, service=service, provider_id=provider_id)
    directory = client.bookings.directory()
    names = {p.id: p.name for p in directory.providers} if directory is not None else {}
    emit(as_json, days, lambda ds: _slot_table(ds, names))


@appointments.command("request")
@click.option("--patient", "patient_id", required=True, help="The patient's id.")
@click.option("--service", required=True, help="The service code (see `slots`).")
@click.option("--at", "starts_at", type=TIME, required=True, help="Start, ISO with UTC offset.")
@click.option("--provider", "provider_id", help="With this doctor or nurse (id).")
@click.option("--specialisation", help="With any provider of this specialisation.")
@click.option("--flexible", is_flag=True, help="Let the server book the nearest free fit.")
@json_option
@with_app
def appointments_request(
    app: App,
    patient_id: str,
    service: str,
    starts_at: datetime,
    provider_id: str | None,
    specialisation: str | None,
    flexible: bool,
    as_json: bool,
) -> None:
    """Ask for an appointment (pending until the server decides)."""
    status = app.client().bookings.request_appointment(
        patient_id,
        service,
        starts_at,
        provider_id=provider_id,
        specialisation=specialisation,
        flexible=flexible,
    )
    emit(as_json, status, show_status)


@appointments.command("reschedule")
@click.argument("booking_id")
@click.option("--at", "starts_at", type=TIME, required=True, help="New start, ISO with offset.")
@click.option("--provider", "provider_id", help="With this provider instead (id).")
@click.option("--flexible", is_flag=True, help="Let the server take the nearest free fit.")
@json_option
@with_app
def appointments_reschedule(
    app: App,
    booking_id: str,
    starts_at: datetime,
    provider_id: str | None,
    flexible: bool,
    as_json: bool,
) -> None:
    """Ask to move a booked appointment (pending until the server decides)."""
    status = app.client().bookings.reschedule_appointment(
        booking_id, starts_at, provider_id=provider_id, flexible=flexible
    )
    emit(as_json, status, show_status)


@appointments.command("cancel")
@click.argument("booking_id")
@click.option("--reason", help="Why, for the clinic to read.")
@json_option
@with_app
def appointments_cancel(app: App, booking_id: str, reason: str | None, as_json: bool) -> None:
    """Ask to cancel a booked appointment (pending until the server decides)."""
    emit(as_json, app.client().bookings.cancel_appointment(booking_id, reason), show_status)


@appointments.command("list")
@click.option("--state", type=click.Choice(STATES), help="Only intents in this state.")
@click.option("--patient", "patient_id", help="Only this patient's.")
@json_option
@csv_option
@with_app
def appointments_list(
    app: App, state: str | None, patient_id: str | None, as_json: bool, as_csv: bool
) -> None:
    """List appointment requests, moves and cancellations, and their decisions."""
    found = app.client().list_intents("appointment", state, patient_id=patient_id)
    emit(as_json, found, lambda ss: status_table(ss, empty="no appointment intents"), as_csv=as_csv)
