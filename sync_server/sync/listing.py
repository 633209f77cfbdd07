"""Clinic-wide staff lists: assessments with filters, notes, and a clinic's totals.

Pages are keyset pages: a page ends with an opaque cursor naming its last row's sort
key, and the next page starts after that key. A record inserted between two pages
therefore never shifts a row into the next page twice or out of it (an offset would),
and a page costs the same however deep it is.

Notes (and the medical history and care plans, which staff export) have no projection
table: they are read from their documents (Automerge, `document_batches`), the patient
from the document row and the rest from the document's values.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, false, func, or_, select
from sqlalchemy.orm import Session

from crdt import DocumentError, RecordDocument, sortable_time
from sync_server.errors import Invalid
from sync_server.identity.principals import Principal
from sync_server.identity.tenancy import visible_clinic
from sync_server.sync.tables import AssessmentRow, Document, PatientRow, WoundRow

__all__ = [
    "AssessmentFilters",
    "ClinicTotals",
    "NoteItem",
    "assessment_conditions",
    "assessments_query",
    "clinic_in_scope",
    "clinic_totals",
    "decode_cursor",
    "document_batches",
    "encode_cursor",
    "note_batches",
    "notes_page",
]


@dataclass(frozen=True, slots=True)
class AssessmentFilters:
    """Which of a clinic's assessments: of a patient, of a wound, captured in
    [`captured_from`, `captured_before`), with an area in [`min_area_cm2`,
    `max_area_cm2`], with (True) or without (False) model output, deleted ones too."""

    patient_id: str | None = None
    wound_id: str | None = None
    captured_from: datetime | None = None
    captured_before: datetime | None = None
    min_area_cm2: float | None = None
    max_area_cm2: float | None = None
    has_model_output: bool | None = None
    include_deleted: bool = False

    def audited(self) -> tuple[tuple[str, str], ...]:
        """The filters given, as (name, value) for the audit log (ids, times and
        numbers only: nothing here is free text)."""
        given = (
            ("patient_id", self.patient_id),
            ("wound_id", self.wound_id),
            ("captured_from", _moment(self.captured_from)),
            ("captured_before", _moment(self.captured_before)),
            ("min_area_cm2", self.min_area_cm2),
            ("max_area_cm2", self.max_area_cm2),
            ("has_model_output", self.has_model_output),
            ("include_deleted", self.include_deleted or None),
        )
        return tuple((name, str(value)) for name, value in given if value is not None)


def _moment(value: datetime | None) -> str | None:
    """A filter's time as the sortable UTC text captured_at is stored as.

    Raises:
        Invalid: ``bad_time``: a time that has no UTC equivalent (year 1 or 9999 with
            an offset).
    """
    if value is None:
        return None
    try:
        return sortable_time(value)
    except (OverflowError, ValueError):
        raise Invalid(f"{value.isoformat()}: not a time in UTC's range", code="bad_time") from None


def clinic_in_scope(*, session: Session, principal: Principal, clinic_id: str | None) -> str:
    """The one clinic a clinic-wide read is about: `clinic_id`, or the caller's own.

    Raises:
        Invalid: ``clinic_required``: an organisation-wide caller named no clinic.
        NotFound: ``clinic_not_found``: a clinic the caller may not see.
    """
    wanted = clinic_id or principal.clinic_id
    if wanted is None:
        raise Invalid("name the clinic (clinic_id)", code="clinic_required")
    return visible_clinic(session=session, principal=principal, clinic_id=wanted).id


def encode_cursor(key: Sequence[str]) -> str:
    """An opaque cursor for a page that ends at sort key `key`."""
    raw = json.dumps(list(key), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, *, parts: int) -> tuple[str, ...]:
    """The sort key a cursor made by `encode_cursor` names.

    Raises:
        Invalid: ``bad_cursor``: not a cursor of this list.
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = json.loads(raw)
    except (binascii.Error, ValueError):
        key = None
    if (
        not isinstance(key, list)
        or len(key) != parts
        or not all(isinstance(k, str) and len(k) <= 64 for k in key)
    ):
        raise Invalid("not a cursor of this list: start again without one", code="bad_cursor")
    return tuple(key)


