"""A seeded randomized run of orders and their money: orders (plain products, kits
sharing components, a prescription-only product; partial or not) billed as the
intent desk bills them, cancellations, picks, shipments, receipts (some lots already
expired), count corrections, payments of the orders' invoices through the sandbox
gateway (full or partial; successes, declines, insufficient funds and timeouts),
refunds, reconciles and hold sweeps, on a clock that moves forward, straight through
the services on a live database. After every step `check` holds the books: each lot
has ``0 <= reserved <= on_hand`` and ``reserved`` equals its held reservations; each
open order line is reserved in full; each prescription's remaining equals its total
less what live orders took; every ledger transaction balances and the ledger matches
the invoices (`verify_ledger`); what the ledger says was captured and given back
equals the gateway's own record of this run's keys, each key charged once; an order
is paid exactly when its invoice is, and a cancelled order keeps no money."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from crdt import OrderLine
from sync_server.audit.events import Actor
from sync_server.commerce.billing import bill_order
from sync_server.commerce.holds import expire_holds
from sync_server.commerce.inventory import adjust_lot
from sync_server.commerce.orders import cancel_order, move_order, place_order
from sync_server.commerce.stock import components_of
from sync_server.commerce.tables import Lot, Order, OrderLineRow, Prescription, Reservation
from sync_server.db import new_id
from sync_server.errors import Conflict
from sync_server.payments.charging import pay, refund, sweep_processing
from sync_server.payments.ledger import CLEARING, balances, ledger_snapshot, verify_ledger
from sync_server.payments.sandbox import SandboxGateway
from sync_server.payments.tables import Invoice, Payment

from .commerce_world import Shop


@dataclass
class SimStats:
    seeds: int = 0
    steps: int = 0
    accepted: int = 0
    rejected: int = 0
    cancelled: int = 0
    picked: int = 0
    expired: int = 0
    payments: int = 0
    declined: int = 0
    timeouts: int = 0
    refunds: int = 0

    def add(self, other: SimStats) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class _Run:
    shop: Shop
    rng: random.Random
    now: datetime
    products: list[str]
    patients: list[str]
    orders: list[str] = field(default_factory=list)
    parts: dict[str, dict[str, int]] = field(default_factory=dict)
    stats: SimStats = field(default_factory=SimStats)
    keys: set[str] = field(default_factory=set)  # gateway idempotency keys of this run


def simulate(shop: Shop, seed: int, patients: list[str], steps: int = 20) -> SimStats:
    """One seeded run on fresh products of `shop`'s organisation."""
    rng = random.Random(seed)
    foam = shop.product(f"Foam s{seed}")
    canister = shop.product(f"Canister s{seed}")
    gauze = shop.product(f"Gauze s{seed}")
    rx = shop.product(f"Silver s{seed}", rx=True, product_class=f"silver-{seed}")
    kit_a = shop.product(f"Kit A s{seed}", components=((foam, 2), (canister, 1)))
    kit_b = shop.product(f"Kit B s{seed}", components=((foam, 1), (gauze, 1)))
    run = _Run(
        shop,
        rng,
        datetime.now(UTC),
        [foam, canister, gauze, rx, kit_a, kit_b],
        patients,
    )
    for product in (foam, canister, gauze, rx):
        for _ in range(rng.randint(1, 3)):
            _receive(run, product)
    shop.prescribe(patients[0], product_id=rx, quantity=rng.randint(1, 6), refills=1)
    check(run)
    for _ in range(steps):
        action = rng.choices(
            [_order, _cancel, _pick, _ship, _receive_any, _adjust, _pay, _refund, _settle, _sweep],
            weights=[8, 3, 3, 1, 2, 1, 4, 1, 1, 1],
        )[0]
        action(run)
        run.now += timedelta(minutes=rng.randint(1, 600))
        run.stats.steps += 1
        check(run)
    run.stats.seeds = 1
    return run.stats


def _receive(run: _Run, product: str) -> None:
    run.shop.receive(
        product,
        run.rng.randint(1, 8),
        (run.now + timedelta(days=run.rng.randint(-2, 6))).date(),
        location_id=run.rng.choice([run.shop.warehouse_id, run.shop.store_id]),
    )


def _receive_any(run: _Run) -> None:
    _receive(run, run.rng.choice(run.products[:4]))


def _order(run: _Run) -> None:
    rng = run.rng
    lines = [
        OrderLine(product_id=rng.choice(run.products), quantity=rng.randint(1, 4))
        for _ in range(rng.randint(1, 3))
    ]
    with run.shop.server.db.write() as session:
        savepoint = session.begin_nested()
        placed = place_order(
            session=session,
            organisation_id=run.shop.staff.organisation_id,
            clinic_id=run.shop.clinic_id,
            patient_id=rng.choice(run.patients),
            intent_id=new_id(),
            lines=lines,
            deliver_to="clinic",
            address=None,
            partial=rng.random() < 0.5,
            now=run.now,
            hold=timedelta(hours=rng.randint(1, 12)),
        )
        if placed.order is None:
            savepoint.rollback()  # as the intent desk does with a refusal
            run.stats.rejected += 1
            for refusal in placed.refused:
                assert refusal.reason
            return
        bill_order(session=session, order=placed.order, now=run.now)
        savepoint.commit()
        run.orders.append(placed.order.id)
        run.stats.accepted += 1


