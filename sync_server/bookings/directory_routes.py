"""Routes: the booking directory and schedules (clinic time zones, providers,
services, weekly hours, holidays and closures).

Clinicians, staff and admins read; staff and admins write (403 ``forbidden`` for a
clinician, 403 ``staff_only`` for a device). Everything is scoped to the caller's
organisation and, for a clinic-bound account, its clinic: anything outside answers
404 like a missing one. Each change is audited and republishes the reference data
devices read offline (the directory, the clinics' free slots) in the same transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response, status
from sqlalchemy.orm import Session

from sync_server.bookings.directory import (
    add_exception,
    add_provider,
    add_service,
    list_exceptions,
    list_providers,
    list_services,
    provider_in_scope,
    remove_exception,
    set_clinic_timezone,
    set_weekly_hours,
    update_provider,
    weekly_hours,
)
from sync_server.bookings.reference import republish
from sync_server.bookings.schemas import (
    ClinicTimezone,
    ClinicTimezonePublic,
    ExceptionCreate,
    ExceptionPublic,
    ProviderCreate,
    ProviderPublic,
    ProviderUpdate,
    ServiceCreate,
    ServicePublic,
    WeeklyHoursPublic,
    WeeklyHoursSet,
    WeeklyWindow,
)
from sync_server.bookings.tables import ScheduleException, WeeklyHours
from sync_server.db import utcnow
from sync_server.deps import ArtifactKeyDep, DbDep, StaffCaller
from sync_server.identity.principals import Principal
from sync_server.identity.tenancy import list_clinics
from sync_server.models.signing import ArtifactKey
from sync_server.sync.authorship import ServerSigner

__all__ = ["router"]

router = APIRouter(prefix="/v1/directory", tags=["bookings"])

IdQuery = Annotated[str | None, Query(min_length=1, max_length=64)]


def _republish(
    session: Session, caller: Principal, key: ArtifactKey, clinics: Iterable[str | None]
) -> None:
    republish(
        session=session,
        organisation_id=caller.organisation_id,
        clinic_ids=[c for c in clinics if c is not None],
        signer=ServerSigner(key),
        now=utcnow(),
    )


@router.put(
    "/clinics/{clinic_id}/timezone",
    response_model=ClinicTimezonePublic,
    summary="Set a clinic's time zone",
)
def put_clinic_timezone(
    clinic_id: str, body: ClinicTimezone, caller: StaffCaller, db: DbDep, key: ArtifactKeyDep
) -> ClinicTimezonePublic:
    """Set the IANA time zone the clinic's schedules are in (400 for an unknown zone)."""
    with db.write() as session:
        clinic = set_clinic_timezone(
            session=session, principal=caller, clinic_id=clinic_id, timezone=body.timezone
        )
        _republish(session, caller, key, [clinic.id])
        return ClinicTimezonePublic.model_validate(clinic)


@router.get("/providers", response_model=list[ProviderPublic], summary="List providers")
def get_providers(
    caller: StaffCaller,
    db: DbDep,
    kind: Annotated[
        Literal["doctor", "nurse", "caregiver"] | None, Query(description="Only this kind.")
    ] = None,
    clinic_id: IdQuery = None,
    skill: Annotated[str | None, Query(max_length=100)] = None,
    area: Annotated[str | None, Query(max_length=100)] = None,
    include_inactive: bool = False,
) -> list[ProviderPublic]:
    """Doctors and nurses of the caller's clinics and the organisation's caregivers, by
    name; narrowed by kind, clinic, skill and area."""
    with db.read() as session:
        found = list_providers(
            session=session,
            principal=caller,
            kind=kind,
            clinic_id=clinic_id,
            skill=skill,
            area=area,
            include_inactive=include_inactive,
        )
        return [ProviderPublic.model_validate(p) for p in found]


@router.post(
    "/providers",
    status_code=status.HTTP_201_CREATED,
    response_model=ProviderPublic,
    summary="Add a provider",
)
def post_provider(
    body: ProviderCreate, caller: StaffCaller, db: DbDep, key: ArtifactKeyDep
) -> ProviderPublic:
    """Add a doctor or nurse (``clinic_id`` required) or a caregiver (no clinic). 400
    for an unknown service code."""
    with db.write() as session:
        provider = add_provider(
            session=session,
            principal=caller,
            name=body.name,
            kind=body.kind,
            clinic_id=body.clinic_id,
            specialisations=body.specialisations,
            skills=body.skills,
            languages=body.languages,
            areas=body.areas,
            services=body.services,
        )
        _republish(session, caller, key, [provider.clinic_id])
        return ProviderPublic.model_validate(provider)


@router.get("/providers/{provider_id}", response_model=ProviderPublic, summary="Read a provider")
def get_provider(provider_id: str, caller: StaffCaller, db: DbDep) -> ProviderPublic:
    """One provider (inactive ones too)."""
    with db.read() as session:
        provider = provider_in_scope(session=session, principal=caller, provider_id=provider_id)
        return ProviderPublic.model_validate(provider)


@router.patch(
    "/providers/{provider_id}", response_model=ProviderPublic, summary="Update a provider"
)
def patch_provider(
    provider_id: str, body: ProviderUpdate, caller: StaffCaller, db: DbDep, key: ArtifactKeyDep
) -> ProviderPublic:
    """Change a provider's entry; ``active: false`` deactivates (no new bookings,
    gone from the published directory; bookings made keep their time)."""
    with db.write() as session:
        provider = update_provider(
            session=session,
            principal=caller,
            provider_id=provider_id,
            name=body.name,
            specialisations=body.specialisations,
            skills=body.skills,
            languages=body.languages,
            areas=body.areas,
            services=body.services,
            active=body.active,
        )
        _republish(session, caller, key, [provider.clinic_id])
        return ProviderPublic.model_validate(provider)


