"""`coherency demo`: the end-to-end demo on made-up data (the scenarios: `cli.demo`).

The scenarios are imported when the command runs, so `coherency --help` loads none of
them (nor the server and capture libraries they drive).
"""

from __future__ import annotations

from pathlib import Path

import click

from cli._output import emit, json_option

__all__ = ["demo"]


@click.command()
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
    stay apart. Edge (with the `edge` extra): a clinic's edge box enrols with central
    and serves two tablets on loopback over pinned TLS; central stops, the tablets
    keep syncing through the box, central restarts and the box delivers everything by
    itself. Capture (with the `capture` extra): a tablet scans three synthetic
    wounds, measures them against their ground truth, refuses a scan from too far and
    stores the assessments with encrypted scan blobs. FHIR (with the `fhir` extra):
    the demo patient's record is written as a FHIR R4 Bundle (fhir/demo-patient.json
    in the demo folder) and validated. Leaves everything behind for a look with
    `coherency --store ...` and `coherency server run --data-dir ...`; the global
    store is not touched.
    """
    from cli.demo import run_demo

    report = run_demo(workdir, say=(lambda line: None) if as_json else click.echo)

    def human(_: object) -> None:
        if report.edge is not None:
            edge = report.edge
            click.echo(
                f"\nedge box {edge.box_id[:8]}: {edge.records_delivered} records written "
                f"while central was down reached it {edge.catch_up_seconds:.2f} s after "
                "it came back"
            )
        if report.fhir is not None:
            click.echo(f"\nFHIR R4 bundle of the demo patient: {report.fhir.path}")
        click.echo(f"\ndemo finished in {report.seconds:.1f} s; everything is in {report.workdir}")

    emit(as_json, report, human)
