"""Orders: placed by devices' ``order.place`` intents (`place_order`, called by the
decider inside the push), then moved by staff (pick, ship, deliver) or cancelled by
a device, staff, or the hold sweep when an accepted order is not paid in time.

Every state change is a conditional ``UPDATE orders SET state = ... WHERE state IN
(...)`` whose row count decides who moved it: a cancel racing a pick, or the hold
sweep racing a payment (`mark_order_paid`), has exactly one winner, and only the
winner touches stock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from crdt import OrderLine, format_money
from sync_server.audit.events import Actor, OrderStateChanged, purpose_of
from sync_server.audit.services import record_event
from sync_server.commerce.prescriptions import claim, give_back
from sync_server.commerce.stock import (
    available,
    components_of,
    pick_reservation,
    release_reservation,
    reserve,
    restock_reservation,
    sourcing_locations,
    usable_after,
)
from sync_server.commerce.tables import (
    CANCELLABLE_STATES,
    Order,
    OrderLineRow,
    Product,
    Reservation,
)
from sync_server.db import new_id, rowcount
from sync_server.errors import Conflict, Invalid, NotFound
from sync_server.identity.principals import Principal
from sync_server.identity.tables import Clinic
from sync_server.notifications.events import NoticeKind, notify, patient_recipients
from sync_server.payments.invoices import void_invoice
from sync_server.payments.tables import Invoice

__all__ = [
    "HOLD",
    "LineRefusal",
    "Placed",
    "cancel_order",
    "expired_holds",
    "list_orders",
    "mark_order_paid",
    "move_order",
    "order_in_scope",
    "order_lines",
    "order_reservations",
    "place_order",
    "set_order_invoice",
]

HOLD = timedelta(hours=48)
"""How long an accepted order holds its stock unpaid before the sweep cancels it."""

_NEXT = {"picked": ("accepted",), "shipped": ("picked",), "delivered": ("shipped",)}


@dataclass(frozen=True, slots=True)
class LineRefusal:
    """One line that could not be had, and why (for a person to act on)."""

    line: int
    product_id: str
    reason: str
    available: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "line": self.line,
            "product_id": self.product_id,
            "reason": self.reason,
            "available": self.available,
        }


@dataclass(slots=True)
class Placed:
    """What `place_order` did: the order (None if no line was accepted) with its
    accepted lines' outcome, and the refused lines."""

    order: Order | None
    lines: list[dict[str, Any]] = field(default_factory=list)
    refused: list[LineRefusal] = field(default_factory=list)


def place_order(
    *,
    session: Session,
    organisation_id: str,
    clinic_id: str,
    patient_id: str,
    intent_id: str,
    lines: Sequence[OrderLine],
    deliver_to: str,
    address: str | None,
    partial: bool,
    now: datetime,
    hold: timedelta = HOLD,
) -> Placed:
    """Reserve each line's stock (kits: their components) first-expiry-first-out from
    the clinic's locations, and take prescription-only lines from the patient's
    prescriptions. Lines that cannot be had are refused with their reason; unless
    `partial`, one refused line refuses all (the caller rolls back then).
    """
    clinic = _kept(session, Clinic, clinic_id)
    after = usable_after(clinic, now)
    locations = sourcing_locations(
        session=session, organisation_id=organisation_id, clinic_id=clinic_id
    )
    order = Order(
        id=new_id(),
        organisation_id=organisation_id,
        clinic_id=clinic_id,
        patient_id=patient_id,
        intent_id=intent_id,
        state="accepted",
        deliver_to=deliver_to,
        address=address,
        total=0,
        currency="XXX",  # ISO 4217 "no currency": set by the first accepted line
        hold_expires_at=now + hold,
        created_at=now,
        updated_at=now,
    )
    placed = Placed(order)
    rows: list[Any] = [order]  # inserted together at the end (one flush)
    currency: str | None = None
    for n, line in enumerate(lines):
        product = _kept(session, Product, line.product_id)
        if product is None or product.organisation_id != organisation_id:
            placed.refused.append(
                LineRefusal(n, line.product_id, f"no product {line.product_id} in the catalogue")
            )
        elif not product.active:
            placed.refused.append(LineRefusal(n, product.id, f"{product.name} is no longer sold"))
        elif currency is not None and product.currency != currency:
            placed.refused.append(
                LineRefusal(
                    n, product.id, f"{product.name} is priced in {product.currency}, not {currency}"
                )
            )
        else:
            # Only a partial order keeps going after a refused line, so only its lines
            # need a savepoint each; otherwise the caller rolls the whole order back.
            savepoint = session.begin_nested() if partial else None
            outcome = _place_line(session, order, n, product, line.quantity, locations, after)
            if isinstance(outcome, LineRefusal):
                if savepoint is not None:
                    savepoint.rollback()
                placed.refused.append(outcome)
            else:
                if savepoint is not None:
                    savepoint.commit()
                summary, made = outcome
                currency = product.currency
                order.total += product.price * line.quantity
                placed.lines.append(summary)
                rows += made
        if not partial and placed.refused:
            break
    if not placed.lines or (placed.refused and not partial):
        placed.order = None
        return placed
    assert currency is not None  # an accepted line set it
    order.currency = currency
    session.add_all(rows)
    session.flush()
    return placed


