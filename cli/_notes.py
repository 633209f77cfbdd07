"""`coherency notes ...`: write, edit, list and read clinical notes."""

from __future__ import annotations

import sys
from typing import IO

import click

from cli._app import App, with_app
from cli._options import given, list_options
from cli._output import csv_option, emit, json_option, show_record, table
from crdt import ClinicalNote

__all__ = ["notes"]


def _note_text(text: str | None, file: IO[str] | None) -> str | None:
    if text is not None and file is not None:
        raise click.UsageError("give --text or --file, not both")
    return file.read() if file is not None else text


def _first(text: str, width: int = 40) -> str:
    line = text.strip().split("\n", 1)[0]
    return line if len(line) <= width else line[: width - 1] + "…"


def _note_table(records: list[ClinicalNote]) -> None:
    table(
        ["id", "patient", "author", "updated", "text"],
        (
            [
                n.id,
                n.patient_id,
                n.author,
                n.updated_at.strftime("%Y-%m-%d %H:%M %Z"),
                _first(n.text),
            ]
            for n in records
        ),
        empty="no notes",
    )


def _show_note(note: ClinicalNote) -> None:
    show_record(note, omit=("text",))
    click.echo("")
    click.echo(note.text)


@click.group()
def notes() -> None:
    """Write, edit and read clinical notes (edits on two devices both survive)."""


@notes.command("add")
@click.option("--patient", "patient_id", required=True, help="The patient's id.")
@click.option("--wound", "wound_id", help="The wound the note is about, if any.")
@click.option("--author", required=True, help="Who wrote the note.")
@click.option("--text", help="The note's text (else --file, else read from stdin).")
@click.option(
    "--file", type=click.File("r", encoding="utf-8"), help="Read the text from this file."
)
@json_option
@with_app
def notes_add(
    app: App,
    patient_id: str,
    wound_id: str | None,
    author: str,
    text: str | None,
    file: IO[str] | None,
    as_json: bool,
) -> None:
    """Write a note; its text comes from --text, --file or stdin."""
    body = _note_text(text, file)
    if body is None:
        if sys.stdin.isatty():
            raise click.UsageError("give the text with --text or --file, or pipe it on stdin")
        body = sys.stdin.read()
    values = given(patient_id=patient_id, wound_id=wound_id, author=author, text=body)
    emit(as_json, app.client().notes.add(**values), _show_note)


@notes.command("edit")
@click.argument("note_id")
@click.option("--text", help="The note's new text.")
@click.option(
    "--file", type=click.File("r", encoding="utf-8"), help="Read the new text from this file."
)
@json_option
@with_app
def notes_edit(
    app: App, note_id: str, text: str | None, file: IO[str] | None, as_json: bool
) -> None:
    """Replace a note's text, writing only the characters that changed.

    So an edit made meanwhile on another device survives the next sync too.
    """
    body = _note_text(text, file)
    if body is None:
        raise click.UsageError("give the new text with --text or --file")
    emit(as_json, app.client().notes.edit(note_id, body), _show_note)


@notes.command("show")
@click.argument("note_id")
@json_option
@with_app
def notes_show(app: App, note_id: str, as_json: bool) -> None:
    """Show one note."""
    emit(as_json, app.client().notes.get(note_id), _show_note)


@notes.command("list")
@click.option("--patient", "patient_id", help="Only this patient's notes.")
@click.option("--wound", "wound_id", help="Only notes about this wound.")
@list_options("notes")
@json_option
@csv_option
@with_app
def notes_list(
    app: App,
    patient_id: str | None,
    wound_id: str | None,
    include_deleted: bool,
    limit: int | None,
    as_json: bool,
    as_csv: bool,
) -> None:
    """List notes, oldest first, with their first line."""
    filters = given(patient_id=patient_id, wound_id=wound_id)
    found = app.client().notes.list(include_deleted=include_deleted, limit=limit, **filters)
    emit(as_json, found, _note_table, as_csv=as_csv, csv_schema=ClinicalNote)
