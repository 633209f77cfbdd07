"""The `coherency` command tree.

Each command calls `edge_sdk` or `crdt` and formats the result (`--json` for scripts);
no record logic lives here. Errors are one line on stderr and an exit code:
2 usage, 3 wrong key or passphrase, 4 not found, 5 invalid or conflicting,
6 corrupt store or bundle, 1 anything else.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

from cli._app import (
    EXIT_OTHER,
    EXIT_USAGE,
    KDF_ENV,
    NEW_PASSPHRASE_ENV,
    PASSPHRASE_ENV,
    App,
    CliError,
    ask_passphrase,
    new_key_provider,
    new_keyring_params,
    one_line,
    translate,
)
from cli._models import models
from cli._output import emit, json_option, jsonable, show_fields, show_record, table
from cli._scan import scan
from cli._server import server
from crdt import (
    ClinicalNote,
    ContactKind,
    Etiology,
    FieldConflict,
    Patient,
    Sex,
    SyncReport,
    Wound,
    WoundStatus,
)
from edge_sdk import (
    EdgeClient,
    ServerUnreachableError,
    SyncProgress,
    SyncResult,
    enrollment_of,
    export_bundle,
    import_bundle,
    read_bundle_info,
)
from edge_sdk._demo import run_demo

if TYPE_CHECKING:
    from lidar_capture._demo import CaptureDemoReport
    from sync_server._demo import ServerDemoReport

__all__ = ["cli", "main"]

F = TypeVar("F", bound=Callable[..., Any])

BUNDLE_PASSPHRASE_ENV = "COHERENCY_BUNDLE_PASSPHRASE"


def _version() -> str:
    try:
        return metadata.version("coherency")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


class CoherencyGroup(click.Group):
    """The root group: reports every error as one line and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (CliError, click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            raise translate(exc, debug=bool(ctx.params.get("debug"))) from exc
        finally:
            if isinstance(ctx.obj, App):  # set by the root callback, if it ran
                ctx.obj.close()

    def main(  # type: ignore[override]
        self,
        args: list[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """Run the command; in standalone mode, exit with the command's status."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
            click.echo(f"error: {one_line(exc.format_message())}{where}", err=True)
            sys.exit(EXIT_USAGE)
        except click.ClickException as exc:
            click.echo(f"error: {one_line(exc.format_message())}", err=True)
            sys.exit(exc.exit_code)
        except CliError as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("error: aborted", err=True)
            sys.exit(EXIT_OTHER)
        except Exception as exc:  # outside any command: still one line
            translate(exc, debug=False).show()
            sys.exit(EXIT_OTHER)
        sys.exit(rv if isinstance(rv, int) else 0)


# Passes the `App` the root group built as a command's first argument.
with_app = click.make_pass_decorator(App)


def _choice(enum_type: type[Any]) -> click.Choice[str]:
    return click.Choice([member.value for member in enum_type])


def _contacts(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> list[dict[str, str]]:
    """Contacts given as KIND=VALUE, as the records' contact entries."""
    contacts = []
    for given in values:
        kind, sep, text = given.partition("=")
        if not sep:
            raise click.BadParameter(f"{given!r} is not KIND=VALUE (e.g. phone=+44 20 7946 0000)")
        contacts.append({"kind": kind.strip(), "value": text})
    return contacts


CONTACT_HELP = (
    "A contact as KIND=VALUE, KIND one of "
    + ", ".join(k.value for k in ContactKind)
    + "; repeat for more."
)

_ENVIRONMENT = (
    ("COHERENCY_STORE", "the store folder (as --store)"),
    ("COHERENCY_KEY_FILE", "the key file (as --key-file)"),
    (PASSPHRASE_ENV, "the store passphrase (else a prompt)"),
    (NEW_PASSPHRASE_ENV, "the new passphrase for `key change|rekey`"),
    (BUNDLE_PASSPHRASE_ENV, "the sync bundle passphrase"),
    (f"{KDF_ENV}=fast", "cheap Argon2 costs for NEW keyrings:"),
    ("", "for tests and demos only, never patient data"),
)

ROOT_HELP = f"""Coherency: offline-first wound-care records on this device.

Records live in an encrypted store (a folder), opened with a passphrase
({PASSPHRASE_ENV} or a hidden prompt) or, on an edge box, a key file.

\b
Environment:
{chr(10).join(f"  {name:<28} {text}" for name, text in _ENVIRONMENT)}

\b
Exit status: 0 ok, 1 other error, 2 usage, 3 wrong key or passphrase,
4 not found, 5 invalid or conflicting, 6 corrupt store or bundle.
"""


@click.group(name="coherency", cls=CoherencyGroup, help=ROOT_HELP)
@click.option(
    "--store",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="COHERENCY_STORE",
    default="coherency-store",
    show_default=True,
    help="The store folder (env COHERENCY_STORE).",
)
@click.option(
    "--key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="COHERENCY_KEY_FILE",
    help="Open the store with this 32-byte key file instead of a passphrase "
    "(env COHERENCY_KEY_FILE); `init` creates the file if it is absent.",
)
@click.option("--debug", is_flag=True, help="Show the traceback of an unexpected error.")
@click.version_option(_version(), prog_name="coherency", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context, store: Path, key_file: Path | None, debug: bool) -> None:
    ctx.obj = App(store=store, key_file=key_file)


# ----------------------------------------------------------------------------- init
@cli.command()
@click.option("--clinic", "clinic_id", required=True, help="The clinic this device works for.")
@json_option
@with_app
def init(app: App, clinic_id: str, as_json: bool) -> None:
    """Create a new encrypted store and a device identity."""
    client = app.init(clinic_id)
    info = {"store": str(client.path), "device_id": client.device_id, "clinic_id": client.clinic_id}
    emit(
        as_json,
        info,
        lambda i: click.echo(
            f"created store {i['store']} (device {i['device_id']}, clinic {i['clinic_id']})"
        ),
    )


# ------------------------------------------------------------------------- patients
@cli.group()
def patients() -> None:
    """Add, find, show and change patients."""


def _patient_table(records: list[Patient], *, with_deleted: bool = False) -> None:
    columns = ["id", "name", "born", "sex", "mrn"] + (["deleted"] if with_deleted else [])
    table(
        columns,
        (
            [p.id, f"{p.family_name}, {p.given_name}", p.birth_date, p.sex, p.mrn]
            + ([p.deleted] if with_deleted else [])
            for p in records
        ),
        empty="no patients",
    )


def _changes(**options: Any) -> dict[str, Any]:
    """The options given: None and empty repeated options mean "not given"."""
    return {name: value for name, value in options.items() if value not in (None, (), [])}


@patients.command("add")
@click.option("--given", required=True, help="Given name.")
@click.option("--family", required=True, help="Family name.")
@click.option("--birth-date", required=True, metavar="YYYY-MM-DD", help="Date of birth.")
@click.option("--mrn", help="Medical record number.")
@click.option("--sex", type=_choice(Sex), help="Administrative sex (default unknown).")
@click.option(
    "--contact",
    "contacts",
    metavar="KIND=VALUE",
    multiple=True,
    callback=_contacts,
    help=CONTACT_HELP,
)
@json_option
@with_app
def patients_add(
    app: App,
    given: str,
    family: str,
    birth_date: str,
    mrn: str | None,
    sex: str | None,
    contacts: list[dict[str, str]],
    as_json: bool,
) -> None:
    """Register a patient."""
    values = _changes(
        given_name=given,
        family_name=family,
        birth_date=birth_date,
        mrn=mrn,
        sex=sex,
        contacts=contacts,
    )
    emit(as_json, app.client().patients.add(**values), show_record)


@patients.command("list")
@click.option("--name", help="Only patients whose given name, family name or MRN starts so.")
@click.option("--mrn", help="Only the patient with exactly this MRN.")
@click.option("--include-deleted", is_flag=True, help="Include deleted patients.")
@click.option("--limit", type=click.IntRange(min=1), help="Show at most this many.")
@json_option
@with_app
def patients_list(
    app: App,
    name: str | None,
    mrn: str | None,
    include_deleted: bool,
    limit: int | None,
    as_json: bool,
) -> None:
    """List patients (by family name with --name, else oldest first)."""
    if name is not None and mrn is not None:
        raise click.UsageError("give --name or --mrn, not both")
    collection = app.client().patients
    if name is not None:
        found = collection.search(name, include_deleted=include_deleted, **_changes(limit=limit))
    else:
        found = collection.list(include_deleted=include_deleted, limit=limit, **_changes(mrn=mrn))
    emit(as_json, found, lambda rs: _patient_table(rs, with_deleted=include_deleted))


@patients.command("show")
@click.argument("patient_id")
@json_option
@with_app
def patients_show(app: App, patient_id: str, as_json: bool) -> None:
    """Show one patient (deleted ones too)."""
    emit(as_json, app.client().patients.get(patient_id), show_record)


@patients.command("update")
@click.argument("patient_id")
@click.option("--given", help="New given name.")
@click.option("--family", help="New family name.")
@click.option("--birth-date", metavar="YYYY-MM-DD", help="New date of birth.")
@click.option("--mrn", help="New medical record number.")
@click.option("--clear-mrn", is_flag=True, help="Remove the medical record number.")
@click.option("--sex", type=_choice(Sex), help="New administrative sex.")
@click.option(
    "--contact",
    "contacts",
    metavar="KIND=VALUE",
    multiple=True,
    callback=_contacts,
    help=CONTACT_HELP + " Replaces every contact.",
)
@click.option("--clear-contacts", is_flag=True, help="Remove every contact.")
@json_option
@with_app
def patients_update(
    app: App,
    patient_id: str,
    given: str | None,
    family: str | None,
    birth_date: str | None,
    mrn: str | None,
    clear_mrn: bool,
    sex: str | None,
    contacts: list[dict[str, str]],
    clear_contacts: bool,
    as_json: bool,
) -> None:
    """Change some fields of a patient; the others keep their values."""
    if clear_mrn and mrn is not None:
        raise click.UsageError("give --mrn or --clear-mrn, not both")
    if clear_contacts and contacts:
        raise click.UsageError("give --contact or --clear-contacts, not both")
    changes = _changes(
        given_name=given,
        family_name=family,
        birth_date=birth_date,
        mrn=mrn,
        sex=sex,
        contacts=contacts,
    )
    if clear_mrn:
        changes["mrn"] = None
    if clear_contacts:
        changes["contacts"] = []
    if not changes:
        raise click.UsageError("nothing to change: give at least one field option")
    emit(as_json, app.client().patients.update(patient_id, **changes), show_record)


@patients.command("delete")
@click.argument("patient_id")
@json_option
@with_app
def patients_delete(app: App, patient_id: str, as_json: bool) -> None:
    """Mark a patient deleted (kept and synced as deleted; `restore` undoes it)."""
    record = app.client().patients.delete(patient_id)
    emit(as_json, record, lambda r: click.echo(f"deleted patient {r.id}"))


@patients.command("restore")
@click.argument("patient_id")
@json_option
@with_app
def patients_restore(app: App, patient_id: str, as_json: bool) -> None:
    """Undo the delete of a patient."""
    record = app.client().patients.restore(patient_id)
    emit(as_json, record, lambda r: click.echo(f"restored patient {r.id}"))


# --------------------------------------------------------------------------- wounds
@cli.group()
def wounds() -> None:
    """Add, list and show wounds."""


@wounds.command("add")
@click.option("--patient", "patient_id", required=True, help="The patient's id.")
@click.option("--site", required=True, help="Body site, e.g. 'left heel'.")
@click.option("--etiology", type=_choice(Etiology), help="The wound's cause (default unknown).")
@click.option("--status", type=_choice(WoundStatus), help="Course of the wound (default active).")
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
    values = _changes(
        patient_id=patient_id, body_site=site, etiology=etiology, status=status, onset=onset
    )
    emit(as_json, app.client().wounds.add(**values), show_record)


@wounds.command("list")
@click.option("--patient", "patient_id", help="Only this patient's wounds.")
@click.option("--status", type=_choice(WoundStatus), help="Only wounds with this status.")
@click.option("--include-deleted", is_flag=True, help="Include deleted wounds.")
@click.option("--limit", type=click.IntRange(min=1), help="Show at most this many.")
@json_option
@with_app
def wounds_list(
    app: App,
    patient_id: str | None,
    status: str | None,
    include_deleted: bool,
    limit: int | None,
    as_json: bool,
) -> None:
    """List wounds, oldest first."""
    filters = _changes(patient_id=patient_id, status=status)
    found = app.client().wounds.list(include_deleted=include_deleted, limit=limit, **filters)
    emit(as_json, found, _wound_table)


def _wound_table(records: list[Wound]) -> None:
    table(
        ["id", "patient", "site", "etiology", "status", "onset"],
        ([w.id, w.patient_id, w.body_site, w.etiology, w.status, w.onset] for w in records),
        empty="no wounds",
    )


@wounds.command("show")
@click.argument("wound_id")
@json_option
@with_app
def wounds_show(app: App, wound_id: str, as_json: bool) -> None:
    """Show one wound."""
    emit(as_json, app.client().wounds.get(wound_id), show_record)


# ---------------------------------------------------------------------------- notes
@cli.group()
def notes() -> None:
    """Write, edit and read clinical notes (edits on two devices both survive)."""


def _note_text(text: str | None, file: IO[str] | None) -> str | None:
    if text is not None and file is not None:
        raise click.UsageError("give --text or --file, not both")
    return file.read() if file is not None else text


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
    values = _changes(patient_id=patient_id, wound_id=wound_id, author=author, text=body)
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
@click.option("--include-deleted", is_flag=True, help="Include deleted notes.")
@click.option("--limit", type=click.IntRange(min=1), help="Show at most this many.")
@json_option
@with_app
def notes_list(
    app: App,
    patient_id: str | None,
    wound_id: str | None,
    include_deleted: bool,
    limit: int | None,
    as_json: bool,
) -> None:
    """List notes, oldest first, with their first line."""
    filters = _changes(patient_id=patient_id, wound_id=wound_id)
    found = app.client().notes.list(include_deleted=include_deleted, limit=limit, **filters)
    emit(as_json, found, _note_table)


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


def _first(text: str, width: int = 40) -> str:
    line = text.strip().split("\n", 1)[0]
    return line if len(line) <= width else line[: width - 1] + "…"


def _show_note(note: ClinicalNote) -> None:
    show_record(note, omit=("text",))
    click.echo("")
    click.echo(note.text)


# ------------------------------------------------------------------------ conflicts
@cli.group(invoke_without_command=True)
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


# -------------------------------------------------------------------------- history
@cli.command()
@click.argument("record_id")
@json_option
@with_app
def history(app: App, record_id: str, as_json: bool) -> None:
    """Show every change to a record: when, which device, which fields."""
    client = app.client()
    entries = client.find(record_id).history(record_id)
    emit(
        as_json,
        entries,
        lambda es: table(
            ["at", "action", "device", "fields"],
            (
                [f"{e.at:%Y-%m-%d %H:%M:%S %Z}", e.action, e.device_id, ", ".join(e.fields)]
                for e in es
            ),
            empty="no history",
        ),
    )


# ----------------------------------------------------------------------------- sync
@cli.group(invoke_without_command=True)
@click.option("--watch", is_flag=True, help="Keep syncing: long-poll the server until Ctrl-C.")
@click.option(
    "--wait",
    type=click.FloatRange(min=0, max=300),
    default=0,
    show_default=True,
    help="Long-poll: wait up to this many seconds for the server to have something new.",
)
@click.option("--no-blobs", is_flag=True, help="Sync records only, not scan blobs.")
@json_option
@click.pass_context
def sync(ctx: click.Context, watch: bool, wait: float, no_blobs: bool, as_json: bool) -> None:
    """Sync with the enrolled server (push, then pull), or exchange bundle files.

    Without a subcommand: push this store's changes to the server it was enrolled with
    (`coherency device enroll`), then pull the clinic's changes. Safe to interrupt and
    run again. `sync export|import|info` exchange signed, encrypted bundle files with
    other devices instead, with no network at all.
    """
    if ctx.invoked_subcommand is not None:
        return
    app = ctx.find_object(App)
    assert app is not None
    client = app.client()
    if not watch:
        result = _sync_once(client, wait=wait, blobs=not no_blobs, quiet=as_json)
        emit(as_json, result, _show_sync_result)
        return
    _watch(client, wait=wait or 25.0, blobs=not no_blobs, as_json=as_json)


def _sync_once(client: EdgeClient, *, wait: float, blobs: bool, quiet: bool) -> SyncResult:
    if quiet:
        return client.sync(wait=wait, blobs=blobs)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(step: SyncProgress) -> None:
            if step.phase not in tasks:
                tasks[step.phase] = bar.add_task(step.phase, total=step.total)
            bar.update(tasks[step.phase], completed=step.done, total=step.total)

        return client.sync(wait=wait, blobs=blobs, progress=progress)


def _watch(client: EdgeClient, *, wait: float, blobs: bool, as_json: bool) -> None:
    """Sync again and again, long-polling; outages are reported and waited out."""
    if not as_json:
        click.echo("watching for changes (Ctrl-C to stop)", err=True)
    try:
        while True:
            try:
                result = client.sync(wait=wait, blobs=blobs)
            except ServerUnreachableError as exc:
                click.echo(one_line(f"server unreachable, trying again: {exc}"), err=True)
                time.sleep(5)
                continue
            if result.pushed or result.pulled or result.refused_by_server or result.rejected:
                if as_json:
                    click.echo(json.dumps(jsonable(result), sort_keys=True))
                else:
                    _show_sync_result(result)
    except KeyboardInterrupt:
        return


def _show_sync_result(result: SyncResult) -> None:
    click.echo(
        f"pushed {_count(len(result.pushed), 'record')} ({result.unchanged} already there), "
        f"pulled {_count(len(result.pulled), 'record')}; "
        f"blobs up {len(result.blobs_uploaded)}, down {len(result.blobs_downloaded)}"
    )
    for rejection in result.refused_by_server:
        click.echo(f"  server refused {rejection.doc_id}: {rejection.reason}")
    for rejection in result.rejected:
        click.echo(f"  refused here {rejection.doc_id}: {rejection.reason}")
    for problem in result.blob_errors:
        click.echo(f"  blob: {problem}")


# --------------------------------------------------------------------------- device
@cli.group()
def device() -> None:
    """This device's identity and its enrolment with a sync server."""


@device.command("enroll")
@click.option("--server", "server_url", required=True, help="The sync server's URL.")
@click.option(
    "--token",
    envvar="COHERENCY_ENROL_TOKEN",
    required=True,
    help="The one-time enrolment token from clinic staff (env COHERENCY_ENROL_TOKEN).",
)
@click.option("--name", default="", help="A name staff will see for this device.")
@click.option(
    "--allow-insecure-http",
    is_flag=True,
    help="Allow a plain http:// server other than this machine (only on a network you "
    "trust: tokens and records would cross it unprotected).",
)
@json_option
@with_app
def device_enroll(
    app: App, server_url: str, token: str, name: str, allow_insecure_http: bool, as_json: bool
) -> None:
    """Enrol this device with a sync server (binds its key to the token's clinic)."""
    enrollment = app.client().enroll(
        server_url, token, name=name, allow_insecure_http=allow_insecure_http
    )
    emit(
        as_json,
        enrollment,
        lambda e: click.echo(
            f"enrolled device {e.device_id} with {e.server_url} (clinic {e.clinic_id})"
        ),
    )


@device.command("info")
@json_option
@with_app
def device_info(app: App, as_json: bool) -> None:
    """Show this device's id, clinic, public key and server enrolment."""
    client = app.client()
    enrollment = enrollment_of(client)
    info = {
        "device_id": client.device_id,
        "clinic_id": client.clinic_id,
        "public_key": client.identity.public_key.hex(),
        "server_url": enrollment.server_url if enrollment else None,
        "server_public_key": enrollment.server_public_key.hex() if enrollment else None,
    }
    emit(as_json, info, lambda i: show_fields(i))


def bundle_passphrase_option(command: F) -> F:
    """Add ``--bundle-passphrase`` to a command."""
    return click.option(
        "--bundle-passphrase",
        envvar=BUNDLE_PASSPHRASE_ENV,
        help=f"The bundle's passphrase (env {BUNDLE_PASSPHRASE_ENV}, else a prompt); "
        "other users can see it in the process list, prefer the variable or the prompt.",
    )(command)


@sync.command("export")
@click.option(
    "--to",
    "path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The bundle file to write.",
)
@click.option(
    "--peer",
    "peer_id",
    metavar="DEVICE_ID",
    help="Only what this device has not had from us yet.",
)
@click.option("--all", "everything", is_flag=True, help="Every record, whatever peers have.")
@bundle_passphrase_option
@json_option
@with_app
def sync_export(
    app: App,
    path: Path,
    peer_id: str | None,
    everything: bool,
    bundle_passphrase: str | None,
    as_json: bool,
) -> None:
    """Write records to an encrypted bundle file signed by this device."""
    client = app.client()
    if bundle_passphrase is None:  # neither the option nor its variable
        bundle_passphrase = ask_passphrase(
            "Bundle passphrase", env=BUNDLE_PASSPHRASE_ENV, confirm=True
        )
    info = export_bundle(
        client,
        path,
        passphrase=bundle_passphrase,
        peer_id=peer_id,
        everything=everything,
        kdf=new_keyring_params(),
    )
    emit(
        as_json,
        info,
        lambda i: click.echo(f"exported {_count(i.documents, 'record')} to {path}"),
    )


@sync.command("info")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@json_option
def sync_info(path: Path, as_json: bool) -> None:
    """Show who signed a bundle file, for which clinic, and how much it carries.

    Checks the signature; needs neither the store nor the bundle passphrase.
    """
    emit(as_json, read_bundle_info(path), lambda i: show_fields(jsonable(i)))


@sync.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--trust-new-signer/--no-trust-new-signer",
    default=True,
    show_default=True,
    help="Trust a device's signing key the first time one of its bundles arrives.",
)
@bundle_passphrase_option
@json_option
@with_app
def sync_import(
    app: App,
    path: Path,
    trust_new_signer: bool,
    bundle_passphrase: str | None,
    as_json: bool,
) -> None:
    """Merge the records of a bundle file into this store."""
    client = app.client()
    if bundle_passphrase is None:
        bundle_passphrase = ask_passphrase(
            "Bundle passphrase", env=BUNDLE_PASSPHRASE_ENV, confirm=False
        )
    report = import_bundle(
        client, path, passphrase=bundle_passphrase, trust_new_signer=trust_new_signer
    )
    emit(as_json, report, _show_report)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _show_report(report: SyncReport) -> None:
    received, rejected = len(report.received), len(report.rejected)
    click.echo(f"received {_count(received, 'record')}, rejected {rejected}")
    for rejection in report.rejected:
        click.echo(f"  rejected {rejection.doc_id}: {rejection.reason}")


# ------------------------------------------------------------------------------ key
@cli.group()
def key() -> None:
    """Change the passphrase or key file, or re-encrypt the store under a new key."""


def new_key_option(command: F) -> F:
    """Add ``--new-key-file`` to a command."""
    return click.option(
        "--new-key-file",
        type=click.Path(dir_okay=False, path_type=Path),
        help=f"Move the store to this key file (created if absent) instead of a new "
        f"passphrase (env {NEW_PASSPHRASE_ENV}, else a prompt).",
    )(command)


@key.command("change")
@new_key_option
@json_option
@with_app
def key_change(app: App, new_key_file: Path | None, as_json: bool) -> None:
    """Wrap the store's key under a new passphrase or key file (fast)."""
    client = app.client()
    provider = new_key_provider(new_key_file)
    client.change_key(provider)
    done = {"store": str(client.path), "action": "change", "provider": provider.kind}
    emit(as_json, done, lambda d: click.echo(f"store key now opened by a new {d['provider']}"))


@key.command("rekey")
@new_key_option
@json_option
@with_app
def key_rekey(app: App, new_key_file: Path | None, as_json: bool) -> None:
    """Re-encrypt the whole store under a new random key (slow).

    The new key is opened by a new passphrase (the same one again is fine) or key file.
    """
    client = app.client()
    provider = new_key_provider(new_key_file)
    client.rekey(provider)
    done = {"store": str(client.path), "action": "rekey", "provider": provider.kind}
    emit(
        as_json, done, lambda d: click.echo(f"store re-encrypted; opened by a new {d['provider']}")
    )


# ----------------------------------------------------------------------------- demo
@cli.command()
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the demo's stores, bundles and server data (default: a new temporary folder).",
)
@json_option
def demo(workdir: Path | None, as_json: bool) -> None:
    """Run the end-to-end demo on made-up data, checking every step.

    Offline: two tablets of one clinic record a patient, exchange signed, encrypted
    bundles, edit the same records offline, converge and settle a conflict. Online
    (with the `server` extra): a central sync server starts on embedded defaults
    (SQLite and a blob folder in the demo folder, loopback only, stopped at the end);
    tablets of two clinics enrol, sync records and a scan, converge through it and
    stay apart. Capture (with the `capture` extra): a tablet scans three synthetic
    wounds, measures them against their ground truth, refuses a scan from too far and
    stores the assessments with encrypted scan blobs. Leaves everything behind for a
    look with `coherency --store ...` and `coherency server run --data-dir ...`; the
    global store is not touched.
    """
    started = time.perf_counter()
    say: Callable[[str], None] = (lambda line: None) if as_json else click.echo
    report = run_demo(workdir, say=say)
    server_report: ServerDemoReport | None = None
    skipped: str | None = None
    try:
        from sync_server._demo import run_server_demo
    except ModuleNotFoundError as exc:
        # Only a missing third-party package of the extra skips; our own bugs surface.
        if (exc.name or "").split(".")[0] in {"cli", "crdt", "edge_sdk", "sync_server"}:
            raise
        skipped = (
            f"server part skipped: the `server` extra is not installed ({exc.name} is "
            "missing); pip install 'coherency[server]' to run it"
        )
        say(skipped)
    else:
        if not as_json:
            click.echo()
        server_report = run_server_demo(report.workdir, say=say)
    capture_report: CaptureDemoReport | None = None
    capture_skipped: str | None = None
    missing = [m for m in ("numpy", "scipy", "open3d", "contourpy") if not find_spec(m)]
    if missing:
        capture_skipped = (
            f"capture part skipped: the `capture` extra is not installed ({missing[0]} is "
            "missing); pip install 'coherency[capture]' to run it"
        )
        say(capture_skipped)
    else:
        from lidar_capture._demo import run_capture_demo

        if not as_json:
            click.echo()
        capture_report = run_capture_demo(report.workdir, say=say)
    seconds = time.perf_counter() - started
    result = {
        **jsonable(report),
        "server": None if server_report is None else jsonable(server_report),
        "server_skipped": skipped,
        "capture": None if capture_report is None else jsonable(capture_report),
        "capture_skipped": capture_skipped,
        "seconds": round(seconds, 3),
    }

    def human(_: object) -> None:
        click.echo(f"\ndemo finished in {seconds:.1f} s; everything is in {report.workdir}")

    emit(as_json, result, human)


cli.add_command(server)
cli.add_command(scan)
cli.add_command(models)


def main() -> None:
    """Console-script entry point of `coherency`."""
    cli.main(prog_name="coherency")


if __name__ == "__main__":
    main()
