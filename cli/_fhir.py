"""`coherency fhir ...`: the device store as FHIR R4 Bundles (export and import).

The mapping is `fhir_interop` through `EdgeClient.fhir_export` / `fhir_import`; a
malformed or invalid bundle is one line on stderr and exit code 5 (invalid input).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from cli._app import EXIT_INVALID, EXIT_NOT_FOUND, App, CliError, with_app
from cli._output import emit, json_option, private_file
from cli._server import _database_options
from cli._server_fhir import export_from_server

__all__ = ["fhir"]

T = TypeVar("T")


def _invalid_fhir(call: Callable[[], T]) -> T:
    """Run `call`, reporting FHIR errors as invalid input."""
    from fhir_interop import FhirError, FhirValidationError

    try:
        return call()
    except FhirValidationError as exc:
        raise CliError(f"invalid FHIR: {'; '.join(exc.problems[:5])}", EXIT_INVALID) from None
    except FhirError as exc:
        raise CliError(str(exc), EXIT_INVALID) from None


@click.group()
def fhir() -> None:
    """Export the store's records as FHIR R4 Bundles, or import one (docs/fhir.md)."""


@fhir.command("export")
@_database_options
@click.option("--patient", "patient_id", help="The patient to export.")
@click.option("--all", "everyone", is_flag=True, help="Every patient of the store.")
@click.option(
    "--clinic",
    "clinic_id",
    help="Every patient of this clinic (on a device: the store's own clinic; on the "
    "server: its id or name).",
)
@click.option(
    "--out",
    "path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The JSON file to write the Bundle to.",
)
@click.option(
    "--kind",
    type=click.Choice(["collection", "transaction"]),
    default="collection",
    show_default=True,
    help="A collection, or a transaction (PUT entries) to load into a FHIR server.",
)
@click.option("--base-url", help="A FHIR base URL, for absolute fullUrls.")
@json_option
@with_app
def fhir_export(
    app: App,
    data_dir: Path | None,
    database_url: str | None,
    patient_id: str | None,
    everyone: bool,
    clinic_id: str | None,
    path: Path,
    kind: str,
    base_url: str | None,
    as_json: bool,
) -> None:
    """Write one patient (--patient) or every patient (--all, --clinic) as a FHIR
    Bundle, from the device store, or from the server's database with --data-dir or
    --database-url (the same as ``coherency server fhir-export``)."""
    if sum((patient_id is not None, everyone, clinic_id is not None)) != 1:
        raise click.UsageError("give one of --patient ID, --clinic ID or --all")
    if data_dir is not None or database_url is not None:
        if everyone:
            raise click.UsageError("on the server, give --patient ID or --clinic ID")
        export_from_server(
            data_dir=data_dir,
            database_url=database_url,
            patient_id=patient_id,
            clinic=clinic_id,
            out=path,
            kind=kind,
            base_url=base_url,
            as_json=as_json,
        )
        return
    client = app.client()
    if clinic_id is not None and clinic_id != client.clinic_id:
        raise CliError(
            f"this store holds clinic {client.clinic_id}, not {clinic_id}", EXIT_NOT_FOUND
        )
    bundle = _invalid_fhir(
        lambda: client.fhir_export(patient_id, kind=kind, base_url=base_url)  # type: ignore[arg-type]
    )
    with private_file(path) as sink:
        sink.write(json.dumps(bundle, indent=2, ensure_ascii=False).encode())
    summary = {"path": str(path), "kind": kind, "resources": len(bundle.get("entry", []))}
    emit(
        as_json,
        summary,
        lambda s: click.echo(
            f"wrote a FHIR {s['kind']} bundle of {s['resources']} resources to {s['path']}"
        ),
    )


@fhir.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@json_option
@with_app
def fhir_import(app: App, path: Path, as_json: bool) -> None:
    """Create or update patients, wounds, conditions, allergies and medications from
    a FHIR Bundle file; lists what it could not map. Importing twice changes nothing."""
    client = app.client()
    data = path.read_bytes()
    report = _invalid_fhir(lambda: client.fhir_import(data))

    def human(r: Any) -> None:
        click.echo(f"created {r.created}, updated {r.updated}, unchanged {r.unchanged}")
        for line in r.unmapped:
            click.echo(f"  not mapped: {line}")

    emit(as_json, report, human)
