"""`coherency schema`: the published record schemas, for other Automerge implementations.

A thin layer over `crdt.record_schema_files`: each collection's JSON Schema with how
every field is stored in its Automerge document (docs/sdk.md, "Interoperability").
"""

from __future__ import annotations

from pathlib import Path

import click

from crdt import record_schema_files

__all__ = ["schema"]


@click.command(name="schema")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write <collection>.schema.json files into this folder (created if absent) "
    "instead of printing the collections.",
)
def schema(out: Path | None) -> None:
    """The record schemas: JSON Schema plus each field's Automerge kind.

    Without --out, lists the collections and the file each would be written to.
    """
    files = record_schema_files()
    if out is None:
        for name in files:
            click.echo(name)
        return
    out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (out / name).write_text(text, encoding="utf-8")
    click.echo(f"wrote {len(files)} schemas to {out}")
