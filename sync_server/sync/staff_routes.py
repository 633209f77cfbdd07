"""Routes: staff reads of the relational projections (patients, wounds, assessments).

A clinician or staff user sees only their clinic; an organisation-wide admin sees every
clinic of their organisation. A record outside the caller's scope answers 404, exactly
like a missing one. Every read is audited with the ids it returned (never names, and
never the search text, which may hold a name).
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement, Select, and_, false, func, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from sync_server.db import Database
from sync_server.deps import StaffCaller, get_db
from sync_server.errors import NotFound
from sync_server.identity.principals import Principal
from sync_server.identity.services import record_audit, visible_clinic
from sync_server.identity.tables import Clinic
from sync_server.sync.tables import AssessmentRow, PatientRow, WoundRow

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["staff"])

DbDep = Annotated[Database, Depends(get_db)]
Limit = Annotated[int, Query(ge=1, le=500, description="Page size.")]
Offset = Annotated[int, Query(ge=0, le=2**31, description="Records to skip.")]
IncludeDeleted = Annotated[bool, Query(description="Include deleted records.")]

_ID_RE = re.compile(r"[A-Za-z0-9_\-]{1,64}")

ProjectionRow = PatientRow | WoundRow | AssessmentRow
_Row = TypeVar("_Row", PatientRow, WoundRow)


class RecordOut(BaseModel):
    """A record as projected from its replicated document."""

    id: str
    clinic_id: str
    updated_at: str
    deleted: bool
    conflicted: bool = Field(description="True while the record has unresolved conflicts.")
    record: dict[str, Any] = Field(description="The record's fields as the document holds them.")

    @classmethod
    def of(cls, row: ProjectionRow) -> RecordOut:
        """The response for a projection row."""
        parsed = json.loads(row.record)
        return cls(
            id=row.id,
            clinic_id=row.clinic_id,
            updated_at=row.updated_at,
            deleted=row.deleted,
            conflicted=row.conflicted,
            record=parsed if isinstance(parsed, dict) else {"value": parsed},
        )


class RecordPage(BaseModel):
    """A page of records."""

    items: list[RecordOut]
    limit: int
    offset: int


# ---------------------------------------------------------------- scope and audit
def _scope_filter(
    session: Session,
    caller: Principal,
    column: InstrumentedAttribute[str],
    clinic_id: str | None,
) -> ColumnElement[bool]:
    """A filter on `column` (a clinic id) to the clinics the caller may see."""
    if clinic_id is not None:
        return column == visible_clinic(session, caller, clinic_id).id
    if caller.clinic_id is not None:
        return column == caller.clinic_id
    return column.in_(select(Clinic.id).where(Clinic.organisation_id == caller.organisation_id))


def _visible(session: Session, caller: Principal, row: ProjectionRow | None) -> bool:
    if row is None:
        return False
    try:
        visible_clinic(session, caller, row.clinic_id)
    except NotFound:
        return False
    return True


def _audit(
    db: Database,
    request: Request,
    caller: Principal,
    *,
    clinic_id: str | None,
    collection: str,
    ids: list[str],
    outcome: str,
) -> None:
    with db.write() as session:
        record_audit(
            session,
            actor_kind=caller.kind,
            actor_id=caller.id,
            clinic_id=clinic_id,
            action="read",
            target=json.dumps({collection: ids}),
            outcome=outcome,
            request_id=getattr(request.state, "request_id", None),
        )


def _requested_id(value: str) -> list[str]:
    """A requested id for the audit log, if it looks like an id (a path could hold text)."""
    return [value] if _ID_RE.fullmatch(value) else []


def _get_visible(
    db: Database,
    request: Request,
    caller: Principal,
    model: type[_Row],
    record_id: str,
    collection: str,
) -> _Row:
    """The row `record_id` of `model`, or 404 (audited) if missing or out of scope."""
    with db.read() as session:
        row = session.get(model, record_id)
        visible = _visible(session, caller, row)
    if row is None or not visible:
        _audit(
            db,
            request,
            caller,
            clinic_id=None,
            collection=collection,
            ids=_requested_id(record_id),
            outcome="not_found",
        )
        raise NotFound(f"no such {collection[:-1]}", code="not_found")
    return row


def _page(
    db: Database,
    request: Request,
    caller: Principal,
    query: Select[Any],
    *,
    clinic_id: str | None,
    collection: str,
    limit: int,
    offset: int,
) -> RecordPage:
    with db.read() as session:
        rows = list(session.scalars(query.limit(limit).offset(offset)))
        items = [RecordOut.of(r) for r in rows]
    _audit(
        db,
        request,
        caller,
        clinic_id=clinic_id,
        collection=collection,
        ids=[r.id for r in items],
        outcome="ok",
    )
    return RecordPage(items=items, limit=limit, offset=offset)


def _like_prefix(term: str) -> str:
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.lower() + "%"


# ---------------------------------------------------------------- routes
@router.get("/patients", response_model=RecordPage, summary="Search patients")
def list_patients(
    caller: StaffCaller,
    db: DbDep,
    request: Request,
    q: Annotated[
        str | None,
        Query(
            max_length=200,
            description="Name prefixes (each word must start the family or given name, "
            "case-insensitive), or an exact MRN.",
        ),
    ] = None,
    clinic_id: Annotated[str | None, Query(max_length=64)] = None,
    limit: Limit = 50,
    offset: Offset = 0,
    include_deleted: IncludeDeleted = False,
) -> RecordPage:
    """Patients the caller may see, by family then given name.

    Case-insensitivity beyond ASCII depends on the database (full on PostgreSQL, ASCII
    only on SQLite).
    """
    with db.read() as session:
        scope = _scope_filter(session, caller, PatientRow.clinic_id, clinic_id)
    query = select(PatientRow).where(scope)
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
    query = query.order_by(PatientRow.family_name, PatientRow.given_name, PatientRow.id)
    return _page(
        db,
        request,
        caller,
        query,
        clinic_id=clinic_id or caller.clinic_id,
        collection="patients",
        limit=limit,
        offset=offset,
    )


@router.get("/patients/{patient_id}", response_model=RecordOut, summary="Read a patient")
def get_patient(patient_id: str, caller: StaffCaller, db: DbDep, request: Request) -> RecordOut:
    """One patient (deleted ones too, flagged); 404 if missing or outside the caller's
    clinics."""
    row = _get_visible(db, request, caller, PatientRow, patient_id, "patients")
    _audit(
        db,
        request,
        caller,
        clinic_id=row.clinic_id,
        collection="patients",
        ids=[row.id],
        outcome="ok",
    )
    return RecordOut.of(row)


@router.get(
    "/patients/{patient_id}/wounds", response_model=RecordPage, summary="A patient's wounds"
)
def list_patient_wounds(
    patient_id: str,
    caller: StaffCaller,
    db: DbDep,
    request: Request,
    limit: Limit = 100,
    offset: Offset = 0,
    include_deleted: IncludeDeleted = False,
) -> RecordPage:
    """The wounds of a patient the caller may see; 404 for any other patient."""
    patient = _get_visible(db, request, caller, PatientRow, patient_id, "patients")
    query = select(WoundRow).where(
        WoundRow.patient_id == patient.id, WoundRow.clinic_id == patient.clinic_id
    )
    if not include_deleted:
        query = query.where(WoundRow.deleted == false())
    query = query.order_by(WoundRow.onset.nulls_last(), WoundRow.id)
    return _page(
        db,
        request,
        caller,
        query,
        clinic_id=patient.clinic_id,
        collection="wounds",
        limit=limit,
        offset=offset,
    )


@router.get(
    "/wounds/{wound_id}/assessments",
    response_model=RecordPage,
    summary="A wound's assessments",
)
def list_wound_assessments(
    wound_id: str,
    caller: StaffCaller,
    db: DbDep,
    request: Request,
    limit: Limit = 200,
    offset: Offset = 0,
    include_deleted: IncludeDeleted = False,
) -> RecordPage:
    """The assessments of a wound the caller may see, oldest capture first; 404 for
    any other wound."""
    wound = _get_visible(db, request, caller, WoundRow, wound_id, "wounds")
    query = select(AssessmentRow).where(
        AssessmentRow.wound_id == wound.id, AssessmentRow.clinic_id == wound.clinic_id
    )
    if not include_deleted:
        query = query.where(AssessmentRow.deleted == false())
    query = query.order_by(AssessmentRow.captured_at, AssessmentRow.id)
    return _page(
        db,
        request,
        caller,
        query,
        clinic_id=wound.clinic_id,
        collection="assessments",
        limit=limit,
        offset=offset,
    )
