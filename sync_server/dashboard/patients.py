"""What the dashboard's patient pages show, read from the relational projections: a
patient's wounds with their latest figures, and the records still conflicted on
devices (concurrent offline edits a clinician has not resolved yet)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from sync_server.sync.records import patient_wounds
from sync_server.sync.tables import AssessmentRow, PatientRow, WoundRow

__all__ = ["ConflictItem", "PatientView", "WoundSummary", "patient_view"]


@dataclass(frozen=True, slots=True)
class WoundSummary:
    """A wound as the patient page lists it."""

    id: str
    body_site: str
    etiology: str
    status: str
    onset: str | None
    assessments: int
    last_captured_at: str | None
    last_area_cm2: float | None


@dataclass(frozen=True, slots=True)
class ConflictItem:
    """A record of the patient with unresolved concurrent edits."""

    collection: str
    id: str
    updated_at: str


@dataclass(frozen=True, slots=True)
class PatientView:
    """Everything the patient page shows but the notes."""

    patient: PatientRow
    record: dict[str, Any]
    wounds: list[WoundSummary]
    conflicts: list[ConflictItem]


def patient_view(*, session: Session, patient: PatientRow) -> PatientView:
    """The patient page's content for `patient` (one the caller may see)."""
    wounds = list(session.scalars(patient_wounds(patient=patient, include_deleted=False)))
    counts = {
        wound_id: (count, last)
        for wound_id, count, last in session.execute(
            select(
                AssessmentRow.wound_id,
                func.count(AssessmentRow.id),
                func.max(AssessmentRow.captured_at),
            )
            .where(
                AssessmentRow.patient_id == patient.id,
                AssessmentRow.clinic_id == patient.clinic_id,
                AssessmentRow.deleted.is_(False),
            )
            .group_by(AssessmentRow.wound_id)
        )
    }
    latest_area: dict[str, float | None] = {}
    for wound_id, (_, last) in counts.items():
        latest_area[wound_id] = session.scalar(
            select(AssessmentRow.area_cm2)
            .where(
                AssessmentRow.wound_id == wound_id,
                AssessmentRow.clinic_id == patient.clinic_id,
                AssessmentRow.captured_at == last,
                AssessmentRow.deleted.is_(False),
            )
            .limit(1)
        )
    summaries = [
        WoundSummary(
            id=w.id,
            body_site=w.body_site,
            etiology=w.etiology,
            status=w.status,
            onset=w.onset,
            assessments=counts.get(w.id, (0, None))[0],
            last_captured_at=counts.get(w.id, (0, None))[1],
            last_area_cm2=latest_area.get(w.id),
        )
        for w in wounds
    ]
    return PatientView(
        patient=patient,
        record=json.loads(patient.record),
        wounds=summaries,
        conflicts=_conflicts(session, patient),
    )


def _conflicts(session: Session, patient: PatientRow) -> list[ConflictItem]:
    found = []
    if patient.conflicted:
        found.append(ConflictItem("patients", patient.id, patient.updated_at))
    for table, collection in ((WoundRow, "wounds"), (AssessmentRow, "assessments")):
        rows = session.execute(
            select(table.id, table.updated_at).where(
                table.patient_id == patient.id,
                table.clinic_id == patient.clinic_id,
                table.conflicted.is_(True),
                or_(table.deleted.is_(False), table.deleted.is_(None)),
            )
        )
        found.extend(ConflictItem(collection, row_id, updated) for row_id, updated in rows)
    return found
