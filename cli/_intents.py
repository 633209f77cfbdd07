"""What the intent command groups (appointments, visits, orders, payments) share:
times as typed, and intents as shown.

An intent is shown with where it stands: ``pending`` until `coherency sync` brings the
server's decision, then the decision's status, its reason, and what the server did
(booked, reserved, charged; or, on a rejected booking, the nearest free fit it offered).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import click

from cli._output import show_fields, table
from crdt import DecisionStatus
from edge_sdk import IntentStatus

__all__ = ["STATES", "TIME", "DayType", "TimeType", "show_status", "status_table"]

STATES = ["pending", *(status.value for status in DecisionStatus)]
"""What `--state` takes."""


class TimeType(click.ParamType[datetime]):
    """An ISO 8601 time; its UTC offset is required by the records, not here."""

    name = "time"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            return datetime.fromisoformat(str(value))
        except ValueError:
            self.fail(f"{value!r} is not an ISO time (e.g. 2026-12-07T09:00+01:00)", param, ctx)


class DayType(click.ParamType[date]):
    """An ISO 8601 day."""

    name = "day"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> date:
        if isinstance(value, date):
            return value
        try:
            return date.fromisoformat(str(value))
        except ValueError:
            self.fail(f"{value!r} is not a day as YYYY-MM-DD", param, ctx)


TIME = TimeType()


def _booking(status: IntentStatus) -> Any:
    """The booking an intent acts on, or the one its decision made."""
    outcome = status.decision.outcome if status.decision is not None else None
    return (outcome or {}).get("booking_id") or status.intent.subject_id


_SUBJECTS = {"order": "order", "payment": "invoice"}
"""What an intent's subject is, by kind family (else a booking)."""


def show_status(status: IntentStatus) -> None:
    """Print one intent and where it stands, a field per line."""
    intent = status.intent
    subject = _SUBJECTS.get(intent.kind.value.partition(".")[0], "booking")
    fields: dict[str, Any] = {
        "intent": intent.id,
        "kind": intent.kind,
        "state": status.state,
        "patient": intent.patient_id,
        subject: intent.subject_id,
        **{name: value for name, value in intent.details.items() if value is not None},
    }
    if status.decision is None:
        fields["note"] = "pending until the server decides: run `coherency sync`"
    else:
        fields["reason"] = status.decision.reason
        if status.decision.outcome:
            fields["outcome"] = [status.decision.outcome]
        if status.decision.alternative:
            fields["alternative"] = [status.decision.alternative]
    show_fields(fields)


def status_table(statuses: list[IntentStatus], *, empty: str) -> None:
    """Print intents as a table: kind, state, time asked for, booking, reason."""
    table(
        ["intent", "kind", "state", "at", "booking", "reason"],
        (
            [
                s.id,
                s.intent.kind,
                s.state,
                s.intent.details.get("starts_at"),
                _booking(s),
                s.decision.reason if s.decision is not None else None,
            ]
            for s in statuses
        ),
        empty=empty,
    )