def _check_range(low: float | None, high: float | None, what: str) -> None:
    if low is not None and high is not None and low > high:
        raise Invalid(f"the {what} range is empty (from > to)", code="empty_range")


def assessment_conditions(
    *, clinic_id: str, filters: AssessmentFilters
) -> list[ColumnElement[bool]]:
    """The WHERE conditions of a clinic's assessments matching `filters`.

    Raises:
        Invalid: ``empty_range``: a range whose start is past its end.
    """
    _check_range(filters.min_area_cm2, filters.max_area_cm2, "area")
    start, end = _moment(filters.captured_from), _moment(filters.captured_before)
    if start is not None and end is not None and start >= end:
        raise Invalid("the capture time range is empty (from >= before)", code="empty_range")
    conditions: list[ColumnElement[bool]] = [AssessmentRow.clinic_id == clinic_id]
    if not filters.include_deleted:
        conditions.append(AssessmentRow.deleted == false())
    if filters.patient_id is not None:
        conditions.append(AssessmentRow.patient_id == filters.patient_id)
    if filters.wound_id is not None:
        conditions.append(AssessmentRow.wound_id == filters.wound_id)
    if start is not None:
        conditions.append(AssessmentRow.captured_at >= start)
    if end is not None:
        conditions.append(AssessmentRow.captured_at < end)
    if filters.min_area_cm2 is not None:
        conditions.append(AssessmentRow.area_cm2 >= filters.min_area_cm2)
    if filters.max_area_cm2 is not None:
        conditions.append(AssessmentRow.area_cm2 <= filters.max_area_cm2)
    if filters.has_model_output is True:
        conditions.append(AssessmentRow.model_id.is_not(None))
    elif filters.has_model_output is False:
        conditions.append(AssessmentRow.model_id.is_(None))
    return conditions


def assessments_query(
    *, clinic_id: str, filters: AssessmentFilters, after: tuple[str, ...] | None = None
) -> Select[AssessmentRow]:
    """A clinic's assessments matching `filters`, by capture time then id, starting
    after the sort key `after` (captured_at, id).

    Raises:
        Invalid: ``empty_range``: a range whose start is past its end.
    """
    conditions = assessment_conditions(clinic_id=clinic_id, filters=filters)
    if after is not None:
        captured, last_id = after
        conditions.append(
            or_(
                AssessmentRow.captured_at > captured,
                and_(AssessmentRow.captured_at == captured, AssessmentRow.id > last_id),
            )
        )
    return (
        select(AssessmentRow)
        .where(*conditions)
        .order_by(AssessmentRow.captured_at, AssessmentRow.id)
    )


@dataclass(frozen=True, slots=True)
class NoteItem:
    """A clinical note, as read from its document."""

    id: str
    clinic_id: str
    patient_id: str | None
    wound_id: str | None
    author: str | None
    text: str
    deleted: bool
    created_at: str | None
    updated_at: str | None


def _values(data: bytes) -> dict[str, Any] | None:
    try:
        return RecordDocument.load(bytes(data), device_id=None).values()
    except DocumentError:  # an unreadable document is no record anyone can read
        return None


def _note(doc_id: str, clinic_id: str, patient_id: str | None, values: dict[str, Any]) -> NoteItem:
    def text(name: str) -> str | None:
        value = values.get(name)
        return None if value is None else str(value)

    return NoteItem(
        id=doc_id,
        clinic_id=clinic_id,
        patient_id=patient_id or text("patient_id"),
        wound_id=text("wound_id"),
        author=text("author"),
        text=text("text") or "",
        deleted=bool(values.get("deleted")),
        created_at=text("created_at"),
        updated_at=text("updated_at"),
    )


