"""How the server decides booking intents: appointments (request, reschedule, cancel)
and caregiver visits (request, review). Each handler runs inside the push that
delivered the intent, in a savepoint (`sync_server.intents.IntentDesk`); it gets time
for a booking only through `slots.take`, so the database, not this code, is what
keeps two bookings off one provider's time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from crdt import (
    AppointmentCancel,
    AppointmentRequest,
    AppointmentReschedule,
    IntentKind,
    ProviderKind,
    VisitRequest,
    VisitReview,
)
from sync_server.bookings.reference import availability_key, local_day, refresh_touched
from sync_server.bookings.schedule import Span, zone
from sync_server.bookings.slots import (
    CACHE_PREFIX,
    free_slots,
    is_aligned,
    json_list,
    release,
    schedule_for,
    take,
)
from sync_server.bookings.tables import ACTIVE_STATES, Booking, Provider, QualityFlag, Service
from sync_server.db import new_id, rowcount
from sync_server.identity.tables import Clinic
from sync_server.intents.desk import IntentContext, IntentDesk, Verdict

__all__ = [
    "BOOKING_HORIZON",
    "LATE_CANCELLATION",
    "LOW_RATING",
    "SEARCH_DAYS",
    "cancel_booking",
    "register",
]

LATE_CANCELLATION = timedelta(hours=24)
"""A cancellation closer than this to the appointment is flagged late."""
SEARCH_DAYS = 7
"""How far ahead the server looks for an alternative to offer."""
BOOKING_HORIZON = timedelta(days=366)
"""How far ahead a booking may be asked for."""
LOW_RATING = 2
"""A visit rated this or lower raises a quality flag."""


# What one push's decisions read again and again, kept in the session (its
# transaction) under `slots.CACHE_PREFIX`; directory changes drop it (`forget_cached`).
_SERVICES = CACHE_PREFIX + "services"
_CLINICIANS = CACHE_PREFIX + "clinicians"


def register(desk: IntentDesk) -> None:
    """Give `desk` the booking handlers and the availability refresh."""
    desk.register(IntentKind.APPOINTMENT_REQUEST, request_appointment)
    desk.register(IntentKind.APPOINTMENT_RESCHEDULE, reschedule_appointment)
    desk.register(IntentKind.APPOINTMENT_CANCEL, cancel_appointment)
    desk.register(IntentKind.VISIT_REQUEST, request_visit)
    desk.register(IntentKind.VISIT_REVIEW, review_visit)
    desk.after_decisions(refresh_touched)


# ---------------------------------------------------------------- appointments
def request_appointment(context: IntentContext) -> Verdict:
    """Book the slot asked for, with the doctor asked for or any fitting one."""
    asked = context.intent.parsed_details()
    assert isinstance(asked, AppointmentRequest)
    session, clinic = context.session, _clinic(context)
    patient_id = context.intent.patient_id
    assert patient_id is not None  # the schema requires it
    problem = context.patient_problem(patient_id)
    if problem:
        return Verdict.rejected(problem)
    service = _service(session, context.organisation_id, asked.service, "appointment")
    if service is None:
        return Verdict.rejected(f"this clinic offers no service called {asked.service!r}")
    span = _span(context, asked.starts_at, service.duration_minutes)
    if isinstance(span, str):
        return Verdict.rejected(span)
    candidates = _clinicians(context, service, asked.provider_id, asked.specialisation)
    if isinstance(candidates, str):
        return Verdict.rejected(candidates)
    return _book(
        context,
        candidates,
        span,
        make=lambda provider, at: _booking(
            context, "appointment", provider, patient_id, service.code, at
        ),
        code=service.code,
        flexible=asked.flexible,
        why=lambda: _busy_reason(session, clinic, candidates, asked.provider_id, span),
        clinic=clinic,
    )


def reschedule_appointment(context: IntentContext) -> Verdict:
    """Move an appointment: the new time is taken and the old freed together, or
    neither."""
    asked = context.intent.parsed_details()
    assert isinstance(asked, AppointmentReschedule)
    session, clinic = context.session, _clinic(context)
    booking = _subject(context, "appointment")
    if isinstance(booking, str):
        return Verdict.rejected(booking)
    if booking.state not in ("booked", "confirmed"):
        return Verdict.rejected(f"the appointment is {booking.state.replace('_', ' ')}")
    service = _service(session, context.organisation_id, booking.service, "appointment")
    if service is None:
        return Verdict.rejected(f"the service {booking.service!r} is no longer offered")
    span = _span(context, asked.starts_at, service.duration_minutes)
    if isinstance(span, str):
        return Verdict.rejected(span)
    wanted = asked.provider_id or booking.provider_id
    candidates = _clinicians(context, service, wanted, None)
    if isinstance(candidates, str):
        return Verdict.rejected(candidates)
    old_day = local_day(clinic, booking.starts_at)
    provider = candidates[0]
    if _move(session, booking, provider, span, context.now):
        context.touched |= {
            availability_key(clinic.id, old_day),
            availability_key(clinic.id, local_day(clinic, span.start)),
        }
        return Verdict.accepted(_outcome(booking, provider))
    reason = _busy_reason(session, clinic, candidates, wanted, span)
    offered = _nearest(session, candidates, service.duration_minutes, span.start, context.now)
    if offered is not None and asked.flexible:
        other, slot = offered
        if _move(session, booking, other, slot, context.now):
            context.touched |= {
                availability_key(clinic.id, old_day),
                availability_key(clinic.id, local_day(clinic, slot.start)),
            }
            return Verdict.accepted_alternative(
                _outcome(booking, other), f"{reason}; moved to the nearest free slot instead"
            )
    return Verdict.rejected(
        reason, alternative=None if offered is None else _offer(offered, service.code)
    )


def cancel_appointment(context: IntentContext) -> Verdict:
    """Cancel an appointment and free its slot; late cancellations are flagged."""
    asked = context.intent.parsed_details()
    assert isinstance(asked, AppointmentCancel)
    clinic = _clinic(context)
    booking = _subject(context, "appointment")
    if isinstance(booking, str):
        return Verdict.rejected(booking)
    if booking.state not in ("booked", "confirmed"):
        return Verdict.rejected(f"the appointment is {booking.state.replace('_', ' ')}")
    late = booking.starts_at - context.now < LATE_CANCELLATION
    cancel_booking(
        session=context.session, booking=booking, now=context.now, reason=asked.reason, late=late
    )
    context.touched.add(availability_key(clinic.id, local_day(clinic, booking.starts_at)))
    outcome = {"booking_id": booking.id, "state": booking.state, "late_cancellation": late}
    return Verdict.accepted(
        outcome, reason="cancelled less than 24 hours before the appointment" if late else None
    )


# ---------------------------------------------------------------- caregiver visits
def request_visit(context: IntentContext) -> Verdict:
    """Book the best free caregiver with the skill, in the area, at the time (or the
    caregiver asked for)."""
    asked = context.intent.parsed_details()
    assert isinstance(asked, VisitRequest)
    clinic = _clinic(context)
    patient_id = context.intent.patient_id
    assert patient_id is not None
    problem = context.patient_problem(patient_id)
    if problem:
        return Verdict.rejected(problem)
    span = _span(context, asked.starts_at, asked.duration_minutes)
    if isinstance(span, str):
        return Verdict.rejected(span)
    candidates = _caregivers(context, asked)
    if isinstance(candidates, str):
        return Verdict.rejected(candidates)
    who = candidates[0].name if asked.caregiver_id else f"every {asked.skill} caregiver"
    return _book(
        context,
        candidates,
        span,
        make=lambda caregiver, at: _booking(
            context,
            "visit",
            caregiver,
            patient_id,
            asked.skill,
            at,
            area=asked.area,
            language=asked.language,
        ),
        code=asked.skill,
        flexible=asked.flexible,
        why=lambda: f"{who} is busy or off duty at {_local(clinic, span.start)}",
        clinic=None,  # visits publish no clinic slots
    )


def review_visit(context: IntentContext) -> Verdict:
    """Record the one review of a completed visit; a low rating flags the caregiver."""
    asked = context.intent.parsed_details()
    assert isinstance(asked, VisitReview)
    booking = _subject(context, "visit")
    if isinstance(booking, str):
        return Verdict.rejected(booking)
    if booking.state != "completed":
        return Verdict.rejected(
            f"only a completed visit can be reviewed; this one is {booking.state}"
        )
    # Conditional: a second review (another device, a replay under a new id) finds
    # the rating set and changes nothing.
    done = context.session.execute(
        update(Booking)
        .where(Booking.id == booking.id, Booking.rating.is_(None), Booking.state == "completed")
        .values(
            rating=asked.rating,
            review_comment=asked.comment,
            reviewed_at=context.now,
            updated_at=context.now,
        )
    )
    if rowcount(done) != 1:
        return Verdict.rejected("this visit has already been reviewed")
    if asked.rating <= LOW_RATING:
        context.session.add(
            QualityFlag(
                id=new_id(),
                organisation_id=booking.organisation_id,
                provider_id=booking.provider_id,
                booking_id=booking.id,
                reason=f"low rating ({asked.rating}/5)",
                created_at=context.now,
            )
        )
    return Verdict.accepted({"booking_id": booking.id, "rating": asked.rating})


# ---------------------------------------------------------------- shared steps
def cancel_booking(
    *, session: Session, booking: Booking, now: datetime, reason: str | None, late: bool
) -> None:
    """Cancel `booking` and free its time (staff and intents alike)."""
    release(session=session, booking_id=booking.id)
    booking.state = "cancelled"
    booking.cancel_reason = reason
    booking.late_cancellation = late
    booking.updated_at = now
    session.flush()


def _holds(session: Session, booking: Booking, provider: Provider, span: Span) -> bool:
    """Book `span` for `booking` if it is within the provider's hours and free."""
    if not schedule_for(session=session, provider=provider).offers(span):
        return False
    return take(session=session, booking=booking, span=span)


