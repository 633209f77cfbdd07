"""The booking directory as staff manage it: providers (doctors, nurses, caregivers),
services, weekly hours and exceptions. Services: no HTTP here; every function scopes
by the caller's organisation (and clinic, for a clinic-bound account), raises the
server's error tree and audits each change it makes (`sync_server.audit.events`).

Changes do not publish reference data themselves: callers follow them with
`sync_server.bookings.reference.republish` in the same transaction.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import date, time

from sqlalchemy import delete, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from crdt import ProviderKind
from sync_server.audit.events import (
    Actor,
    ClinicTimezoneSet,
    Event,
    ProviderCreated,
    ProviderUpdated,
    ScheduleExceptionAdded,
    ScheduleExceptionRemoved,
    ServiceCreated,
    WeeklyHoursSet,
)
from sync_server.audit.services import record_event
from sync_server.bookings.schedule import parse_hhmm, zone
from sync_server.bookings.slots import forget_cached, json_list
from sync_server.bookings.tables import (
    STEP_MINUTES,
    Provider,
    ScheduleException,
    Service,
    WeeklyHours,
)
from sync_server.db import new_id
from sync_server.errors import Conflict, Forbidden, Invalid, NotFound
from sync_server.identity.principals import Principal
from sync_server.identity.tables import Clinic

__all__ = [
    "EXCEPTION_KINDS",
    "MAX_SERVICE_MINUTES",
    "WRITER_ROLES",
    "actor_of",
    "add_exception",
    "add_provider",
    "add_service",
    "clinic_in_scope",
    "exception_in_scope",
    "list_exceptions",
    "list_providers",
    "list_services",
    "provider_in_scope",
    "remove_exception",
    "require_writer",
    "set_clinic_timezone",
    "set_weekly_hours",
    "update_provider",
    "weekly_hours",
]

WRITER_ROLES = frozenset({"staff", "admin"})
"""Roles that may change the directory and schedules (clinicians read them)."""

EXCEPTION_KINDS = frozenset({"closed", "holiday", "extra"})

MAX_SERVICE_MINUTES = 480
"""The longest slot a service may have (what `crdt.Directory` records carry)."""


def actor_of(principal: Principal) -> Actor:
    """The audit actor of `principal`: the system for an operator's principal (no id)."""
    return Actor.of(principal) if principal.id else Actor("system")


def _audit(session: Session, event: Event) -> None:
    # Every change of the directory is audited here: what the session cached of it
    # (schedules, providers, services) is stale from now on.
    forget_cached(session=session)
    record_event(session=session, event=event)


def require_writer(principal: Principal) -> None:
    """Raises Forbidden unless `principal` may change the directory."""
    if principal.role not in WRITER_ROLES:
        raise Forbidden("only staff and admins change the directory", code="forbidden")


def clinic_in_scope(*, session: Session, principal: Principal, clinic_id: str) -> Clinic:
    """The clinic, if the caller may see it.

    Raises:
        NotFound: No such clinic in the caller's scope (as for a missing one).
    """
    clinic = session.get(Clinic, clinic_id)
    if (
        clinic is None
        or clinic.organisation_id != principal.organisation_id
        or not principal.can_see_clinic(clinic_id)
    ):
        raise NotFound("no such clinic", code="not_found")
    return clinic


def provider_in_scope(*, session: Session, principal: Principal, provider_id: str) -> Provider:
    """The provider, if the caller may see it (organisation; clinic for clinic-bound
    accounts, which also see the organisation's caregivers).

    Raises:
        NotFound: No such provider in the caller's scope.
    """
    provider = session.get(Provider, provider_id)
    if (
        provider is None
        or provider.organisation_id != principal.organisation_id
        or (provider.clinic_id is not None and not principal.can_see_clinic(provider.clinic_id))
    ):
        raise NotFound("no such provider", code="not_found")
    return provider


