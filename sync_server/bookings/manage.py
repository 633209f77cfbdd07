"""What staff do with bookings: confirm, cancel with a reason, mark a no-show, and
track a caregiver's visit (scheduled, en route, started, completed, or missed). A
missed visit raises a quality flag; staff see open flags and resolve them. Each change
that frees or moves time refreshes the clinic's availability records in the same
transaction; each is audited.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from sync_server.audit.events import BookingStateChanged, QualityFlagResolved, purpose_of
from sync_server.audit.services import record_event
from sync_server.bookings.deciders import LATE_CANCELLATION, cancel_booking
from sync_server.bookings.directory import actor_of, clinic_in_scope, require_writer
from sync_server.bookings.reference import availability_records, local_day
from sync_server.bookings.slots import release
from sync_server.bookings.tables import Booking, QualityFlag
from sync_server.db import new_id, utcnow
from sync_server.errors import Conflict, NotFound
from sync_server.identity.principals import Principal
from sync_server.notifications.events import NoticeKind, notify, patient_recipients
from sync_server.sync.authorship import ServerSigner
from sync_server.sync.documents import write_documents

__all__ = [
    "APPOINTMENT_MOVES",
    "VISIT_MOVES",
    "booking_in_scope",
    "change_state",
    "open_flags",
    "resolve_flag",
]

APPOINTMENT_MOVES: dict[str, frozenset[str]] = {
    "booked": frozenset({"confirmed", "cancelled", "no_show", "completed"}),
    "confirmed": frozenset({"cancelled", "no_show", "completed"}),
}
"""Allowed staff moves of an appointment, from each state."""

VISIT_MOVES: dict[str, frozenset[str]] = {
    "booked": frozenset({"en_route", "cancelled", "missed"}),
    "confirmed": frozenset({"en_route", "cancelled", "missed"}),
    "en_route": frozenset({"started", "missed"}),
    "started": frozenset({"completed"}),
}
"""Allowed moves of a caregiver visit: scheduled (booked) -> en route -> started ->
completed, or missed."""

_FREES_TIME = frozenset({"cancelled", "no_show", "missed", "completed"})


def booking_in_scope(*, session: Session, principal: Principal, booking_id: str) -> Booking:
    """The booking, if it is in the caller's clinics.

    Raises:
        NotFound: No such booking in scope (as for a missing one).
    """
    booking = session.get(Booking, booking_id)
    if (
        booking is None
        or booking.organisation_id != principal.organisation_id
        or not principal.can_see_clinic(booking.clinic_id)
    ):
        raise NotFound("no such booking", code="not_found")
    return booking


def change_state(
    *,
    session: Session,
    principal: Principal,
    booking_id: str,
    state: str,
    signer: ServerSigner,
    reason: str | None = None,
    now: datetime | None = None,
) -> Booking:
    """Move a booking to `state` as staff (see `APPOINTMENT_MOVES`, `VISIT_MOVES`).

    Raises:
        Forbidden: The caller may not change bookings (clinicians read them).
        NotFound: The booking is not in the caller's scope.
        Conflict: ``bad_transition``: not a move allowed from the booking's state.
    """
    require_writer(principal)
    at = now or utcnow()
    booking = booking_in_scope(session=session, principal=principal, booking_id=booking_id)
    moves = APPOINTMENT_MOVES if booking.kind == "appointment" else VISIT_MOVES
    if state not in moves.get(booking.state, frozenset()):
        raise Conflict(
            f"a {booking.kind} that is {booking.state} cannot become {state}",
            code="bad_transition",
        )
    day = booking.starts_at
    if state == "cancelled":
        cancel_booking(
            session=session,
            booking=booking,
            now=at,
            reason=reason,
            late=booking.starts_at - at < LATE_CANCELLATION,
        )
    else:
        if state in _FREES_TIME:
            release(session=session, booking_id=booking.id)
        booking.state = state
        booking.updated_at = at
        if reason is not None:
            booking.cancel_reason = reason
    if state == "missed":
        session.add(
            QualityFlag(
                id=new_id(),
                organisation_id=booking.organisation_id,
                provider_id=booking.provider_id,
                booking_id=booking.id,
                reason="missed visit",
                created_at=at,
            )
        )
    session.flush()
    if state in _FREES_TIME and booking.kind == "appointment":
        clinic = clinic_in_scope(session=session, principal=principal, clinic_id=booking.clinic_id)
        records = availability_records(
            session=session,
            clinic=clinic,
            days=[local_day(clinic, day)],
            now=at,
            author=signer.device_id,
        )
        if records:
            write_documents(session=session, clinic_id=clinic.id, documents=records, signer=signer)
    if state in ("cancelled", "confirmed"):
        notify(
            session=session,
            clinic_id=booking.clinic_id,
            kind=NoticeKind.BOOKING_CANCELLED
            if state == "cancelled"
            else NoticeKind.BOOKING_DECIDED,
            dedupe_key=f"booking:{booking.id}:{state}",
            recipients=patient_recipients(booking.patient_id),
            detail={
                "booking_id": booking.id,
                "kind": booking.kind,
                "state": state,
                "starts_at": booking.starts_at.isoformat(),
                "reason": reason,
            },
        )
    record_event(
        session=session,
        event=BookingStateChanged(
            actor=actor_of(principal),
            clinic_id=booking.clinic_id,
            patient_ids=(booking.patient_id,),
            purpose=purpose_of(principal),
            booking_id=booking.id,
            state=state,
        ),
    )
    return booking


def open_flags(
    *, session: Session, principal: Principal, provider_id: str | None = None
) -> Sequence[QualityFlag]:
    """Unresolved quality flags of the caller's organisation (of its clinic's bookings,
    for a clinic-bound caller), of one provider if given, newest first."""
    query = (
        select(QualityFlag)
        .join(Booking, Booking.id == QualityFlag.booking_id)
        .where(
            QualityFlag.organisation_id == principal.organisation_id,
            QualityFlag.resolved_at.is_(None),
        )
    )
    if principal.clinic_id is not None:
        query = query.where(Booking.clinic_id == principal.clinic_id)
    if provider_id is not None:
        query = query.where(QualityFlag.provider_id == provider_id)
    return session.scalars(query.order_by(QualityFlag.created_at.desc(), QualityFlag.id)).all()


def resolve_flag(
    *, session: Session, principal: Principal, flag_id: str, now: datetime | None = None
) -> QualityFlag:
    """Mark a quality flag resolved (resolving it again changes nothing).

    Raises:
        Forbidden: The caller may not change bookings.
        NotFound: No such flag in the caller's scope.
    """
    require_writer(principal)
    flag = session.get(QualityFlag, flag_id)
    booking = None if flag is None else session.get(Booking, flag.booking_id)
    if (
        flag is None
        or booking is None
        or flag.organisation_id != principal.organisation_id
        or not principal.can_see_clinic(booking.clinic_id)
    ):
        raise NotFound("no such quality flag", code="not_found")
    if flag.resolved_at is None:
        flag.resolved_at = now or utcnow()
        session.flush()
        record_event(
            session=session,
            event=QualityFlagResolved(
                actor=actor_of(principal),
                clinic_id=booking.clinic_id,
                patient_ids=(booking.patient_id,),
                purpose=purpose_of(principal),
                flag_id=flag.id,
            ),
        )
    return flag
