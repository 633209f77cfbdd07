"""`coherency server keys ...`: the deployment's token signing keys (list, rotate).

A thin layer over `sync_server.signing_keys` and `sync_server.rotate_signing_key`;
registers itself under `coherency server`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from cli._output import emit, json_option
from cli._server import _database_options, _reported, _settings, server

__all__ = ["keys"]


@server.group("keys")
def keys() -> None:
    """The deployment's token signing keys: list them, rotate to a new one.

    \b
    Where the key comes from is COHERENCY_SERVER_SIGNING_KEY_SOURCE: file (default,
    COHERENCY_SERVER_SIGNING_KEY_FILE), secret (COHERENCY_SERVER_SIGNING_KEY) or
    database (sealed with the secret key file; rotates fully online).
    """


@keys.command("list")
@_database_options
@json_option
def list_keys(data_dir: Path | None, database_url: str | None, as_json: bool) -> None:
    """List every token signing key the deployment has had, oldest first."""
    with _reported():
        from sync_server import signing_keys

        found = signing_keys(_settings(data_dir=data_dir, database_url=database_url))

    def human(rows: Any) -> None:
        if not rows:
            click.echo("no token signing key yet (start the server once)")
        for key in rows:
            until = (
                f" until {key.verify_until.isoformat(timespec='seconds')}"
                if key.state == "retiring" and key.verify_until
                else ""
            )
            click.echo(
                f"{key.kid}  {key.state}{until}  ({key.source}, "
                f"created {key.created_at.isoformat(timespec='seconds')})"
            )

    emit(as_json, found, human)


@keys.command("rotate")
@_database_options
@click.option(
    "--key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The new Ed25519 private key (PEM): required when the key comes from a file or "
    "a secret; then put it where every instance reads its key. Without it, with "
    "SIGNING_KEY_SOURCE=database, a new key is generated.",
)
@json_option
def rotate(
    data_dir: Path | None, database_url: str | None, key_file: Path | None, as_json: bool
) -> None:
    """Rotate the deployment's token signing key (audited).

    The current key endorses the new one (devices learn it at their next token
    refresh) and keeps verifying the tokens it signed until they have expired.
    """
    with _reported():
        from sync_server import rotate_signing_key

        settings = _settings(data_dir=data_dir, database_url=database_url)
        rotated = rotate_signing_key(settings, key_file=None if key_file is None else str(key_file))

    def human(r: Any) -> None:
        click.echo(
            f"token signing key {r.new_kid} is active ({r.source}); {r.old_kid} verifies "
            f"until {r.old_verify_until.isoformat(timespec='seconds')}"
        )
        if r.source != "database":
            click.echo(
                "put the new key where every instance reads its key (signing_key_file or "
                "COHERENCY_SERVER_SIGNING_KEY) before that time"
            )

    emit(as_json, rotated, human)
