"""A clinic's figures for a period, computed with SQL aggregates over the server's
tables: the record projections (wounds, assessments), bookings, commerce (orders,
reservations, stock lots) and payments (invoices, payments, ledger postings).

Definitions (docs/reports.md has the long form):

- A wound is *seen* in the period when it has a live assessment captured in it.
- *Healed*: a seen wound whose status is ``healed`` now (records keep no status
  history, so a wound healed after the period counts too). Its *time to heal* is the
  days from its first to its last live assessment captured before the period's end.
- The *area reduction* at `weeks` weeks is the dashboard's rule
  (`sync_server.dashboard.healing.area_reduction`): baseline the first assessment with
  an area, the area at the target day interpolated between the assessments around
  it, or the nearest within 7 days. SQL narrows each seen wound to the (at most three)
  assessments the rule reads; only assessments captured before the period's end count.
- *Utilisation*: minutes of appointments starting in the period that were not
  cancelled (clipped to the period's end), over the minutes offered by the clinic's
  active providers and by those deactivated since who saw patients in the period (their
  weekly hours less closures, clipped to the period).
- A *late cancellation* is one made less than 24 hours before the appointment (the
  bookings domain flags it when it cancels).
- *Stock turns*: units picked for the clinic's orders placed in the period over the
  units on hand at the clinic's locations now (no stock history is kept).
- Money is in integer minor units per currency: *revenue* is the ledger's revenue
  accounts (credits, net of voids) for the clinic's invoices, *refunds* the ledger's
  refunds account, both for ledger transactions of the period; *collected* the
  payments captured and settled in the period; *outstanding* what open invoices
  issued before the period's end still await (``total - paid``, as of now).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Float, and_, case, cast, distinct, func, literal, select
from sqlalchemy.dialects.postgresql import TIMESTAMP
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from crdt import sortable_time
from sync_server.bookings.slots import Schedule
from sync_server.bookings.tables import Booking, Provider
from sync_server.commerce.tables import Location, Lot, Order, Reservation
from sync_server.dashboard.healing import Sample, area_reduction
from sync_server.errors import Invalid, NotFound
from sync_server.identity.tables import Clinic
from sync_server.payments.tables import Invoice, LedgerPosting, LedgerTransaction, Payment
from sync_server.sync.tables import AssessmentRow, WoundRow

__all__ = [
    "MAX_PERIOD_DAYS",
    "AppointmentFigures",
    "AssessmentMonth",
    "ClinicReport",
    "HealingFigures",
    "MoneyFigures",
    "SupplyFigures",
    "VisitFigures",
    "WoundFigures",
    "WoundOffTrack",
    "clinic_report",
    "month_period",
]

MAX_PERIOD_DAYS = 366
"""The longest period one report covers."""

_DAY = 86400.0


@dataclass(frozen=True, slots=True)
class WoundFigures:
    """Wounds seen, healed, and how long the healed ones took (days)."""

    seen: int
    healed: int
    median_days_to_heal: float | None
    """None when no healed wound has two assessments in time."""


@dataclass(frozen=True, slots=True)
class WoundOffTrack:
    """A seen wound whose area shrank less than the threshold at the target day."""

    wound_id: str
    patient_id: str
    reduction_percent: float


@dataclass(frozen=True, slots=True)
class HealingFigures:
    """The area-reduction rule over the seen wounds."""

    weeks: int
    threshold_percent: float
    known: int
    """Seen wounds whose reduction at the target day is known."""
    on_track: int
    share_on_track: float | None
    """`on_track` / `known` (0..1), None when none is known."""
    not_on_track: tuple[WoundOffTrack, ...]
    """The known ones below the threshold, worst first."""


@dataclass(frozen=True, slots=True)
class AssessmentMonth:
    """Live assessments captured in one calendar month (UTC) of the period."""

    month: str  # YYYY-MM
    assessments: int
    wounds: int
    per_wound: float


@dataclass(frozen=True, slots=True)
class AppointmentFigures:
    """Appointments starting in the period."""

    total: int
    by_state: dict[str, int]
    booked_minutes: int
    """Minutes of the appointments not cancelled."""
    offered_minutes: int
    utilisation: float | None
    """`booked_minutes` / `offered_minutes`, None when nothing was offered."""
    no_shows: int
    cancelled: int
    late_cancellations: int


@dataclass(frozen=True, slots=True)
class VisitFigures:
    """Caregivers' visits starting in the period, and their reviews."""

    total: int
    completed: int
    missed: int
    cancelled: int
    rated: int
    mean_rating: float | None
    ratings: dict[int, int]
    """Stars (1..5) → how many completed visits got them."""


