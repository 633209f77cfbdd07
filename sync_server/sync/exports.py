"""Staff exports: a clinic's patients, wounds, assessments, notes, medical history
(conditions, allergies, medications) or care plans for analysts, as CSV or
newline-delimited JSON, streamed.

One kind per export, with the columns of `COLUMNS` in that order: a CSV file has them as
its header line; an NDJSON line is one object with them as keys (lists and mappings as
JSON values, not text). Rows come in id order, read in keyset batches, each in a short
read transaction of its own, and are encoded as they come: an export holds one batch in
memory, however many rows the clinic has. CSV cells are made spreadsheet-safe
(`crdt.csv_line`).

Every export is audited (`RecordsExported`): once before the first byte (who, clinic,
kind, format, filters) and once at the end, with the row count and the patients the rows
belong to (an export is a disclosure of each of them; their ids are the one thing an
export keeps beyond a batch).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any, Literal, get_args

from sqlalchemy import ColumnElement, false, select
from sqlalchemy.orm import Session

from crdt import csv_line
from sync_server.audit.events import Actor, RecordsExported
from sync_server.audit.services import record_event
from sync_server.db import Database
from sync_server.errors import Invalid
from sync_server.sync.listing import (
    AssessmentFilters,
    NoteItem,
    assessment_conditions,
    document_batches,
    note_batches,
)
from sync_server.sync.tables import AssessmentRow, PatientRow, WoundRow

__all__ = [
    "COLUMNS",
    "TISSUE_CLASSES",
    "ExportFormat",
    "ExportKind",
    "ExportStream",
    "check_export",
    "export_lines",
    "export_rows",
    "open_export",
]

ExportKind = Literal[
    "patients",
    "wounds",
    "assessments",
    "notes",
    "conditions",
    "allergies",
    "medications",
    "care_plans",
]
ExportFormat = Literal["csv", "ndjson"]
SessionFor = Callable[[], AbstractContextManager[Session]]

TISSUE_CLASSES = ("granulation", "slough", "necrosis", "epithelium")
"""The tissue classes with a column of their own (percent of the wound's area); any
other class a model reports goes to ``tissue_other``."""

_STATE = ("deleted", "conflicted", "updated_at")
_FIGURES = (
    "area_cm2",
    "perimeter_cm",
    "length_cm",
    "width_cm",
    "max_depth_mm",
    "mean_depth_mm",
    "volume_cm3",
)

_CODE = ("code_system", "code", "code_display")  # a record's `code`, flattened
_OF_A_WOUND = frozenset({"wounds", "assessments", "notes", "care_plans"})
"""The kinds the `wound_id` filter applies to (the capture time, area and model output
filters apply to assessments only)."""
_FROM_DOCUMENTS = ("conditions", "allergies", "medications", "care_plans")
"""The kinds read from their documents (no projection table), filtered by patient (and
care plans by wound)."""

COLUMNS: dict[str, tuple[str, ...]] = {
    "patients": (
        "id", "clinic_id", "family_name", "given_name", "birth_date", "sex", "mrn", *_STATE,
    ),
    "wounds": (
        "id", "clinic_id", "patient_id", "body_site", "etiology", "status", "onset", *_STATE,
    ),
    "assessments": (
        "id", "clinic_id", "patient_id", "wound_id", "captured_at", "device_id", "clinician",
        *_FIGURES, "ruler_area_cm2", "area_method",
        "model_id", "model_version", "model_confidence",
        *(f"tissue_{name}_pct" for name in TISSUE_CLASSES), "tissue_other",
        "quality_flags", "blob_count", *_STATE,
    ),
    "notes": (
        "id", "clinic_id", "patient_id", "wound_id", "author", "text", "deleted",
        "created_at", "updated_at",
    ),
    "conditions": (
        "id", "clinic_id", "patient_id", "description", *_CODE, "clinical_status", "onset",
        "abatement", "note", "deleted", "created_at", "updated_at",
    ),
    "allergies": (
        "id", "clinic_id", "patient_id", "substance", *_CODE, "type", "category",
        "criticality", "clinical_status", "reaction", "onset", "note", "deleted",
        "created_at", "updated_at",
    ),
    "medications": (
        "id", "clinic_id", "patient_id", "medication", *_CODE, "status", "dosage", "route",
        "started", "ended", "reason", "note", "deleted", "created_at", "updated_at",
    ),
    "care_plans": (
        "id", "clinic_id", "patient_id", "wound_id", "status", "title", "goals", "dressing",
        "dressing_every_days", "offloading", "review_on", "starts_on", "ends_on", "note",
        "deleted", "created_at", "updated_at",
    ),
}  # fmt: skip
"""The columns of each export kind, in order (documented in docs/server.md)."""

_ONLY_ASSESSMENTS = (
    "captured_from",
    "captured_before",
    "min_area_cm2",
    "max_area_cm2",
    "has_model_output",
)


def check_export(kind: str, format: str, filters: AssessmentFilters) -> None:
    """Refuse an export of an unknown kind or format, or with a filter its kind has not.

    Raises:
        Invalid: ``unknown_kind``, ``unknown_format``, ``filter_not_applicable``,
            ``empty_range``, ``bad_time``.
    """
    if kind not in get_args(ExportKind):
        raise Invalid(
            f"no export of {kind!r}: one of {', '.join(get_args(ExportKind))}", code="unknown_kind"
        )
    if format not in get_args(ExportFormat):
        raise Invalid(
            f"no export format {format!r}: one of {', '.join(get_args(ExportFormat))}",
            code="unknown_format",
        )
    if kind == "assessments":
        assessment_conditions(clinic_id="", filters=filters)  # refuses bad ranges now
        return
    given = [name for name in _ONLY_ASSESSMENTS if getattr(filters, name) is not None]
    if filters.wound_id is not None and kind not in _OF_A_WOUND:
        given.insert(0, "wound_id")
    if given:
        raise Invalid(
            f"{', '.join(given)}: not a filter of {kind}",
            code="filter_not_applicable",
        )


def _state(row: Any) -> dict[str, Any]:
    return {"deleted": bool(row.deleted), "conflicted": bool(row.conflicted),
            "updated_at": row.updated_at}  # fmt: skip


def _patient(row: PatientRow) -> dict[str, Any]:
    return {
        "id": row.id, "clinic_id": row.clinic_id, "family_name": row.family_name,
        "given_name": row.given_name, "birth_date": row.birth_date, "sex": row.sex,
        "mrn": row.mrn, **_state(row),
    }  # fmt: skip


def _wound(row: WoundRow) -> dict[str, Any]:
    return {
        "id": row.id, "clinic_id": row.clinic_id, "patient_id": row.patient_id,
        "body_site": row.body_site, "etiology": row.etiology, "status": row.status,
        "onset": row.onset, **_state(row),
    }  # fmt: skip


def _assessment(row: AssessmentRow) -> dict[str, Any]:
    record = json.loads(row.record)
    measurements = record.get("measurements") or {}
    model = record.get("model_output") or {}
    tissue = dict(model.get("tissue_composition") or {})
    own = {f"tissue_{name}_pct": tissue.pop(name, None) for name in TISSUE_CLASSES}
    return {
        "id": row.id,
        "clinic_id": row.clinic_id,
        "patient_id": row.patient_id,
        "wound_id": row.wound_id,
        "captured_at": record.get("captured_at") or row.captured_at,
        "device_id": row.device_id,
        "clinician": row.clinician,
        **{name: getattr(row, name) for name in _FIGURES},
        "ruler_area_cm2": measurements.get("ruler_area_cm2"),
        "area_method": measurements.get("area_method"),
        "model_id": row.model_id,
        "model_version": model.get("model_version"),
        "model_confidence": model.get("confidence"),
        **own,
        "tissue_other": tissue or None,
        "quality_flags": list(record.get("quality_flags") or ()),
        "blob_count": len(record.get("blobs") or ()),
        **_state(row),
    }


def _note(note: NoteItem) -> dict[str, Any]:
    return {name: getattr(note, name) for name in COLUMNS["notes"]}


def _document_record(
    doc_id: str, clinic_id: str, patient_id: str | None, values: dict[str, Any], kind: str
) -> dict[str, Any]:
    """A row of a kind read from documents: its values by `COLUMNS`, the code flattened."""
    code = values.get("code")
    code = code if isinstance(code, dict) else {}
    row = {name: values.get(name) for name in COLUMNS[kind]}
    row.update(
        id=doc_id,
        clinic_id=clinic_id,
        patient_id=patient_id or values.get("patient_id"),
        deleted=bool(values.get("deleted")),
    )
    if "code" in row:
        row.update(code_system=code.get("system"), code=code.get("code"),
                   code_display=code.get("display"))  # fmt: skip
    if "goals" in row:
        row["goals"] = list(values.get("goals") or ())
    return row


def _document_record_batches(
    session_for: SessionFor, *, kind: str, clinic_id: str, filters: AssessmentFilters,
    batch_size: int,
) -> Iterator[list[dict[str, Any]]]:  # fmt: skip
    for batch in document_batches(
        session_for,
        collection=kind,
        clinic_id=clinic_id,
        patient_id=filters.patient_id,
        batch_size=batch_size,
    ):
        rows = [
            _document_record(doc_id, clinic_id, patient, values, kind)
            for doc_id, patient, values in batch
        ]
        rows = [
            row
            for row in rows
            if (filters.include_deleted or not row["deleted"])
            and (filters.wound_id is None or row.get("wound_id") == filters.wound_id)
        ]
        if rows:
            yield rows


def _projection_batches(
    session_for: SessionFor,
    table: type[PatientRow] | type[WoundRow] | type[AssessmentRow],
    conditions: list[ColumnElement[bool]],
    convert: Callable[[Any], dict[str, Any]],
    batch_size: int,
) -> Iterator[list[dict[str, Any]]]:
    after = ""
    while True:
        with session_for() as session:
            rows = session.scalars(
                select(table)
                .where(*conditions, table.id > after)
                .order_by(table.id)
                .limit(batch_size)
            ).all()
            batch = [convert(row) for row in rows]
        if not batch:
            return
        after = batch[-1]["id"]
        yield batch


def export_rows(
    session_for: SessionFor,
    *,
    kind: str,
    clinic_id: str,
    filters: AssessmentFilters,
    batch_size: int = 1000,
) -> Iterator[list[dict[str, Any]]]:
    """A clinic's records of `kind` matching `filters`, as batches of rows (`COLUMNS`
    keys), by id. Each batch is read in a session of its own from `session_for()`
    (e.g. `Database.read`) when the previous one has been consumed.

    Raises:
        Invalid: As `check_export`.
    """
    check_export(kind, "csv", filters)
    if kind == "notes":
        for notes in note_batches(
            session_for,
            clinic_id=clinic_id,
            patient_id=filters.patient_id,
            wound_id=filters.wound_id,
            include_deleted=filters.include_deleted,
            batch_size=batch_size,
        ):
            if notes:
                yield [_note(n) for n in notes]
        return
    if kind in _FROM_DOCUMENTS:
        yield from _document_record_batches(
            session_for, kind=kind, clinic_id=clinic_id, filters=filters, batch_size=batch_size
        )
        return
    if kind == "assessments":
        conditions = assessment_conditions(clinic_id=clinic_id, filters=filters)
        yield from _projection_batches(
            session_for, AssessmentRow, conditions, _assessment, batch_size
        )
        return
    table: type[PatientRow] | type[WoundRow] = PatientRow if kind == "patients" else WoundRow
    conditions = [table.clinic_id == clinic_id]
    if not filters.include_deleted:
        conditions.append(table.deleted == false())
    if filters.patient_id is not None:
        conditions.append(
            (PatientRow.id if kind == "patients" else WoundRow.patient_id) == filters.patient_id
        )
    if kind == "wounds" and filters.wound_id is not None:
        conditions.append(WoundRow.id == filters.wound_id)
    convert = _patient if kind == "patients" else _wound
    yield from _projection_batches(session_for, table, conditions, convert, batch_size)


def export_lines(batch: list[dict[str, Any]], *, kind: str, format: str) -> str:
    """A batch of rows of `kind` as CSV lines (without the header) or NDJSON lines."""
    if format == "csv":
        columns = COLUMNS[kind]
        return "".join(csv_line(row[name] for name in columns) for row in batch)
    return "".join(
        json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n" for row in batch
    )


class ExportStream:
    """An export's bytes (iterate once), and how many rows it has written so far."""

    def __init__(self, chunks: Callable[[ExportStream], Iterator[bytes]]) -> None:
        self.rows = 0
        self._chunks = chunks(self)

    def __iter__(self) -> Iterator[bytes]:
        return self._chunks


