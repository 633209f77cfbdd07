"""Staff reads of the projected records: search patients, a patient's wounds, a wound's
assessments, one record.

A clinician or staff user sees only their clinic; an organisation-wide admin sees every
clinic of their organisation. A record outside the caller's scope is treated exactly
like a missing one. Every read is audited with the ids it returned (never names, and
never the search text, which may hold a name): `record_read`, in a short write
transaction of its own after the read.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, and_, false, func, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from sync_server.audit.events import Actor, RecordsRead
from sync_server.audit.services import record_event
from sync_server.errors import NotFound
from sync_server.identity.principals import Principal
from sync_server.identity.tenancy import clinic_ids_in_scope, visible_clinic
from sync_server.sync.projections import ProjectionRow
from sync_server.sync.tables import AssessmentRow, PatientRow, WoundRow

__all__ = [
    "find_visible",
    "page",
    "patient_wounds",
    "record_read",
    "requested_id",
    "search_patients",
    "wound_assessments",
]

_ID_RE = re.compile(r"[A-Za-z0-9_\-]{1,64}")
_Row = TypeVar("_Row", PatientRow, WoundRow, AssessmentRow)


def _in_scope(
    session: Session,
    principal: Principal,
    column: InstrumentedAttribute[str],
    clinic_id: str | None,
) -> ColumnElement[bool]:
    """A filter on `column` (a clinic id) to `clinic_id`, or to every clinic the caller
    may see.

    Raises:
        NotFound: ``clinic_not_found``: a clinic the caller may not see.
    """
    if clinic_id is not None:
        return (
            column == visible_clinic(session=session, principal=principal, clinic_id=clinic_id).id
        )
    if principal.clinic_id is not None:
        return column == principal.clinic_id
    return column.in_(clinic_ids_in_scope(principal))


def find_visible(
    *, session: Session, principal: Principal, table: type[_Row], record_id: str
) -> _Row | None:
    """The record `record_id` of `table`, or None if it is missing or outside the
    caller's clinics."""
    row = session.get(table, record_id)
    if row is None:
        return None
    try:
        visible_clinic(session=session, principal=principal, clinic_id=row.clinic_id)
    except NotFound:
        return None
    return row


def _like_prefix(term: str) -> str:
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.lower() + "%"


def search_patients(
    *,
    session: Session,
    principal: Principal,
    q: str | None,
    clinic_id: str | None,
    include_deleted: bool,
) -> Select[PatientRow]:
    """Patients the caller may see, by family then given name: each word of `q` must
    start the family or given name (case-insensitive), or `q` is an exact MRN.

    Case-insensitivity beyond ASCII depends on the database (full on PostgreSQL, ASCII
    only on SQLite).

    Raises:
        NotFound: ``clinic_not_found``: a `clinic_id` the caller may not see.
    """
    query = select(PatientRow).where(_in_scope(session, principal, PatientRow.clinic_id, clinic_id))
    if not include_deleted:
        query = query.where(PatientRow.deleted == false())
    terms = [t for t in re.split(r"[\s,]+", q or "") if t]
    if terms:
        by_name = and_(
            *(
                or_(
                    func.lower(PatientRow.family_name).like(_like_prefix(t), escape="\\"),
                    func.lower(PatientRow.given_name).like(_like_prefix(t), escape="\\"),
                )
                for t in terms
            )
        )
        query = query.where(or_(by_name, PatientRow.mrn == (q or "").strip()))
    return query.order_by(PatientRow.family_name, PatientRow.given_name, PatientRow.id)


def patient_wounds(*, patient: PatientRow, include_deleted: bool) -> Select[WoundRow]:
    """The wounds of a patient (found with `find_visible`), earliest onset first."""
    query = select(WoundRow).where(
        WoundRow.patient_id == patient.id, WoundRow.clinic_id == patient.clinic_id
    )
    if not include_deleted:
        query = query.where(WoundRow.deleted == false())
    return query.order_by(WoundRow.onset.nulls_last(), WoundRow.id)


def wound_assessments(*, wound: WoundRow, include_deleted: bool) -> Select[AssessmentRow]:
    """The assessments of a wound (found with `find_visible`), oldest capture first."""
    query = select(AssessmentRow).where(
        AssessmentRow.wound_id == wound.id, AssessmentRow.clinic_id == wound.clinic_id
    )
    if not include_deleted:
        query = query.where(AssessmentRow.deleted == false())
    return query.order_by(AssessmentRow.captured_at, AssessmentRow.id)


def page(*, session: Session, query: Select[Any], limit: int, offset: int) -> list[ProjectionRow]:
    """One page of a records query."""
    return list(session.scalars(query.limit(limit).offset(offset)))


def requested_id(value: str) -> tuple[str, ...]:
    """A requested id for the audit log, if it looks like an id (a path could hold text)."""
    return (value,) if _ID_RE.fullmatch(value) else ()


def record_read(
    *,
    session: Session,
    principal: Principal,
    clinic_id: str | None,
    collection: str,
    record_ids: tuple[str, ...],
    found: bool = True,
    request_id: str | None = None,
) -> None:
    """Audit a read of `record_ids` of `collection` (or, `found` False, of a record
    that was not there or not the caller's to see)."""
    record_event(
        session=session,
        event=RecordsRead(
            actor=Actor.of(principal),
            clinic_id=clinic_id,
            collection=collection,
            record_ids=record_ids,
            found=found,
        ),
        request_id=request_id,
    )