@dataclass(frozen=True, slots=True)
class SupplyFigures:
    """Orders placed in the period, and the clinic's stock."""

    orders_by_state: dict[str, int]
    order_totals: dict[str, int]
    """Currency → minor units of the orders not cancelled."""
    units_picked: int
    units_on_hand: int
    stock_turns: float | None
    expired_lots: int
    """Lots at the clinic's locations, with stock, expired by the period's end."""
    expired_units: int


@dataclass(frozen=True, slots=True)
class MoneyFigures:
    """One currency's money for the period, in minor units."""

    currency: str
    revenue: int
    refunds: int
    collected: int
    outstanding: int
    outstanding_invoices: int


@dataclass(frozen=True, slots=True)
class ClinicReport:
    """Everything a clinic's report shows for [start, end)."""

    clinic_id: str
    clinic_name: str
    start: datetime
    end: datetime
    generated_at: datetime
    wounds: WoundFigures
    healing: HealingFigures
    assessments_by_month: tuple[AssessmentMonth, ...]
    appointments: AppointmentFigures
    visits: VisitFigures
    supplies: SupplyFigures
    money: tuple[MoneyFigures, ...]
    unavailable: tuple[str, ...]
    """Figures asked for that the records do not hold, and why."""


UNAVAILABLE = (
    "healing dates: records keep a wound's current status only, so 'healed' is the "
    "status now and time to heal runs to the last assessment, not to a healing date",
    "stock history: lots keep their current quantity only, so stock turns divide by "
    "the stock on hand now, not by the period's average",
)


def month_period(month: str) -> tuple[datetime, datetime]:
    """The UTC [start, end) of a ``YYYY-MM`` month.

    Raises:
        Invalid: ``invalid_month``: not a month of that form.
    """
    try:
        if len(month) != 7:
            raise ValueError(month)
        year, number = (int(part) for part in month.split("-"))
        start = datetime(year, number, 1, tzinfo=UTC)
        end = datetime(year + (number == 12), number % 12 + 1, 1, tzinfo=UTC)
    except ValueError:
        raise Invalid(f"{month!r} is not a month (YYYY-MM)", code="invalid_month") from None
    return start, end


def _check_period(start: datetime, end: datetime) -> None:
    if start.tzinfo is None or end.tzinfo is None:
        raise Invalid("start and end need a time zone offset", code="invalid_period")
    if end <= start:
        raise Invalid("the period's end is not after its start", code="invalid_period")
    if start.year < 1970 or end.year > 9000:
        raise Invalid("the period lies outside 1970 to 9000", code="invalid_period")
    if end - start > timedelta(days=MAX_PERIOD_DAYS):
        raise Invalid(f"a report covers at most {MAX_PERIOD_DAYS} days", code="invalid_period")


def clinic_report(
    *,
    session: Session,
    clinic_id: str,
    start: datetime,
    end: datetime,
    weeks: int = 4,
    threshold_percent: float = 40.0,
    now: datetime | None = None,
) -> ClinicReport:
    """The figures of clinic `clinic_id` for [start, end) (definitions: the module).

    The caller decides who may see the clinic; this reads whatever it is asked.

    Raises:
        Invalid: ``invalid_period``: naive times, an empty or reversed period, one
            longer than `MAX_PERIOD_DAYS`, or one outside the years 1970 to 9000.
        NotFound: ``not_found``: no such clinic.
    """
    _check_period(start, end)
    clinic = session.get(Clinic, clinic_id)
    if clinic is None:
        raise NotFound("no such clinic", code="not_found")
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    wounds, healing, months = _wound_figures(
        session, clinic_id, start, end, weeks=weeks, threshold_percent=threshold_percent
    )
    return ClinicReport(
        clinic_id=clinic_id,
        clinic_name=clinic.name,
        start=start,
        end=end,
        generated_at=(now or datetime.now(UTC)).astimezone(UTC),
        wounds=wounds,
        healing=healing,
        assessments_by_month=months,
        appointments=_appointments(session, clinic_id, start, end),
        visits=_visits(session, clinic_id, start, end),
        supplies=_supplies(session, clinic_id, start, end),
        money=_money(session, clinic_id, start, end),
        unavailable=UNAVAILABLE,
    )


