"""Routes: staff reads of the relational projections (patients, wounds, assessments).

A clinician or staff user sees only their clinic; an organisation-wide admin sees every
clinic of their organisation. A record outside the caller's scope answers 404, exactly
like a missing one, unless the caller holds a live break-glass grant for its patient
(``POST /v1/audit/break-glass``): then it is read and audited with purpose
``break-glass``; once the grant has expired it answers 403 ``break_glass_expired``.
Every read is audited with the ids it returned and their patients (never names, and
never the search text, which may hold a name); see `sync_server.sync.records`.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Query
from sqlalchemy import Select

from sync_server.db import Database
from sync_server.deps import DbDep, RequestIdDep, StaffCaller
from sync_server.errors import Forbidden, NotFound
from sync_server.identity.principals import Principal
from sync_server.sync.records import (
    open_record,
    page,
    patient_of_row,
    patient_wounds,
    record_read,
    requested_id,
    search_patients,
    wound_assessments,
)
from sync_server.sync.schemas import RecordOut, RecordPage
from sync_server.sync.tables import AssessmentRow, PatientRow, WoundRow

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["staff"])

Limit = Annotated[int, Query(ge=1, le=500, description="Page size.")]
Offset = Annotated[int, Query(ge=0, le=2**31, description="Records to skip.")]
IncludeDeleted = Annotated[bool, Query(description="Include deleted records.")]

_Row = TypeVar("_Row", PatientRow, WoundRow, AssessmentRow)


def _visible_or_404(
    db: Database,
    caller: Principal,
    table: type[_Row],
    record_id: str,
    collection: str,
    request_id: str | None,
) -> tuple[_Row, str]:
    """The record and the purpose it is read for, or 404 (audited) if it is missing or
    outside the caller's clinics (403 once the caller's break-glass grant expired)."""
    with db.read() as session:
        opened = open_record(session=session, principal=caller, table=table, record_id=record_id)
    if opened.row is None:
        with db.write() as session:
            record_read(
                session=session,
                principal=caller,
                clinic_id=None,
                collection=collection,
                record_ids=requested_id(record_id),
                found=False,
                request_id=request_id,
            )
        if opened.grant_expired:
            raise Forbidden(
                "your break-glass access to this patient has expired",
                code="break_glass_expired",
            )
        raise NotFound(f"no such {collection[:-1]}", code="not_found")
    return opened.row, opened.purpose


def _page(
    db: Database,
    caller: Principal,
    query: Select[Any],
    *,
    clinic_id: str | None,
    collection: str,
    limit: int,
    offset: int,
    request_id: str | None,
    patient_ids: tuple[str, ...] | None = None,
    purpose: str | None = None,
) -> RecordPage:
    """One page of `query`, audited with the ids it holds and their patients (the
    records' own ids for a page of patients, unless `patient_ids` says)."""
    with db.read() as session:
        items = [
            RecordOut.model_validate(row)
            for row in page(session=session, query=query, limit=limit, offset=offset)
        ]
    with db.write() as session:
        record_read(
            session=session,
            principal=caller,
            clinic_id=clinic_id,
            collection=collection,
            record_ids=tuple(item.id for item in items),
            patient_ids=tuple(item.id for item in items) if patient_ids is None else patient_ids,
            purpose=purpose,
            request_id=request_id,
        )
    return RecordPage(items=items, limit=limit, offset=offset)


@router.get("/patients", response_model=RecordPage, summary="Search patients")
def list_patients(
    caller: StaffCaller,
    db: DbDep,
    request_id: RequestIdDep,
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
        query = search_patients(
            session=session,
            principal=caller,
            q=q,
            clinic_id=clinic_id,
            include_deleted=include_deleted,
        )
    return _page(
        db,
        caller,
        query,
        clinic_id=clinic_id or caller.clinic_id,
        collection="patients",
        limit=limit,
        offset=offset,
        request_id=request_id,
    )


@router.get("/patients/{patient_id}", response_model=RecordOut, summary="Read a patient")
def get_patient(
    patient_id: str, caller: StaffCaller, db: DbDep, request_id: RequestIdDep
) -> RecordOut:
    """One patient (deleted ones too, flagged); 404 if missing or outside the caller's
    clinics."""
    row, purpose = _visible_or_404(db, caller, PatientRow, patient_id, "patients", request_id)
    with db.write() as session:
        record_read(
            session=session,
            principal=caller,
            clinic_id=row.clinic_id,
            collection="patients",
            record_ids=(row.id,),
            patient_ids=(row.id,),
            purpose=purpose,
            request_id=request_id,
        )
    return RecordOut.model_validate(row)


@router.get(
    "/patients/{patient_id}/wounds", response_model=RecordPage, summary="A patient's wounds"
)
def list_patient_wounds(
    patient_id: str,
    caller: StaffCaller,
    db: DbDep,
    request_id: RequestIdDep,
    limit: Limit = 100,
    offset: Offset = 0,
    include_deleted: IncludeDeleted = False,
) -> RecordPage:
    """The wounds of a patient the caller may see; 404 for any other patient."""
    patient, purpose = _visible_or_404(db, caller, PatientRow, patient_id, "patients", request_id)
    return _page(
        db,
        caller,
        patient_wounds(patient=patient, include_deleted=include_deleted),
        clinic_id=patient.clinic_id,
        collection="wounds",
        limit=limit,
        offset=offset,
        request_id=request_id,
        patient_ids=(patient.id,),
        purpose=purpose,
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
    request_id: RequestIdDep,
    limit: Limit = 200,
    offset: Offset = 0,
    include_deleted: IncludeDeleted = False,
) -> RecordPage:
    """The assessments of a wound the caller may see, oldest capture first; 404 for
    any other wound."""
    wound, purpose = _visible_or_404(db, caller, WoundRow, wound_id, "wounds", request_id)
    return _page(
        db,
        caller,
        wound_assessments(wound=wound, include_deleted=include_deleted),
        clinic_id=wound.clinic_id,
        collection="assessments",
        limit=limit,
        offset=offset,
        request_id=request_id,
        patient_ids=(patient_of_row(wound),),
        purpose=purpose,
    )