def open_export(
    db: Database,
    *,
    actor: Actor,
    purpose: str | None,
    kind: str,
    format: str,
    clinic_id: str,
    filters: AssessmentFilters,
    request_id: str | None = None,
    batch_size: int = 1000,
) -> ExportStream:
    """Start an export: audit its start now (committed when this returns), and return
    the stream of its bytes (UTF-8; CSV with a header line), which audits its end.

    `clinic_id` must already be one the actor may read (`clinic_in_scope`).

    Raises:
        Invalid: As `check_export` (before anything is audited).
    """
    check_export(kind, format, filters)
    audited = filters.audited()

    def event(rows: int | None, patients: tuple[str, ...] = (), complete: bool = True) -> None:
        with db.write() as session:
            record_event(
                session=session,
                event=RecordsExported(
                    actor=actor,
                    clinic_id=clinic_id,
                    patient_ids=patients,
                    purpose=purpose,
                    kind=kind,
                    format=format,
                    filters=audited,
                    rows=rows,
                    complete=complete,
                ),
                request_id=request_id,
            )

    event(None)
    return ExportStream(
        lambda stream: _stream(
            db, event, stream, kind=kind, format=format, clinic_id=clinic_id,
            filters=filters, batch_size=batch_size,
        )
    )  # fmt: skip


def _stream(
    db: Database,
    event: Callable[..., None],
    stream: ExportStream,
    *,
    kind: str,
    format: str,
    clinic_id: str,
    filters: AssessmentFilters,
    batch_size: int,
) -> Iterator[bytes]:
    patients: dict[str, None] = {}
    complete = False
    try:
        if format == "csv":
            yield csv_line(COLUMNS[kind]).encode()
        for batch in export_rows(
            db.read, kind=kind, clinic_id=clinic_id, filters=filters, batch_size=batch_size
        ):
            stream.rows += len(batch)
            key = "id" if kind == "patients" else "patient_id"
            patients.update((row[key], None) for row in batch if row[key])
            yield export_lines(batch, kind=kind, format=format).encode()
        complete = True
    finally:
        event(stream.rows, tuple(patients), complete)
