"""Routes: bookings as staff see and handle them: free slots, the bookings of a
clinic, provider or patient, staff actions (confirm, cancel with a reason, no-show,
complete; a visit's progress), quality flags and caregivers' ratings.

Clinicians, staff and admins read; staff and admins act (403 ``forbidden`` for a
clinician, 403 ``staff_only`` for a device). Scoped to the caller's organisation and
clinics: anything outside answers 404 like a missing one. Reads of bookings are
audited with the booking ids they returned; actions with the booking and its new state.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query

from sync_server.audit.events import RecordsRead, purpose_of
from sync_server.audit.services import record_event, record_read
from sync_server.bookings.directory import actor_of
from sync_server.bookings.lookup import (
    booking_patients,
    caregiver_rating,
    find_slots,
    list_bookings,
)
from sync_server.bookings.manage import booking_in_scope, change_state, open_flags, resolve_flag
from sync_server.bookings.schemas import (
    BookingPublic,
    CaregiverRatingPublic,
    FreeSlotPublic,
    QualityFlagPublic,
    StateChange,
)
from sync_server.deps import ArtifactKeyDep, DbDep, RequestIdDep, StaffCaller
from sync_server.sync.authorship import ServerSigner

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["bookings"])

IdQuery = Annotated[str | None, Query(min_length=1, max_length=64)]


@router.get("/slots", response_model=list[FreeSlotPublic], summary="Free slots")
def get_slots(
    caller: StaffCaller,
    db: DbDep,
    clinic_id: Annotated[str, Query(min_length=1, max_length=64)],
    service: Annotated[str, Query(min_length=1, max_length=60, description="A service code.")],
    first: Annotated[date, Query(alias="from", description="First local day.")],
    last: Annotated[date, Query(alias="to", description="Last local day (at most 31 days).")],
    provider_id: IdQuery = None,
) -> list[FreeSlotPublic]:
    """Free slots of a service at a clinic, days local to the clinic, from now on,
    earliest first: of the clinic's doctors and nurses offering it, or of one provider."""
    with db.read() as session:
        slots = find_slots(
            session=session,
            principal=caller,
            clinic_id=clinic_id,
            service=service,
            first=first,
            last=last,
            provider_id=provider_id,
        )
    return [FreeSlotPublic.model_validate(s) for s in slots]


@router.get("/bookings", response_model=list[BookingPublic], summary="List bookings")
def get_bookings(
    caller: StaffCaller,
    db: DbDep,
    request_id: RequestIdDep,
    clinic_id: IdQuery = None,
    provider_id: IdQuery = None,
    patient_id: IdQuery = None,
    first: Annotated[date | None, Query(alias="from", description="First day.")] = None,
    last: Annotated[date | None, Query(alias="to", description="Last day.")] = None,
    state: Annotated[str | None, Query(max_length=20)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
) -> list[BookingPublic]:
    """Bookings the caller may see, by start time: of a clinic, a provider or a
    patient, starting on days ``from`` to ``to`` (the clinic's local days when
    ``clinic_id`` is given, else UTC), in one state."""
    with db.read() as session:
        rows = list_bookings(
            session=session,
            principal=caller,
            clinic_id=clinic_id,
            provider_id=provider_id,
            patient_id=patient_id,
            first=first,
            last=last,
            state=state,
            limit=limit,
            offset=offset,
        )
        found = [BookingPublic.model_validate(b) for b in rows]
    with db.write() as session:
        record_event(
            session=session,
            event=RecordsRead(
                actor=actor_of(caller),
                clinic_id=clinic_id or caller.clinic_id,
                patient_ids=tuple(b.patient_id for b in found),
                purpose=purpose_of(caller),
                collection="bookings",
                record_ids=tuple(b.id for b in found),
            ),
            request_id=request_id,
        )
    return found


@router.get("/bookings/{booking_id}", response_model=BookingPublic, summary="Read a booking")
def get_booking(
    booking_id: str, caller: StaffCaller, db: DbDep, request_id: RequestIdDep
) -> BookingPublic:
    """One booking the caller may see."""
    with db.write() as session:
        booking = booking_in_scope(session=session, principal=caller, booking_id=booking_id)
        record_event(
            session=session,
            event=RecordsRead(
                actor=actor_of(caller),
                clinic_id=booking.clinic_id,
                patient_ids=(booking.patient_id,),
                purpose=purpose_of(caller),
                collection="bookings",
                record_ids=(booking.id,),
            ),
            request_id=request_id,
        )
        return BookingPublic.model_validate(booking)


@router.post(
    "/bookings/{booking_id}/state",
    response_model=BookingPublic,
    summary="Act on a booking",
    responses={409: {"description": "`bad_transition`: not allowed from the booking's state."}},
)
def post_booking_state(
    booking_id: str, body: StateChange, caller: StaffCaller, db: DbDep, key: ArtifactKeyDep
) -> BookingPublic:
    """Staff action: confirm, cancel (with a reason; frees the slot; late if less than
    24 hours ahead), no_show or completed for an appointment; en_route, started,
    completed, cancelled or missed (raises a quality flag) for a visit. 409
    ``bad_transition`` for a move not allowed from the booking's state."""
    with db.write() as session:
        booking = change_state(
            session=session,
            principal=caller,
            booking_id=booking_id,
            state=body.state,
            signer=ServerSigner(key),
            reason=body.reason,
        )
        return BookingPublic.model_validate(booking)


@router.get("/quality-flags", response_model=list[QualityFlagPublic], summary="Open quality flags")
def get_quality_flags(
    caller: StaffCaller, db: DbDep, provider_id: IdQuery = None
) -> list[QualityFlagPublic]:
    """Unresolved quality flags (missed visits, low ratings), newest first."""
    with db.read() as session:
        flags = open_flags(session=session, principal=caller, provider_id=provider_id)
        found = [QualityFlagPublic.model_validate(f) for f in flags]
        patients = booking_patients(session=session, booking_ids=[f.booking_id for f in found])
    with db.write() as session:
        record_read(
            session=session,
            caller=caller,
            collection="quality-flags",
            records=[(f.id, patients.get(f.booking_id)) for f in found],
        )
    return found


@router.post(
    "/quality-flags/{flag_id}/resolve",
    response_model=QualityFlagPublic,
    summary="Resolve a quality flag",
)
def post_resolve_flag(flag_id: str, caller: StaffCaller, db: DbDep) -> QualityFlagPublic:
    """Mark a quality flag resolved (again: no change)."""
    with db.write() as session:
        flag = resolve_flag(session=session, principal=caller, flag_id=flag_id)
        return QualityFlagPublic.model_validate(flag)


@router.get(
    "/caregivers/{provider_id}/rating",
    response_model=CaregiverRatingPublic,
    summary="A caregiver's ratings",
)
def get_caregiver_rating(provider_id: str, caller: StaffCaller, db: DbDep) -> CaregiverRatingPublic:
    """How a caregiver's visits went in the caller's clinics: reviews, their average,
    low ratings, visits completed and missed."""
    with db.read() as session:
        rating = caregiver_rating(session=session, principal=caller, provider_id=provider_id)
    return CaregiverRatingPublic.model_validate(rating)
