"""`coherency init` and `coherency key ...`: create the store, change how it is opened."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from cli._app import NEW_PASSPHRASE_ENV, App, new_key_provider, with_app
from cli._output import emit, json_option

__all__ = ["init", "key"]

F = TypeVar("F", bound=Callable[..., Any])


@click.command()
@click.option(
    "--clinic",
    "clinic_id",
    default=None,
    help="The clinic this device works for; leave it out when the device will enrol with"
    " a server (the enrolment gives the clinic).",
)
@json_option
@with_app
def init(app: App, clinic_id: str | None, as_json: bool) -> None:
    """Create a new encrypted store and a device identity."""
    client = app.init(clinic_id)
    info = {"store": str(client.path), "device_id": client.device_id, "clinic_id": client.clinic_id}
    emit(
        as_json,
        info,
        lambda i: click.echo(
            f"created store {i['store']} (device {i['device_id']}, "
            + (f"clinic {i['clinic_id']})" if i["clinic_id"] else "enrol it to get a clinic)")
        ),
    )


@click.group()
def key() -> None:
    """Change the passphrase or key file, or re-encrypt the store under a new key."""


def _new_key_option(command: F) -> F:
    """Add ``--new-key-file`` to a command."""
    return click.option(
        "--new-key-file",
        type=click.Path(dir_okay=False, path_type=Path),
        help=f"Move the store to this key file (created if absent) instead of a new "
        f"passphrase (env {NEW_PASSPHRASE_ENV}, else a prompt).",
    )(command)


@key.command("change")
@_new_key_option
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
@_new_key_option
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
