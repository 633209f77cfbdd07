"""`coherency care-plans ...`: how each wound is to be treated (goals, dressing regime,
offloading, next review)."""

from __future__ import annotations

import click

from cli._options import choice
from cli._record_commands import FieldOption, record_group
from crdt import CarePlan, CarePlanStatus

__all__ = ["care_plans"]

_DATE = "YYYY-MM-DD"

care_plans: click.Group = record_group(
    name="care-plans",
    help="Care plans of wounds: goals, dressing regime, offloading and review date.",
    collection="care_plans",
    schema=CarePlan,
    noun="care plan",
    fields=[
        FieldOption(
            "patient_id", "--patient", "The patient's id.", required=True, list_filter=True
        ),
        FieldOption(
            "wound_id",
            "--wound",
            "The wound the plan treats (one of the patient's).",
            required=True,
            list_filter=True,
        ),
        FieldOption(
            "status",
            "--status",
            "Where the plan is in its life (default active).",
            type=choice(CarePlanStatus),
            list_filter=True,
        ),
        FieldOption("title", "--title", "A short title."),
        FieldOption("goals", "--goal", "A goal of the plan; repeat for more.", multiple=True),
        FieldOption("dressing", "--dressing", "The dressing regime."),
        FieldOption(
            "dressing_every_days",
            "--dressing-every-days",
            "Change the dressing every this many days (1-90).",
            type=int,
        ),
        FieldOption("offloading", "--offloading", "The offloading, e.g. 'total contact cast'."),
        FieldOption("review_on", "--review-on", "When to review the plan.", metavar=_DATE),
        FieldOption("starts_on", "--starts-on", "When the plan starts.", metavar=_DATE),
        FieldOption("ends_on", "--ends-on", "When the plan ends.", metavar=_DATE),
        FieldOption("note", "--note", "A free-text note."),
    ],
    columns=[
        ("id", lambda r: r.id),
        ("wound", lambda r: r.wound_id),
        ("status", lambda r: r.status),
        ("title", lambda r: r.title),
        ("dressing", lambda r: r.dressing),
        ("every", lambda r: r.dressing_every_days),
        ("review", lambda r: r.review_on),
    ],
    list_help="List care plans, oldest first (by id).",
)
