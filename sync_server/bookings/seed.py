"""A realistic booking directory for demos and trials (`coherency server seed-demo`):
the organisation stands for a hospital with two wound clinics in different time zones,
doctors and nurses with specialisations, services with their lengths, weekly hours,
a public holiday per clinic, and caregivers with skills, areas, languages and
availability windows; then the reference data devices read offline is published.

Idempotent: everything is found by its name (clinics, providers), code (services) or
day (holidays) and created only if missing; weekly hours are replaced only when they
differ. A second run changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from sync_server.bookings.directory import (
    add_exception,
    add_provider,
    add_service,
    set_clinic_timezone,
    set_weekly_hours,
    update_provider,
)
from sync_server.bookings.reference import republish
from sync_server.bookings.tables import Provider, ScheduleException, Service, WeeklyHours
from sync_server.identity.principals import Principal
from sync_server.identity.tables import Clinic
from sync_server.identity.tenancy import ensure_clinic
from sync_server.sync.authorship import ServerSigner

__all__ = ["DEMO_CLINICS", "SeededDirectory", "seed_demo_directory"]

DEMO_CLINICS = {
    "Wound Clinic Berlin": "Europe/Berlin",
    "Wound Clinic Lisbon": "Europe/Lisbon",
}
"""The demo's clinics and their time zones."""

# code: (name, minutes, specialisation, kind)
_SERVICES = {
    "wound-review": ("Wound review", 30, "wound care", "appointment"),
    "dressing-change": ("Dressing change", 15, None, "appointment"),
    "compression-fitting": ("Compression fitting", 45, "vascular medicine", "appointment"),
    "npwt-check": ("NPWT check", 30, "wound care", "appointment"),
    "home-dressing": ("Home dressing change", 45, None, "visit"),
    "home-compression": ("Home compression bandaging", 60, None, "visit"),
    "home-npwt": ("Home NPWT canister change", 60, None, "visit"),
}

_WEEKDAYS = range(5)
_DOCTOR_HOURS = [(d, s, e) for d in _WEEKDAYS for s, e in (("08:00", "12:00"), ("13:00", "17:00"))]
_NURSE_HOURS = [(d, "07:30", "15:30") for d in _WEEKDAYS]

# clinic: [(name, kind, specialisations, languages, services, hours)]
_CLINICIANS = {
    "Wound Clinic Berlin": [
        (
            "Dr Lena Vogt",
            "doctor",
            ["wound care", "dermatology"],
            ["de", "en"],
            ["wound-review", "dressing-change", "npwt-check"],
            _DOCTOR_HOURS,
        ),
        (
            "Dr Jonas Weber",
            "doctor",
            ["vascular medicine", "wound care"],
            ["de", "en", "tr"],
            ["wound-review", "compression-fitting"],
            _DOCTOR_HOURS,
        ),
        (
            "Nurse Mia Schulz",
            "nurse",
            ["wound care", "stoma care"],
            ["de"],
            ["dressing-change", "npwt-check"],
            _NURSE_HOURS,
        ),
    ],
    "Wound Clinic Lisbon": [
        (
            "Dr Ana Costa",
            "doctor",
            ["wound care", "diabetic foot"],
            ["pt", "en"],
            ["wound-review", "dressing-change", "npwt-check"],
            _DOCTOR_HOURS,
        ),
        (
            "Dr Tiago Pereira",
            "doctor",
            ["vascular medicine"],
            ["pt", "es"],
            ["wound-review", "compression-fitting"],
            [(d, "09:00", "13:00") for d in (0, 2, 4)],
        ),
        (
            "Nurse Ines Silva",
            "nurse",
            ["wound care"],
            ["pt", "en"],
            ["dressing-change", "npwt-check"],
            _NURSE_HOURS,
        ),
    ],
}

# (name, skills, areas, languages, zone, availability windows)
_CAREGIVERS = [
    (
        "Ali Kaya",
        ["wound dressing", "compression"],
        ["berlin-mitte", "berlin-kreuzberg"],
        ["de", "tr", "en"],
        "Europe/Berlin",
        [(d, "07:00", "15:00") for d in _WEEKDAYS],
    ),
    (
        "Greta Hahn",
        ["compression", "NPWT"],
        ["berlin-pankow", "berlin-mitte"],
        ["de"],
        "Europe/Berlin",
        [(d, "10:00", "18:00") for d in (1, 3, 5)],
    ),
    (
        "Sofia Marques",
        ["wound dressing", "NPWT"],
        ["lisbon-baixa", "lisbon-belem"],
        ["pt", "en"],
        "Europe/Lisbon",
        [(d, "08:00", "16:00") for d in _WEEKDAYS],
    ),
    (
        "Rui Almeida",
        ["wound dressing", "compression", "NPWT"],
        ["lisbon-baixa", "lisbon-alfama"],
        ["pt", "es", "en"],
        "Europe/Lisbon",
        [(d, "12:00", "20:00") for d in (0, 1, 2, 3)],
    ),
]

# clinic: (month, day, note): the next such day is a public holiday.
_HOLIDAYS = {
    "Wound Clinic Berlin": (10, 3, "Day of German Unity"),
    "Wound Clinic Lisbon": (6, 10, "Portugal Day"),
}


@dataclass(frozen=True, slots=True)
class SeededDirectory:
    """What `seed_demo_directory` found and made."""

    organisation_id: str
    clinics: dict[str, str]  # name: id
    providers: int
    services: int
    created: int  # rows created by this run (0 on a second run)
    updated: int  # entries brought back to the demo's values
    records_published: int