_KEPT = "commerce:rows"
T = TypeVar("T", Clinic, Product)


def _kept(session: Session, table: type[T], row_id: str) -> T | None:
    """`session.get`, holding on to the row for the session's transaction (one push):
    the identity map only keeps rows something else refers to."""
    kept: dict[tuple[type[Any], str], Any] = session.info.setdefault(_KEPT, {})
    key = (table, row_id)
    if key not in kept:
        kept[key] = session.get(table, row_id)
    found: T | None = kept[key]
    return found


def _place_line(
    session: Session,
    order: Order,
    n: int,
    product: Product,
    quantity: int,
    locations: Sequence[str],
    after: Any,
) -> tuple[dict[str, Any], list[Any]] | LineRefusal:
    """Take one line's prescription and stock; returns what the decision says of it
    and the rows to insert, or why not (the caller rolls back what was taken)."""
    prescription_id: str | None = None
    if product.prescription_required:
        prescription_id, why = claim(
            session=session,
            organisation_id=order.organisation_id,
            patient_id=order.patient_id,
            product=product,
            quantity=quantity,
            day=after,
        )
        if prescription_id is None:
            return LineRefusal(n, product.id, why or "no prescription")
    row = OrderLineRow(
        id=new_id(),
        order_id=order.id,
        line_no=n,
        product_id=product.id,
        quantity=quantity,
        unit_price=product.price,
        prescription_id=prescription_id,
    )
    parts = components_of(session=session, product_id=product.id)
    made: list[Any] = [row]
    reservations: list[dict[str, Any]] = []
    held: dict[str, int] = {}  # what this line took so far (given back by the caller)
    for part_id, per_unit in sorted(parts.items()):
        need = per_unit * quantity
        got = reserve(
            session=session, product_id=part_id, quantity=need, location_ids=locations, after=after
        )
        held[part_id] = sum(t.quantity for t in got)
        if held[part_id] < need:
            return _short(session, n, product, quantity, parts, locations, after, held)
        for taken in got:
            made.append(
                Reservation(
                    id=new_id(),
                    order_id=order.id,
                    line_id=row.id,
                    lot_id=taken.lot_id,
                    product_id=part_id,
                    quantity=taken.quantity,
                    state="held",
                )
            )
            reservations.append(
                {
                    "product_id": part_id,
                    "lot_id": taken.lot_id,
                    "lot_code": taken.lot_code,
                    "expires_on": taken.expires_on.isoformat(),
                    "quantity": taken.quantity,
                }
            )
    summary = {
        "line": n,
        "product_id": product.id,
        "quantity": quantity,
        "unit_price": product.price,
        "prescription_id": prescription_id,
        "reservations": reservations,
    }
    return summary, made


