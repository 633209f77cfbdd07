"""The reports benchmark's clinic (`benchmarks/_bench_reports.py`): synthetic rows
bulk-inserted straight into the projection and domain tables of a migrated database.
It lives here because it writes the server's tables directly, which the benchmarks
package (held to `sync_server`'s public names) may not."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert

from crdt import sortable_time
from sync_server.bookings.tables import Booking, Provider, WeeklyHours
from sync_server.db import open_database
from sync_server.identity.tables import Clinic, Organisation
from sync_server.payments.tables import Invoice
from sync_server.settings import Settings
from sync_server.sync.tables import AssessmentRow, PatientRow, WoundRow

ASSESSMENTS_PER_WOUND = 10
YEAR_START = datetime(2025, 1, 1, tzinfo=UTC)


def seed_clinic(settings: Settings, wounds: int) -> str:
    """Seed a clinic of `wounds` wounds with `ASSESSMENTS_PER_WOUND` assessments each
    over 2025, and December's bookings and invoices; ANALYZE; return its id."""
    with open_database(settings, must_exist=True) as db:
        clinic = _seed(db, wounds)
        with db.write() as session:
            session.connection().exec_driver_sql("ANALYZE")
    return clinic


def _id() -> str:
    return str(uuid.uuid4())


def _chunks(rows: list[dict[str, Any]], size: int = 5_000) -> Any:
    for at in range(0, len(rows), size):
        yield rows[at : at + size]


def _seed(db: Any, wounds: int) -> str:
    rng = random.Random(7)
    organisation, clinic = _id(), _id()
    patients = [_id() for _ in range(max(10, wounds // 5))]
    stamp = "2025-01-01T00:00:00.000000Z"
    with db.write() as session:
        session.add(Organisation(id=organisation, name="reports-bench"))
        session.flush()
        session.add(Clinic(id=clinic, organisation_id=organisation, name="Bench", feed_seq=0))
        session.flush()
        for chunk in _chunks(
            [
                dict(id=p, clinic_id=clinic, deleted=False, conflicted=False, updated_at=stamp,
                     record="{}", given_name="G", family_name="F", birth_date="1950-01-01",
                     sex="female", mrn=None)
                for p in patients
            ]
        ):  # fmt: skip
            session.execute(insert(PatientRow), chunk)
        wound_rows, assessment_rows = [], []
        for _ in range(wounds):
            wound, patient = _id(), rng.choice(patients)
            wound_rows.append(
                dict(id=wound, clinic_id=clinic, deleted=False, conflicted=False,
                     updated_at=stamp, record="{}", patient_id=patient, body_site="heel",
                     etiology="venous", status=rng.choice(["healed", "active", "active"]),
                     onset=None)
            )  # fmt: skip
            at = YEAR_START + timedelta(days=rng.uniform(0, 330))
            area = rng.uniform(2, 30)
            for _ in range(ASSESSMENTS_PER_WOUND):
                at += timedelta(days=rng.uniform(1, 9), minutes=rng.randrange(600))
                area *= rng.uniform(0.7, 1.05)
                assessment_rows.append(
                    dict(id=_id(), clinic_id=clinic, deleted=False, conflicted=False,
                         updated_at=stamp, record="{}", wound_id=wound, patient_id=patient,
                         captured_at=sortable_time(at), device_id="bench", clinician="RN",
                         area_cm2=round(area, 3), perimeter_cm=None, length_cm=None,
                         width_cm=None, max_depth_mm=None, mean_depth_mm=None,
                         volume_cm3=None, model_id=None)
                )  # fmt: skip
        for chunk in _chunks(wound_rows):
            session.execute(insert(WoundRow), chunk)
        for chunk in _chunks(assessment_rows):
            session.execute(insert(AssessmentRow), chunk)
        providers = [_id() for _ in range(5)]
        session.execute(
            insert(Provider),
            [dict(id=p, organisation_id=organisation, clinic_id=clinic, name=f"RN {n}",
                  kind="nurse") for n, p in enumerate(providers)],
        )  # fmt: skip
        session.execute(
            insert(WeeklyHours),
            [dict(id=_id(), provider_id=p, weekday=d, start_time="08:00", end_time="16:00",
                  timezone="Europe/Oslo") for p in providers for d in range(5)],
        )  # fmt: skip
        month = datetime(2025, 12, 1, 8, tzinfo=UTC)
        bookings = []
        for n, provider in enumerate(providers):
            for slot in range(300):
                starts = month + timedelta(days=slot // 10, minutes=30 * (slot % 10))
                bookings.append(
                    dict(id=_id(), organisation_id=organisation, clinic_id=clinic,
                         kind="appointment" if n else "visit", provider_id=provider,
                         patient_id=rng.choice(patients), service="review", starts_at=starts,
                         ends_at=starts + timedelta(minutes=30), intent_id=_id(),
                         state=rng.choice(["completed", "no_show", "cancelled", "booked"]),
                         late_cancellation=rng.random() < 0.2,
                         rating=rng.choice([None, 3, 4, 5]) if not n else None)
                )  # fmt: skip
        session.execute(insert(Booking), bookings)
        session.execute(
            insert(Invoice),
            [dict(id=_id(), organisation_id=organisation, clinic_id=clinic,
                  patient_id=rng.choice(patients), number=f"B-{n}", status="open",
                  currency="EUR", total=1000, paid=0, issued_at=month + timedelta(hours=n))
             for n in range(2_000)],
        )  # fmt: skip
    return clinic
