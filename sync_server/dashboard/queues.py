"""What the dashboard's queues page shows: the work waiting for staff, read through the
same service functions as the staff JSON API with the caller's principal, so each
applies its own organisation, clinic and role rules.

- bookings: appointments and caregiver visits still active (``booked`` first: the
  requests staff have not confirmed yet), and the server's latest decisions on booking
  requests (accepted or refused intents: ids and outcome only);
- orders waiting to be picked (``accepted``) or shipped (``picked``);
- payments that failed or are still processing at the gateway, succeeded payments
  that can still be refunded, and the latest refunds;
- prescriptions that run out within `EXPIRY_DAYS` days.

Every queue shows its patients by name: `Queues.reads` lists what was read (collection,
clinic, record ids and their patients) for the caller to audit exactly as the API reads
of the same records are audited. Nothing here knows of HTTP.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date

from sqlalchemy import select
from sqlalchemy.orm import Session

from sync_server.bookings.directory import WRITER_ROLES
from sync_server.bookings.lookup import list_bookings
from sync_server.bookings.manage import APPOINTMENT_MOVES, VISIT_MOVES
from sync_server.bookings.tables import Booking
from sync_server.commerce.orders import list_orders
from sync_server.commerce.prescriptions import EXPIRY_DAYS, expires_soon, list_prescriptions
from sync_server.commerce.tables import Order, Prescription
from sync_server.identity.principals import Principal
from sync_server.identity.tenancy import clinic_ids_in_scope
from sync_server.intents.tables import IntentDecision
from sync_server.payments.invoices import PAYMENT_HANDLERS
from sync_server.payments.tables import Invoice, Payment, Refund
from sync_server.sync.tables import PatientRow

__all__ = [
    "BOOKING_INTENTS",
    "EXPIRY_DAYS",
    "QUEUE_LIMIT",
    "BookingItem",
    "QueueRead",
    "Queues",
    "booking_actions",
    "queues",
]

QUEUE_LIMIT = 100
"""At most this many items of each queue are shown."""

BOOKING_INTENTS = (
    "appointment.request",
    "appointment.reschedule",
    "appointment.cancel",
    "visit.request",
)
"""The intent kinds whose decisions the bookings queue lists."""

_PENDING_FIRST = ("booked", "confirmed", "en_route", "started")
_DASHBOARD_MOVES = ("confirmed", "en_route", "started", "completed", "cancelled")


@dataclass(frozen=True, slots=True)
class QueueRead:
    """Records a queue showed: to audit as a read of `collection`."""

    collection: str
    clinic_id: str | None
    records: tuple[tuple[str, str | None], ...]  # (record id, its patient's id)


@dataclass(frozen=True, slots=True)
class BookingItem:
    """A booking with the staff moves the dashboard offers on it."""

    booking: Booking
    actions: tuple[str, ...]


@dataclass(slots=True)
class Queues:
    """Every queue of the page, the patients' names shown, and the reads to audit."""

    bookings: list[BookingItem] = field(default_factory=list)
    decisions: list[IntentDecision] = field(default_factory=list)
    to_pick: list[Order] = field(default_factory=list)
    to_ship: list[Order] = field(default_factory=list)
    payments: list[tuple[Payment, Invoice]] = field(default_factory=list)
    refundable: list[tuple[Payment, Invoice]] = field(default_factory=list)
    refunds: list[tuple[Refund, Invoice]] = field(default_factory=list)
    expiring: list[Prescription] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)  # patient id -> "Family, Given"
    reads: list[QueueRead] = field(default_factory=list)
    can_act: bool = False  # bookings and orders (staff, admins)
    can_refund: bool = False


def booking_actions(booking: Booking, principal: Principal) -> tuple[str, ...]:
    """The moves the dashboard offers on `booking` to `principal`: those
    `sync_server.bookings.manage.change_state` allows from its state (none for a role
    that may not change bookings)."""
    if principal.role not in WRITER_ROLES:
        return ()
    moves = APPOINTMENT_MOVES if booking.kind == "appointment" else VISIT_MOVES
    allowed = moves.get(booking.state, frozenset())
    return tuple(m for m in _DASHBOARD_MOVES if m in allowed)


def _names(session: Session, principal: Principal, patient_ids: Iterable[str]) -> dict[str, str]:
    wanted = set(patient_ids)
    if not wanted:
        return {}
    rows = session.execute(
        select(PatientRow.id, PatientRow.family_name, PatientRow.given_name).where(
            PatientRow.id.in_(wanted),
            PatientRow.clinic_id.in_(clinic_ids_in_scope(principal)),
        )
    )
    return {row_id: f"{family}, {given}" for row_id, family, given in rows}


