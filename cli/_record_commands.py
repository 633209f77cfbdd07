"""The `add|list|show|update|delete|restore` commands of a plain record collection,
built from a list of field options (`FieldOption`): the medical history
(`cli._medical_history`) and care plans (`cli._care_plans`) use it.

Each command only calls `client.<collection>` and formats what it returns; an option
value is passed to the record as given, so the record's schema does the validation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import click

from cli._app import App, with_app
from cli._options import given, list_options
from cli._output import csv_option, emit, json_option, show_record, table
from crdt import Record

__all__ = ["CODE_HELP", "FieldOption", "code_option", "parse_code", "record_group"]

CODE_SYSTEMS = {
    "snomed": "http://snomed.info/sct",
    "icd10": "http://hl7.org/fhir/sid/icd-10",
    "rxnorm": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "loinc": "http://loinc.org",
}
"""Short names a person may type for a code system's URI."""

CODE_HELP = (
    "A code as SYSTEM|CODE or SYSTEM|CODE|DISPLAY; SYSTEM is the code system's URI or one "
    "of " + ", ".join(CODE_SYSTEMS) + "."
)


def parse_code(value: str) -> dict[str, str]:
    """``SYSTEM|CODE[|DISPLAY]`` as a record's code (`crdt.Code` fields).

    Raises:
        click.BadParameter: Not two or three parts, or an empty system or code.
    """
    parts = [part.strip() for part in value.split("|", 2)]
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise click.BadParameter(f"{value!r} is not SYSTEM|CODE[|DISPLAY] (e.g. snomed|44054006)")
    code = {"system": CODE_SYSTEMS.get(parts[0].lower(), parts[0]), "code": parts[1]}
    if len(parts) == 3 and parts[2]:
        code["display"] = parts[2]
    return code


def _code_callback(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> dict[str, str] | None:
    return None if value is None else parse_code(value)


@dataclass(frozen=True, slots=True)
class FieldOption:
    """One record field as a command-line option of `add` and `update`."""

    field: str  # the record's field
    flag: str  # "--onset"
    help: str
    type: Any = None  # a click type; None: text
    metavar: str | None = None
    required: bool = False  # required by `add`
    multiple: bool = False  # repeated; the values become the field's list
    callback: Callable[[click.Context, click.Parameter, Any], Any] | None = None
    list_filter: bool = False  # also a filter of `list`

    def option(self, *, for_add: bool, for_list: bool = False) -> Callable[[Any], Any]:
        """The click option of this field for `add`, `update` or (a filter) `list`."""
        text = self.help
        if for_list:
            text = f"Only records with this {self.field.replace('_', ' ')}."
        elif not for_add and self.multiple:
            text += " Replaces every value."
        return click.option(
            self.flag,
            self.field,
            type=self.type,
            metavar=self.metavar,
            required=for_add and self.required,
            multiple=self.multiple and not for_list,
            callback=None if for_list else self.callback,
            help=text,
        )


def code_option(help: str) -> FieldOption:
    """The ``--code SYSTEM|CODE[|DISPLAY]`` option of a record's `code` field."""
    return FieldOption(
        "code",
        "--code",
        f"{help} {CODE_HELP}",
        metavar="SYSTEM|CODE[|DISPLAY]",
        callback=_code_callback,
    )


def _apply(command: Callable[..., Any], options: Sequence[Callable[[Any], Any]]) -> Any:
    for option in reversed(options):
        command = option(command)
    return command


def record_group(
    *,
    name: str,
    help: str,
    collection: str,
    schema: type[Record],
    noun: str,
    fields: Sequence[FieldOption],
    columns: Sequence[tuple[str, Callable[[Any], Any]]],
    list_help: str,
) -> click.Group:
    """A command group ``NAME add|list|show|update|delete|restore`` over
    ``client.<collection>`` (`noun` names one record in messages); `columns` are the
    list table's columns (heading, value of a record)."""
    group = click.Group(name=name, help=help)
    clearable = {  # the options' names, without dashes, of the fields that may be empty
        f.flag.removeprefix("--"): f.field
        for f in fields
        if f.multiple or (not f.required and schema.model_fields[f.field].default is None)
    }
    _multiple = {f.field for f in fields if f.multiple}  # cleared to an empty list

    def records(app: App) -> Any:
        return app.client().collection(collection)

    def show_table(found: list[Any]) -> None:
        table(
            [heading for heading, _ in columns],
            ([value(r) for _, value in columns] for r in found),
            empty=f"no {name.replace('-', ' ')}",
        )

    @with_app
    def add(app: App, /, as_json: bool, **values: Any) -> None:
        emit(as_json, records(app).add(**given(**values)), show_record)

    add.__doc__ = f"Record a {noun}."
    group.command("add")(_apply(add, [f.option(for_add=True) for f in fields] + [json_option]))

    @with_app
    def list_(
        app: App,
        /,
        include_deleted: bool,
        limit: int | None,
        as_json: bool,
        as_csv: bool,
        **filters: Any,
    ) -> None:
        found = records(app).list(include_deleted=include_deleted, limit=limit, **given(**filters))
        emit(as_json, found, show_table, as_csv=as_csv, csv_schema=schema)

    list_.__doc__ = list_help
    filter_options = [f.option(for_add=False, for_list=True) for f in fields if f.list_filter]
    group.command("list")(
        _apply(list_, [*filter_options, list_options(name), json_option, csv_option])
    )

    @with_app
    def show(app: App, record_id: str, as_json: bool) -> None:
        emit(as_json, records(app).get(record_id), show_record)

    show.__doc__ = f"Show one {noun} (deleted ones too)."
    group.command("show")(_apply(show, [click.argument("record_id"), json_option]))

    @with_app
    def update(
        app: App, /, record_id: str, clear: tuple[str, ...], as_json: bool, **values: Any
    ) -> None:
        changes = given(**values)
        cleared = {clearable[name] for name in clear}
        both = sorted(name for name in clear if clearable[name] in changes)
        if both:
            raise click.UsageError(f"{', '.join(both)}: give a new value or --clear, not both")
        changes.update({field: [] if field in _multiple else None for field in cleared})
        if not changes:
            raise click.UsageError("nothing to change: give at least one field option")
        emit(as_json, records(app).update(record_id, **changes), show_record)

    update.__doc__ = f"Change some fields of a {noun}; the others keep their values."
    clear_option = click.option(
        "--clear",
        multiple=True,
        type=click.Choice(list(clearable)),
        help="Remove the value of this option's field (e.g. --clear note); repeat for more.",
    )
    updatable = [f.option(for_add=False) for f in fields if f.field not in schema.immutable_fields]
    group.command("update")(
        _apply(update, [click.argument("record_id"), *updatable, clear_option, json_option])
    )

    @with_app
    def delete(app: App, record_id: str, as_json: bool) -> None:
        record = records(app).delete(record_id)
        emit(as_json, record, lambda r: click.echo(f"deleted {noun} {r.id}"))

    delete.__doc__ = f"Mark a {noun} deleted (kept and synced as deleted; `restore` undoes it)."
    group.command("delete")(_apply(delete, [click.argument("record_id"), json_option]))

    @with_app
    def restore(app: App, record_id: str, as_json: bool) -> None:
        record = records(app).restore(record_id)
        emit(as_json, record, lambda r: click.echo(f"restored {noun} {r.id}"))

    restore.__doc__ = f"Undo the delete of a {noun}."
    group.command("restore")(_apply(restore, [click.argument("record_id"), json_option]))
    return group