def add_provider(
    *,
    session: Session,
    principal: Principal,
    name: str,
    kind: ProviderKind | str,
    clinic_id: str | None,
    specialisations: Sequence[str] = (),
    skills: Sequence[str] = (),
    languages: Sequence[str] = (),
    areas: Sequence[str] = (),
    services: Sequence[str] = (),
) -> Provider:
    """A new doctor, nurse (at `clinic_id`) or caregiver (organisation-wide).

    Raises:
        Forbidden: The caller may not change the directory.
        NotFound: The clinic is not in the caller's scope.
        Invalid: A doctor or nurse without a clinic, or a service code that does not exist.
    """
    require_writer(principal)
    try:
        kind = ProviderKind(kind)
    except ValueError:
        raise Invalid(f"kind is one of {[k.value for k in ProviderKind]}") from None
    if kind is ProviderKind.CAREGIVER:
        if clinic_id is not None:
            raise Invalid("caregivers work across the organisation: give no clinic_id")
    else:
        if clinic_id is None:
            raise Invalid(f"a {kind.value} works at a clinic: clinic_id is required")
        clinic_in_scope(session=session, principal=principal, clinic_id=clinic_id)
    _known_services(session, principal.organisation_id, services)
    provider = Provider(
        id=new_id(),
        organisation_id=principal.organisation_id,
        clinic_id=clinic_id,
        name=name,
        kind=kind.value,
        specialisations=_json(specialisations),
        skills=_json(skills),
        languages=_json(languages),
        areas=_json(areas),
        services=_json(services),
        active=True,
    )
    session.add(provider)
    session.flush()
    _audit(
        session,
        ProviderCreated(actor=actor_of(principal), clinic_id=clinic_id, provider_id=provider.id),
    )
    return provider


def add_service(
    *,
    session: Session,
    principal: Principal,
    code: str,
    name: str,
    duration_minutes: int,
    specialisation: str | None = None,
    kind: str = "appointment",
) -> Service:
    """A new bookable service of the organisation.

    Raises:
        Forbidden: The caller may not change the directory.
        Invalid: A length that is not a whole number of 5-minute steps, or an unknown kind.
        Conflict: ``service_exists``: the organisation has a service with this code.
    """
    require_writer(principal)
    if not 0 < duration_minutes <= MAX_SERVICE_MINUTES or duration_minutes % STEP_MINUTES:
        raise Invalid(
            f"a service lasts a multiple of {STEP_MINUTES} minutes, at most {MAX_SERVICE_MINUTES}"
        )
    if kind not in ("appointment", "visit"):
        raise Invalid("a service is an appointment or a visit")
    service = Service(
        id=new_id(),
        organisation_id=principal.organisation_id,
        code=code,
        name=name,
        duration_minutes=duration_minutes,
        specialisation=specialisation,
        kind=kind,
    )
    savepoint = session.begin_nested()
    try:
        session.add(service)
        session.flush()
    except IntegrityError:
        savepoint.rollback()
        raise Conflict(f"a service {code!r} exists already", code="service_exists") from None
    savepoint.commit()
    _audit(session, ServiceCreated(actor=actor_of(principal), service_id=service.id))
    return service


