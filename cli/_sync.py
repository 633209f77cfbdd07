"""`coherency sync ...`: sync with the enrolled server, or exchange bundle files.

Without a subcommand, `sync` pushes to and pulls from the server (`--watch` keeps
doing so in the SDK's background loop, `EdgeClient.start_sync`, printing its status);
`sync export|import|info` write, merge and inspect signed, encrypted bundles for
clinics with no network at all.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

from cli._app import (
    EXIT_USAGE,
    App,
    CliError,
    ask_passphrase,
    new_keyring_params,
    one_line,
    with_app,
)
from cli._output import emit, json_option, jsonable, show_fields
from crdt import SyncReport
from edge_sdk import (
    EdgeClient,
    SyncProgress,
    SyncResult,
    SyncStatus,
    SyncTransport,
    export_bundle,
    import_bundle,
    read_bundle_info,
)

__all__ = ["BUNDLE_PASSPHRASE_ENV", "sync"]

F = TypeVar("F", bound=Callable[..., Any])

BUNDLE_PASSPHRASE_ENV = "COHERENCY_BUNDLE_PASSPHRASE"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


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


def _show_report(report: SyncReport) -> None:
    received, rejected = len(report.received), len(report.rejected)
    click.echo(f"received {_count(received, 'record')}, rejected {rejected}")
    for rejection in report.rejected:
        click.echo(f"  rejected {rejection.doc_id}: {rejection.reason}")


def _sync_once(
    client: EdgeClient,
    *,
    wait: float,
    blobs: bool,
    quiet: bool,
    transport: SyncTransport | None = None,
) -> SyncResult:
    if quiet:
        return client.sync(wait=wait, blobs=blobs, transport=transport)
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

        return client.sync(wait=wait, blobs=blobs, progress=progress, transport=transport)


def _edge_transport(client: EdgeClient, edge: str, *, quiet: bool) -> SyncTransport | None:
    """The transport to the clinic's edge box `edge` names (``auto``: the first pinned
    box found on the LAN; None when there is none), or to the box at that URL."""
    if edge != "auto":
        return client.edge_transport(edge)
    routes = client.find_edge_boxes(timeout=3.0)
    if not routes:
        if not quiet:
            click.echo("no edge box of this clinic on the LAN: syncing with the server", err=True)
        return None
    if not quiet:
        click.echo(
            f"syncing through edge box {routes[0].pin.name or routes[0].pin.box_id}", err=True
        )
    return client.edge_transport(routes[0])


def _watch(client: EdgeClient, *, wait: float, blobs: bool, as_json: bool) -> None:
    """Run the SDK's background sync until Ctrl-C: one line per change of its status
    (`EdgeClient.on_sync_status`) and per sync that moved something."""
    shown: list[tuple[object, ...]] = []

    def status_changed(status: SyncStatus) -> None:
        # The line changes with what the user cares about, not with each poll's start.
        key = (
            status.peer,
            status.connected,
            status.pending_records,
            status.pending_blobs,
            status.last_error,
            status.running,
        )
        if shown and shown[-1] == key:
            return
        shown.append(key)
        if as_json:
            click.echo(json.dumps({"status": jsonable(status)}, sort_keys=True))
        else:
            click.echo(one_line(status.line()), err=True)

    def result(done: SyncResult) -> None:
        if as_json:
            click.echo(json.dumps(jsonable(done), sort_keys=True))
        else:
            _show_sync_result(done)

    if not as_json:
        click.echo("watching for changes (Ctrl-C to stop)", err=True)
    with client.on_sync_status(status_changed):
        loop = client.start_sync(wait=wait, blobs=blobs, on_result=result)
        try:
            while not loop.join(0.5):
                pass
        except KeyboardInterrupt:
            loop.stop()  # abandons the long poll at once; nothing is lost
            if not as_json:
                click.echo("stopped", err=True)
            return
        loop.stop()  # raises what ended the loop


def _bundle_passphrase_option(command: F) -> F:
    """Add ``--bundle-passphrase`` to a command."""
    return click.option(
        "--bundle-passphrase",
        envvar=BUNDLE_PASSPHRASE_ENV,
        help=f"The bundle's passphrase (env {BUNDLE_PASSPHRASE_ENV}, else a prompt); "
        "other users can see it in the process list, prefer the variable or the prompt.",
    )(command)


@click.group(invoke_without_command=True)
@click.option("--watch", is_flag=True, help="Keep syncing: long-poll the server until Ctrl-C.")
@click.option(
    "--wait",
    type=click.FloatRange(min=0, max=300),
    default=0,
    show_default=True,
    help="Long-poll: wait up to this many seconds for the server to have something new.",
)
@click.option("--no-blobs", is_flag=True, help="Sync records only, not scan blobs.")
@click.option(
    "--edge",
    metavar="auto|URL",
    help="Sync through the clinic's edge box: `auto` finds it on the LAN (mDNS; only a "
    "box whose certificate the server pinned), else give its https:// URL. With auto "
    "and no box found, sync with the server.",
)
@json_option
@click.pass_context
def sync(
    ctx: click.Context, watch: bool, wait: float, no_blobs: bool, edge: str | None, as_json: bool
) -> None:
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
    if edge is not None and watch:
        raise CliError(
            "--edge and --watch do not go together: --watch long-polls the server", EXIT_USAGE
        )
    if not watch:
        transport = _edge_transport(client, edge, quiet=as_json) if edge else None
        try:
            result = _sync_once(
                client, wait=wait, blobs=not no_blobs, quiet=as_json, transport=transport
            )
        finally:
            close = getattr(transport, "close", None)
            if close is not None:
                close()
        emit(as_json, result, _show_sync_result)
        return
    _watch(client, wait=wait or 25.0, blobs=not no_blobs, as_json=as_json)


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
@_bundle_passphrase_option
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
@_bundle_passphrase_option
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
