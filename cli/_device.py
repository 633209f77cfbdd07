"""`coherency device ...`: this device's identity and its enrolment with a server."""

from __future__ import annotations

import click

from cli._app import App, with_app
from cli._output import emit, json_option, show_fields
from edge_sdk import enrollment_of

__all__ = ["device"]


@click.group()
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
    emit(as_json, info, show_fields)