def seed_demo_directory(
    *, session: Session, organisation_id: str, signer: ServerSigner, now: datetime
) -> SeededDirectory:
    """Load the demo directory into the organisation (see the module docstring), then
    publish the clinics' reference data, all in `session`'s transaction.

    Audited as done by the system.
    """
    operator = Principal("user", "", None, organisation_id, "admin")
    created = updated = 0
    clinics: dict[str, Clinic] = {}
    for name, timezone in DEMO_CLINICS.items():
        known = session.scalar(
            select(Clinic).where(Clinic.organisation_id == organisation_id, Clinic.name == name)
        )
        clinic = known or ensure_clinic(session=session, name=name, organisation_id=organisation_id)
        created += known is None
        if clinic.timezone != timezone:
            set_clinic_timezone(
                session=session, principal=operator, clinic_id=clinic.id, timezone=timezone
            )
            updated += known is not None
        clinics[name] = clinic

    for code, (label, minutes, specialisation, kind) in _SERVICES.items():
        exists = session.scalar(
            select(Service.id).where(
                Service.organisation_id == organisation_id, Service.code == code
            )
        )
        if exists is None:
            add_service(
                session=session,
                principal=operator,
                code=code,
                name=label,
                duration_minutes=minutes,
                specialisation=specialisation,
                kind=kind,
            )
            created += 1

    providers = 0
    for clinic_name, people in _CLINICIANS.items():
        clinic = clinics[clinic_name]
        for name, kind, specialisations, languages, services, hours in people:
            c, u = _provider(
                session,
                operator,
                name=name,
                kind=kind,
                clinic_id=clinic.id,
                specialisations=specialisations,
                languages=languages,
                services=services,
                hours=hours,
                timezone=clinic.timezone,
            )
            created, updated, providers = created + c, updated + u, providers + 1
    for name, skills, areas, languages, timezone, hours in _CAREGIVERS:
        c, u = _provider(
            session,
            operator,
            name=name,
            kind="caregiver",
            clinic_id=None,
            skills=skills,
            areas=areas,
            languages=languages,
            hours=hours,
            timezone=timezone,
        )
        created, updated, providers = created + c, updated + u, providers + 1

    for clinic_name, (month, day, note) in _HOLIDAYS.items():
        clinic = clinics[clinic_name]
        holiday = _next(now.date(), month, day)
        exists = session.scalar(
            select(ScheduleException.id).where(
                ScheduleException.clinic_id == clinic.id,
                ScheduleException.provider_id.is_(None),
                ScheduleException.day == holiday,
                ScheduleException.kind == "holiday",
            )
        )
        if exists is None:
            add_exception(
                session=session,
                principal=operator,
                day=holiday,
                kind="holiday",
                clinic_id=clinic.id,
                note=note,
            )
            created += 1

    published = republish(
        session=session,
        organisation_id=organisation_id,
        clinic_ids=[c.id for c in clinics.values()],
        signer=signer,
        now=now,
    )
    return SeededDirectory(
        organisation_id=organisation_id,
        clinics={name: c.id for name, c in clinics.items()},
        providers=providers,
        services=len(_SERVICES),
        created=created,
        updated=updated,
        records_published=published,
    )


def _provider(
    session: Session,
    operator: Principal,
    *,
    name: str,
    kind: str,
    clinic_id: str | None,
    hours: list[tuple[int, str, str]],
    timezone: str,
    specialisations: list[str] | None = None,
    skills: list[str] | None = None,
    languages: list[str] | None = None,
    areas: list[str] | None = None,
    services: list[str] | None = None,
) -> tuple[int, int]:
    """Make or refresh one provider and its hours: (rows created, entries updated)."""
    created = updated = 0
    provider = session.scalar(
        select(Provider).where(
            Provider.organisation_id == operator.organisation_id,
            Provider.name == name,
            Provider.kind == kind,
        )
    )
    if provider is None:
        provider = add_provider(
            session=session,
            principal=operator,
            name=name,
            kind=kind,
            clinic_id=clinic_id,
            specialisations=specialisations or [],
            skills=skills or [],
            languages=languages or [],
            areas=areas or [],
            services=services or [],
        )
        created += 1
    else:
        before = (provider.specialisations, provider.skills, provider.languages, provider.areas)
        update_provider(
            session=session,
            principal=operator,
            provider_id=provider.id,
            specialisations=specialisations or [],
            skills=skills or [],
            languages=languages or [],
            areas=areas or [],
            services=services or [],
            active=True,
        )
        after = (provider.specialisations, provider.skills, provider.languages, provider.areas)
        updated += before != after
    stored = session.scalars(
        select(WeeklyHours).where(WeeklyHours.provider_id == provider.id)
    ).all()
    have = sorted((h.weekday, h.start_time, h.end_time, h.timezone) for h in stored)
    want = sorted((d, s, e, timezone) for d, s, e in hours)
    if have != want:
        set_weekly_hours(
            session=session,
            principal=operator,
            provider_id=provider.id,
            hours=hours,
            timezone=timezone,
        )
        created += len(hours)
    return created, updated


def _next(today: date, month: int, day: int) -> date:
    """The next `month`/`day` on or after `today`."""
    this_year = date(today.year, month, day)
    return this_year if this_year >= today else date(today.year + 1, month, day)
