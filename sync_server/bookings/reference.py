"""Reference data devices need offline, written as server-owned records into each
clinic's feed: the organisation's `crdt.Directory` (one per clinic) and the clinic's
free slots, one `crdt.Availability` per local day for the next `AVAILABILITY_DAYS`.

A record is rewritten only when what it says changed, as a new change of the same
document (never a fresh document under the same id, which devices could not merge),
so its history grows with real changes only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from crdt import (
    Availability,
    Directory,
    ProviderKind,
    RecordDocument,
    availability_id,
    directory_id,
)
from sync_server.bookings.schedule import zone
from sync_server.bookings.slots import free_slots, json_list
from sync_server.bookings.tables import Provider, Service
from sync_server.db import Database
from sync_server.identity.tables import Clinic
from sync_server.sync.authorship import ServerSigner
from sync_server.sync.documents import upserted_record, write_documents

__all__ = [
    "AVAILABILITY_DAYS",
    "availability_key",
    "availability_records",
    "directory_record",
    "publish_everywhere",
    "publish_reference",
    "refresh_touched",
    "republish",
]

AVAILABILITY_DAYS = 14
"""How many days ahead (from today, in the clinic's zone) availability is published."""


def availability_key(clinic_id: str, day: date) -> tuple[str, ...]:
    """The touched-key a decision records when it changes `clinic_id`'s `day`."""
    return ("availability", clinic_id, day.isoformat())


def local_day(clinic: Clinic, moment: datetime) -> date:
    """The date of `moment` in the clinic's zone."""
    return moment.astimezone(zone(clinic.timezone)).date()


def directory_record(
    *, session: Session, clinic: Clinic, now: datetime, author: str
) -> RecordDocument | None:
    """The clinic's directory record, updated to what the tables say; None if the
    stored one already says it."""
    clinics = session.scalars(
        select(Clinic).where(Clinic.organisation_id == clinic.organisation_id).order_by(Clinic.name)
    ).all()
    providers = session.scalars(
        select(Provider)
        .where(Provider.organisation_id == clinic.organisation_id, Provider.active.is_(True))
        .order_by(Provider.name, Provider.id)
    ).all()
    services = session.scalars(
        select(Service)
        .where(Service.organisation_id == clinic.organisation_id)
        .order_by(Service.code)
    ).all()
    values = {
        "clinics": [{"id": c.id, "name": c.name, "timezone": c.timezone} for c in clinics],
        "providers": [_provider_entry(p) for p in providers],
        "services": [
            {
                "code": s.code,
                "name": s.name,
                "duration_minutes": s.duration_minutes,
                "specialisation": s.specialisation,
            }
            for s in services
        ],
    }
    return upserted_record(
        session=session,
        schema=Directory,
        record_id=directory_id(clinic.id),
        clinic_id=clinic.id,
        values=values,
        now=now,
        author=author,
        stamped=True,
    )


def availability_records(
    *, session: Session, clinic: Clinic, days: Iterable[date], now: datetime, author: str
) -> list[RecordDocument]:
    """The clinic's availability records for `days` (within the published horizon),
    updated to the free slots the tables show; unchanged ones are left out."""
    today = local_day(clinic, now)
    wanted = sorted({d for d in days if today <= d < today + timedelta(days=AVAILABILITY_DAYS)})
    if not wanted:
        return []
    providers = session.scalars(
        select(Provider).where(
            Provider.clinic_id == clinic.id,
            Provider.active.is_(True),
            Provider.kind.in_([ProviderKind.DOCTOR.value, ProviderKind.NURSE.value]),
        )
    ).all()
    services = {
        s.code: s
        for s in session.scalars(
            select(Service).where(
                Service.organisation_id == clinic.organisation_id, Service.kind == "appointment"
            )
        )
    }
    records: list[RecordDocument] = []
    for day in wanted:
        slots: list[dict[str, Any]] = []
        for code, service in sorted(services.items()):
            offering = [p for p in providers if code in json_list(p.services)]
            for provider, span in free_slots(
                session=session,
                providers=offering,
                minutes=service.duration_minutes,
                days=[day],
                after=now,
            ):
                slots.append(
                    {
                        "provider_id": provider.id,
                        "service": code,
                        "starts_at": span.start.isoformat(),
                        "ends_at": span.end.isoformat(),
                    }
                )
        slots.sort(key=lambda s: (s["starts_at"], s["provider_id"], s["service"]))
        record = upserted_record(
            session=session,
            schema=Availability,
            record_id=availability_id(clinic.id, day),
            clinic_id=clinic.id,
            values={"day": day.isoformat(), "timezone": clinic.timezone, "slots": slots},
            now=now,
            author=author,
            stamped=True,
        )
        if record is not None:
            records.append(record)
    return records


def refresh_touched(
    *,
    session: Session,
    clinic_id: str,
    touched: set[tuple[str, ...]],
    now: datetime,
    author: str,
) -> list[RecordDocument]:
    """After decisions (an `sync_server.intents.AfterDecisions` hook): the availability
    records of the pushing clinic's days the decisions touched. (Appointments are
    with the clinic's own doctors and nurses; caregiver visits publish no slots.)"""
    days = {
        date.fromisoformat(key[2])
        for key in touched
        if len(key) == 3 and key[0] == "availability" and key[1] == clinic_id
    }
    clinic = session.get(Clinic, clinic_id)
    if clinic is None or not days:
        return []
    return availability_records(session=session, clinic=clinic, days=days, now=now, author=author)


def publish_reference(
    *, session: Session, clinic_ids: Sequence[str], signer: ServerSigner, now: datetime
) -> int:
    """Write the directory and the whole availability horizon of each clinic (after a
    directory or schedule change, and once a day as days enter the horizon).

    Returns how many records were written.
    """
    written = 0
    for clinic_id in clinic_ids:
        clinic = session.get(Clinic, clinic_id)
        if clinic is None:
            continue
        today = local_day(clinic, now)
        records: list[RecordDocument] = []
        directory = directory_record(
            session=session, clinic=clinic, now=now, author=signer.device_id
        )
        if directory is not None:
            records.append(directory)
        records += availability_records(
            session=session,
            clinic=clinic,
            days=[today + timedelta(days=n) for n in range(AVAILABILITY_DAYS)],
            now=now,
            author=signer.device_id,
        )
        if records:
            write_documents(session=session, clinic_id=clinic.id, documents=records, signer=signer)
            written += len(records)
    return written


def publish_everywhere(*, database: Database, signer: ServerSigner, now: datetime) -> int:
    """`publish_reference` for every clinic of every organisation that has a booking
    directory, one short transaction per clinic (the server's hourly housekeeping:
    a new day enters each clinic's horizon, yesterday's slots leave it).

    Returns how many records were written.
    """
    with database.read() as session:
        clinic_ids = session.scalars(
            select(Clinic.id)
            .where(Clinic.organisation_id.in_(select(Provider.organisation_id).distinct()))
            .order_by(Clinic.id)
        ).all()
    written = 0
    for clinic_id in clinic_ids:
        with database.write() as session:
            written += publish_reference(
                session=session, clinic_ids=[clinic_id], signer=signer, now=now
            )

    return written


def republish(
    *,
    session: Session,
    organisation_id: str,
    clinic_ids: Iterable[str],
    signer: ServerSigner,
    now: datetime,
) -> int:
    """After a directory or schedule change: the directory record of every clinic of
    the organisation (each lists the whole organisation's directory) and the
    availability horizon of `clinic_ids` (the clinics whose slots may have changed).
    Unchanged records are not rewritten.

    Returns how many records were written.
    """
    clinics = session.scalars(select(Clinic).where(Clinic.organisation_id == organisation_id)).all()
    affected = set(clinic_ids)
    written = publish_reference(
        session=session,
        clinic_ids=sorted(c.id for c in clinics if c.id in affected),
        signer=signer,
        now=now,
    )
    for clinic in clinics:
        if clinic.id in affected:
            continue
        record = directory_record(session=session, clinic=clinic, now=now, author=signer.device_id)
        if record is not None:
            write_documents(session=session, clinic_id=clinic.id, documents=[record], signer=signer)
            written += 1
    return written


# ---------------------------------------------------------------- internals
def _provider_entry(provider: Provider) -> dict[str, Any]:
    return {
        "id": provider.id,
        "name": provider.name,
        "kind": provider.kind,
        "clinic_id": provider.clinic_id,
        "specialisations": json_list(provider.specialisations),
        "skills": json_list(provider.skills),
        "languages": json_list(provider.languages),
        "areas": json_list(provider.areas),
        "services": json_list(provider.services),
    }
