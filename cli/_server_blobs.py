"""`coherency server blobs ...`: the server's blob storage seen from outside.

``check`` compares every recorded blob with the storage (`sync_server.check_blob_storage`)
and marks the ones it lost missing, so devices that hold them upload them again. It
exits 6 when it found a blob missing or damaged, 0 when the storage holds them all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from cli._app import EXIT_CORRUPT
from cli._output import emit, json_option
from cli._server import _blob_options, _database_options, _reported, _settings

__all__ = ["blobs"]


@click.group()
def blobs() -> None:
    """Check the server's blob storage against what the database records."""


@blobs.command("check")
@_database_options
@_blob_options
@click.option("--clinic", "clinic_id", metavar="ID", help="Check this clinic's blobs only.")
@click.option(
    "--size-only",
    is_flag=True,
    help="Compare sizes only; do not read every blob to check its SHA-256 (faster).",
)
@json_option
def check(
    data_dir: Path | None,
    database_url: str | None,
    blob_backend: str | None,
    blob_dir: Path | None,
    s3_endpoint_url: str | None,
    s3_bucket: str | None,
    s3_region: str | None,
    clinic_id: str | None,
    size_only: bool,
    as_json: bool,
) -> None:
    """Find recorded blobs the storage lost or holds damaged, and mark them missing.

    Streams every blob through SHA-256 (unless --size-only). A missing blob is
    answered 410 blob_missing to downloads, and each device that holds it uploads it
    again at its next sync. A blob marked missing that the storage holds intact again
    (restored from a backup) is cleared. Exits 6 when a problem was found.
    """
    with _reported():
        from sync_server import check_blob_storage

        settings = _settings(
            data_dir=data_dir,
            database_url=database_url,
            blob_backend=blob_backend,
            blob_dir=blob_dir,
            s3_endpoint_url=s3_endpoint_url,
            s3_bucket=s3_bucket,
            s3_region=s3_region,
        )
        report = check_blob_storage(settings, clinic_id=clinic_id, hashed=not size_only)
    result = {
        "ok": report.ok,
        "checked": report.checked,
        "hashed": report.hashed,
        "problems": [
            {
                "clinic_id": p.clinic_id,
                "sha256": p.sha256,
                "size": p.size,
                "reason": p.reason,
                "newly_marked": p.newly_marked,
                "assessments": list(p.assessments),
            }
            for p in report.problems
        ],
        "restored": report.restored,
    }

    def human(r: Any) -> None:
        for p in r["problems"]:
            records = ", ".join(p["assessments"]) or "no assessment"
            click.echo(f"{p['reason']}: clinic {p['clinic_id']} blob {p['sha256']} ({records})")
        for sha in r["restored"]:
            click.echo(f"restored: blob {sha} is intact again")
        how = "sizes and SHA-256" if r["hashed"] else "sizes"
        click.echo(f"checked {r['checked']} blobs ({how}): {len(r['problems'])} missing or damaged")

    emit(as_json, result, human)
    if not report.ok:
        raise click.exceptions.Exit(EXIT_CORRUPT)
