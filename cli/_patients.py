"""`coherency patients ...`: add, find, show, change, delete and restore patients.

Emergency contacts and insurance are given as ``KEY=VALUE;KEY=VALUE`` (the keys are
the fields of `crdt.EmergencyContact` and `crdt.Insurance`), repeated for more.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from cli._app import App, with_app
from cli._options import choice, given, list_options
from cli._output import csv_option, emit, json_option, show_record, table
from crdt import ContactKind, Patient, Sex

__all__ = ["patients"]

_CONTACT_HELP = (
    "A contact as KIND=VALUE, KIND one of "
    + ", ".join(k.value for k in ContactKind)
    + "; repeat for more."
)


def _contacts(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> list[dict[str, str]]:
    """Contacts given as KIND=VALUE, as the records' contact entries."""
    contacts = []
    for value in values:
        kind, sep, text = value.partition("=")
        if not sep:
            raise click.BadParameter(f"{value!r} is not KIND=VALUE (e.g. phone=+44 20 7946 0000)")
        contacts.append({"kind": kind.strip(), "value": text})
    return contacts


_EMERGENCY_HELP = (
    "An emergency contact as KEY=VALUE pairs joined by ';', keys name, relationship, "
    "phone, email (e.g. 'name=Grace Okafor;relationship=daughter;phone=+44 20 7946 0000'); "
    "repeat for more."
)
_INSURANCE_HELP = (
    "A payer covering the patient as KEY=VALUE pairs joined by ';', keys payer, member_id, "
    "plan, group, subscriber, relationship, valid_from, valid_until (e.g. "
    "'payer=Acme Health;member_id=AC-1234'); repeat for more."
)


