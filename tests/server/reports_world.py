"""A seeded clinic for the report tests: wounds with assessments at irregular times
(healed and not, some deleted or without an area), appointments and visits in every
state, orders with picked stock and expired lots, invoices, payments, refunds and
their ledger postings. A fixed random seed; rows written straight into the tables
the services write (the projections, bookings, commerce and payments tables)."""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from crdt import sortable_time
from sync_server.bookings.tables import Booking, Provider, ScheduleException, WeeklyHours
from sync_server.commerce.tables import Location, Lot, Order, OrderLineRow, Product, Reservation
from sync_server.payments.tables import (
    Invoice,
    LedgerPosting,
    LedgerTransaction,
    Payment,
    Refund,
)
from sync_server.sync.tables import AssessmentRow, PatientRow, WoundRow

START = datetime(2025, 3, 1, tzinfo=UTC)
END = datetime(2025, 4, 1, tzinfo=UTC)
MONTH = "2025-03"
CLOSED_DAY = date(2025, 3, 12)  # a Wednesday the nurse is away


def _id() -> str:
    return str(uuid.uuid4())


@dataclass
class ReportWorld:
    """What was seeded (ids), for the tests to look up."""

    clinic_id: str
    other_clinic_id: str
    organisation_id: str
    patients: list[str] = field(default_factory=list)
    names: list[tuple[str, str, str]] = field(default_factory=list)  # given, family, mrn


