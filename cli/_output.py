"""Formatting what the libraries return: JSON for scripts, CSV for spreadsheets, short
tables for people."""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import date
from pathlib import Path, PurePath
from types import UnionType
from typing import IO, Any, TypeVar, Union, get_args, get_origin

import click
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table
from rich.text import Text

from crdt import Record, csv_line


@contextlib.contextmanager
def private_file(path: Path) -> Iterator[IO[bytes]]:
    """Write `path` whole or not at all, readable by this user only (0600): exports
    hold patient data. The bytes go to a sibling ``.partial`` file (0600 from its
    creation), renamed over `path` once complete; a failure leaves `path` as it was."""
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # a stale partial file keeps its mode through O_CREAT
    try:
        with os.fdopen(fd, "wb") as sink:
            yield sink
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def jsonable(value: Any) -> Any:
    """`value` as plain JSON data: records as ``model_dump(mode="json")``."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, set | frozenset):
        return sorted((jsonable(v) for v in value), key=_sort_key)
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, date):  # datetimes too
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return jsonable(value.value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, PurePath):
        return str(value)
    return value


def _sort_key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model a field holds (also as ``Model | None``), or None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, UnionType):
        models = [m for m in map(_model_of, get_args(annotation)) if m is not None]
        return models[0] if len(models) == 1 else None
    return None


def csv_columns(schema: type[BaseModel]) -> list[str]:
    """A record type's CSV columns: its fields, a nested model's fields as
    ``outer.inner`` (``measurements.area_cm2``); lists and mappings stay one column."""
    columns: list[str] = []
    for name, info in schema.model_fields.items():
        nested = _model_of(info.annotation)
        columns += [f"{name}.{c}" for c in csv_columns(nested)] if nested else [name]
    return columns


def _cell(row: Any, column: str) -> Any:
    for part in column.split("."):
        row = row.get(part) if isinstance(row, dict) else None
    return row


def write_csv(items: Sequence[Any], schema: type[BaseModel] | None = None) -> None:
    """Print `items` as CSV on stdout: a header line, then one line per item, cells
    made spreadsheet-safe (`crdt.csv_line`, the server's exports use it too). Columns
    come from `schema`, else from the first item's fields (nothing at all for no items)."""
    rows = [jsonable(item) for item in items]
    if schema is not None:
        columns = csv_columns(schema)
    elif rows and isinstance(rows[0], dict):
        columns = list(rows[0])
    else:
        return
    click.echo(csv_line(columns), nl=False)
    for row in rows:
        click.echo(csv_line(_cell(row, column) for column in columns), nl=False)


def emit(
    as_json: bool,
    value: Any,
    human: Callable[[Any], None],
    *,
    as_csv: bool = False,
    csv_schema: type[BaseModel] | None = None,
) -> None:
    """Print `value` as one JSON document on stdout, as CSV (`write_csv`; a list), or
    through `human` for people."""
    if as_json and as_csv:
        raise click.UsageError("give --json or --csv, not both")
    if as_csv:
        write_csv(value, csv_schema)
    elif as_json:
        click.echo(json.dumps(jsonable(value), indent=2, ensure_ascii=False))
    else:
        human(value)


def show_value(value: Any) -> str:
    """One value as a person reads it: plain strings bare, anything else as JSON."""
    value = jsonable(value)
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def show_fields(values: dict[str, Any]) -> None:
    """Print ``name: value`` lines; multi-line text goes indented under its name."""
    for name, value in values.items():
        if isinstance(value, str) and "\n" in value:
            click.echo(f"{name}:")
            for line in value.splitlines():
                click.echo(f"  {line}")
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            click.echo(f"{name}:")
            for item in value:
                shown = (f"{k}={show_value(v)}" for k, v in item.items() if v is not None)
                click.echo("  - " + ", ".join(shown))
        else:
            click.echo(f"{name}: {show_value(value)}")


def show_record(record: Record, *, omit: Iterable[str] = ()) -> None:
    """Print one record, a field per line: its data first, then the metadata."""
    values = record.model_dump(mode="json")
    first = record.data_fields()
    order = first + [name for name in values if name not in first]
    show_fields({name: values[name] for name in order if name not in omit})


def table(
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    empty: str = "nothing found",
) -> None:
    """Print rows as a table, or, when that would not fit the terminal, as blocks of
    ``column: value`` lines under each row's first cell (its id). Prints `empty` on
    stderr when there are no rows.
    """
    cells = [[show_value(cell) for cell in row] for row in rows]
    if not cells:
        click.echo(empty, err=True)
        return
    out = console()
    widths = [
        max(len(line) for line in [name, *(row[i] for row in cells)])
        for i, name in enumerate(columns)
    ]
    if sum(widths) + 2 * (len(widths) - 1) <= out.width:
        grid = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
        for name in columns:
            grid.add_column(name, no_wrap=True)
        for row in cells:
            grid.add_row(*(Text(cell) for cell in row))
        out.print(grid)
        return
    for row in cells:
        click.echo(row[0])
        for name, cell in zip(columns[1:], row[1:], strict=True):
            click.echo(f"  {name}: {cell}")


def console() -> Console:
    """A console on the current stdout that never reads markup or emoji in data."""
    return Console(markup=False, emoji=False, highlight=False)


_F = TypeVar("_F", bound=Callable[..., Any])


def json_option(command: _F) -> _F:
    """Add ``--json`` to a command."""
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        help="Print one JSON document on stdout, for scripts.",
    )(command)


def csv_option(command: _F) -> _F:
    """Add ``--csv`` to a list command."""
    return click.option(
        "--csv",
        "as_csv",
        is_flag=True,
        help="Print CSV on stdout (a header line; cells starting = + - @ get a leading ').",
    )(command)
