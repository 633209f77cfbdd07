"""Orders and the payments domain: when an invoice is paid in full, the orders it
bills are paid (their holds no longer expire). Registered with
`sync_server.payments.desk.PaymentsDesk.on_paid` by the app; runs inside the
transaction in which the invoice became paid.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from sync_server.commerce.orders import mark_order_paid, set_order_invoice
from sync_server.commerce.tables import Order
from sync_server.payments.tables import Invoice, InvoiceLine

__all__ = ["orders_paid"]


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
