"""Routes: the audit log's checkpoints and proofs.

- ``GET /v1/audit/checkpoint`` (any authenticated caller): the newest checkpoint the
  server signed (signing one first if the log grew since).
- ``POST /v1/audit/checkpoints`` (admins): sign a checkpoint now.
- ``GET /v1/audit/proofs/consistency?first=&second=`` (any authenticated caller): the
  proof that the log of `second` events extends the log of `first`: how a witness
  holding an older checkpoint checks the newer one.
- ``GET /v1/audit/proofs/inclusion?seq=&size=`` (admins; a device for its own events):
  one event's canonical bytes and its proof of inclusion.

Access around the log (`sync_server.audit.breakglass`, `sync_server.audit.disclosures`):

- ``POST /v1/audit/break-glass`` (clinic-bound staff): emergency access to a patient of
  another clinic, for a reason; ``GET /v1/audit/break-glass?unreviewed=true`` and
  ``POST /v1/audit/break-glass/{id}/review`` (admins): the grants and their review.
- ``GET /v1/audit/disclosures?patient_id=&since=&until=`` (staff and admins): a
  patient's accounting of disclosures, as JSON or CSV (``format=csv`` or ``Accept:
  text/csv``).
- ``GET /v1/audit/events?patient_id=&user_id=&device_id=&since=&until=&limit=&cursor=``
  (staff and admins): search the log of the caller's clinics, newest first.

Every read of the log through these routes is itself audited (``audit-search``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response

from crdt import leaf_hash
from sync_server.audit.breakglass import grant_break_glass, grants, review_grant
from sync_server.audit.disclosures import (
    disclosures,
    disclosures_csv,
    record_audit_read,
    search_events,
)
from sync_server.audit.log import (
    consistency_path,
    current_checkpoint,
    inclusion_path,
    issue_checkpoint,
    leaf_actor,
    leaf_bytes,
)
from sync_server.audit.schemas import (
    AuditEntryPublic,
    BreakGlassGrantPublic,
    BreakGlassRequest,
    BreakGlassReview,
    CheckpointPublic,
    ConsistencyProof,
    EventPagePublic,
    InclusionProof,
)
from sync_server.deps import (
    AdminCaller,
    AnyPrincipal,
    ArtifactKeyDep,
    DbDep,
    SettingsDep,
    StaffCaller,
)
from sync_server.errors import NotFound

__all__ = ["router"]

router = APIRouter(prefix="/v1/audit", tags=["audit"])

_Size = Annotated[int, Query(ge=0, le=2**62, description="A tree size (events).")]


@router.get("/checkpoint", summary="The newest signed checkpoint of the audit log")
def get_checkpoint(caller: AnyPrincipal, db: DbDep, key: ArtifactKeyDep) -> CheckpointPublic:
    """The newest checkpoint, signed by the server's artifact key; one is signed first if
    the log grew since the last. Keep it: it is what catches a server that later
    rewrites or truncates its log (`coherency audit verify --checkpoints`)."""
    with db.write() as session:
        return CheckpointPublic.of(current_checkpoint(session=session, signer=key))


@router.post("/checkpoints", status_code=201, summary="Sign a checkpoint of the audit log now")
def post_checkpoint(caller: AdminCaller, db: DbDep, key: ArtifactKeyDep) -> CheckpointPublic:
    """Sign the log's current size and root (admins; the server also signs one on a
    schedule, `Settings.audit_checkpoint_seconds`)."""
    with db.write() as session:
        return CheckpointPublic.of(issue_checkpoint(session=session, signer=key))


@router.get("/proofs/consistency", summary="Proof that one log state extends another")
def get_consistency(
    caller: AnyPrincipal, db: DbDep, first: _Size, second: _Size
) -> ConsistencyProof:
    """The RFC 9162 consistency proof from the log of `first` events to the log of
    `second` (hashes only: no event's contents)."""
    with db.read() as session:
        path = consistency_path(session=session, first=first, second=second)
    return ConsistencyProof(first=first, second=second, path=[p.hex() for p in path])


@router.get(
    "/proofs/inclusion",
    summary="Proof that one event is in the log",
    responses={404: {"description": "The log has no such event (`audit_event_not_found`)."}},
)
def get_inclusion(caller: AnyPrincipal, db: DbDep, seq: _Size, size: _Size) -> InclusionProof:
    """The event at leaf `seq` (its canonical bytes: ids only) and the RFC 9162 proof of
    its inclusion in the log of `size` events. Admins may ask for any event; a device
    only for the events it was the actor of (404 otherwise, as for a missing one)."""
    with db.read() as session:
        if caller.role != "admin" and leaf_actor(session=session, seq=seq) != caller.id:
            raise NotFound(f"the audit log has no event {seq}", code="audit_event_not_found")
        data = leaf_bytes(session=session, seq=seq)
        path = inclusion_path(session=session, seq=seq, size=size)
    return InclusionProof(
        seq=seq,
        size=size,
        leaf=data.decode(),
        leaf_hash=leaf_hash(data).hex(),
        path=[p.hex() for p in path],
    )


# ---------------------------------------------------------------- access around the log
_IdFilter = Annotated[str | None, Query(min_length=1, max_length=64)]
_Time = Annotated[
    datetime | None, Query(description="ISO 8601 with a UTC offset (e.g. 2026-01-31T00:00Z).")
]


@router.post(
    "/break-glass",
    status_code=201,
    response_model=BreakGlassGrantPublic,
    summary="Break-glass: emergency access to a patient of another clinic",
    responses={
        409: {"description": "`break_glass_not_needed`: the patient is of the caller's clinic."}
    },
)
def post_break_glass(
    body: BreakGlassRequest, caller: StaffCaller, db: DbDep, settings: SettingsDep
) -> BreakGlassGrantPublic:
    """Open a patient of another clinic of the organisation, for a reason, for
    `Settings.break_glass_minutes`: the staff read routes then allow that patient's
    records to the caller and audit each read with purpose ``break-glass``; admins
    review every grant. The reason is kept with the grant, not in the audit log.
    403 ``break_glass_not_allowed`` for organisation-wide admins and devices, 409
    ``break_glass_not_needed`` for a patient of the caller's own clinic."""
    with db.write() as session:
        grant = grant_break_glass(
            session=session,
            principal=caller,
            patient_id=body.patient_id,
            reason=body.reason,
            minutes=settings.break_glass_minutes,
        )
        return BreakGlassGrantPublic.model_validate(grant)


@router.get(
    "/break-glass",
    response_model=list[BreakGlassGrantPublic],
    summary="Break-glass grants, for review",
)
def list_break_glass(
    caller: AdminCaller,
    db: DbDep,
    unreviewed: Annotated[bool, Query(description="Only grants not yet reviewed.")] = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[BreakGlassGrantPublic]:
    """The organisation's break-glass grants (of its clinic, for a clinic-bound admin),
    newest first, with their reasons (audited as a read of the audit)."""
    with db.write() as session:
        rows = grants(session=session, principal=caller, unreviewed=unreviewed, limit=limit)
        found = [BreakGlassGrantPublic.model_validate(row) for row in rows]
        record_audit_read(
            session=session,
            principal=caller,
            scope="break-glass",
            clinic_id=caller.clinic_id,
            filters={},
            rows=len(found),
        )
    return found


@router.post(
    "/break-glass/{grant_id}/review",
    response_model=BreakGlassGrantPublic,
    summary="Review a break-glass grant",
    responses={409: {"description": "`already_reviewed`."}},
)
def post_break_glass_review(
    grant_id: str, body: BreakGlassReview, caller: AdminCaller, db: DbDep
) -> BreakGlassGrantPublic:
    """Record an admin's review of a grant, with a note (kept with the grant); 409
    ``already_reviewed`` the second time."""
    with db.write() as session:
        grant = review_grant(session=session, principal=caller, grant_id=grant_id, note=body.note)
        return BreakGlassGrantPublic.model_validate(grant)


@router.get(
    "/disclosures",
    response_model=list[AuditEntryPublic],
    summary="A patient's accounting of disclosures (JSON or CSV)",
    responses={200: {"content": {"text/csv": {}}}},
)
def get_disclosures(
    request: Request,
    caller: StaffCaller,
    db: DbDep,
    patient_id: Annotated[str, Query(min_length=1, max_length=64)],
    since: _Time = None,
    until: _Time = None,
    format: Annotated[Literal["json", "csv"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=50_000)] = 10_000,
) -> Any:
    """Every event of the server's audit log that concerned the patient, oldest first:
    when, who (kind, id, role), from where (device id, address), what (event kind,
    operation, records), purpose of use and outcome; ids only. ``format=csv`` (or
    ``Accept: text/csv``) answers CSV. For staff and admins of the patient's clinic
    (403 ``audit_readers_only`` for clinicians); audited as a read of the audit."""
    with db.read() as session:
        patient, entries = disclosures(
            session=session,
            principal=caller,
            patient_id=patient_id,
            since=since,
            until=until,
            limit=limit,
        )
    with db.write() as session:
        record_audit_read(
            session=session,
            principal=caller,
            scope="disclosures",
            clinic_id=patient.clinic_id,
            filters={"patient_id": patient.id},
            rows=len(entries),
        )
    wants_csv = format == "csv" or (
        format is None and "text/csv" in request.headers.get("accept", "")
    )
    if wants_csv:
        return Response(
            content=disclosures_csv(entries),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="disclosures.csv"'},
        )
    return [AuditEntryPublic.model_validate(entry) for entry in entries]


@router.get("/events", response_model=EventPagePublic, summary="Search the audit log")
def get_events(
    caller: StaffCaller,
    db: DbDep,
    patient_id: _IdFilter = None,
    user_id: _IdFilter = None,
    device_id: _IdFilter = None,
    since: _Time = None,
    until: _Time = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[int | None, Query(ge=0, le=2**62)] = None,
) -> EventPagePublic:
    """The events of the caller's clinics (every clinic of the organisation for an
    organisation-wide admin) matching every filter given, newest first; pass
    `next_cursor` back as `cursor` for the next page. For staff and admins (403
    ``audit_readers_only`` for clinicians); audited as a read of the audit."""
    with db.read() as session:
        found = search_events(
            session=session,
            principal=caller,
            patient_id=patient_id,
            user_id=user_id,
            device_id=device_id,
            since=since,
            until=until,
            limit=limit,
            cursor=cursor,
        )
    with db.write() as session:
        record_audit_read(
            session=session,
            principal=caller,
            scope="events",
            clinic_id=caller.clinic_id,
            filters={"patient_id": patient_id, "user_id": user_id, "device_id": device_id},
            rows=len(found.items),
        )
    return EventPagePublic(
        items=[AuditEntryPublic.model_validate(entry) for entry in found.items],
        next_cursor=found.next_cursor,
    )