def _some_order(run: _Run) -> str | None:
    return run.rng.choice(run.orders) if run.orders else None


def _cancel(run: _Run) -> None:
    order_id = _some_order(run)
    if order_id is None:
        return
    try:
        with run.shop.server.db.write() as session:
            cancel_order(session=session, order_id=order_id, now=run.now, actor=Actor("system"))
        run.stats.cancelled += 1
    except Conflict:
        pass


def _move(run: _Run, state: str) -> None:
    order_id = _some_order(run)
    if order_id is None:
        return
    try:
        with run.shop.server.db.write() as session:
            move_order(
                session=session,
                principal=run.shop.staff,
                order_id=order_id,
                state=state,
                now=run.now,
            )
        if state == "picked":
            run.stats.picked += 1
    except Conflict:
        pass


def _pick(run: _Run) -> None:
    _move(run, "picked")


def _ship(run: _Run) -> None:
    _move(run, "shipped")


def _adjust(run: _Run) -> None:
    with run.shop.server.db.read() as session:
        lots = session.scalars(
            select(Lot.id).where(Lot.product_id.in_(run.products)).order_by(Lot.id)
        ).all()
    if not lots:
        return
    try:
        with run.shop.server.db.write() as session:
            adjust_lot(
                session=session,
                principal=run.shop.staff,
                lot_id=run.rng.choice(lots),
                delta=run.rng.choice([-3, -1, 1, 2]),
            )
    except Conflict:
        pass


TOKENS = ["tok_success"] * 5 + ["tok_decline", "tok_insufficient_funds", "tok_timeout"]


def _pay(run: _Run) -> None:
    """Pay all or part of an order's invoice through the gateway (maybe a replay)."""
    order_id = _some_order(run)
    if order_id is None:
        return
    rng = run.rng
    with run.shop.server.db.read() as session:
        invoice_id = session.scalar(select(Order.invoice_id).where(Order.id == order_id))
        invoice = session.get(Invoice, invoice_id) if invoice_id else None
        if invoice is None:
            return
        left = invoice.total - invoice.paid - invoice.pending
    if left <= 0 or invoice.status != "open":
        return
    key = rng.choice(sorted(run.keys)) if run.keys and rng.random() < 0.1 else new_id()
    run.keys.add(key)
    try:
        with run.shop.server.db.write() as session:
            made = pay(
                session=session,
                payments=run.shop.server.app.state.payments,
                organisation_id=run.shop.staff.organisation_id,
                invoice_id=invoice.id,
                amount=left if rng.random() < 0.7 else rng.randint(1, left),
                currency=invoice.currency,
                payment_method=rng.choice(TOKENS),
                idempotency_key=key,
                now=run.now,
            ).payment
    except Conflict:  # refused: too much, the invoice moved on, a key reused elsewhere
        return
    run.stats.payments += 1
    run.stats.declined += made.status == "failed"
    run.stats.timeouts += made.status == "processing"


def _refund(run: _Run) -> None:
    """Give back part or all of what is left of a succeeded payment."""
    with run.shop.server.db.read() as session:
        paid = session.scalars(
            select(Payment)
            .join(Order, Order.invoice_id == Payment.invoice_id)
            .where(
                Order.id.in_(run.orders),
                Payment.status == "succeeded",
                Payment.refunded < Payment.captured,
            )
            .order_by(Payment.id)
        ).all()
    if not paid:
        return
    payment = run.rng.choice(paid)
    left = payment.captured - payment.refunded
    key = new_id()
    run.keys.add(key)
    with run.shop.server.db.write() as session:
        refund(
            session=session,
            payments=run.shop.server.app.state.payments,
            organisation_id=run.shop.staff.organisation_id,
            payment_id=payment.id,
            amount=left if run.rng.random() < 0.5 else run.rng.randint(1, left),
            idempotency_key=key,
            now=run.now,
        )
    run.stats.refunds += 1


def _settle(run: _Run) -> None:
    """The housekeeping sweep: timeouts settled from the gateway's record."""
    sweep_processing(
        database=run.shop.server.db, payments=run.shop.server.app.state.payments, now=run.now
    )


def _sweep(run: _Run) -> None:
    run.stats.expired += expire_holds(
        database=run.shop.server.db, signer=run.shop.server.server_signer(), now=run.now
    )


