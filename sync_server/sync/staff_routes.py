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

from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse
from sqlalchemy import Select

from sync_server.audit.events import Actor, purpose_of
from sync_server.db import Database
from sync_server.deps import DbDep, RequestIdDep, StaffCaller
from sync_server.identity.principals import Principal
from sync_server.sync.exports import ExportKind, open_export
from sync_server.sync.listing import (
    AssessmentFilters,
    assessments_query,
    clinic_in_scope,
    clinic_totals,
    decode_cursor,
    encode_cursor,
    notes_page,
)
from sync_server.sync.records import (
    page,
    patient_of_row,
    patient_wounds,
    record_read,
    search_patients,
    visible_record,
    wound_assessments,
)
from sync_server.sync.schemas import (
    ClinicTotalsOut,
    KeysetPage,
    NoteOut,
    NotePage,
    RecordOut,
    RecordPage,
)
from sync_server.sync.tables import AssessmentRow, PatientRow, WoundRow

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["staff"])

Limit = Annotated[int, Query(ge=1, le=500, description="Page size.")]
Offset = Annotated[int, Query(ge=0, le=2**31, description="Records to skip.")]
IncludeDeleted = Annotated[bool, Query(description="Include deleted records.")]
ClinicId = Annotated[
    str | None,
    Query(max_length=64, description="The clinic (default: the caller's own)."),
]
PatientId = Annotated[str | None, Query(max_length=64, description="Only this patient's.")]
WoundId = Annotated[str | None, Query(max_length=64, description="Only this wound's.")]
Cursor = Annotated[
    str | None,
    Query(max_length=400, description="The `next_cursor` of the previous page."),
]
CapturedFrom = Annotated[
    datetime | None,
    Query(description="Captured at or after this time (ISO 8601; no offset means UTC)."),
]
CapturedBefore = Annotated[
    datetime | None, Query(description="Captured before this time (ISO 8601).")
]
MinArea = Annotated[
    float | None, Query(ge=0, allow_inf_nan=False, description="Area at least this (cm²).")
]
MaxArea = Annotated[
    float | None, Query(ge=0, allow_inf_nan=False, description="Area at most this (cm²).")
]
HasModelOutput = Annotated[
    bool | None,
    Query(description="Only assessments with (true) or without (false) model output."),
]

_Row = TypeVar("_Row", PatientRow, WoundRow, AssessmentRow)


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
    row, purpose = visible_record(
        database=db,
        principal=caller,
        table=PatientRow,
        record_id=patient_id,
        collection="patients",
        request_id=request_id,
    )
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
    patient, purpose = visible_record(
        database=db,
        principal=caller,
        table=PatientRow,
        record_id=patient_id,
        collection="patients",
        request_id=request_id,
    )
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
    wound, purpose = visible_record(
        database=db,
        principal=caller,
        table=WoundRow,
        record_id=wound_id,
        collection="wounds",
        request_id=request_id,
    )
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


# ------------------------------------------------------------ clinic-wide lists


async def _assessment_filters(
    patient_id: PatientId = None,
    wound_id: WoundId = None,
    captured_from: CapturedFrom = None,
    captured_before: CapturedBefore = None,
    min_area_cm2: MinArea = None,
    max_area_cm2: MaxArea = None,
    has_model_output: HasModelOutput = None,
    include_deleted: IncludeDeleted = False,
) -> AssessmentFilters:
    """The clinic-wide lists' and exports' filters, from the query string."""
    return AssessmentFilters(
        patient_id=patient_id,
        wound_id=wound_id,
        captured_from=captured_from,
        captured_before=captured_before,
        min_area_cm2=min_area_cm2,
        max_area_cm2=max_area_cm2,
        has_model_output=has_model_output,
        include_deleted=include_deleted,
    )


Filters = Annotated[AssessmentFilters, Depends(_assessment_filters)]