def _short(
    session: Session,
    n: int,
    product: Product,
    quantity: int,
    parts: dict[str, int],
    locations: Sequence[str],
    after: Any,
    held: dict[str, int],
) -> LineRefusal:
    free = available(session=session, product_ids=list(parts), location_ids=locations, after=after)
    free = {p: q + held.get(p, 0) for p, q in free.items()}
    can = min(free[p] // per_unit for p, per_unit in parts.items())
    if can == 0:
        reason = f"{product.name} is out of stock"
    else:
        reason = f"only {can} of {product.name} ({product.unit}) in stock, {quantity} asked for"
    if len(parts) > 1 or product.id not in parts:
        short = [p for p, per in parts.items() if free[p] < per * quantity]
        names = [session.get(Product, p) for p in short]
        reason += " (short of " + ", ".join(p.name for p in names if p is not None) + ")"
    return LineRefusal(n, product.id, reason, can)


def _lock_clinic(session: Session, clinic_id: str) -> None:
    # The lock order of `sync_server.commerce.stock`: the order's clinic first, as a
    # push deciding the clinic's intents holds it, then the warehouse, then the rest.
    session.execute(select(Clinic.id).where(Clinic.id == clinic_id).with_for_update()).all()


def order_in_scope(*, session: Session, principal: Principal, order_id: str) -> Order:
    """The order, if the caller may see it (organisation; clinic for clinic-bound
    accounts and devices).

    Raises:
        NotFound: No such order in the caller's scope.
    """
    order = session.get(Order, order_id)
    if (
        order is None
        or order.organisation_id != principal.organisation_id
        or not principal.can_see_clinic(order.clinic_id)
    ):
        raise NotFound("no such order", code="not_found")
    return order


def list_orders(
    *,
    session: Session,
    principal: Principal,
    clinic_id: str | None = None,
    state: str | None = None,
    patient_id: str | None = None,
    limit: int = 100,
) -> list[Order]:
    """Orders in the caller's scope, newest first."""
    query = select(Order).where(Order.organisation_id == principal.organisation_id)
    if principal.clinic_id is not None:
        query = query.where(Order.clinic_id == principal.clinic_id)
    if clinic_id is not None:
        query = query.where(Order.clinic_id == clinic_id)
    if state is not None:
        query = query.where(Order.state == state)
    if patient_id is not None:
        query = query.where(Order.patient_id == patient_id)
    return list(session.scalars(query.order_by(Order.created_at.desc(), Order.id).limit(limit)))


def order_lines(*, session: Session, order_id: str) -> list[OrderLineRow]:
    """An order's lines in the order they were asked for."""
    return list(
        session.scalars(
            select(OrderLineRow)
            .where(OrderLineRow.order_id == order_id)
            .order_by(OrderLineRow.line_no)
        )
    )


def order_reservations(*, session: Session, order_id: str) -> list[Reservation]:
    """An order's reservations (held, picked and released)."""
    return list(
        session.scalars(
            select(Reservation).where(Reservation.order_id == order_id).order_by(Reservation.id)
        )
    )


def cancel_order(
    *,
    session: Session,
    order_id: str,
    now: datetime,
    actor: Actor,
    reason: str | None = None,
    hold_expired: bool = False,
) -> Order:
    """Cancel an order that has not shipped: held stock is released, picked stock
    goes back on its lot, prescriptions get their quantity back, and its unpaid
    invoice is voided. With `hold_expired`, only an unpaid order whose hold has
    expired is cancelled. On a refusal the caller rolls back (some rows may have
    changed before it was found).

    Raises:
        NotFound: No such order.
        Conflict: ``order_not_cancellable``: shipped, delivered, cancelled (or, with
            `hold_expired`, paid or still held); ``order_paid``: money was paid (or
            is being paid) on its invoice, which must be refunded first.
    """
    order = session.get(Order, order_id)
    if order is None:
        raise NotFound("no such order", code="not_found")
    _lock_clinic(session, order.clinic_id)
    condition = [Order.id == order_id, Order.state.in_(CANCELLABLE_STATES)]
    if hold_expired:
        condition += [Order.paid_at.is_(None), Order.hold_expires_at <= now]
    done = session.execute(
        update(Order)
        .where(*condition)
        .values(state="cancelled", cancel_reason=reason, updated_at=now)
    )
    if rowcount(done) != 1:
        session.refresh(order)
        raise Conflict(
            f"the order is {order.state}; it can no longer be cancelled",
            code="order_not_cancellable",
        )
    for reservation in order_reservations(session=session, order_id=order_id):
        if reservation.state == "held":
            release_reservation(session=session, reservation=reservation)
        elif reservation.state == "picked":
            restock_reservation(session=session, reservation=reservation)
    for line in order_lines(session=session, order_id=order_id):
        if line.prescription_id is not None:
            give_back(session=session, prescription_id=line.prescription_id, quantity=line.quantity)
    session.refresh(order)
    _void_unpaid_invoice(session, order, now, actor)
    record_event(
        session=session,
        event=OrderStateChanged(
            actor=actor,
            clinic_id=order.clinic_id,
            patient_ids=(order.patient_id,),
            purpose=purpose_of(actor),
            order_id=order.id,
            state="cancelled",
        ),
    )
    return order


def _void_unpaid_invoice(session: Session, order: Order, now: datetime, actor: Actor) -> None:
    """Void the invoice of a cancelled order, or refuse the cancel if money was paid
    on it (a refunded or void invoice needs nothing more)."""
    if order.invoice_id is None:
        return
    invoice = session.get(Invoice, order.invoice_id)
    if invoice is None or invoice.status in ("void", "refunded"):
        return
    reason = f"order {order.id} cancelled"
    if void_invoice(session=session, invoice_id=invoice.id, reason=reason, now=now, actor=actor):
        return
    session.refresh(invoice)
    held = format_money(invoice.paid - invoice.refunded, invoice.currency) + " paid"
    if invoice.pending:
        held += f" and {format_money(invoice.pending, invoice.currency)} being paid"
    raise Conflict(
        f"invoice {invoice.number} of this order has {held}; refund it before cancelling",
        code="order_paid",
    )


def move_order(
    *, session: Session, principal: Principal, order_id: str, state: str, now: datetime
) -> Order:
    """Move an order on: ``picked`` (its held stock leaves the shelves, first-expiry-
    first-out; a reserved lot that has expired since is replaced), ``shipped``,
    ``delivered``.

    Raises:
        NotFound: No such order in scope.
        Invalid: An unknown state.
        Conflict: ``order_state``: not in the state this move starts from;
            ``out_of_stock``: an expired lot cannot be replaced.
    """
    order = order_in_scope(session=session, principal=principal, order_id=order_id)
    if state not in _NEXT:
        raise Invalid(f"orders move to picked, shipped or delivered, not {state!r}")
    _lock_clinic(session, order.clinic_id)
    done = session.execute(
        update(Order)
        .where(Order.id == order_id, Order.state.in_(_NEXT[state]))
        .values(state=state, updated_at=now)
    )
    if rowcount(done) != 1:
        session.refresh(order)
        raise Conflict(f"the order is {order.state}; it cannot be {state}", code="order_state")
    if state == "picked":
        clinic = session.get(Clinic, order.clinic_id)
        after = usable_after(clinic, now)
        locations = sourcing_locations(
            session=session, organisation_id=order.organisation_id, clinic_id=order.clinic_id
        )
        for reservation in order_reservations(session=session, order_id=order_id):
            if reservation.state != "held":
                continue
            if (
                pick_reservation(
                    session=session, reservation=reservation, location_ids=locations, after=after
                )
                is None
            ):
                raise Conflict(
                    "a reserved lot has expired and there is no other stock to pick instead",
                    code="out_of_stock",
                )
    session.refresh(order)
    if state == "shipped":
        notify(
            session=session,
            clinic_id=order.clinic_id,
            kind=NoticeKind.ORDER_SHIPPED,
            dedupe_key=f"order:{order.id}:shipped",
            recipients=patient_recipients(order.patient_id),
            detail={"order_id": order.id, "state": state},
        )
    record_event(
        session=session,
        event=OrderStateChanged(
            actor=Actor.of(principal) if principal.id else Actor("system"),
            clinic_id=order.clinic_id,
            patient_ids=(order.patient_id,),
            purpose=purpose_of(principal),
            order_id=order.id,
            state=state,
        ),
    )
    return order


def expired_holds(*, session: Session, now: datetime, limit: int = 1000) -> list[str]:
    """Ids of unpaid orders (accepted or picked) whose hold has expired by `now`."""
    return list(
        session.scalars(
            select(Order.id)
            .where(
                Order.state.in_(CANCELLABLE_STATES),
                Order.paid_at.is_(None),
                Order.hold_expires_at <= now,
            )
            .order_by(Order.hold_expires_at, Order.id)
            .limit(limit)
        )
    )


def mark_order_paid(*, session: Session, order_id: str, now: datetime) -> bool:
    """Record that an order is paid (its hold no longer expires). Idempotent.

    Returns True if the order is paid (now or already), False if it cannot be: no
    such order, or cancelled (e.g. its hold expired first: refund the payment).
    """
    done = session.execute(
        update(Order)
        .where(Order.id == order_id, Order.paid_at.is_(None), Order.state != "cancelled")
        .values(paid_at=now, updated_at=now)
    )
    if rowcount(done) == 1:
        return True
    paid = session.execute(select(Order.paid_at, Order.state).where(Order.id == order_id)).first()
    return paid is not None and paid.paid_at is not None


def set_order_invoice(*, session: Session, order_id: str, invoice_id: str) -> bool:
    """Record the invoice an order is billed on (once). Idempotent.

    Returns True if the order is now billed on `invoice_id`, False if there is no
    such order or it is billed on another invoice.
    """
    done = session.execute(
        update(Order)
        .where(Order.id == order_id, Order.invoice_id.is_(None))
        .values(invoice_id=invoice_id)
    )
    if rowcount(done) == 1:
        return True
    return session.scalar(select(Order.invoice_id).where(Order.id == order_id)) == invoice_id