# ------------------------------------------------------------------ wounds


def _days(session: Session, column: Any) -> ColumnElement[Any]:
    """Days since the epoch of a sortable UTC text column, in the session's dialect."""
    if session.get_bind().dialect.name == "postgresql":
        moment = cast(func.replace(column, "Z", "+00:00"), TIMESTAMP(timezone=True))
        return func.extract("epoch", moment) / _DAY
    return cast(func.julianday(func.substr(column, 1, 26)), Float)


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _wound_figures(
    session: Session,
    clinic_id: str,
    start: datetime,
    end: datetime,
    *,
    weeks: int,
    threshold_percent: float,
) -> tuple[WoundFigures, HealingFigures, tuple[AssessmentMonth, ...]]:
    lo, hi = sortable_time(start), sortable_time(end)
    live = and_(
        AssessmentRow.clinic_id == clinic_id,
        AssessmentRow.deleted.is_(False),
        WoundRow.deleted.is_(False),
    )
    seen = (
        select(AssessmentRow.wound_id)
        .join(WoundRow, WoundRow.id == AssessmentRow.wound_id)
        .where(live, AssessmentRow.captured_at >= lo, AssessmentRow.captured_at < hi)
        .distinct()
        .subquery()
    )
    seen_count = session.scalar(select(func.count()).select_from(seen)) or 0

    # Healed: first and last assessment (before the end) of each healed seen wound.
    spans = session.execute(
        select(func.min(AssessmentRow.captured_at), func.max(AssessmentRow.captured_at))
        .join(WoundRow, WoundRow.id == AssessmentRow.wound_id)
        .where(
            live,
            WoundRow.status == "healed",
            AssessmentRow.captured_at < hi,
            AssessmentRow.wound_id.in_(select(seen.c.wound_id)),
        )
        .group_by(AssessmentRow.wound_id)
    ).all()
    # A healed wound with one assessment counts as healed, but has no time to heal.
    durations = [
        (_moment(last) - _moment(first)).total_seconds() / _DAY
        for first, last in spans
        if last != first
    ]
    wounds = WoundFigures(
        seen=seen_count,
        healed=len(spans),
        median_days_to_heal=statistics.median(durations) if durations else None,
    )

    # The area-reduction rule reads the baseline and the assessments around the
    # target day: SQL keeps only those (at most three per wound).
    target = weeks * 7.0
    day = _days(session, AssessmentRow.captured_at).label("day")
    measured = (
        select(
            AssessmentRow.wound_id,
            AssessmentRow.patient_id,
            AssessmentRow.captured_at,
            AssessmentRow.area_cm2,
            day,
        )
        .join(WoundRow, WoundRow.id == AssessmentRow.wound_id)
        .where(
            live,
            AssessmentRow.area_cm2.is_not(None),
            AssessmentRow.captured_at < hi,
            AssessmentRow.wound_id.in_(select(seen.c.wound_id)),
        )
        .subquery()
    )
    since = (
        measured.c.day - func.min(measured.c.day).over(partition_by=measured.c.wound_id)
    ).label("since")
    ranked = select(measured, since).subquery()
    bounds = select(
        ranked,
        func.max(case((ranked.c.since < target, ranked.c.since)))
        .over(partition_by=ranked.c.wound_id)
        .label("before"),
        func.min(case((ranked.c.since >= target, ranked.c.since)))
        .over(partition_by=ranked.c.wound_id)
        .label("after"),
    ).subquery()
    rows = session.execute(
        select(bounds.c.wound_id, bounds.c.patient_id, bounds.c.captured_at, bounds.c.area_cm2)
        .where(
            (bounds.c.since == literal(0.0))
            | (bounds.c.since == bounds.c.before)
            | (bounds.c.since == bounds.c.after)
        )
        .order_by(bounds.c.wound_id, bounds.c.captured_at)
    ).all()
    samples: dict[str, tuple[str, list[Sample]]] = {}
    for wound_id, patient_id, captured_at, area in rows:
        samples.setdefault(wound_id, (patient_id, []))[1].append(Sample(_moment(captured_at), area))
    known = on_track = 0
    off: list[WoundOffTrack] = []
    for wound_id, (patient_id, points) in samples.items():
        found = area_reduction(points, weeks=weeks, threshold_percent=threshold_percent)
        if found.on_track is None or found.reduction_percent is None:
            continue
        known += 1
        if found.on_track:
            on_track += 1
        else:
            off.append(WoundOffTrack(wound_id, patient_id, round(found.reduction_percent, 2)))
    off.sort(key=lambda w: (w.reduction_percent, w.wound_id))
    healing = HealingFigures(
        weeks=weeks,
        threshold_percent=threshold_percent,
        known=known,
        on_track=on_track,
        share_on_track=on_track / known if known else None,
        not_on_track=tuple(off),
    )

    month = func.substr(AssessmentRow.captured_at, 1, 7)
    by_month = session.execute(
        select(month, func.count(), func.count(distinct(AssessmentRow.wound_id)))
        .join(WoundRow, WoundRow.id == AssessmentRow.wound_id)
        .where(live, AssessmentRow.captured_at >= lo, AssessmentRow.captured_at < hi)
        .group_by(month)
        .order_by(month)
    ).all()
    months = tuple(AssessmentMonth(str(m), int(n), int(w), round(n / w, 3)) for m, n, w in by_month)
    return wounds, healing, months