@router.get("/staff/assessments", response_model=KeysetPage, summary="A clinic's assessments")
def list_clinic_assessments(
    caller: StaffCaller,
    db: DbDep,
    request_id: RequestIdDep,
    filters: Filters,
    clinic_id: ClinicId = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> KeysetPage:
    """A clinic's assessments, oldest capture first, filtered, a keyset page at a time:
    pass `next_cursor` as `cursor` for the next page (rows inserted meanwhile never
    repeat or shift a page). 400 ``bad_cursor`` for a cursor this list did not make."""
    after = None if cursor is None else decode_cursor(cursor, parts=2)
    with db.read() as session:
        clinic = clinic_in_scope(session=session, principal=caller, clinic_id=clinic_id)
        query = assessments_query(clinic_id=clinic, filters=filters, after=after)
        rows = list(session.scalars(query.limit(limit + 1)))
        items = [RecordOut.model_validate(row) for row in rows[:limit]]
        last = rows[limit - 1] if len(rows) > limit else None
        patients = tuple(dict.fromkeys(row.patient_id for row in rows[:limit]))
    with db.write() as session:
        record_read(
            session=session,
            principal=caller,
            clinic_id=clinic,
            collection="assessments",
            record_ids=tuple(item.id for item in items),
            patient_ids=patients,
            request_id=request_id,
        )
    next_cursor = None if last is None else encode_cursor((last.captured_at, last.id))
    return KeysetPage(items=items, limit=limit, next_cursor=next_cursor)


@router.get("/staff/notes", response_model=NotePage, summary="A clinic's notes")
def list_clinic_notes(
    caller: StaffCaller,
    db: DbDep,
    request_id: RequestIdDep,
    clinic_id: ClinicId = None,
    patient_id: PatientId = None,
    wound_id: WoundId = None,
    include_deleted: IncludeDeleted = False,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> NotePage:
    """A clinic's clinical notes with their text, by id (time-ordered ids: oldest
    first), a keyset page at a time (`next_cursor`)."""
    after = "" if cursor is None else decode_cursor(cursor, parts=1)[0]
    with db.read() as session:
        clinic = clinic_in_scope(session=session, principal=caller, clinic_id=clinic_id)
    notes, last = notes_page(
        db.read,
        clinic_id=clinic,
        patient_id=patient_id,
        wound_id=wound_id,
        include_deleted=include_deleted,
        limit=limit,
        after=after,
    )
    with db.write() as session:
        record_read(
            session=session,
            principal=caller,
            clinic_id=clinic,
            collection="notes",
            record_ids=tuple(note.id for note in notes),
            patient_ids=tuple(dict.fromkeys(n.patient_id for n in notes if n.patient_id)),
            request_id=request_id,
        )
    return NotePage(
        items=[NoteOut.model_validate(note) for note in notes],
        limit=limit,
        next_cursor=None if last is None else encode_cursor((last,)),
    )


@router.get("/staff/totals", response_model=ClinicTotalsOut, summary="A clinic's totals")
def get_clinic_totals(
    caller: StaffCaller, db: DbDep, clinic_id: ClinicId = None
) -> ClinicTotalsOut:
    """How many live patients, wounds, assessments and notes a clinic holds (counts
    only: no record is read out, so nothing is audited)."""
    with db.read() as session:
        clinic = clinic_in_scope(session=session, principal=caller, clinic_id=clinic_id)
    return ClinicTotalsOut.model_validate(clinic_totals(db.read, clinic_id=clinic))


_MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "ndjson": "application/x-ndjson"}


@router.get(
    "/staff/export/{kind}",
    summary="Export a clinic's records",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The records, streamed: CSV with a header line, or one JSON "
            "object per line.",
            "content": {"text/csv": {}, "application/x-ndjson": {}},
        }
    },
)
def export_records(
    kind: ExportKind,
    caller: StaffCaller,
    db: DbDep,
    request_id: RequestIdDep,
    filters: Filters,
    format: Annotated[
        Literal["csv", "ndjson"], Query(description="csv (default) or ndjson.")
    ] = "csv",
    clinic_id: ClinicId = None,
) -> StreamingResponse:
    """A clinic's patients, wounds, assessments (figures and tissue mix) or notes, as
    CSV or newline-delimited JSON, streamed as it is read (columns: docs/server.md).

    The capture-time, area and model-output filters are assessments' only (400
    ``filter_not_applicable`` on another kind). The export is audited before the first
    byte, and again at its end with the row count and the patients exported.
    """
    with db.read() as session:
        clinic = clinic_in_scope(session=session, principal=caller, clinic_id=clinic_id)
    stream = open_export(
        db,
        actor=Actor.of(caller),
        purpose=purpose_of(caller),
        kind=kind,
        format=format,
        clinic_id=clinic,
        filters=filters,
        request_id=request_id,
    )
    return StreamingResponse(
        stream,
        media_type=_MEDIA_TYPES[format],
        headers={"content-disposition": f'attachment; filename="{kind}-{clinic}.{format}"'},
    )
