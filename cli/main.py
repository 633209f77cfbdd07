"""The `coherency` command tree: the root group, with each command group added.

Each group lives in its own module (`cli._patients`, `cli._sync`, `cli._server`, ...)
and only calls the libraries and formats what they return (`--json` for scripts).
Errors are one line on stderr and an exit code: 2 usage, 3 wrong key or passphrase,
4 not found, 5 invalid or conflicting, 6 corrupt store or bundle, 1 anything else.
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import click

from cli._app import (
    EXIT_OTHER,
    EXIT_USAGE,
    KDF_ENV,
    NEW_PASSPHRASE_ENV,
    PASSPHRASE_ENV,
    App,
    CliError,
    one_line,
    translate,
)
from cli._appointments import appointments
from cli._assessments import assessments
from cli._audit import audit
from cli._care_plans import care_plans
from cli._conflicts import conflicts, history
from cli._demo import demo
from cli._device import device
from cli._edge import edge
from cli._fhir import fhir
from cli._keys import keys as _keys  # noqa: F401 - registers `server keys`
from cli._medical_history import allergies, conditions, medications
from cli._models import models
from cli._notes import notes
from cli._orders import orders
from cli._patients import patients
from cli._payments import invoices, payments
from cli._scan import scan
from cli._schema import schema
from cli._server import server
from cli._server_blobs import blobs as server_blobs
from cli._server_fhir import fhir_export as _fhir_export  # noqa: F401 - registers it
from cli._store import init, key
from cli._sync import BUNDLE_PASSPHRASE_ENV, sync
from cli._visits import visits
from cli._wounds import wounds

__all__ = ["cli", "main"]


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


for command in (
    init,
    patients,
    wounds,
    assessments,
    notes,
    conditions,
    allergies,
    medications,
    care_plans,
    conflicts,
    history,
    appointments,
    visits,
    orders,
    payments,
    invoices,
    sync,
    device,
    key,
    scan,
    schema,
    models,
    server,
    audit,
    edge,
    demo,
    fhir,
):
    cli.add_command(command)
server.add_command(server_blobs)


def main() -> None:
    """Console-script entry point of `coherency`."""
    cli.main(prog_name="coherency")


if __name__ == "__main__":
    main()