def _payments(
    session: Session, principal: Principal, statuses: tuple[str, ...]
) -> list[tuple[Payment, Invoice]]:
    # The scope of `sync_server.payments.routes` (an invoice of the caller's
    # organisation, in a clinic the caller may see).
    query = (
        select(Payment, Invoice)
        .join(Invoice, Invoice.id == Payment.invoice_id)
        .where(
            Invoice.organisation_id == principal.organisation_id,
            Invoice.clinic_id.in_(clinic_ids_in_scope(principal)),
            Payment.status.in_(statuses),
        )
        .order_by(Payment.created_at.desc(), Payment.id)
        .limit(QUEUE_LIMIT)
    )
    return [(payment, invoice) for payment, invoice in session.execute(query)]


def queues(*, session: Session, principal: Principal, today: date) -> Queues:
    """The queues `principal` (a staff user) may see on `today` (UTC)."""
    found = Queues(
        can_act=principal.role in WRITER_ROLES,
        can_refund=principal.role in PAYMENT_HANDLERS,
    )
    for state in _PENDING_FIRST:
        left = QUEUE_LIMIT - len(found.bookings)
        if left <= 0:
            break
        rows = list_bookings(session=session, principal=principal, state=state, limit=left)
        found.bookings.extend(BookingItem(b, booking_actions(b, principal)) for b in rows)
    found.decisions = list(
        session.scalars(
            select(IntentDecision)
            .where(
                IntentDecision.clinic_id.in_(clinic_ids_in_scope(principal)),
                IntentDecision.kind.in_(BOOKING_INTENTS),
            )
            .order_by(IntentDecision.decided_at.desc(), IntentDecision.intent_id)
            .limit(20)
        )
    )
    found.to_pick = list_orders(
        session=session, principal=principal, state="accepted", limit=QUEUE_LIMIT
    )
    found.to_ship = list_orders(
        session=session, principal=principal, state="picked", limit=QUEUE_LIMIT
    )
    found.payments = _payments(session, principal, ("failed", "processing"))
    found.refundable = [
        (p, i) for p, i in _payments(session, principal, ("succeeded",)) if p.captured > p.refunded
    ]
    found.refunds = [
        (refund, invoice)
        for refund, invoice in session.execute(
            select(Refund, Invoice)
            .join(Invoice, Invoice.id == Refund.invoice_id)
            .where(
                Invoice.organisation_id == principal.organisation_id,
                Invoice.clinic_id.in_(clinic_ids_in_scope(principal)),
            )
            .order_by(Refund.created_at.desc(), Refund.id)
            .limit(20)
        )
    ]
    # `list_prescriptions` answers the whole organisation; the page keeps those of
    # patients in the caller's clinics (never more than the API shows).
    candidates = [
        p
        for p in list_prescriptions(session=session, principal=principal)
        if expires_soon(p, today=today)
    ]
    found.names = _names(
        session,
        principal,
        [
            *(x.booking.patient_id for x in found.bookings),
            *(o.patient_id for o in (*found.to_pick, *found.to_ship)),
            *(
                i.patient_id
                for _, i in (*found.payments, *found.refundable, *found.refunds)
                if i.patient_id
            ),
            *(p.patient_id for p in candidates),
        ],
    )
    found.expiring = sorted(
        (p for p in candidates if p.patient_id in found.names),
        key=lambda p: (p.valid_until, p.id),
    )[:QUEUE_LIMIT]
    found.reads = _reads(found, principal)
    return found


def _reads(found: Queues, principal: Principal) -> list[QueueRead]:
    clinic = principal.clinic_id
    orders = (*found.to_pick, *found.to_ship)
    payments = (*found.payments, *found.refundable)
    reads = [
        QueueRead(
            "bookings", clinic, tuple((x.booking.id, x.booking.patient_id) for x in found.bookings)
        ),
        QueueRead("orders", clinic, tuple((o.id, o.patient_id) for o in orders)),
        QueueRead("payments", clinic, tuple((p.id, i.patient_id) for p, i in payments)),
        QueueRead("invoices", clinic, tuple((i.id, i.patient_id) for _, i in found.refunds)),
        QueueRead("prescriptions", clinic, tuple((p.id, p.patient_id) for p in found.expiring)),
        QueueRead("patients", clinic, tuple((pid, pid) for pid in found.names)),
    ]
    return [read for read in reads if read.records]