def _move(
    session: Session, booking: Booking, provider: Provider, span: Span, now: datetime
) -> bool:
    if not schedule_for(session=session, provider=provider).offers(span):
        return False
    savepoint = session.begin_nested()
    release(session=session, booking_id=booking.id)
    if take(session=session, booking=booking, span=span, provider_id=provider.id):
        booking.updated_at = now
        savepoint.commit()
        return True
    savepoint.rollback()  # the old time is held again, the booking as it was
    return False


def _booking(
    context: IntentContext,
    kind: str,
    provider: Provider,
    patient_id: str,
    service: str,
    span: Span,
    *,
    area: str | None = None,
    language: str | None = None,
) -> Booking:
    booking = Booking(
        id=new_id(),
        organisation_id=context.organisation_id,
        clinic_id=context.clinic_id,
        kind=kind,
        provider_id=provider.id,
        patient_id=patient_id,
        service=service,
        starts_at=span.start,
        ends_at=span.end,
        state="booked",
        intent_id=context.intent.id,
        area=area,
        language=language,
        late_cancellation=False,
        created_at=context.now,
        updated_at=context.now,
    )
    return booking  # `take` adds it to the session if it gets its time


def _book(
    context: IntentContext,
    candidates: Sequence[Provider],
    span: Span,
    *,
    make: Callable[[Provider, Span], Booking],
    code: str,
    flexible: bool,
    why: Callable[[], str],
    clinic: Clinic | None,
) -> Verdict:
    """Book `span` with the first of `candidates` who works then and is free; else the
    nearest free slot among them if the intent is `flexible`, else a rejection saying
    `why()` and offering that slot. `clinic`: whose availability the booking changes."""
    session = context.session

    def taken(provider: Provider, at: Span, *, alternative: bool) -> Booking | None:
        booking = make(provider, at)
        held = (
            take(session=session, booking=booking, span=at)
            if alternative  # a free slot from the provider's own schedule
            else _holds(session, booking, provider, at)
        )
        if not held:
            return None
        if clinic is not None:
            context.touched.add(availability_key(clinic.id, local_day(clinic, at.start)))
        return booking

    for provider in candidates:
        booking = taken(provider, span, alternative=False)
        if booking is not None:
            return Verdict.accepted(_outcome(booking, provider))
    reason = why()
    minutes = int((span.end - span.start).total_seconds() // 60)
    offered = _nearest(session, candidates, minutes, span.start, context.now)
    if offered is not None and flexible:
        provider, slot = offered
        booking = taken(provider, slot, alternative=True)
        if booking is not None:
            return Verdict.accepted_alternative(
                _outcome(booking, provider), f"{reason}; booked the nearest free slot instead"
            )
    return Verdict.rejected(reason, alternative=None if offered is None else _offer(offered, code))


def _nearest(
    session: Session,
    candidates: Sequence[Provider],
    minutes: int,
    around: datetime,
    now: datetime,
) -> tuple[Provider, Span] | None:
    """The free slot of `minutes` closest to `around` (from now on, within
    `SEARCH_DAYS`), among `candidates`."""
    start_day = max(around, now).date() - timedelta(days=1)
    days = [start_day + timedelta(days=n) for n in range(SEARCH_DAYS + 2)]
    found = free_slots(session=session, providers=candidates, minutes=minutes, days=days, after=now)
    if not found:
        return None
    return min(found, key=lambda item: (abs(item[1].start - around), item[1].start, item[0].id))


def _offer(offered: tuple[Provider, Span], service: str) -> dict[str, Any]:
    provider, slot = offered
    return {
        "provider_id": provider.id,
        "provider_name": provider.name,
        "service": service,
        "starts_at": slot.start.isoformat(),
        "ends_at": slot.end.isoformat(),
    }


def _outcome(booking: Booking, provider: Provider) -> dict[str, Any]:
    return {
        "booking_id": booking.id,
        "kind": booking.kind,
        "provider_id": provider.id,
        "provider_name": provider.name,
        "service": booking.service,
        "starts_at": booking.starts_at.astimezone(UTC).isoformat(),
        "ends_at": booking.ends_at.astimezone(UTC).isoformat(),
        "state": booking.state,
    }


def _clinic(context: IntentContext) -> Clinic:
    clinic = context.session.get(Clinic, context.clinic_id)
    assert clinic is not None  # the push holds the clinic's row lock
    return clinic


def _span(context: IntentContext, starts_at: datetime, minutes: int) -> Span | str:
    """The time asked for, or why it cannot be booked."""
    if starts_at <= context.now:
        return "that time has passed"
    if starts_at > context.now + BOOKING_HORIZON:
        return f"bookings open at most {BOOKING_HORIZON.days} days ahead"
    if not is_aligned(starts_at.astimezone(UTC)):
        return "bookings start on a 5-minute step (e.g. 09:00, 09:05)"
    return Span(starts_at, starts_at + timedelta(minutes=minutes))


def _service(session: Session, organisation_id: str, code: str, kind: str) -> Service | None:
    kept: dict[tuple[str, str, str], Service | None] = session.info.setdefault(_SERVICES, {})
    key = (organisation_id, code, kind)
    if key not in kept:
        kept[key] = session.scalar(
            select(Service).where(
                Service.organisation_id == organisation_id,
                Service.code == code,
                Service.kind == kind,
            )
        )
    return kept[key]


def _clinicians(
    context: IntentContext, service: Service, provider_id: str | None, specialisation: str | None
) -> list[Provider] | str:
    """The clinic's doctors and nurses who offer `service` (the one asked for, or
    every one with the specialisation), or why there is none."""
    kept: dict[str, Sequence[Provider]] = context.session.info.setdefault(_CLINICIANS, {})
    if context.clinic_id not in kept:
        kept[context.clinic_id] = context.session.scalars(
            select(Provider)
            .where(
                Provider.clinic_id == context.clinic_id,
                Provider.active.is_(True),
                Provider.kind.in_([ProviderKind.DOCTOR.value, ProviderKind.NURSE.value]),
            )
            .order_by(Provider.id)
        ).all()
    rows = kept[context.clinic_id]
    offering = [p for p in rows if service.code in json_list(p.services)]
    if provider_id is not None:
        named = [p for p in offering if p.id == provider_id]
        if not named:
            return f"no clinician {provider_id} here offers {service.name}"
        return named
    wanted = specialisation or service.specialisation
    if wanted is not None:
        offering = [p for p in offering if wanted in json_list(p.specialisations)]
    if not offering:
        what = f" with specialisation {wanted!r}" if wanted else ""
        return f"no clinician{what} at this clinic offers {service.name}"
    return offering


def _caregivers(context: IntentContext, asked: VisitRequest) -> list[Provider] | str:
    """Caregivers with the skill who serve the area, best first: the one asked for;
    else speakers of the language first, then the least busy that day, then the best
    rated."""
    rows = context.session.scalars(
        select(Provider)
        .where(
            Provider.organisation_id == context.organisation_id,
            Provider.active.is_(True),
            Provider.kind == ProviderKind.CAREGIVER.value,
        )
        .order_by(Provider.id)
    ).all()
    fit = [
        p for p in rows if asked.skill in json_list(p.skills) and asked.area in json_list(p.areas)
    ]
    if asked.caregiver_id is not None:
        named = [p for p in fit if p.id == asked.caregiver_id]
        if not named:
            return f"caregiver {asked.caregiver_id} does not do {asked.skill} in {asked.area}"
        return named
    if not fit:
        return f"no caregiver does {asked.skill} in {asked.area}"
    day_start = asked.starts_at.astimezone(UTC).replace(hour=0, minute=0)
    load: dict[str, Any] = dict(
        context.session.execute(
            select(Booking.provider_id, func.count())
            .where(
                Booking.provider_id.in_([p.id for p in fit]),
                Booking.state.in_(ACTIVE_STATES),
                Booking.starts_at >= day_start,
                Booking.starts_at < day_start + timedelta(days=1),
            )
            .group_by(Booking.provider_id)
        ).all()
    )
    ratings: dict[str, Any] = dict(
        context.session.execute(
            select(Booking.provider_id, func.avg(Booking.rating))
            .where(Booking.provider_id.in_([p.id for p in fit]), Booking.rating.is_not(None))
            .group_by(Booking.provider_id)
        ).all()
    )

    def rank(p: Provider) -> tuple[bool, int, float, str]:
        speaks = asked.language is None or asked.language in json_list(p.languages)
        return (not speaks, int(load.get(p.id, 0)), -float(ratings.get(p.id) or 0), p.id)

    return sorted(fit, key=rank)


def _subject(context: IntentContext, kind: str) -> Booking | str:
    subject_id = context.intent.subject_id
    booking = context.session.get(Booking, subject_id) if subject_id else None
    if booking is None or booking.clinic_id != context.clinic_id or booking.kind != kind:
        return f"no {kind} {subject_id} at this clinic"
    patient = context.intent.patient_id
    if patient is not None and patient != booking.patient_id:
        return f"the {kind} is not the patient's"
    return booking


def _busy_reason(
    session: Session,
    clinic: Clinic,
    candidates: Sequence[Provider],
    asked_for: str | None,
    span: Span,
) -> str:
    """Why none of `candidates` could take `span`: all booked, or not working then."""
    working = any(schedule_for(session=session, provider=p).offers(span) for p in candidates)
    when = _local(clinic, span.start)
    if asked_for:
        name = candidates[0].name
        return (
            f"{name} is already booked at {when}" if working else f"{name} is not working at {when}"
        )
    if working:
        return f"every fitting clinician is already booked at {when}"
    return f"no fitting clinician is working at {when}"


def _local(clinic: Clinic, moment: datetime) -> str:
    here = moment.astimezone(zone(clinic.timezone))
    return f"{here:%H:%M} on {here:%A} {here.day} {here:%B %Y} ({clinic.timezone})"
