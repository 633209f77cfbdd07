"""Options and argument handling the record command groups share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

__all__ = ["choice", "given", "list_options"]

F = TypeVar("F", bound=Callable[..., Any])


def choice(enum_type: type[Any]) -> click.Choice[str]:
    """A choice among the values of a record field's enum."""
    return click.Choice([member.value for member in enum_type])


def given(**options: Any) -> dict[str, Any]:
    """The options given: None and empty repeated options mean "not given"."""
    return {name: value for name, value in options.items() if value not in (None, (), [])}


def list_options(noun: str) -> Callable[[F], F]:
    """Add ``--include-deleted`` and ``--limit`` to a command listing `noun`."""

    def add(command: F) -> F:
        command = click.option(
            "--limit", type=click.IntRange(min=1), help="Show at most this many."
        )(command)
        return click.option("--include-deleted", is_flag=True, help=f"Include deleted {noun}.")(
            command
        )

    return add
