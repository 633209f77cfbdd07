"""The relational projections of replicated records: one row per patient, wound and
assessment, rebuilt from its document whenever the document changes (in the same
transaction), so staff can search and list without reading Automerge documents.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from crdt import sortable_time
from sync_server.db import Base
from sync_server.sync.tables import AssessmentRow, PatientRow, WoundRow

__all__ = ["PROJECTIONS", "ProjectionRow", "patient_of", "projection_row"]

ProjectionRow = PatientRow | WoundRow | AssessmentRow

PROJECTIONS: dict[str, type[Base]] = {
    "patients": PatientRow,
    "wounds": WoundRow,
    "assessments": AssessmentRow,
}
"""The projection table of each projected collection."""

_MEASUREMENTS = (
    "area_cm2",
    "perimeter_cm",
    "length_cm",
    "width_cm",
    "max_depth_mm",
    "mean_depth_mm",
    "volume_cm3",
)


def patient_of(collection: str, values: Mapping[str, Any]) -> str | None:
    """The patient a record of `collection` belongs to (a patient is its own), from its
    values; None for a record of no one patient (a directory, a catalogue)."""
    patient = values.get("id") if collection == "patients" else values.get("patient_id")
    return patient if isinstance(patient, str) and patient else None


def projection_row(collection: str, dumped: dict[str, Any], conflicted: bool) -> dict[str, Any]:
    """The projection row's values for a record of `collection` (dumped as JSON values).

    Raises:
        ValueError, OverflowError: A value the row cannot hold.
    """
    row: dict[str, Any] = {
        "id": dumped["id"],
        "clinic_id": dumped["clinic_id"],
        "deleted": bool(dumped["deleted"]),
        "conflicted": conflicted,
        "updated_at": str(dumped["updated_at"]),
        "record": json.dumps(dumped, separators=(",", ":"), ensure_ascii=False),
    }
    if collection == "patients":
        row.update(
            given_name=dumped["given_name"],
            family_name=dumped["family_name"],
            birth_date=dumped["birth_date"],
            sex=dumped["sex"],
            mrn=dumped.get("mrn"),
        )
    elif collection == "wounds":
        row.update(
            patient_id=dumped["patient_id"],
            body_site=dumped["body_site"],
            etiology=dumped["etiology"],
            status=dumped["status"],
            onset=dumped.get("onset"),
        )
    elif collection == "assessments":
        measurements = dumped.get("measurements") or {}
        model = dumped.get("model_output") or {}
        row.update(
            wound_id=dumped["wound_id"],
            patient_id=dumped["patient_id"],
            captured_at=sortable_time(dumped["captured_at"]),
            device_id=dumped["device_id"],
            clinician=dumped.get("clinician"),
            model_id=model.get("model_id"),
            **{name: measurements.get(name) for name in _MEASUREMENTS},
        )
    return row
