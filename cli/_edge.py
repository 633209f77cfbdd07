"""`coherency edge ...`: run a clinic edge box, and see how it stands.

- ``edge enroll``: make the box's encrypted store (opened with a key file) and its TLS
  certificate if there are none, and enrol it with central using an admin's edge token;
- ``edge run``: serve the clinic's devices over HTTPS on the LAN, relay to central
  whenever it is reachable, advertise the box with zeroconf; until SIGINT/SIGTERM;
- ``edge status``: the devices seen, the backlog upstream and downstream, the last
  contact with central (read from the box's store, so it works while the box runs).

A thin layer over `edge_box`.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from cli._app import EXIT_NOT_FOUND, EXIT_USAGE, CliError
from cli._extras import needs_extras
from cli._output import emit, json_option

__all__ = ["edge"]

F = TypeVar("F", bound=Callable[..., Any])

DIR_ENV = "COHERENCY_EDGE_DIR"
KEYRING_FILE = "keyring.json"  # what makes a folder a store (edge_sdk's layout)
KEY_FILE_ENV = "COHERENCY_EDGE_KEY_FILE"


def _box_options(command: F) -> F:
    """``--data-dir`` and ``--key-file`` (with env fallbacks)."""
    command = click.option(
        "--key-file",
        type=click.Path(path_type=Path, dir_okay=False),
        envvar=KEY_FILE_ENV,
        required=True,
        help=f"The 32-byte key file that wraps the store's key, mode 0600; made on first "
        f"use (env {KEY_FILE_ENV}). Keep it off the data disk if you can.",
    )(command)
    return click.option(
        "--data-dir",
        type=click.Path(path_type=Path, file_okay=False),
        envvar=DIR_ENV,
        required=True,
        help=f"The box's folder: its encrypted store and blobs (env {DIR_ENV}).",
    )(command)


def _open(data_dir: Path, key_file: Path) -> Any:
    from edge_box import EdgeBox
    from edge_sdk import StoreNotFoundError

    try:
        return EdgeBox.open(data_dir, key_file)
    except StoreNotFoundError:
        raise CliError(
            f"{data_dir}: no edge box here (run coherency edge enroll)", EXIT_NOT_FOUND
        ) from None


@click.group()
def edge() -> None:
    """Run a clinic edge box: a LAN hub that keeps the clinic syncing offline."""


@edge.command("enroll")
@_box_options
@click.option("--server", "server_url", required=True, help="Central's URL (https://...).")
@click.option("--token", required=True, help="A one-time edge enrolment token from an admin.")
@click.option("--name", default="", help="A label for the clinic's admins.")
@json_option
def enroll(
    data_dir: Path, key_file: Path, server_url: str, token: str, name: str, as_json: bool
) -> None:
    """Make the box's store and certificate (once) and enrol it with central."""
    with needs_extras("edge"):
        from edge_box import EdgeBox

        made = (data_dir / KEYRING_FILE).exists()
        box = _open(data_dir, key_file) if made else EdgeBox.init(data_dir, key_file)
        with box:
            enrollment = box.enroll(server_url, token, name=name)
            result = {
                "box_id": box.box_id,
                "clinic_id": enrollment.clinic_id,
                "server_url": enrollment.server_url,
                "fingerprint": box.fingerprint,
            }

    def human(r: dict[str, Any]) -> None:
        click.echo(f"edge box {r['box_id']} enrolled in clinic {r['clinic_id']}")
        click.echo(f"certificate fingerprint (devices pin it): {r['fingerprint']}")

    emit(as_json, result, human)


def _few_malloc_arenas() -> None:
    """glibc gives each thread that allocates its own malloc arena (up to 8 per core),
    which a box serving many devices from a thread pool pays for in resident memory
    it never returns; two arenas are plenty for a box. No-op off glibc."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt(-8, 2)  # M_ARENA_MAX
    except (OSError, AttributeError):
        return


def _listen(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise CliError(f"--listen: give HOST:PORT, not {value!r}", EXIT_USAGE)
    return host.strip("[]"), int(port)


@edge.command("run")
@_box_options
@click.option(
    "--listen",
    default="0.0.0.0:8765",
    show_default=True,
    help="Where to serve the clinic's devices (HTTPS).",
)
@click.option("--advertise/--no-advertise", default=True, help="Announce the box with mDNS.")
@click.option("--relay/--no-relay", default=True, help="Relay to central (off: a LAN-only box).")
@json_option
def run(
    data_dir: Path, key_file: Path, listen: str, advertise: bool, relay: bool, as_json: bool
) -> None:
    """Serve the clinic's devices and relay to central, until interrupted."""
    host, port = _listen(listen)
    _few_malloc_arenas()
    with needs_extras("edge"):
        from edge_box import BoxService

        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        with _open(data_dir, key_file) as box:
            if box.enrollment is None:
                raise CliError("the box is not enrolled: run coherency edge enroll", EXIT_USAGE)
            with BoxService(box, host=host, port=port, relay=relay, advertise=advertise) as svc:
                started = {
                    "box_id": box.box_id,
                    "clinic_id": box.clinic_id,
                    "port": svc.port,
                    "fingerprint": box.fingerprint,
                }
                emit(
                    as_json,
                    started,
                    lambda s: click.echo(
                        f"edge box {s['box_id']} of clinic {s['clinic_id']} serving on port "
                        f"{s['port']}; fingerprint {s['fingerprint']}"
                    ),
                )
                stop.wait()


@edge.command("status")
@_box_options
@json_option
def status(data_dir: Path, key_file: Path, as_json: bool) -> None:
    """The devices seen, the backlogs, the last contact with central."""
    with needs_extras("edge"), _open(data_dir, key_file) as box:
        found = box.status().to_json()

    def human(s: dict[str, Any]) -> None:
        click.echo(f"edge box {s['box_id']} · clinic {s['clinic_id']} · central {s['server_url']}")
        click.echo(f"last contact with central: {s['last_contact'] or 'never'}")
        if s["last_error"]:
            click.echo(f"last error: {s['last_error']}")
        click.echo(
            f"upstream backlog: {s['upstream_documents']} documents "
            f"({s['upstream_intents']} intents awaiting a decision), {s['upstream_blobs']} "
            f"blobs, {s['upstream_audit_events']} audit events"
        )
        click.echo(f"box feed: {s['feed']}; devices seen: {len(s['devices'])}")
        for d in s["devices"]:
            click.echo(
                f"  {d['device_id']}  last seen {d['last_seen']}  pushed "
                f"{d['documents_pushed']}  behind {d['behind']}"
            )

    emit(as_json, found, human)
