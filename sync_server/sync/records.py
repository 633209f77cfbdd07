"""Staff reads of the projected records: search patients, a patient's wounds, a wound's
assessments, one record.

A clinician or staff user sees only their clinic; an organisation-wide admin sees every
clinic of their organisation. A record outside the caller's scope is treated exactly
like a missing one, unless the caller holds a live break-glass grant for its patient
(`open_record`, `sync_server.audit.breakglass`). Every read is audited with the ids it
returned and their patients (never names, and never the search text, which may hold a
name): `record_read`, in a short write transaction of its own after the read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, Select, and_, false, func, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from sync_server.audit.breakglass import active_grant, last_grant
from sync_server.audit.events import BREAK_GLASS, Actor, RecordsRead, purpose_of
from sync_server.audit.services import record_event
from sync_server.db import Database
from sync_server.errors import Forbidden, NotFound
from sync_server.identity.principals import Principal
from sync_server.identity.tenancy import clinic_ids_in_scope, visible_clinic
from sync_server.sync.projections import ProjectionRow
from sync_server.sync.tables import AssessmentRow, PatientRow, WoundRow

__all__ = [
    "Opened",
    "blob_assessments",
    "blob_patients",
    "find_visible",
    "open_record",
    "page",
    "patient_of_row",
    "patient_wounds",
    "record_read",
    "record_refused_read",
    "requested_id",
    "search_patients",
    "visible_record",
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


def patient_of_row(row: ProjectionRow) -> str:
    """The patient a projected record belongs to (a patient is its own)."""
    return row.id if isinstance(row, PatientRow) else row.patient_id


@dataclass(frozen=True, slots=True)
class Opened(Generic[_Row]):
    """A staff read of one record: the record (None: refused), the purpose of use it
    is audited with, and whether a break-glass grant for it has expired."""

    row: _Row | None
    purpose: str
    grant_expired: bool = False


def open_record(
    *,
    session: Session,
    principal: Principal,
    table: type[_Row],
    record_id: str,
    now: datetime | None = None,
) -> Opened[_Row]:
    """The record `record_id` of `table` if the caller may read it: in their clinics
    (purpose `purpose_of` the caller), or under a live break-glass grant for its
    patient (purpose ``break-glass``). Refused otherwise (`Opened.row` None), noting
    whether the caller's grant for that patient has expired."""
    row = find_visible(session=session, principal=principal, table=table, record_id=record_id)
    if row is not None:
        return Opened(row, purpose_of(principal))
    row = session.get(table, record_id)
    if row is None or principal.kind != "user":
        return Opened(None, purpose_of(principal))
    patient_id = patient_of_row(row)
    grant = active_grant(
        session=session,
        principal=principal,
        patient_id=patient_id,
        clinic_id=row.clinic_id,
        now=now,
    )
    if grant is not None:
        return Opened(row, BREAK_GLASS)
    expired = last_grant(session=session, principal=principal, patient_id=patient_id)
    return Opened(None, purpose_of(principal), grant_expired=expired is not None)


def blob_patients(*, session: Session, clinic_id: str, sha256: str) -> tuple[str, ...]:
    """The patients whose assessments (of `clinic_id`) refer to the blob `sha256` (a
    scan's point cloud or image); none when no stored assessment names it yet.

    Reads the clinic's assessment rows whose record holds the address: a scan over one
    clinic's assessments, as blobs are not indexed by patient."""
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        return ()
    found = session.scalars(
        select(AssessmentRow.patient_id)
        .where(
            AssessmentRow.clinic_id == clinic_id,
            AssessmentRow.record.contains(f'"sha256":"{sha256}"'),
        )
        .distinct()
    ).all()
    return tuple(sorted(found))


def blob_assessments(*, session: Session, clinic_id: str, sha256: str) -> tuple[str, ...]:
    """The ids of the clinic's assessments whose record refers to the blob `sha256`
    (read like `blob_patients`: a scan over one clinic's assessments)."""
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        return ()
    found = session.scalars(
        select(AssessmentRow.id).where(
            AssessmentRow.clinic_id == clinic_id,
            AssessmentRow.record.contains(f'"sha256":"{sha256}"'),
        )
    ).all()
    return tuple(sorted(found))


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
    patient_ids: tuple[str, ...] = (),
    purpose: str | None = None,
    found: bool = True,
    request_id: str | None = None,
) -> None:
    """Audit a read of `record_ids` of `collection`, records of `patient_ids`, for
    `purpose` (default: `purpose_of` the caller), or, `found` False, of a record that
    was not there or not the caller's to see."""
    record_event(
        session=session,
        event=RecordsRead(
            actor=Actor.of(principal),
            clinic_id=clinic_id,
            patient_ids=patient_ids,
            purpose=purpose or purpose_of(principal),
            collection=collection,
            record_ids=record_ids,
            found=found,
        ),
        request_id=request_id,
    )


def record_refused_read(
    *,
    session: Session,
    principal: Principal,
    collection: str,
    wanted: str,
    request_id: str | None = None,
) -> None:
    """Audit a read of `wanted` of `collection` that found nothing the caller may see
    (missing, or outside the caller's clinics); the id is kept only if it looks like one."""
    record_read(
        session=session,
        principal=principal,
        clinic_id=None,
        collection=collection,
        record_ids=requested_id(wanted),
        found=False,
        request_id=request_id,
    )


def visible_record(
    *,
    database: Database,
    principal: Principal,
    table: type[_Row],
    record_id: str,
    collection: str,
    request_id: str | None = None,
) -> tuple[_Row, str]:
    """The record `record_id` and the purpose it is read for (`open_record`), or a
    refusal, audited (`record_refused_read`), if it is missing or not the caller's to
    see. The caller audits the read itself (`record_read`) once it has what it shows.

    Raises:
        NotFound: ``not_found``: missing, or outside the caller's clinics.
        Forbidden: ``break_glass_expired``: the caller's break-glass grant for its
            patient has expired.
    """
    with database.read() as session:
        opened = open_record(session=session, principal=principal, table=table, record_id=record_id)
    if opened.row is None:
        with database.write() as session:
            record_refused_read(
                session=session,
                principal=principal,
                collection=collection,
                wanted=record_id,
                request_id=request_id,
            )
        if opened.grant_expired:
            raise Forbidden(
                "your break-glass access to this patient has expired",
                code="break_glass_expired",
            )
        raise NotFound(f"no such {collection[:-1]}", code="not_found")
    return opened.row, opened.purpose