def set_weekly_hours(
    *,
    session: Session,
    principal: Principal,
    provider_id: str,
    hours: Iterable[tuple[int, str, str]],
    timezone: str | None = None,
    valid_from: date | None = None,
    valid_until: date | None = None,
) -> list[WeeklyHours]:
    """Replace a provider's weekly hours: (weekday Monday=0, "HH:MM", "HH:MM") local to
    `timezone` (default: the provider's clinic's zone; UTC for caregivers).

    Bookings already made keep their time; the next availability shows the new hours.

    Raises:
        Forbidden, NotFound: As `add_provider`.
        Invalid: A bad weekday, time, window or zone.
    """
    require_writer(principal)
    provider = provider_in_scope(session=session, principal=principal, provider_id=provider_id)
    if timezone is None:
        clinic = session.get(Clinic, provider.clinic_id) if provider.clinic_id else None
        timezone = clinic.timezone if clinic is not None else "UTC"
    try:
        zone(timezone)
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    rows: list[WeeklyHours] = []
    for weekday, start, end in hours:
        if not 0 <= weekday <= 6:
            raise Invalid(f"weekday {weekday}: use 0 (Monday) to 6 (Sunday)")
        _window(start, end)
        rows.append(
            WeeklyHours(
                id=new_id(),
                provider_id=provider.id,
                weekday=weekday,
                start_time=start,
                end_time=end,
                timezone=timezone,
                valid_from=valid_from,
                valid_until=valid_until,
            )
        )
    session.execute(delete(WeeklyHours).where(WeeklyHours.provider_id == provider.id))
    session.add_all(rows)
    session.flush()
    _audit(
        session,
        WeeklyHoursSet(
            actor=actor_of(principal),
            clinic_id=provider.clinic_id,
            provider_id=provider.id,
            windows=len(rows),
        ),
    )
    return rows


def add_exception(
    *,
    session: Session,
    principal: Principal,
    day: date,
    kind: str,
    clinic_id: str | None = None,
    provider_id: str | None = None,
    start: str | None = None,
    end: str | None = None,
    note: str | None = None,
) -> ScheduleException:
    """A holiday or closure (of a provider, a clinic or the whole organisation), or
    extra hours of a provider.

    Raises:
        Forbidden, NotFound: As `add_provider`.
        Invalid: An unknown kind, extra hours without a provider or times, a bad window.
    """
    require_writer(principal)
    if kind not in EXCEPTION_KINDS:
        raise Invalid(f"kind is one of {sorted(EXCEPTION_KINDS)}")
    if provider_id is not None:
        provider_in_scope(session=session, principal=principal, provider_id=provider_id)
    if clinic_id is not None:
        clinic_in_scope(session=session, principal=principal, clinic_id=clinic_id)
    if clinic_id is None and provider_id is None and not principal.organisation_wide:
        raise Forbidden("only organisation-wide staff set organisation holidays")
    if (start is None) != (end is None):
        raise Invalid("give both start and end, or neither (the whole day)")
    if start is not None and end is not None:
        _window(start, end)
    if kind == "extra" and (provider_id is None or start is None):
        raise Invalid("extra hours belong to a provider and have a start and an end")
    if kind == "holiday" and start is not None:
        raise Invalid("a holiday is a whole day")
    row = ScheduleException(
        id=new_id(),
        organisation_id=principal.organisation_id,
        clinic_id=clinic_id,
        provider_id=provider_id,
        day=day,
        kind=kind,
        start_time=start,
        end_time=end,
        note=note,
    )
    session.add(row)
    session.flush()
    _audit(
        session,
        ScheduleExceptionAdded(actor=actor_of(principal), clinic_id=clinic_id, exception_id=row.id),
    )
    return row


def set_clinic_timezone(
    *, session: Session, principal: Principal, clinic_id: str, timezone: str
) -> Clinic:
    """Set the IANA time zone a clinic's schedules are in.

    Raises:
        Forbidden, NotFound: As `add_provider`.
        Invalid: Not a time zone.
    """
    require_writer(principal)
    clinic = clinic_in_scope(session=session, principal=principal, clinic_id=clinic_id)
    try:
        zone(timezone)
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    clinic.timezone = timezone
    session.flush()
    _audit(
        session,
        ClinicTimezoneSet(actor=actor_of(principal), clinic_id=clinic.id, timezone=timezone),
    )
    return clinic


_UPDATABLE = ("name", "specialisations", "skills", "languages", "areas", "services", "active")