def _pairs(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> list[dict[str, str]]:
    """Entries given as ``KEY=VALUE;KEY=VALUE``, as dicts (the record checks the keys)."""
    entries = []
    for value in values:
        entry: dict[str, str] = {}
        for pair in value.split(";"):
            key, sep, text = pair.partition("=")
            key = key.strip().replace("-", "_")
            if not sep or not key:
                raise click.BadParameter(f"{pair!r} in {value!r} is not KEY=VALUE")
            if key in entry:
                raise click.BadParameter(f"{key} is given twice in {value!r}")
            entry[key] = text.strip()
        entries.append(entry)
    return entries


_F = TypeVar("_F", bound=Callable[..., Any])

_ENTRY_OPTIONS = (  # flag, parameter, metavar, parser, help, one entry, --clear-… suffix
    ("--contact", "contacts", "KIND=VALUE", _contacts, _CONTACT_HELP, "contact", "contacts"),
    ("--emergency-contact", "emergency_contacts", "KEY=VALUE;...", _pairs, _EMERGENCY_HELP,
     "emergency contact", "emergency-contacts"),
    ("--insurance", "insurance", "KEY=VALUE;...", _pairs, _INSURANCE_HELP, "payer", "insurance"),
)  # fmt: skip


def _entry_options(*, replacing: bool) -> Callable[[_F], _F]:
    """The --contact, --emergency-contact and --insurance options (repeatable); on an
    update each replaces the whole list and has a --clear-… flag beside it."""

    def decorate(command: _F) -> _F:
        for flag, name, metavar, parse, text, entry, clear in reversed(_ENTRY_OPTIONS):
            if replacing:
                command = click.option(f"--clear-{clear}", is_flag=True,
                                       help=f"Remove every {entry}.")(command)  # fmt: skip
            command = click.option(
                flag,
                name,
                metavar=metavar,
                multiple=True,
                callback=parse,
                help=text + (f" Replaces every {entry}." if replacing else ""),
            )(command)
        return command

    return decorate


def _patient_table(records: list[Patient], *, with_deleted: bool = False) -> None:
    columns = ["id", "name", "born", "sex", "mrn"] + (["deleted"] if with_deleted else [])
    table(
        columns,
        (
            [p.id, f"{p.family_name}, {p.given_name}", p.birth_date, p.sex, p.mrn]
            + ([p.deleted] if with_deleted else [])
            for p in records
        ),
        empty="no patients",
    )


@click.group()
def patients() -> None:
    """Add, find, show and change patients."""


@patients.command("add")
@click.option("--given", "given_name", required=True, help="Given name.")
@click.option("--family", required=True, help="Family name.")
@click.option("--birth-date", required=True, metavar="YYYY-MM-DD", help="Date of birth.")
@click.option("--mrn", help="Medical record number.")
@click.option("--sex", type=choice(Sex), help="Administrative sex (default unknown).")
@_entry_options(replacing=False)
@json_option
@with_app
def patients_add(
    app: App,
    given_name: str,
    family: str,
    birth_date: str,
    mrn: str | None,
    sex: str | None,
    contacts: list[dict[str, str]],
    emergency_contacts: list[dict[str, str]],
    insurance: list[dict[str, str]],
    as_json: bool,
) -> None:
    """Register a patient."""
    values = given(
        given_name=given_name,
        family_name=family,
        birth_date=birth_date,
        mrn=mrn,
        sex=sex,
        contacts=contacts,
        emergency_contacts=emergency_contacts,
        insurance=insurance,
    )
    emit(as_json, app.client().patients.add(**values), show_record)


@patients.command("list")
@click.option("--name", help="Only patients whose given name, family name or MRN starts so.")
@click.option("--mrn", help="Only the patient with exactly this MRN.")
@list_options("patients")
@json_option
@csv_option
@with_app
def patients_list(
    app: App,
    name: str | None,
    mrn: str | None,
    include_deleted: bool,
    limit: int | None,
    as_json: bool,
    as_csv: bool,
) -> None:
    """List patients (by family name with --name, else oldest first)."""
    if name is not None and mrn is not None:
        raise click.UsageError("give --name or --mrn, not both")
    collection = app.client().patients
    if name is not None:
        found = collection.search(name, include_deleted=include_deleted, **given(limit=limit))
    else:
        found = collection.list(include_deleted=include_deleted, limit=limit, **given(mrn=mrn))
    emit(
        as_json,
        found,
        lambda rs: _patient_table(rs, with_deleted=include_deleted),
        as_csv=as_csv,
        csv_schema=Patient,
    )


@patients.command("show")
@click.argument("patient_id")
@json_option
@with_app
def patients_show(app: App, patient_id: str, as_json: bool) -> None:
    """Show one patient (deleted ones too)."""
    emit(as_json, app.client().patients.get(patient_id), show_record)


@patients.command("update")
@click.argument("patient_id")
@click.option("--given", "given_name", help="New given name.")
@click.option("--family", help="New family name.")
@click.option("--birth-date", metavar="YYYY-MM-DD", help="New date of birth.")
@click.option("--mrn", help="New medical record number.")
@click.option("--clear-mrn", is_flag=True, help="Remove the medical record number.")
@click.option("--sex", type=choice(Sex), help="New administrative sex.")
@_entry_options(replacing=True)
@json_option
@with_app
def patients_update(
    app: App,
    patient_id: str,
    given_name: str | None,
    family: str | None,
    birth_date: str | None,
    mrn: str | None,
    clear_mrn: bool,
    sex: str | None,
    contacts: list[dict[str, str]],
    clear_contacts: bool,
    emergency_contacts: list[dict[str, str]],
    clear_emergency_contacts: bool,
    insurance: list[dict[str, str]],
    clear_insurance: bool,
    as_json: bool,
) -> None:
    """Change some fields of a patient; the others keep their values."""
    if clear_mrn and mrn is not None:
        raise click.UsageError("give --mrn or --clear-mrn, not both")
    for option, values, clear in (
        ("--contact", contacts, clear_contacts),
        ("--emergency-contact", emergency_contacts, clear_emergency_contacts),
        ("--insurance", insurance, clear_insurance),
    ):
        if clear and values:
            raise click.UsageError(f"give {option} or its --clear option, not both")
    changes = given(
        given_name=given_name,
        family_name=family,
        birth_date=birth_date,
        mrn=mrn,
        sex=sex,
        contacts=contacts,
        emergency_contacts=emergency_contacts,
        insurance=insurance,
    )
    if clear_mrn:
        changes["mrn"] = None
    for name, clear in (
        ("contacts", clear_contacts),
        ("emergency_contacts", clear_emergency_contacts),
        ("insurance", clear_insurance),
    ):
        if clear:
            changes[name] = []
    if not changes:
        raise click.UsageError("nothing to change: give at least one field option")
    emit(as_json, app.client().patients.update(patient_id, **changes), show_record)


@patients.command("delete")
@click.argument("patient_id")
@json_option
@with_app
def patients_delete(app: App, patient_id: str, as_json: bool) -> None:
    """Mark a patient deleted (kept and synced as deleted; `restore` undoes it)."""
    record = app.client().patients.delete(patient_id)
    emit(as_json, record, lambda r: click.echo(f"deleted patient {r.id}"))


@patients.command("restore")
@click.argument("patient_id")
@json_option
@with_app
def patients_restore(app: App, patient_id: str, as_json: bool) -> None:
    """Undo the delete of a patient."""
    record = app.client().patients.restore(patient_id)
    emit(as_json, record, lambda r: click.echo(f"restored patient {r.id}"))
