"""Formatting what the libraries return: JSON for scripts, short tables for people."""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime
from pathlib import PurePath
from typing import Any

import click
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table
from rich.text import Text


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


def emit_json(value: Any) -> None:
    """Print `value` as one JSON document on stdout."""
    click.echo(json.dumps(jsonable(value), indent=2, ensure_ascii=False))


def emit(as_json: bool, value: Any, human: Callable[[Any], None]) -> None:
    """Print `value` as JSON, or through `human` for people."""
    if as_json:
        emit_json(value)
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
                click.echo("  - " + ", ".join(f"{k}={show_value(v)}" for k, v in item.items()))
        else:
            click.echo(f"{name}: {show_value(value)}")


def show_record(record: BaseModel) -> None:
    """Print one record, a field per line."""
    show_fields(record.model_dump(mode="json"))


def table(
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    empty: str = "nothing found",
) -> None:
    """Print a table (ids in the first column never truncated), or `empty` if no rows."""
    rows = list(rows)
    if not rows:
        click.echo(empty, err=True)
        return
    grid = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for i, name in enumerate(columns):
        if i == 0:
            grid.add_column(name, no_wrap=True, min_width=8, overflow="fold")
        else:
            grid.add_column(name, overflow="fold")
    for row in rows:
        grid.add_row(*(Text(show_value(cell)) for cell in row))
    console().print(grid)


def console() -> Console:
    """A console on the current stdout that never reads markup or emoji in data."""
    return Console(markup=False, emoji=False, highlight=False)
