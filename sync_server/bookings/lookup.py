"""What staff read about bookings: the bookings of a clinic, provider or patient, the
free slots of a service, and how a caregiver's visits went. Services: no HTTP; every
query is scoped to the caller's organisation and clinics.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from crdt import ProviderKind
from sync_server.bookings.deciders import LOW_RATING
from sync_server.bookings.directory import clinic_in_scope, provider_in_scope
from sync_server.bookings.schedule import Span, zone
from sync_server.bookings.slots import free_slots, json_list
from sync_server.bookings.tables import Booking, Provider, Service
from sync_server.db import utcnow
from sync_server.errors import Invalid, NotFound
from sync_server.identity.principals import Principal

__all__ = [
    "BOOKING_STATES",
    "MAX_SLOT_DAYS",
    "CaregiverRating",
    "FreeSlot",
    "booking_patients",
    "caregiver_rating",
    "find_slots",
    "list_bookings",
]

BOOKING_STATES = (
    "booked",
    "confirmed",
    "en_route",
    "started",
    "completed",
    "cancelled",
    "no_show",
    "missed",
)
"""Every state a booking can be in."""

MAX_SLOT_DAYS = 31
"""The longest range of days one free-slot query covers."""


def booking_patients(*, session: Session, booking_ids: Sequence[str]) -> dict[str, str]:
    """The patient of each of these bookings (booking id to patient id)."""
    if not booking_ids:
        return {}
    rows = session.execute(
        select(Booking.id, Booking.patient_id).where(Booking.id.in_(set(booking_ids)))
    ).all()
    return {str(booking_id): str(patient_id) for booking_id, patient_id in rows}


def list_bookings(
    *,
    session: Session,
    principal: Principal,
    clinic_id: str | None = None,
    provider_id: str | None = None,
    patient_id: str | None = None,
    first: date | None = None,
    last: date | None = None,
    state: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> Sequence[Booking]:
    """Bookings the caller may see, by start: of one clinic, provider or patient,
    starting from day `first` to day `last` (inclusive; days in `clinic_id`'s zone if
    given, else UTC), in one state.

    Raises:
        Invalid: An unknown state, or `last` before `first`.
        NotFound: The clinic or provider is not in the caller's scope.
    """
    if state is not None and state not in BOOKING_STATES:
        raise Invalid(f"state is one of {', '.join(BOOKING_STATES)}")
    if first is not None and last is not None and last < first:
        raise Invalid("`to` is before `from`")
    tz: ZoneInfo = ZoneInfo("UTC")
    query = select(Booking).where(Booking.organisation_id == principal.organisation_id)
    if principal.clinic_id is not None:
        query = query.where(Booking.clinic_id == principal.clinic_id)
    if clinic_id is not None:
        clinic = clinic_in_scope(session=session, principal=principal, clinic_id=clinic_id)
        tz = zone(clinic.timezone)
        query = query.where(Booking.clinic_id == clinic.id)
    if provider_id is not None:
        provider_in_scope(session=session, principal=principal, provider_id=provider_id)
        query = query.where(Booking.provider_id == provider_id)
    if patient_id is not None:
        query = query.where(Booking.patient_id == patient_id)
    if first is not None:
        query = query.where(Booking.starts_at >= _midnight(first, tz))
    if last is not None:
        query = query.where(Booking.starts_at < _midnight(last + timedelta(days=1), tz))
    if state is not None:
        query = query.where(Booking.state == state)
    query = query.order_by(Booking.starts_at, Booking.id).limit(limit).offset(offset)
    return session.scalars(query).all()


@dataclass(frozen=True, slots=True)
class FreeSlot:
    """A free slot of a service with one provider."""

    provider_id: str
    provider_name: str
    service: str
    starts_at: datetime
    ends_at: datetime


def find_slots(
    *,
    session: Session,
    principal: Principal,
    clinic_id: str,
    service: str,
    first: date,
    last: date,
    provider_id: str | None = None,
    now: datetime | None = None,
) -> list[FreeSlot]:
    """The free slots of `service` at the clinic on local days `first` to `last`
    (inclusive, at most `MAX_SLOT_DAYS`), from now on, earliest first: of the
    clinic's active doctors and nurses who offer it, or of `provider_id` alone (a
    caregiver too).

    Raises:
        Invalid: A bad range of days.
        NotFound: The clinic, service or provider is not in the caller's scope.
    """
    if last < first or (last - first).days >= MAX_SLOT_DAYS:
        raise Invalid(f"give a range of days from `from` to `to`, at most {MAX_SLOT_DAYS}")
    clinic = clinic_in_scope(session=session, principal=principal, clinic_id=clinic_id)
    found = session.scalar(
        select(Service).where(
            Service.organisation_id == principal.organisation_id, Service.code == service
        )
    )
    if found is None:
        raise NotFound(f"no service {service!r}", code="not_found")
    if provider_id is not None:
        provider = provider_in_scope(session=session, principal=principal, provider_id=provider_id)
        if provider.clinic_id not in (None, clinic.id):
            raise NotFound("no such provider at this clinic", code="not_found")
        providers: list[Provider] = [provider] if provider.active else []
    else:
        providers = [
            p
            for p in session.scalars(
                select(Provider).where(
                    Provider.clinic_id == clinic.id,
                    Provider.active.is_(True),
                    Provider.kind.in_([ProviderKind.DOCTOR.value, ProviderKind.NURSE.value]),
                )
            )
            if found.code in json_list(p.services)
        ]
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    tz = zone(clinic.timezone)
    window = Span(_midnight(first, tz), _midnight(last + timedelta(days=1), tz))
    return [
        FreeSlot(provider.id, provider.name, found.code, span.start, span.end)
        for provider, span in free_slots(
            session=session,
            providers=providers,
            minutes=found.duration_minutes,
            days=days,
            after=now or utcnow(),
        )
        # A provider in another zone works other local days: keep the clinic's days.
        if window.covers(span)
    ]


@dataclass(frozen=True, slots=True)
class CaregiverRating:
    """How a caregiver's visits went (in the caller's clinics)."""

    provider_id: str
    reviews: int
    average: float | None
    low_ratings: int
    completed_visits: int
    missed_visits: int


def caregiver_rating(
    *, session: Session, principal: Principal, provider_id: str
) -> CaregiverRating:
    """The reviews of a caregiver's visits: how many, their average, how many were
    low (`sync_server.bookings.deciders.LOW_RATING` or less), and the visits completed
    and missed; counted over the caller's clinics (every clinic for an
    organisation-wide caller).

    Raises:
        NotFound: No such caregiver in the caller's scope.
    """
    provider = provider_in_scope(session=session, principal=principal, provider_id=provider_id)
    if provider.kind != ProviderKind.CAREGIVER.value:
        raise NotFound("no such caregiver", code="not_found")
    scope = [Booking.provider_id == provider.id, Booking.kind == "visit"]
    if principal.clinic_id is not None:
        scope.append(Booking.clinic_id == principal.clinic_id)
    reviews, average, low = session.execute(
        select(
            func.count(Booking.rating),
            func.avg(Booking.rating),
            func.count(Booking.rating).filter(Booking.rating <= LOW_RATING),
        ).where(*scope)
    ).one()
    states: dict[str, int] = {
        state: int(count)
        for state, count in session.execute(
            select(Booking.state, func.count())
            .where(*scope, Booking.state.in_(["completed", "missed"]))
            .group_by(Booking.state)
        )
    }
    return CaregiverRating(
        provider_id=provider.id,
        reviews=int(reviews or 0),
        average=None if average is None else round(float(average), 2),
        low_ratings=int(low or 0),
        completed_visits=int(states.get("completed", 0)),
        missed_visits=int(states.get("missed", 0)),
    )


def _midnight(day: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)
