"""`coherency conditions|allergies|medications ...`: a patient's medical history.

Each group adds, lists, shows, changes, deletes and restores records of one kind, with
an option per field (`cli._record_commands`).
"""

from __future__ import annotations

import click

from cli._options import choice
from cli._record_commands import FieldOption, code_option, record_group
from crdt import (
    AllergyCategory,
    AllergyCriticality,
    AllergyIntolerance,
    AllergyStatus,
    AllergyType,
    Condition,
    ConditionStatus,
    MedicationStatement,
    MedicationStatus,
)

__all__ = ["allergies", "conditions", "medications"]

_DATE = "YYYY-MM-DD"


def _patient() -> FieldOption:
    return FieldOption(
        "patient_id", "--patient", "The patient's id.", required=True, list_filter=True
    )


def _note() -> FieldOption:
    return FieldOption("note", "--note", "A free-text note.")


conditions: click.Group = record_group(
    name="conditions",
    help="A patient's medical history: diagnoses, with their course and codes.",
    collection="conditions",
    schema=Condition,
    noun="condition",
    fields=[
        _patient(),
        FieldOption("description", "--description", "The diagnosis as written.", required=True),
        code_option("The diagnosis's code (SNOMED CT, ICD-10)."),
        FieldOption(
            "clinical_status",
            "--status",
            "Whether it is present now (default active).",
            type=choice(ConditionStatus),
            list_filter=True,
        ),
        FieldOption("onset", "--onset", "When it began.", metavar=_DATE),
        FieldOption("abatement", "--abatement", "When it resolved or remitted.", metavar=_DATE),
        _note(),
    ],
    columns=[
        ("id", lambda r: r.id),
        ("patient", lambda r: r.patient_id),
        ("description", lambda r: r.description),
        ("status", lambda r: r.clinical_status),
        ("onset", lambda r: r.onset),
        ("abatement", lambda r: r.abatement),
    ],
    list_help="List conditions, oldest first (by id).",
)

allergies: click.Group = record_group(
    name="allergies",
    help="Allergies and intolerances: substances a patient must not be given.",
    collection="allergies",
    schema=AllergyIntolerance,
    noun="allergy",
    fields=[
        _patient(),
        FieldOption("substance", "--substance", "The substance, as written.", required=True),
        code_option("The substance's code."),
        FieldOption("type", "--type", "Allergy or intolerance.", type=choice(AllergyType)),
        FieldOption("category", "--category", "Kind of substance.", type=choice(AllergyCategory)),
        FieldOption(
            "criticality",
            "--criticality",
            "How bad a future reaction could be.",
            type=choice(AllergyCriticality),
        ),
        FieldOption(
            "clinical_status",
            "--status",
            "Whether it still holds (default active).",
            type=choice(AllergyStatus),
            list_filter=True,
        ),
        FieldOption("reaction", "--reaction", "The manifestation, e.g. 'rash'."),
        FieldOption("onset", "--onset", "When it was first seen.", metavar=_DATE),
        _note(),
    ],
    columns=[
        ("id", lambda r: r.id),
        ("patient", lambda r: r.patient_id),
        ("substance", lambda r: r.substance),
        ("criticality", lambda r: r.criticality),
        ("status", lambda r: r.clinical_status),
        ("reaction", lambda r: r.reaction),
    ],
    list_help="List allergies and intolerances, oldest first (by id).",
)

medications: click.Group = record_group(
    name="medications",
    help="Medications a patient takes or took (current and past).",
    collection="medications",
    schema=MedicationStatement,
    noun="medication",
    fields=[
        _patient(),
        FieldOption("medication", "--medication", "The medication, as written.", required=True),
        code_option("The medication's code (RxNorm, SNOMED CT, a national code)."),
        FieldOption(
            "status",
            "--status",
            "Whether it is taken (default active).",
            type=choice(MedicationStatus),
            list_filter=True,
        ),
        FieldOption("dosage", "--dosage", "The dosage, e.g. '500 mg twice daily'."),
        FieldOption("route", "--route", "The route, e.g. 'oral'."),
        FieldOption("started", "--started", "When it was started.", metavar=_DATE),
        FieldOption("ended", "--ended", "When it was stopped.", metavar=_DATE),
        FieldOption("reason", "--reason", "Why it is taken."),
        _note(),
    ],
    columns=[
        ("id", lambda r: r.id),
        ("patient", lambda r: r.patient_id),
        ("medication", lambda r: r.medication),
        ("dosage", lambda r: r.dosage),
        ("status", lambda r: r.status),
        ("started", lambda r: r.started),
    ],
    list_help="List medications, oldest first (by id).",
)
