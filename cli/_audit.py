"""`coherency audit ...`: check the server's tamper-evident audit log, and keep its
checkpoints as witnesses.

A thin layer: `sync_server.verify_audit_log` and `sync_server.audit_checkpoint` on the
server's database (the options of the ``coherency server`` commands), and
`edge_sdk.witness_server_log` against a running server. Every problem is one line;
the exit status is 6 when anything is wrong.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from cli._app import EXIT_CORRUPT, EXIT_USAGE, App, CliError, with_app
from cli._output import emit, json_option
from cli._server import _database_options, _reported, _settings
from crdt import AuditProofError, Checkpoint

__all__ = ["audit"]

TOKEN_ENV = "COHERENCY_ACCESS_TOKEN"


def _read_checkpoints(path: Path | None) -> list[Checkpoint]:
    """The checkpoints in a JSON file: a list of `Checkpoint.to_json()` (or one)."""
    if path is None:
        return []
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise CliError(f"{path}: not JSON ({exc})", EXIT_USAGE) from None
    items = data if isinstance(data, list) else [data]
    try:
        return [Checkpoint.from_json(item) for item in items]
    except (AuditProofError, AttributeError) as exc:
        raise CliError(f"{path}: {exc}", EXIT_USAGE) from None


def _public_key(text: str | None) -> bytes | None:
    if text is None:
        return None
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        key = b""
    if len(key) != 32:
        raise CliError("--public-key: give the 32-byte Ed25519 key as 64 hex digits", EXIT_USAGE)
    return key


def _finish(as_json: bool, result: dict[str, Any], problems: Sequence[Any], summary: str) -> None:
    """Print the problems and the summary (or the JSON), and fail when there are any."""

    def human(_: Any) -> None:
        for problem in problems:
            click.echo(str(problem))
        click.echo(summary)

    emit(as_json, result, human)
    if problems:
        raise click.exceptions.Exit(EXIT_CORRUPT)


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


@click.group()
def audit() -> None:
    """Check the audit log and keep its checkpoints."""


@audit.command("verify")
@_database_options
@click.option(
    "--checkpoints",
    "checkpoints_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Witness checkpoints: a JSON list as `coherency audit checkpoint --save` writes "
    "(they catch a log whose newest events were deleted with its later checkpoints).",
)
@click.option(
    "--public-key",
    metavar="HEX",
    help="The server's artifact public key that signs checkpoints (default: from the "
    "server's key file with the database; from the store's enrolment with --device).",
)
@click.option(
    "--url",
    metavar="URL",
    help="Check a running server instead of its database: its log must extend every "
    "checkpoint in --checkpoints (needs --public-key and --token, or --device).",
)
@click.option(
    "--token",
    envvar=TOKEN_ENV,
    help=f"A bearer access token for --url (env {TOKEN_ENV}).",
)
@click.option(
    "--device",
    is_flag=True,
    help="Ask the server the device store (the root --store) is enrolled with, with "
    "its credentials and the artifact key it pinned; the checkpoints it kept are held "
    "too.",
)
@click.option(
    "--store",
    "device_store",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Check this device store's own audit chain and the checkpoints it kept (opened "
    "with the passphrase or --key-file, as every device command).",
)
@click.option(
    "--allow-insecure-http",
    is_flag=True,
    help="Allow plain http:// to a host other than this machine with --url.",
)
@json_option
@with_app
def verify(
    app: App,
    data_dir: Path | None,
    database_url: str | None,
    checkpoints_file: Path | None,
    public_key: str | None,
    url: str | None,
    token: str | None,
    device: bool,
    device_store: Path | None,
    allow_insecure_http: bool,
    as_json: bool,
) -> None:
    """Check an audit log: every event, checkpoint and proof.

    With the server's database (--data-dir / --database-url): finds an edited,
    deleted or reordered event, a checkpoint not signed by the server or that does not
    extend the one before, and, with --checkpoints, the newest events deleted. With
    --url or --device: checks that the running server's log extends every held
    checkpoint (with --device, the store's kept ones too). With --store: checks a
    device's hash-chained log and its kept checkpoints. One line per problem, then a
    summary; exit status 6 if anything is wrong.
    """
    held = _read_checkpoints(checkpoints_file)
    key = _public_key(public_key)
    if device_store is not None:
        if url is not None or device or (data_dir, database_url) != (None, None):
            raise CliError("--store checks a device store alone", EXIT_USAGE)
        _verify_store(App(store=device_store, key_file=app.key_file), as_json)
        return
    if url is not None or device:
        if (data_dir, database_url) != (None, None):
            raise CliError("give either the database or --url / --device, not both", EXIT_USAGE)
        _verify_server(app, held, key, url, token, device, allow_insecure_http, as_json)
        return
    with _reported():
        from sync_server import verify_audit_log

        settings = _settings(data_dir=data_dir, database_url=database_url)
        report = verify_audit_log(settings, witnesses=held, public_key=key)
    problems = [{"kind": p.kind, "where": p.where, "message": p.message} for p in report.problems]
    checked = (
        f"audit log: {_plural(report.events, 'event')}, "
        f"{_plural(report.checkpoints, 'checkpoint')} kept, "
        f"{_plural(report.witnesses, 'witness checkpoint')}"
    )
    summary = (
        f"{checked}: verified"
        if report.ok
        else f"{checked}: {_plural(len(report.problems), 'problem')}"
    )
    result = {
        "ok": report.ok,
        "events": report.events,
        "checkpoints": report.checkpoints,
        "witnesses": report.witnesses,
        "problems": problems,
    }
    _finish(as_json, result, report.problems, summary)


def _verify_store(app: App, as_json: bool) -> None:
    try:
        report = app.client().verify_audit()
    finally:
        app.close()
    lines = [f"event {p.seq}: {p.message}" for p in report.problems]
    checked = (
        f"device audit log: {_plural(report.events, 'event')}, "
        f"{_plural(report.checkpoints, 'kept checkpoint')} (the server acknowledged up to "
        f"event {report.acknowledged})"
    )
    summary = (
        f"{checked}: verified" if report.ok else f"{checked}: {_plural(len(lines), 'problem')}"
    )
    result = {
        "ok": report.ok,
        "events": report.events,
        "head_seq": report.head_seq,
        "checkpoints": report.checkpoints,
        "acknowledged": report.acknowledged,
        "problems": [{"kind": p.kind, "seq": p.seq, "message": p.message} for p in report.problems],
    }
    _finish(as_json, result, lines, summary)


def _verify_server(
    app: App,
    held: list[Checkpoint],
    key: bytes | None,
    url: str | None,
    token: str | None,
    device: bool,
    allow_insecure_http: bool,
    as_json: bool,
) -> None:
    from edge_sdk import HttpAuditLogSource, HttpTransport, kept_checkpoints, witness_server_log

    if device:
        if url is not None:
            raise CliError("--device asks the store's own server: leave out --url", EXIT_USAGE)
        replica = app.client().replica
        enrollment = replica.enrollment
        if key is None and enrollment is not None:
            key = enrollment.artifact_public_key
        if key is None:
            raise CliError("this store pinned no artifact key: give --public-key", EXIT_USAGE)
        held = kept_checkpoints(replica) + held
        transport = HttpTransport(replica, allow_insecure_http=allow_insecure_http)
        with transport, HttpAuditLogSource(request=transport.request) as source:
            report = witness_server_log(source, held=held, public_key=key)
    else:
        if key is None:
            raise CliError("--url needs --public-key (the key you pinned)", EXIT_USAGE)
        source = HttpAuditLogSource(url, token=token, allow_insecure_http=allow_insecure_http)
        with source:
            report = witness_server_log(source, held=held, public_key=key)
    current = report.current
    assert current is not None  # witness_server_log sets it, or raises
    checked = (
        f"server audit log: {_plural(current.size, 'event')} "
        f"(checkpoint signed {current.at:%Y-%m-%d %H:%M:%S}Z), "
        f"{_plural(report.held, 'held checkpoint')}"
    )
    summary = (
        f"{checked}: it extends them all"
        if report.ok
        else f"{checked}: {_plural(len(report.problems), 'problem')}"
    )
    result = {
        "ok": report.ok,
        "current": current.to_json(),
        "held": report.held,
        "problems": [
            {"kind": p.kind, "where": p.where, "message": p.message} for p in report.problems
        ],
    }
    _finish(as_json, result, report.problems, summary)


@audit.command("checkpoint")
@_database_options
@click.option(
    "--url",
    metavar="URL",
    help="Ask a running server (with --token) instead of reading its database.",
)
@click.option(
    "--token", envvar=TOKEN_ENV, help=f"A bearer access token for --url (env {TOKEN_ENV})."
)
@click.option(
    "--save",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Add the checkpoint to this JSON file (a list, created if missing): the file "
    "`coherency audit verify --checkpoints` reads.",
)
@click.option(
    "--allow-insecure-http",
    is_flag=True,
    help="Allow plain http:// to a host other than this machine with --url.",
)
@json_option
def checkpoint(
    data_dir: Path | None,
    database_url: str | None,
    url: str | None,
    token: str | None,
    save: Path | None,
    allow_insecure_http: bool,
    as_json: bool,
) -> None:
    """Print the audit log's newest signed checkpoint (signing one if the log grew), to
    keep as a witness."""
    if url is not None:
        from edge_sdk import HttpAuditLogSource

        with HttpAuditLogSource(
            url, token=token, allow_insecure_http=allow_insecure_http
        ) as source:
            current = source.checkpoint()
    else:
        with _reported():
            from sync_server import audit_checkpoint

            current = audit_checkpoint(_settings(data_dir=data_dir, database_url=database_url))
    if save is not None:
        kept: list[Any] = []
        if save.exists():
            kept = [c.to_json() for c in _read_checkpoints(save)]
        kept.append(current.to_json())
        tmp = save.with_name(save.name + ".tmp")
        tmp.write_text(json.dumps(kept, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, save)
    emit(
        as_json,
        current.to_json(),
        lambda c: click.echo(json.dumps(c, indent=2)),
    )
