"""`coherency conflicts [resolve]` and `coherency history`: what concurrent edits left."""

from __future__ import annotations

import json
from typing import Any

import click

from cli._app import App, with_app
from cli._output import emit, json_option, show_record, table
from crdt import FieldConflict, HistoryEntry

__all__ = ["conflicts", "history"]


def _conflict_lines(found: list[FieldConflict]) -> None:
    if not found:
        click.echo("no conflicts", err=True)
        return
    for conflict in found:
        click.echo(f"{conflict.collection} {conflict.record_id} {conflict.field}:")
        for value in conflict.values:
            mark = "*" if value.current else " "
            shown = json.dumps(value.value, ensure_ascii=False)
            click.echo(f"  {mark} {shown}  (device {value.device_id})")
    click.echo("(* the value shown until resolved)", err=True)


def _history_table(entries: list[HistoryEntry]) -> None:
    table(
        ["at", "action", "device", "fields"],
        (
            [
                f"{e.at:%Y-%m-%d %H:%M:%S %Z}",
                e.action,
                e.device_id or f"unknown actor {e.actor}",
                ", ".join(e.fields),
            ]
            for e in entries
        ),
        empty="no history",
    )


@click.group(invoke_without_command=True)
@json_option
@with_app
def conflicts(app: App, as_json: bool) -> None:
    """List every conflicted field, with each device's value.

    Concurrent writes of one field on two devices both stay until a clinician
    settles the field with `coherency conflicts resolve`.
    """
    if click.get_current_context().invoked_subcommand is not None:
        return
    emit(as_json, app.client().conflicts(), _conflict_lines)


@conflicts.command("resolve")
@click.argument("record_id")
@click.argument("field")
@click.argument("value")
@json_option
@with_app
def conflicts_resolve(app: App, record_id: str, field: str, value: str, as_json: bool) -> None:
    """Settle FIELD of RECORD_ID on VALUE, superseding every concurrent value.

    VALUE is read as JSON when it parses (42, true, null, ["a"], '"0042"' for a
    string of digits), and as a plain string otherwise.
    """
    try:
        parsed: Any = json.loads(value)
    except ValueError:
        parsed = value
    client = app.client()
    record = client.find(record_id).resolve(record_id, field, parsed)
    emit(as_json, record, show_record)


@click.command()
@click.argument("record_id")
@json_option
@with_app
def history(app: App, record_id: str, as_json: bool) -> None:
    """Show every change to a record: when, which device, which fields."""
    client = app.client()
    emit(as_json, client.find(record_id).history(record_id), _history_table)
