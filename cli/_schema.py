"""`coherency schema`: the published record schemas, for other Automerge implementations.

A thin layer over `crdt.record_schema_files`: each collection's JSON Schema with how
every field is stored in its Automerge document (docs/sdk.md, "Interoperability").
"""

from __future__ import annotations

from pathlib import Path

import click

from cli._output import emit, json_option
from crdt import record_schema_files, record_schemas

__all__ = ["schema"]


@click.command(name="schema")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write <collection>.schema.json files into this folder (created if absent) "
    "instead of printing the collections.",
)
@json_option
def schema(out: Path | None, as_json: bool) -> None:
    """The record schemas: JSON Schema plus each field's Automerge kind.

    Without --out, lists the file each collection's schema is written to (with
    --json, prints the schemas themselves by collection).
    """
    files = record_schema_files()
    if out is None:
        emit(as_json, record_schemas(), lambda _: click.echo("\n".join(files)))
        return
    out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (out / name).write_text(text, encoding="utf-8")
    written = {"out": str(out), "files": sorted(files)}
    emit(as_json, written, lambda w: click.echo(f"wrote {len(w['files'])} schemas to {w['out']}"))