def _document_rows(
    session: Session,
    *,
    collection: str,
    clinic_id: str,
    patient_id: str | None,
    after: str,
    limit: int,
) -> Sequence[Any]:
    query = select(Document.id, Document.patient_id, Document.data).where(
        Document.clinic_id == clinic_id, Document.collection == collection, Document.id > after
    )
    if patient_id is not None:
        query = query.where(Document.patient_id == patient_id)
    return session.execute(query.order_by(Document.id).limit(limit)).all()


def document_batches(
    session_for: Any,
    *,
    collection: str,
    clinic_id: str,
    patient_id: str | None = None,
    after: str = "",
    batch_size: int = 500,
) -> Iterator[list[tuple[str, str | None, dict[str, Any]]]]:
    """A clinic's records of `collection` by id, in batches of ``(id, patient_id,
    values)`` read from their documents (values decoded, not validated; an unreadable
    document is left out). Each batch is read in its own short session from
    `session_for()` (a context manager, e.g. `Database.read`), so a long read holds
    neither a transaction nor more than one batch of documents. A batch may be empty
    when none of its documents was readable; the last batch is followed by none."""
    while True:
        with session_for() as session:
            rows = _document_rows(
                session,
                collection=collection,
                clinic_id=clinic_id,
                patient_id=patient_id,
                after=after,
                limit=batch_size,
            )
        if not rows:
            return
        after = rows[-1][0]
        read = ((doc_id, patient, _values(data)) for doc_id, patient, data in rows)
        yield [(doc_id, patient, values) for doc_id, patient, values in read if values is not None]


def note_batches(
    session_for: Any,
    *,
    clinic_id: str,
    patient_id: str | None = None,
    wound_id: str | None = None,
    include_deleted: bool = False,
    after: str = "",
    batch_size: int = 500,
) -> Iterator[list[NoteItem]]:
    """A clinic's notes by id, in batches (as `document_batches`). A batch may be
    empty when every note it read was filtered out; the last batch is followed by none."""
    for batch in document_batches(
        session_for,
        collection="notes",
        clinic_id=clinic_id,
        patient_id=patient_id,
        after=after,
        batch_size=batch_size,
    ):
        notes = (_note(doc_id, clinic_id, patient, values) for doc_id, patient, values in batch)
        yield [
            n
            for n in notes
            if (include_deleted or not n.deleted) and (wound_id is None or n.wound_id == wound_id)
        ]


def notes_page(
    session_for: Any,
    *,
    clinic_id: str,
    patient_id: str | None,
    wound_id: str | None,
    include_deleted: bool,
    limit: int,
    after: str = "",
) -> tuple[list[NoteItem], str | None]:
    """Up to `limit` notes of a clinic after the note id `after`, and the id the next
    page starts after (None: this was the last page)."""
    found: list[NoteItem] = []
    for batch in note_batches(
        session_for,
        clinic_id=clinic_id,
        patient_id=patient_id,
        wound_id=wound_id,
        include_deleted=include_deleted,
        after=after,
        batch_size=max(limit, 100),
    ):
        found.extend(batch)
        if len(found) > limit:
            break
    if len(found) > limit:
        return found[:limit], found[limit - 1].id
    return found, None


@dataclass(frozen=True, slots=True)
class ClinicTotals:
    """How many live (not deleted) records a clinic holds, by kind."""

    clinic_id: str
    patients: int
    wounds: int
    assessments: int
    notes: int


def clinic_totals(session_for: Any, *, clinic_id: str) -> ClinicTotals:
    """The clinic's live patients, wounds, assessments and notes (notes are counted
    from their documents, a batch at a time)."""
    with session_for() as session:
        counts = {
            name: session.scalar(
                select(func.count())
                .select_from(table)
                .where(table.clinic_id == clinic_id, table.deleted == false())
            )
            or 0
            for name, table in (
                ("patients", PatientRow),
                ("wounds", WoundRow),
                ("assessments", AssessmentRow),
            )
        }
    notes = sum(len(batch) for batch in note_batches(session_for, clinic_id=clinic_id))
    return ClinicTotals(clinic_id=clinic_id, notes=notes, **counts)