def seed_world(
    db: Any, *, organisation_id: str, clinic_id: str, other_clinic_id: str
) -> ReportWorld:
    """Seed `clinic_id` (and a little of `other_clinic_id`, which must not count)."""
    rng = random.Random(21)
    world = ReportWorld(clinic_id, other_clinic_id, organisation_id)
    with db.write() as session:
        for clinic in (clinic_id, other_clinic_id):
            for i in range(8):
                pid, given, family = (
                    _id(),
                    f"Given{rng.randrange(10**6)}",
                    f"Fam{i}x{rng.randrange(10**6)}",
                )
                mrn = f"MRN{rng.randrange(10**8)}"
                session.add(
                    PatientRow(
                        id=pid,
                        clinic_id=clinic,
                        deleted=False,
                        conflicted=False,
                        updated_at="2025-01-01T00:00:00.000000Z",
                        record="{}",
                        given_name=given,
                        family_name=family,
                        birth_date="1950-02-03",
                        sex="female",
                        mrn=mrn,
                    )
                )
                if clinic == clinic_id:
                    world.patients.append(pid)
                    world.names.append((given, family, mrn))
                else:
                    other_patient = pid
        # Wounds and assessments.
        for n in range(40):
            clinic = clinic_id if n < 34 else other_clinic_id
            patient = rng.choice(world.patients) if clinic == clinic_id else other_patient
            wid = _id()
            status = rng.choice(["healed", "active", "active", "healing"])
            session.add(
                WoundRow(
                    id=wid,
                    clinic_id=clinic,
                    deleted=n == 5,
                    conflicted=False,
                    updated_at="2025-01-01T00:00:00.000000Z",
                    record="{}",
                    patient_id=patient,
                    body_site="heel",
                    etiology="diabetic",
                    status=status,
                    onset=None,
                )
            )
            at = datetime(2024, 12, 20, 8, tzinfo=UTC) + timedelta(
                days=rng.uniform(0, 95), minutes=rng.randrange(600)
            )
            area = rng.uniform(2.0, 30.0)
            for k in range(rng.randint(1, 9)):
                if k:
                    at += timedelta(days=rng.uniform(1.5, 16.0), minutes=rng.randrange(900))
                    area *= rng.uniform(0.6, 1.15)
                if k and rng.random() < 0.07:
                    at = at.replace(hour=0, minute=0, second=0, microsecond=0)
                measured = None if rng.random() < 0.1 else round(area, 3)
                session.add(
                    AssessmentRow(
                        id=_id(),
                        clinic_id=clinic,
                        deleted=rng.random() < 0.05,
                        conflicted=False,
                        updated_at="2025-01-01T00:00:00.000000Z",
                        record="{}",
                        wound_id=wid,
                        patient_id=patient,
                        captured_at=sortable_time(at),
                        device_id=_id(),
                        clinician="RN",
                        area_cm2=measured,
                        perimeter_cm=None,
                        length_cm=None,
                        width_cm=None,
                        max_depth_mm=None,
                        mean_depth_mm=None,
                        volume_cm3=None,
                        model_id=None,
                    )
                )
        # Providers, hours, a closure.
        nurse = Provider(
            id=_id(),
            organisation_id=organisation_id,
            clinic_id=clinic_id,
            name="RN Report",
            kind="nurse",
        )
        carer = Provider(
            id=_id(),
            organisation_id=organisation_id,
            clinic_id=None,
            name="Carer Report",
            kind="caregiver",
        )
        elsewhere = Provider(
            id=_id(),
            organisation_id=organisation_id,
            clinic_id=other_clinic_id,
            name="RN Elsewhere",
            kind="nurse",
        )
        session.add_all([nurse, carer, elsewhere])
        session.flush()
        for provider in (nurse, elsewhere):
            for weekday in range(5):
                session.add(
                    WeeklyHours(
                        id=_id(),
                        provider_id=provider.id,
                        weekday=weekday,
                        start_time="09:00",
                        end_time="17:00",
                        timezone="UTC",
                    )
                )
        session.add(
            ScheduleException(
                id=_id(),
                organisation_id=organisation_id,
                clinic_id=clinic_id,
                provider_id=nurse.id,
                day=CLOSED_DAY,
                kind="closed",
            )
        )
        # Bookings: one a day per provider, so none overlaps.
        states = ["completed", "completed", "booked", "no_show", "cancelled", "confirmed"]
        for k in range(70):
            kind = "appointment" if k % 3 else "visit"
            provider = nurse if kind == "appointment" else carer
            clinic = clinic_id if k < 64 else other_clinic_id
            if clinic == other_clinic_id:
                provider = elsewhere if kind == "appointment" else carer
            starts = datetime(2025, 2, 10, 9, tzinfo=UTC) + timedelta(days=k, hours=k % 5)
            if kind == "visit":
                starts += timedelta(minutes=30)
            state = rng.choice(
                states
                if kind == "appointment"
                else ["completed", "completed", "missed", "cancelled"]
            )
            rating = (
                rng.choice([None, 1, 3, 4, 5, 5])
                if state == "completed" and kind == "visit"
                else None
            )
            session.add(
                Booking(
                    id=_id(),
                    organisation_id=organisation_id,
                    clinic_id=clinic,
                    kind=kind,
                    provider_id=provider.id,
                    patient_id=rng.choice(world.patients),
                    service="wound-review",
                    starts_at=starts,
                    ends_at=starts + timedelta(minutes=rng.choice([20, 30, 45])),
                    state=state,
                    intent_id=_id(),
                    late_cancellation=state == "cancelled" and rng.random() < 0.5,
                    rating=rating,
                )
            )
        # Commerce.
        product = Product(
            id=_id(),
            organisation_id=organisation_id,
            sku=f"sku-{_id()[:8]}",
            name="Foam",
            category="dressing",
            product_class="foam dressing",
            unit="each",
            price=450,
            currency="EUR",
        )
        store = Location(
            id=_id(),
            organisation_id=organisation_id,
            kind="clinic",
            name=f"store-{_id()[:8]}",
            clinic_id=clinic_id,
        )
        far = Location(
            id=_id(),
            organisation_id=organisation_id,
            kind="clinic",
            name=f"store-{_id()[:8]}",
            clinic_id=other_clinic_id,
        )
        session.add_all([product, store, far])
        session.flush()
        lots = []
        for k in range(6):
            lot = Lot(
                id=_id(),
                product_id=product.id,
                location_id=(store if k < 5 else far).id,
                lot_code=f"L{k}",
                expires_on=date(2025, 1 + k, 15),
                on_hand=rng.randint(0 if k == 1 else 1, 40),
                reserved=0,
            )
            lots.append(lot)
        session.add_all(lots)
        session.flush()
        for k in range(16):
            clinic = clinic_id if k < 14 else other_clinic_id
            state = rng.choice(["accepted", "picked", "shipped", "delivered", "cancelled"])
            created = datetime(2025, 2, 20, tzinfo=UTC) + timedelta(days=k * 3)
            qty = rng.randint(1, 5)
            order = Order(
                id=_id(),
                organisation_id=organisation_id,
                clinic_id=clinic,
                patient_id=rng.choice(world.patients),
                intent_id=_id(),
                state=state,
                deliver_to="clinic",
                total=qty * 450,
                currency="EUR",
                hold_expires_at=created + timedelta(hours=1),
                created_at=created,
            )
            session.add(order)
            session.flush()
            line = OrderLineRow(
                id=_id(),
                order_id=order.id,
                line_no=0,
                product_id=product.id,
                quantity=qty,
                unit_price=450,
            )
            session.add(line)
            session.flush()
            held = {"accepted": "held", "cancelled": "released"}.get(state, "picked")
            lot = lots[5] if clinic == other_clinic_id else lots[rng.randrange(5)]
            session.add(
                Reservation(
                    id=_id(),
                    order_id=order.id,
                    line_id=line.id,
                    lot_id=lot.id,
                    product_id=product.id,
                    quantity=qty,
                    state=held,
                )
            )
        # Invoices, payments, refunds and the ledger.
        for k in range(14):
            clinic = clinic_id if k < 12 else other_clinic_id
            currency = "EUR" if k % 4 else "NOK"
            issued = datetime(2025, 2, 22, tzinfo=UTC) + timedelta(days=k * 3, hours=k)
            total = rng.randint(5, 90) * 100
            status = rng.choice(["open", "open", "paid", "void", "refunded"])
            paid = {"open": rng.choice([0, total // 2]), "paid": total, "refunded": total}.get(
                status, 0
            )
            refunded = (
                total if status == "refunded" else (total // 4 if status == "paid" and k % 2 else 0)
            )
            invoice = Invoice(
                id=_id(),
                organisation_id=organisation_id,
                clinic_id=clinic,
                patient_id=rng.choice(world.patients),
                number=f"INV-R{_id()[:12]}",
                status=status,
                currency=currency,
                total=total,
                paid=paid,
                refunded=refunded,
                issued_at=issued,
                created_at=issued,
            )
            session.add(invoice)
            session.flush()
            receivable = f"receivable:patient:{invoice.patient_id}"
            _post(
                session,
                organisation_id,
                "invoice",
                invoice,
                issued,
                [(receivable, total), ("revenue:order", -total)],
            )
            if paid:
                settled = issued + timedelta(days=rng.randint(0, 6))
                payment = Payment(
                    id=_id(),
                    organisation_id=organisation_id,
                    invoice_id=invoice.id,
                    idempotency_key=_id(),
                    amount=paid,
                    currency=currency,
                    payment_method="card",
                    status="succeeded",
                    captured=paid,
                    refunded=refunded,
                    created_at=issued,
                    settled_at=settled,
                )
                session.add(payment)
                session.flush()
                _post(
                    session,
                    organisation_id,
                    "payment",
                    invoice,
                    settled,
                    [("gateway:clearing", paid), (receivable, -paid)],
                    reference=payment.id,
                )
                if refunded:
                    when = settled + timedelta(days=2)
                    refund = Refund(
                        id=_id(),
                        organisation_id=organisation_id,
                        payment_id=payment.id,
                        invoice_id=invoice.id,
                        idempotency_key=_id(),
                        amount=refunded,
                        status="succeeded",
                        created_at=when,
                    )
                    session.add(refund)
                    session.flush()
                    _post(
                        session,
                        organisation_id,
                        "refund",
                        invoice,
                        when,
                        [("refunds", refunded), ("gateway:clearing", -refunded)],
                        reference=refund.id,
                    )
            if status == "void":
                _post(
                    session,
                    organisation_id,
                    "void",
                    invoice,
                    issued + timedelta(days=1),
                    [(receivable, -total), ("revenue:order", total)],
                )
        # A failed payment: it must not count as collected.
        session.add(
            Payment(
                id=_id(),
                organisation_id=organisation_id,
                invoice_id=invoice.id,
                idempotency_key=_id(),
                amount=100,
                currency="EUR",
                payment_method="card",
                status="failed",
                captured=0,
                settled_at=START + timedelta(days=3),
            )
        )
    return world


def _post(
    session: Any,
    organisation_id: str,
    kind: str,
    invoice: Invoice,
    at: datetime,
    legs: list[tuple[str, int]],
    reference: str | None = None,
) -> None:
    tx = LedgerTransaction(
        id=_id(),
        organisation_id=organisation_id,
        kind=kind,
        reference_id=reference or invoice.id,
        invoice_id=invoice.id,
        currency=invoice.currency,
        created_at=at,
    )
    session.add(tx)
    session.flush()
    for account, amount in legs:
        session.add(LedgerPosting(transaction_id=tx.id, account=account, amount=amount))


def dumps(value: Any) -> str:
    """JSON of a value, for messages."""
    return json.dumps(value, default=str, indent=1)