@router.get("/services", response_model=list[ServicePublic], summary="List services")
def get_services(caller: StaffCaller, db: DbDep) -> list[ServicePublic]:
    """The organisation's bookable services, by code."""
    with db.read() as session:
        return [
            ServicePublic.model_validate(s)
            for s in list_services(session=session, principal=caller)
        ]


@router.post(
    "/services",
    status_code=status.HTTP_201_CREATED,
    response_model=ServicePublic,
    summary="Add a service",
    responses={409: {"description": "`service_exists`: a service with that code."}},
)
def post_service(
    body: ServiceCreate, caller: StaffCaller, db: DbDep, key: ArtifactKeyDep
) -> ServicePublic:
    """Add a bookable service; 409 ``service_exists`` if the code is taken."""
    with db.write() as session:
        service = add_service(
            session=session,
            principal=caller,
            code=body.code,
            name=body.name,
            duration_minutes=body.duration_minutes,
            specialisation=body.specialisation,
            kind=body.kind,
        )
        _republish(session, caller, key, [])
        return ServicePublic.model_validate(service)


def _hours_public(provider_id: str, rows: Iterable[WeeklyHours]) -> WeeklyHoursPublic:
    listed = list(rows)
    first = listed[0] if listed else None
    return WeeklyHoursPublic(
        provider_id=provider_id,
        hours=[WeeklyWindow(weekday=r.weekday, start=r.start_time, end=r.end_time) for r in listed],
        timezone=first.timezone if first else None,
        valid_from=first.valid_from if first else None,
        valid_until=first.valid_until if first else None,
    )


@router.get(
    "/providers/{provider_id}/hours",
    response_model=WeeklyHoursPublic,
    summary="A provider's weekly hours",
)
def get_hours(provider_id: str, caller: StaffCaller, db: DbDep) -> WeeklyHoursPublic:
    """The provider's weekly working windows, by weekday."""
    with db.read() as session:
        provider, rows = weekly_hours(session=session, principal=caller, provider_id=provider_id)
        return _hours_public(provider.id, rows)


@router.put(
    "/providers/{provider_id}/hours",
    response_model=WeeklyHoursPublic,
    summary="Replace a provider's weekly hours",
)
def put_hours(
    provider_id: str, body: WeeklyHoursSet, caller: StaffCaller, db: DbDep, key: ArtifactKeyDep
) -> WeeklyHoursPublic:
    """Replace the provider's whole week. Bookings already made keep their time; the
    published free slots follow the new hours. 400 for a bad window or zone."""
    with db.write() as session:
        rows = set_weekly_hours(
            session=session,
            principal=caller,
            provider_id=provider_id,
            hours=[(w.weekday, w.start, w.end) for w in body.hours],
            timezone=body.timezone,
            valid_from=body.valid_from,
            valid_until=body.valid_until,
        )
        provider = provider_in_scope(session=session, principal=caller, provider_id=provider_id)
        _republish(session, caller, key, [provider.clinic_id])
        return _hours_public(provider.id, rows)


@router.post(
    "/exceptions",
    status_code=status.HTTP_201_CREATED,
    response_model=ExceptionPublic,
    summary="Add a holiday, closure or extra hours",
)
def post_exception(
    body: ExceptionCreate, caller: StaffCaller, db: DbDep, key: ArtifactKeyDep
) -> ExceptionPublic:
    """A holiday or closure of a provider, a clinic or (neither given; organisation-wide
    staff only) the whole organisation, or a provider's extra hours."""
    with db.write() as session:
        row = add_exception(
            session=session,
            principal=caller,
            day=body.day,
            kind=body.kind,
            clinic_id=body.clinic_id,
            provider_id=body.provider_id,
            start=body.start,
            end=body.end,
            note=body.note,
        )
        _republish(session, caller, key, _exception_clinics(session, caller, row))
        return ExceptionPublic.model_validate(row)


@router.get("/exceptions", response_model=list[ExceptionPublic], summary="List exceptions")
def get_exceptions(
    caller: StaffCaller,
    db: DbDep,
    first: Annotated[date, Query(alias="from", description="First day (inclusive).")],
    last: Annotated[date, Query(alias="to", description="Last day (inclusive).")],
    clinic_id: IdQuery = None,
    provider_id: IdQuery = None,
) -> list[ExceptionPublic]:
    """Holidays, closures and extra hours from ``from`` to ``to`` (at most a year), of
    a clinic or a provider (with those that apply to it) or every one in scope."""
    with db.read() as session:
        rows = list_exceptions(
            session=session,
            principal=caller,
            first=first,
            last=last,
            clinic_id=clinic_id,
            provider_id=provider_id,
        )
        return [ExceptionPublic.model_validate(r) for r in rows]


@router.delete(
    "/exceptions/{exception_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Remove an exception",
)
def delete_exception(
    exception_id: str, caller: StaffCaller, db: DbDep, key: ArtifactKeyDep
) -> Response:
    """Remove a holiday, closure or extra hours; the published free slots follow."""
    with db.write() as session:
        row = remove_exception(session=session, principal=caller, exception_id=exception_id)
        _republish(session, caller, key, _exception_clinics(session, caller, row))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _exception_clinics(
    session: Session, caller: Principal, row: ScheduleException
) -> list[str | None]:
    """The clinics whose free slots an exception changes."""
    if row.provider_id is not None:
        provider = provider_in_scope(session=session, principal=caller, provider_id=row.provider_id)
        return [provider.clinic_id]
    if row.clinic_id is not None:
        return [row.clinic_id]
    return [c.id for c in list_clinics(session=session, principal=caller)]
