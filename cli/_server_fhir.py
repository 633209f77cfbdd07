"""`coherency server fhir-export`: a patient's or a clinic's records as one FHIR R4
Bundle, straight from the server's database (`sync_server.export_fhir`).

The bundle is validated before it is written, written whole (to a temporary file
renamed over `--out`: never half a bundle), and the export is audited (actor: the
system) with the patients it holds.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from cli._app import EXIT_USAGE, CliError
from cli._output import emit, json_option, private_file
from cli._server import _database_options, _reported, _settings, server

__all__ = ["export_from_server", "fhir_export"]


@server.command("fhir-export")
@_database_options
@click.option("--patient", "patient_id", metavar="ID", help="Export this patient's records.")
@click.option("--clinic", metavar="ID", help="Export every patient of this clinic (id or name).")
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write the Bundle (JSON) to this file.",
)
@click.option(
    "--kind",
    type=click.Choice(["collection", "transaction"]),
    default="collection",
    show_default=True,
    help="A collection Bundle, or a transaction another FHIR server can load.",
)
@click.option(
    "--base-url",
    metavar="URL",
    help="The FHIR base the resources' fullUrl is made from (default: urn:uuid ids).",
)
@json_option
def fhir_export(
    data_dir: Path | None,
    database_url: str | None,
    patient_id: str | None,
    clinic: str | None,
    out: Path,
    kind: str,
    base_url: str | None,
    as_json: bool,
) -> None:
    """Export one patient (--patient) or a whole clinic (--clinic) as a FHIR R4 Bundle:
    Patient, Coverage, Condition, AllergyIntolerance, MedicationStatement, CarePlan,
    Observation, DocumentReference, Provenance, Appointment and AuditEvent resources,
    validated before it is written. Audited like a staff export (actor: the system)."""
    export_from_server(
        data_dir=data_dir,
        database_url=database_url,
        patient_id=patient_id,
        clinic=clinic,
        out=out,
        kind=kind,
        base_url=base_url,
        as_json=as_json,
    )


def export_from_server(
    *,
    data_dir: Path | None,
    database_url: str | None,
    patient_id: str | None,
    clinic: str | None,
    out: Path,
    kind: str,
    base_url: str | None,
    as_json: bool,
) -> None:
    """Write the server's Bundle of one patient or one clinic to `out` and report it
    (``coherency server fhir-export``, and ``coherency fhir export --data-dir``)."""
    if (patient_id is None) == (clinic is None):
        raise CliError("give --patient ID or --clinic ID (one of them)", EXIT_USAGE)
    with _reported():
        from sync_server import export_fhir

        settings = _settings(data_dir=data_dir, database_url=database_url)
        done = export_fhir(
            settings,
            patient=patient_id,
            clinic=clinic,
            kind="transaction" if kind == "transaction" else "collection",
            base_url=base_url,
        )
    with private_file(out) as sink:
        sink.write(json.dumps(done.bundle, ensure_ascii=False, indent=1).encode())
    summary = {
        "kind": done.kind,
        "clinic_id": done.clinic_id,
        "patients": done.patients,
        "resources": done.resources,
        "out": str(out),
    }
    emit(
        as_json,
        summary,
        lambda s: click.echo(
            f"exported {s['patients']} patients ({s['resources']} resources) of clinic "
            f"{s['clinic_id']} as a FHIR {s['kind']} Bundle to {s['out']}"
        ),
    )
