"""Orders and the payments domain: an accepted order is billed at once (`bill_order`:
an invoice with a line per order line, due when the order's hold expires), and when
an invoice is paid in full the orders it bills are paid (their holds no longer
expire; `orders_paid`, registered with `sync_server.payments.desk.PaymentsDesk.on_paid`
by the app, runs inside the transaction in which the invoice became paid). A
cancelled order's unpaid invoice is voided by `orders.cancel_order`.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from sync_server.commerce.orders import mark_order_paid, set_order_invoice
from sync_server.commerce.tables import Order, OrderLineRow, Product
from sync_server.payments.invoices import Charge, bill
from sync_server.payments.tables import Invoice, InvoiceLine

__all__ = ["bill_order", "orders_paid"]


def bill_order(*, session: Session, order: Order, now: datetime) -> Invoice | None:
    """Issue the invoice of an accepted order (in the caller's transaction): a line
    per order line at the price it was accepted at, due when its hold expires. An
    order that costs nothing is paid as it stands and gets no invoice (None)."""
    if order.total == 0:
        mark_order_paid(session=session, order_id=order.id, now=now)
        return None
    lines = session.execute(
        select(OrderLineRow, Product.name, Product.unit)
        .join(Product, Product.id == OrderLineRow.product_id)
        .where(OrderLineRow.order_id == order.id)
        .order_by(OrderLineRow.line_no)
    ).all()
    charges = [
        Charge(
            "order",
            order.id,
            f"{name} ({unit})"[:200],
            line.quantity,
            line.unit_price,
            order.currency,
        )
        for line, name, unit in lines
    ]
    invoice = bill(
        session=session,
        organisation_id=order.organisation_id,
        clinic_id=order.clinic_id,
        patient_id=order.patient_id,
        charges=charges,
        now=now,
        due_at=order.hold_expires_at,
    )
    set_order_invoice(session=session, order_id=order.id, invoice_id=invoice.id)
    return invoice


def orders_paid(*, session: Session, invoice: Invoice, now: datetime) -> None:
    """Mark paid every order `invoice` bills: its ``order`` lines' orders (recorded as
    billed on it) and the orders already recorded as billed on it. Idempotent; an
    order cancelled meanwhile (its hold expired) stays cancelled."""
    billed = set(
        session.scalars(
            select(InvoiceLine.reference_id).where(
                InvoiceLine.invoice_id == invoice.id,
                InvoiceLine.kind == "order",
                InvoiceLine.reference_id.is_not(None),
            )
        )
    )
    for order_id in sorted(o for o in billed if o is not None):
        set_order_invoice(session=session, order_id=order_id, invoice_id=invoice.id)
    billed |= set(session.scalars(select(Order.id).where(Order.invoice_id == invoice.id)))
    for order_id in sorted(o for o in billed if o is not None):
        mark_order_paid(session=session, order_id=order_id, now=now)
