"""A seeded randomized stock run: orders (plain products, kits sharing components, a
prescription-only product; partial or not), cancellations, picks, shipments,
receipts (some lots already expired), count corrections, payments and hold sweeps,
on a clock that moves forward, straight through the services on a live database.
After every step `check` holds the books: each lot has ``0 <= reserved <= on_hand``
and ``reserved`` equals its held reservations; each open order line is reserved in
full; each prescription's remaining equals its total less what live orders took."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from crdt import OrderLine
from sync_server.audit.events import Actor
from sync_server.commerce.holds import expire_holds
from sync_server.commerce.inventory import adjust_lot
from sync_server.commerce.orders import cancel_order, mark_order_paid, move_order, place_order
from sync_server.commerce.stock import components_of
from sync_server.commerce.tables import Lot, Order, OrderLineRow, Prescription, Reservation
from sync_server.db import new_id
from sync_server.errors import Conflict

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
            [_order, _cancel, _pick, _ship, _receive_any, _adjust, _pay, _sweep],
            weights=[8, 3, 3, 1, 2, 1, 2, 1],
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


def _pay(run: _Run) -> None:
    order_id = _some_order(run)
    if order_id is not None:
        with run.shop.server.db.write() as session:
            mark_order_paid(session=session, order_id=order_id, now=run.now)


def _sweep(run: _Run) -> None:
    run.stats.expired += expire_holds(
        database=run.shop.server.db, signer=run.shop.server.server_signer(), now=run.now
    )


def check(run: _Run) -> None:
    """The books balance (see the module docstring); raises AssertionError if not."""
    with run.shop.server.db.read() as session:
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