# ------------------------------------------------------------------ bookings


def _in_period(column: Any, start: datetime, end: datetime) -> ColumnElement[bool]:
    return and_(column >= start, column < end)


def _offered_minutes(session: Session, clinic_id: str, start: datetime, end: datetime) -> int:
    # The clinic's active providers, and those deactivated since who saw patients in
    # the period: a past month's figure does not change when someone leaves.
    worked = select(Booking.provider_id).where(
        Booking.clinic_id == clinic_id,
        Booking.state != "cancelled",
        _in_period(Booking.starts_at, start, end),
    )
    providers = session.scalars(
        select(Provider).where(
            Provider.clinic_id == clinic_id,
            Provider.active.is_(True) | Provider.id.in_(worked),
        )
    ).all()
    total = 0
    first, last = start.date() - timedelta(days=1), end.date() + timedelta(days=1)
    for provider in providers:
        schedule = Schedule(session, provider)
        day = first
        while day <= last:
            for span in schedule.windows(day):
                lo, hi = max(span.start, start), min(span.end, end)
                if lo < hi:
                    total += int((hi - lo).total_seconds() // 60)
            day += timedelta(days=1)
    return total


def _appointments(
    session: Session, clinic_id: str, start: datetime, end: datetime
) -> AppointmentFigures:
    where = and_(
        Booking.clinic_id == clinic_id,
        Booking.kind == "appointment",
        _in_period(Booking.starts_at, start, end),
    )
    by_state = {
        str(state): int(n)
        for state, n in session.execute(
            select(Booking.state, func.count()).where(where).group_by(Booking.state)
        )
    }
    late = session.scalar(
        select(func.count()).where(
            where, Booking.state == "cancelled", Booking.late_cancellation.is_(True)
        )
    )
    starts_ends = session.execute(
        select(Booking.starts_at, Booking.ends_at).where(where, Booking.state != "cancelled")
    ).all()
    # Minutes: the dialects differ on interval arithmetic, so the (few hundred a
    # month) not-cancelled appointments are summed here.
    # Clipped to the period, as the offered minutes are (one starting at 23:30 on its
    # last day counts its first half hour).
    booked = sum(int((min(e, end) - s).total_seconds() // 60) for s, e in starts_ends)
    offered = _offered_minutes(session, clinic_id, start, end)
    return AppointmentFigures(
        total=sum(by_state.values()),
        by_state=by_state,
        booked_minutes=booked,
        offered_minutes=offered,
        utilisation=round(booked / offered, 4) if offered else None,
        no_shows=by_state.get("no_show", 0),
        cancelled=by_state.get("cancelled", 0),
        late_cancellations=int(late or 0),
    )


def _visits(session: Session, clinic_id: str, start: datetime, end: datetime) -> VisitFigures:
    where = and_(
        Booking.clinic_id == clinic_id,
        Booking.kind == "visit",
        _in_period(Booking.starts_at, start, end),
    )
    by_state: dict[str, int] = {
        str(state): int(n)
        for state, n in session.execute(
            select(Booking.state, func.count()).where(where).group_by(Booking.state)
        )
    }
    ratings: dict[int, int] = {
        int(stars or 0): int(n)
        for stars, n in session.execute(
            select(Booking.rating, func.count())
            .where(where, Booking.state == "completed", Booking.rating.is_not(None))
            .group_by(Booking.rating)
        )
    }
    rated = sum(ratings.values())
    mean = sum(int(k) * v for k, v in ratings.items()) / rated if rated else None
    return VisitFigures(
        total=int(sum(by_state.values())),
        completed=int(by_state.get("completed", 0)),
        missed=int(by_state.get("missed", 0) + by_state.get("no_show", 0)),
        cancelled=int(by_state.get("cancelled", 0)),
        rated=int(rated),
        mean_rating=round(mean, 3) if mean is not None else None,
        ratings={int(k): int(v) for k, v in sorted(ratings.items())},
    )


# ------------------------------------------------------------------ supplies


def _supplies(session: Session, clinic_id: str, start: datetime, end: datetime) -> SupplyFigures:
    placed = and_(Order.clinic_id == clinic_id, _in_period(Order.created_at, start, end))
    by_state = {
        str(s): int(n)
        for s, n in session.execute(
            select(Order.state, func.count()).where(placed).group_by(Order.state)
        )
    }
    totals = {
        str(c): int(t)
        for c, t in session.execute(
            select(Order.currency, func.sum(Order.total))
            .where(placed, Order.state != "cancelled")
            .group_by(Order.currency)
        )
    }
    here = select(Location.id).where(Location.clinic_id == clinic_id)
    picked = session.scalar(
        select(func.coalesce(func.sum(Reservation.quantity), 0))
        .join(Order, Order.id == Reservation.order_id)
        .join(Lot, Lot.id == Reservation.lot_id)
        .where(placed, Reservation.state == "picked", Lot.location_id.in_(here))
    )
    on_hand = session.scalar(
        select(func.coalesce(func.sum(Lot.on_hand), 0)).where(Lot.location_id.in_(here))
    )
    expired = session.execute(
        select(func.count(), func.coalesce(func.sum(Lot.on_hand), 0)).where(
            Lot.location_id.in_(here), Lot.on_hand > 0, Lot.expires_on < end.date()
        )
    ).one()
    picked, on_hand = int(picked or 0), int(on_hand or 0)
    return SupplyFigures(
        orders_by_state=by_state,
        order_totals=totals,
        units_picked=picked,
        units_on_hand=on_hand,
        stock_turns=round(picked / on_hand, 4) if on_hand else None,
        expired_lots=int(expired[0]),
        expired_units=int(expired[1]),
    )


# ------------------------------------------------------------------ money


def _money(
    session: Session, clinic_id: str, start: datetime, end: datetime
) -> tuple[MoneyFigures, ...]:
    clinic_invoices = select(Invoice.id).where(Invoice.clinic_id == clinic_id)
    postings = session.execute(
        select(
            LedgerTransaction.currency,
            func.sum(
                case((LedgerPosting.account.like("revenue:%"), -LedgerPosting.amount), else_=0)
            ),
            func.sum(case((LedgerPosting.account == "refunds", LedgerPosting.amount), else_=0)),
        )
        .join(LedgerTransaction, LedgerTransaction.id == LedgerPosting.transaction_id)
        .where(
            LedgerTransaction.invoice_id.in_(clinic_invoices),
            _in_period(LedgerTransaction.created_at, start, end),
        )
        .group_by(LedgerTransaction.currency)
    ).all()
    collected: dict[str, int] = {
        str(c): int(t or 0)
        for c, t in session.execute(
            select(Payment.currency, func.sum(Payment.captured))
            .join(Invoice, Invoice.id == Payment.invoice_id)
            .where(
                Invoice.clinic_id == clinic_id,
                Payment.status == "succeeded",
                _in_period(Payment.settled_at, start, end),
            )
            .group_by(Payment.currency)
        )
    }
    outstanding = {
        str(c): (int(s), int(n))
        for c, s, n in session.execute(
            select(Invoice.currency, func.sum(Invoice.total - Invoice.paid), func.count())
            .where(
                Invoice.clinic_id == clinic_id, Invoice.status == "open", Invoice.issued_at < end
            )
            .group_by(Invoice.currency)
        )
    }
    ledger = {str(c): (int(r or 0), int(f or 0)) for c, r, f in postings}
    currencies = sorted(set(ledger) | set(collected) | set(outstanding))
    return tuple(
        MoneyFigures(
            currency=c,
            revenue=ledger.get(c, (0, 0))[0],
            refunds=ledger.get(c, (0, 0))[1],
            collected=int(collected.get(c, 0) or 0),
            outstanding=outstanding.get(c, (0, 0))[0],
            outstanding_invoices=outstanding.get(c, (0, 0))[1],
        )
        for c in currencies
    )