def update_provider(
    *,
    session: Session,
    principal: Principal,
    provider_id: str,
    name: str | None = None,
    specialisations: Sequence[str] | None = None,
    skills: Sequence[str] | None = None,
    languages: Sequence[str] | None = None,
    areas: Sequence[str] | None = None,
    services: Sequence[str] | None = None,
    active: bool | None = None,
) -> Provider:
    """Change a provider's entry: each field given replaces the stored one (None: kept).
    ``active=False`` deactivates: the provider leaves the published directory and gets
    no new bookings; bookings already made keep their time.

    Raises:
        Forbidden, NotFound: As `add_provider`.
        Invalid: A service code that does not exist.
    """
    require_writer(principal)
    provider = provider_in_scope(session=session, principal=principal, provider_id=provider_id)
    if services is not None:
        _known_services(session, principal.organisation_id, services)
    given = {
        "name": name,
        "specialisations": specialisations,
        "skills": skills,
        "languages": languages,
        "areas": areas,
        "services": services,
        "active": active,
    }
    changed: list[str] = []
    for field in _UPDATABLE:
        value = given[field]
        if value is None:
            continue
        stored = value if field in ("name", "active") else _json(value)  # type: ignore[arg-type]
        if getattr(provider, field) != stored:
            setattr(provider, field, stored)
            changed.append(field)
    session.flush()
    if changed:
        _audit(
            session,
            ProviderUpdated(
                actor=actor_of(principal),
                clinic_id=provider.clinic_id,
                provider_id=provider.id,
                fields=tuple(changed),
            ),
        )
    return provider


def list_providers(
    *,
    session: Session,
    principal: Principal,
    kind: str | None = None,
    clinic_id: str | None = None,
    skill: str | None = None,
    area: str | None = None,
    include_inactive: bool = False,
) -> list[Provider]:
    """Providers the caller may see, by name: those of the caller's clinics and the
    organisation's caregivers, narrowed by `kind`, `clinic_id` (a clinic's own staff),
    `skill` and `area` (exact entries of those lists).

    Raises:
        NotFound: `clinic_id` is not in the caller's scope.
    """
    query = select(Provider).where(Provider.organisation_id == principal.organisation_id)
    if clinic_id is not None:
        clinic_in_scope(session=session, principal=principal, clinic_id=clinic_id)
        query = query.where(Provider.clinic_id == clinic_id)
    elif principal.clinic_id is not None:
        query = query.where(
            or_(Provider.clinic_id == principal.clinic_id, Provider.clinic_id.is_(None))
        )
    if kind is not None:
        query = query.where(Provider.kind == kind)
    if not include_inactive:
        query = query.where(Provider.active.is_(True))
    found = session.scalars(query.order_by(Provider.name, Provider.id)).all()
    return [
        p
        for p in found
        if (skill is None or skill in json_list(p.skills))
        and (area is None or area in json_list(p.areas))
    ]


def list_services(*, session: Session, principal: Principal) -> Sequence[Service]:
    """The organisation's bookable services, by code."""
    return session.scalars(
        select(Service)
        .where(Service.organisation_id == principal.organisation_id)
        .order_by(Service.code)
    ).all()


def weekly_hours(
    *, session: Session, principal: Principal, provider_id: str
) -> tuple[Provider, Sequence[WeeklyHours]]:
    """A provider and its weekly hours, by weekday and start.

    Raises:
        NotFound: The provider is not in the caller's scope.
    """
    provider = provider_in_scope(session=session, principal=principal, provider_id=provider_id)
    rows = session.scalars(
        select(WeeklyHours)
        .where(WeeklyHours.provider_id == provider.id)
        .order_by(WeeklyHours.weekday, WeeklyHours.start_time)
    ).all()
    return provider, rows


def exception_in_scope(
    *, session: Session, principal: Principal, exception_id: str
) -> ScheduleException:
    """The exception, if the caller may see it (an organisation-wide one: anyone of the
    organisation; else through its clinic or provider).

    Raises:
        NotFound: No such exception in the caller's scope.
    """
    row = session.get(ScheduleException, exception_id)
    if row is None or row.organisation_id != principal.organisation_id:
        raise NotFound("no such exception", code="not_found")
    try:
        if row.clinic_id is not None:
            clinic_in_scope(session=session, principal=principal, clinic_id=row.clinic_id)
        if row.provider_id is not None:
            provider_in_scope(session=session, principal=principal, provider_id=row.provider_id)
    except NotFound:
        raise NotFound("no such exception", code="not_found") from None
    return row