def check(run: _Run) -> None:
    """The books balance (see the module docstring); raises AssertionError if not."""
    # One snapshot: the books are compared table with table (`ledger_snapshot`).
    with ledger_snapshot(database=run.shop.server.db) as session:
        if not run.parts:
            run.parts = {p: components_of(session=session, product_id=p) for p in run.products}
        held: dict[str, int] = {
            lot_id: int(total)
            for lot_id, total in session.execute(
                select(Reservation.lot_id, func.sum(Reservation.quantity))
                .join(Lot, Lot.id == Reservation.lot_id)
                .where(Reservation.state == "held", Lot.product_id.in_(run.products))
                .group_by(Reservation.lot_id)
            )
        }
        for lot in session.scalars(select(Lot).where(Lot.product_id.in_(run.products))):
            assert 0 <= lot.reserved <= lot.on_hand, (lot.lot_code, lot.on_hand, lot.reserved)
            assert lot.reserved == held.get(lot.id, 0), (lot.id, lot.reserved, held)
        if run.orders:
            taken: dict[tuple[str, str, str], int] = {
                (line_id, product_id, state): int(total)
                for line_id, product_id, state, total in session.execute(
                    select(
                        Reservation.line_id,
                        Reservation.product_id,
                        Reservation.state,
                        func.sum(Reservation.quantity),
                    )
                    .where(Reservation.order_id.in_(run.orders))
                    .group_by(Reservation.line_id, Reservation.product_id, Reservation.state)
                )
            }
            lines = session.execute(
                select(OrderLineRow.id, OrderLineRow.product_id, OrderLineRow.quantity, Order.state)
                .join(Order, Order.id == OrderLineRow.order_id)
                .where(Order.id.in_(run.orders))
            ).all()
            for line_id, product_id, quantity, state in lines:
                live = {(p, st): q for (lid, p, st), q in taken.items() if lid == line_id and q}
                if state == "cancelled":
                    assert all(st == "released" for _, st in live), live
                    continue
                want_state = "held" if state == "accepted" else "picked"
                want = {(p, want_state): q * quantity for p, q in run.parts[product_id].items()}
                got = {k: v for k, v in live.items() if k[1] != "released"}
                assert got == want, (state, got, want)
        used = dict(
            session.execute(
                select(OrderLineRow.prescription_id, func.sum(OrderLineRow.quantity))
                .join(Order, Order.id == OrderLineRow.order_id)
                .where(OrderLineRow.prescription_id.is_not(None), Order.state != "cancelled")
                .where(OrderLineRow.product_id.in_(run.products))
                .group_by(OrderLineRow.prescription_id)
            ).all()
        )
        for prescription in session.scalars(
            select(Prescription).where(Prescription.product_id.in_(run.products))
        ):
            assert 0 <= prescription.quantity_remaining <= prescription.quantity_total
            assert prescription.quantity_remaining == prescription.quantity_total - int(
                used.get(prescription.id, 0)
            )
        _check_money(run, session)


def _check_money(run: _Run, session: Any) -> None:
    organisation_id = run.shop.staff.organisation_id
    assert verify_ledger(session=session, organisation_id=organisation_id) == []
    for order in session.scalars(select(Order).where(Order.id.in_(run.orders))):
        invoice = session.get(Invoice, order.invoice_id) if order.invoice_id else None
        assert invoice is not None or order.total == 0, order.id
        if invoice is None:
            continue
        if order.state == "cancelled":  # nothing kept on a cancelled order
            assert invoice.paid == invoice.refunded and invoice.pending == 0, order.id
            assert invoice.status in ("void", "refunded"), (order.id, invoice.status)
        # Paid in full (maybe refunded since) exactly when the order is paid.
        assert (order.paid_at is not None) == (invoice.paid == invoice.total), order.id
    # The gateway's own record of this run's keys against the ledger's clearing.
    gateway = run.shop.server.app.state.payments.gateway
    assert isinstance(gateway, SandboxGateway)
    charges = [c for c in gateway.charges() if c["idempotency_key"] in run.keys]
    keys = [c["idempotency_key"] for c in charges]
    assert len(keys) == len(set(keys)), "a key charged twice"
    # The organisation's succeeded payments, as the gateway recorded them.
    settled = set(
        session.scalars(
            select(Payment.gateway_charge_id).where(
                Payment.organisation_id == organisation_id, Payment.status == "succeeded"
            )
        )
    )
    recorded = {c["id"]: c for c in gateway.charges() if c["id"] in settled}
    assert set(recorded) == settled and all(c["status"] == "succeeded" for c in recorded.values())
    captured = sum(c["amount"] for c in recorded.values())
    given_back = sum(r["amount"] for r in gateway.refunds() if r["charge_id"] in settled)
    ledger = balances(session=session, organisation_id=organisation_id)
    assert ledger.get((CLEARING, "EUR"), 0) == captured - given_back, "clearing"
