"""The periodic notification sources, swept by `sweep_notices`.

Some events are not a change anyone makes but a time that comes: an appointment
tomorrow or in two hours, a prescription about to expire, a wound whose area has not
shrunk enough by the target week, a supply that fell under its reorder level. The sweep
looks for them and records each with `notify` under a dedupe key, so a sweep run twice,
or on two instances at once, records each event once (the unique key decides a race).

- Reminders (`NoticeKind.REMINDER_24H`, `REMINDER_2H`) to the patient, for bookings
  still ``booked`` or ``confirmed``: the 24 h reminder while the start is 2 to 24 hours
  away, the 2 h reminder in the last two hours. The key names the booking and its start
  (``reminder:24h:<booking id>:<start, epoch seconds>``): a booking cancelled before
  its reminder is due is no longer swept, and a moved booking gets reminders for its
  new time (the old time's key no longer matches anything due).
- An expiring prescription (`PRESCRIPTION_EXPIRING`) to its patient, by the
  dashboard's rule (`sync_server.commerce.prescriptions.expires_soon`), once per
  prescription and end date, told through the clinic whose records hold the patient.
- A wound not on track (`WOUND_NOT_ON_TRACK`) to its clinic's staff, by the dashboard's
  rule (`sync_server.sync.healing.area_reduction` with the dashboard's weeks and
  threshold), once per wound; healed, closed or deleted wounds are not swept.
- Low stock (`LOW_STOCK`) to the clinic's staff: a product's available units (on hand
  less reserved, in lots not expired) at one of the clinic's locations under
  ``Settings.notification_low_stock_units``; at most once per product, location and day.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from sync_server.bookings.tables import Booking
from sync_server.commerce.prescriptions import expiring_on
from sync_server.commerce.tables import Location, Lot
from sync_server.db import Database
from sync_server.notifications.events import (
    NoticeKind,
    Recipient,
    notify,
    patient_recipients,
    staff_recipients,
)
from sync_server.notifications.tables import NotificationEvent
from sync_server.settings import Settings
from sync_server.sync.healing import Sample, area_reduction
from sync_server.sync.tables import AssessmentRow, PatientRow, WoundRow

__all__ = ["REMINDED_STATES", "SweepRules", "SweepRun", "sweep_notices"]

REMINDED_STATES = ("booked", "confirmed")
"""The booking states that get reminders (a cancelled or finished one does not)."""

_REMINDERS = (
    (NoticeKind.REMINDER_24H, "24h", timedelta(hours=24)),
    (NoticeKind.REMINDER_2H, "2h", timedelta(hours=2)),
)
_CLOSED_WOUNDS = ("healed", "closed")
_CHUNK = 500  # wound ids per assessments query
_WRITES = 100  # notices recorded per write transaction


@dataclass(frozen=True, slots=True)
class SweepRules:
    """The thresholds a sweep applies (from `Settings` with `of`)."""

    healing_weeks: int = 4
    healing_threshold_percent: float = 40.0
    low_stock_units: int = 5

    @classmethod
    def of(cls, settings: Settings) -> SweepRules:
        """The rules `settings` give (the dashboard's healing rule, the reorder level)."""
        return cls(
            settings.dashboard_healing_weeks,
            settings.dashboard_healing_threshold_percent,
            settings.notification_low_stock_units,
        )


@dataclass(frozen=True, slots=True)
class _Due:
    """A notice a source found due, recorded afterwards (`_record`)."""

    clinic_id: str
    kind: NoticeKind
    dedupe_key: str
    recipients: list[Recipient]
    detail: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SweepRun:
    """How many new events one sweep recorded, per source."""

    reminders: int
    prescriptions: int
    wounds: int
    low_stock: int


def _reminders(session: Session, now: datetime, clinics: Collection[str] | None) -> list[_Due]:
    query = select(Booking).where(
        Booking.state.in_(REMINDED_STATES),
        Booking.starts_at > now,
        Booking.starts_at <= now + timedelta(hours=24),
    )
    if clinics is not None:
        query = query.where(Booking.clinic_id.in_(clinics))
    found = session.scalars(query.order_by(Booking.starts_at, Booking.id))
    due: list[_Due] = []
    for booking in found:
        left = booking.starts_at - now
        # The latest reminder due: 2 h inside two hours, 24 h before that.
        kind, label, _ = _REMINDERS[1] if left <= _REMINDERS[1][2] else _REMINDERS[0]
        stamp = int(booking.starts_at.timestamp())
        due.append(
            _Due(
                clinic_id=booking.clinic_id,
                kind=kind,
                dedupe_key=f"reminder:{label}:{booking.id}:{stamp}",
                recipients=patient_recipients(booking.patient_id),
                detail={
                    "booking_id": booking.id,
                    "kind": booking.kind,
                    "starts_at": booking.starts_at.isoformat(),
                },
            )
        )
    return due


def _prescriptions(session: Session, today: date, clinics: Collection[str] | None) -> list[_Due]:
    due: list[_Due] = []
    for prescription in expiring_on(session=session, today=today):
        clinic_id = session.scalar(
            select(PatientRow.clinic_id)
            .where(PatientRow.id == prescription.patient_id, PatientRow.deleted.is_(False))
            .order_by(PatientRow.clinic_id)
            .limit(1)
        )
        if clinic_id is None:  # no clinic holds the patient's record: no one to tell
            continue
        if clinics is not None and clinic_id not in clinics:
            continue
        key = f"prescription:expiring:{prescription.id}:{prescription.valid_until.isoformat()}"
        due.append(
            _Due(
                clinic_id=clinic_id,
                kind=NoticeKind.PRESCRIPTION_EXPIRING,
                dedupe_key=key,
                recipients=patient_recipients(prescription.patient_id),
                detail={
                    "prescription_id": prescription.id,
                    "valid_until": prescription.valid_until.isoformat(),
                    "quantity_remaining": prescription.quantity_remaining,
                },
            )
        )
    return due


def _wounds(session: Session, rules: SweepRules, clinics: Collection[str] | None) -> list[_Due]:
    told = set(
        session.scalars(
            select(NotificationEvent.dedupe_key).where(
                NotificationEvent.kind == str(NoticeKind.WOUND_NOT_ON_TRACK)
            )
        )
    )
    query = select(WoundRow).where(
        WoundRow.deleted.is_(False), WoundRow.status.not_in(_CLOSED_WOUNDS)
    )
    if clinics is not None:
        query = query.where(WoundRow.clinic_id.in_(clinics))
    wounds = {w.id: w for w in session.scalars(query) if f"wound:not_on_track:{w.id}" not in told}
    samples: dict[str, list[Sample]] = defaultdict(list)
    ids = sorted(wounds)
    for start in range(0, len(ids), _CHUNK):
        rows = session.execute(
            select(AssessmentRow.wound_id, AssessmentRow.captured_at, AssessmentRow.area_cm2).where(
                AssessmentRow.wound_id.in_(ids[start : start + _CHUNK]),
                AssessmentRow.deleted.is_(False),
                AssessmentRow.area_cm2.is_not(None),
            )
        )
        for wound_id, captured_at, area in rows:
            samples[wound_id].append(Sample(datetime.fromisoformat(captured_at), area))
    due: list[_Due] = []
    for wound_id, wound_samples in sorted(samples.items()):
        reduction = area_reduction(
            wound_samples,
            weeks=rules.healing_weeks,
            threshold_percent=rules.healing_threshold_percent,
        )
        if reduction.on_track is not False:
            continue
        wound = wounds[wound_id]
        due.append(
            _Due(
                clinic_id=wound.clinic_id,
                kind=NoticeKind.WOUND_NOT_ON_TRACK,
                dedupe_key=f"wound:not_on_track:{wound_id}",
                recipients=staff_recipients(wound.clinic_id),
                detail={
                    "wound_id": wound_id,
                    "patient_id": wound.patient_id,
                    "weeks": reduction.weeks,
                    "reduction_percent": reduction.reduction_percent,
                    "threshold_percent": reduction.threshold_percent,
                },
            )
        )
    return due


def _low_stock(
    session: Session, today: date, rules: SweepRules, clinics: Collection[str] | None
) -> list[_Due]:
    available = func.sum(func.coalesce(Lot.on_hand, 0) - func.coalesce(Lot.reserved, 0)).filter(
        Lot.expires_on >= today
    )
    query = select(Location.clinic_id, Lot.location_id, Lot.product_id, available).join(
        Location, Location.id == Lot.location_id
    )
    if clinics is not None:
        query = query.where(Location.clinic_id.in_(clinics))
    rows = session.execute(
        query.where(Location.clinic_id.is_not(None))
        .group_by(Location.clinic_id, Lot.location_id, Lot.product_id)
        .order_by(Lot.location_id, Lot.product_id)
    )
    due: list[_Due] = []
    for clinic_id, location_id, product_id, units in rows:
        units = int(units or 0)
        if clinic_id is None or units >= rules.low_stock_units:
            continue
        due.append(
            _Due(
                clinic_id=clinic_id,
                kind=NoticeKind.LOW_STOCK,
                dedupe_key=f"stock:low:{location_id}:{product_id}:{today.isoformat()}",
                recipients=staff_recipients(clinic_id),
                detail={
                    "location_id": location_id,
                    "product_id": product_id,
                    "available": units,
                    "reorder_level": rules.low_stock_units,
                },
            )
        )
    return due


def sweep_notices(
    db: Database,
    *,
    now: datetime,
    rules: SweepRules | None = None,
    clinic_ids: Collection[str] | None = None,
) -> SweepRun:
    """Record every periodic notice due at `now` (each source in its own transaction)
    and return how many new events each source recorded; `clinic_ids` limits it to
    those clinics (default: every clinic). Idempotent: a second sweep,
    here or on another instance, records nothing already recorded.

    Raises:
        sqlalchemy.exc.SQLAlchemyError: the database failed (nothing of the failing
            source is recorded; the next sweep tries again).
    """
    rules = rules or SweepRules()
    today = now.date()
    # Each source reads in a transaction that takes no write lock (SQLite has one
    # writer: a sweep over every clinic must not stall pushes), then records what it
    # found in short write transactions; `notify`'s key makes a repeat a no-op.
    with db.read() as session:
        found = _reminders(session, now, clinic_ids)
    reminders = _record(db, found)
    with db.read() as session:
        found = _prescriptions(session, today, clinic_ids)
    prescriptions = _record(db, found)
    with db.read() as session:
        found = _wounds(session, rules, clinic_ids)
    wounds = _record(db, found)
    with db.read() as session:
        found = _low_stock(session, today, rules, clinic_ids)
    low_stock = _record(db, found)
    return SweepRun(reminders, prescriptions, wounds, low_stock)


def _record(db: Database, due: list[_Due]) -> int:
    """Record `due` with `notify`, `_WRITES` per write transaction; how many were new."""
    added = 0
    for start in range(0, len(due), _WRITES):
        with db.write() as session:
            for notice in due[start : start + _WRITES]:
                if notify(
                    session=session,
                    clinic_id=notice.clinic_id,
                    kind=notice.kind,
                    dedupe_key=notice.dedupe_key,
                    recipients=notice.recipients,
                    detail=notice.detail,
                ):
                    added += 1
    return added