def list_exceptions(
    *,
    session: Session,
    principal: Principal,
    first: date,
    last: date,
    clinic_id: str | None = None,
    provider_id: str | None = None,
) -> list[ScheduleException]:
    """Exceptions from `first` to `last` (inclusive) the caller may see, by day: those
    of `clinic_id` or `provider_id` when given (a provider's include its clinic's and the
    organisation's, which apply to it too), else every one in scope.

    Raises:
        Invalid: `last` before `first`, or more than a year apart.
        NotFound: The clinic or provider is not in the caller's scope.
    """
    if last < first or (last - first).days > 366:
        raise Invalid("give a range of days from `from` to `to`, at most a year")
    query = select(ScheduleException).where(
        ScheduleException.organisation_id == principal.organisation_id,
        ScheduleException.day >= first,
        ScheduleException.day <= last,
    )
    organisation_wide = ScheduleException.clinic_id.is_(None) & ScheduleException.provider_id.is_(
        None
    )
    if provider_id is not None:
        provider = provider_in_scope(session=session, principal=principal, provider_id=provider_id)
        scope = [ScheduleException.provider_id == provider.id, organisation_wide]
        if provider.clinic_id is not None:
            scope.append(
                (ScheduleException.clinic_id == provider.clinic_id)
                & ScheduleException.provider_id.is_(None)
            )
        query = query.where(or_(*scope))
    if clinic_id is not None:
        clinic_in_scope(session=session, principal=principal, clinic_id=clinic_id)
        query = query.where(or_(ScheduleException.clinic_id == clinic_id, organisation_wide))
    rows = session.scalars(query.order_by(ScheduleException.day, ScheduleException.id)).all()
    visible: list[ScheduleException] = []
    for row in rows:
        try:
            exception_in_scope(session=session, principal=principal, exception_id=row.id)
        except NotFound:
            continue
        visible.append(row)
    return visible


def remove_exception(
    *, session: Session, principal: Principal, exception_id: str
) -> ScheduleException:
    """Delete a holiday, closure or extra hours; returns the row as it was.

    Raises:
        Forbidden: The caller may not change the directory (or, for an organisation
            holiday, is not organisation-wide).
        NotFound: No such exception in the caller's scope.
    """
    require_writer(principal)
    row = exception_in_scope(session=session, principal=principal, exception_id=exception_id)
    if row.clinic_id is None and row.provider_id is None and not principal.organisation_wide:
        raise Forbidden("only organisation-wide staff remove organisation holidays")
    session.delete(row)
    session.flush()
    _audit(
        session,
        ScheduleExceptionRemoved(
            actor=actor_of(principal), clinic_id=row.clinic_id, exception_id=row.id
        ),
    )
    return row


def _window(start: str, end: str) -> None:
    try:
        first, last = parse_hhmm(start), parse_hhmm(end)
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    if not first < last:
        raise Invalid(f"{start}-{end}: a window ends after it starts")
    for moment in (first, last):
        if moment != time.max and moment.minute % STEP_MINUTES:
            raise Invalid(f"{start}-{end}: windows start and end on 5-minute steps")


def _known_services(session: Session, organisation_id: str, codes: Sequence[str]) -> None:
    if not codes:
        return
    known = set(
        session.scalars(
            select(Service.code).where(
                Service.organisation_id == organisation_id, Service.code.in_(list(codes))
            )
        )
    )
    missing = sorted(set(codes) - known)
    if missing:
        raise Invalid(f"unknown service codes: {', '.join(missing)}")


def _json(values: Sequence[str]) -> str:
    return json.dumps(sorted(set(values)))
