"""How the server decides order intents: ``order.place`` (reserve every line, or
refuse it with a reason a person can act on) and ``order.cancel``. Each handler runs
inside the push that delivered the intent, in a savepoint
(`sync_server.intents.IntentDesk`): a refused order leaves no reservation behind.
Stock is taken only through `stock.reserve`'s conditional updates, so the database,
not this code, is what keeps two orders off the same units.
"""

from __future__ import annotations

from datetime import timedelta

from crdt import IntentKind, OrderCancel, OrderPlace
from sync_server.audit.events import Actor
from sync_server.commerce.billing import bill_order
from sync_server.commerce.orders import HOLD, cancel_order, place_order
from sync_server.commerce.reference import catalogue_key, refresh_touched
from sync_server.commerce.tables import CANCELLABLE_STATES, Order
from sync_server.errors import Conflict
from sync_server.intents.desk import Handler, IntentContext, IntentDesk, Verdict

__all__ = ["cancel_handler", "place_handler", "register"]


def register(desk: IntentDesk, *, hold: timedelta = HOLD) -> None:
    """Give `desk` the order handlers and the catalogue refresh; accepted orders hold
    their stock unpaid for `hold`."""
    desk.register(IntentKind.ORDER_PLACE, place_handler(hold))
    desk.register(IntentKind.ORDER_CANCEL, cancel_handler())
    desk.after_decisions(refresh_touched)


def place_handler(hold: timedelta = HOLD) -> Handler:
    """The ``order.place`` handler, holding accepted orders for `hold`."""

    def place(context: IntentContext) -> Verdict:
        asked = context.intent.parsed_details()
        assert isinstance(asked, OrderPlace)
        patient_id = context.intent.patient_id
        assert patient_id is not None  # the schema requires it
        problem = context.patient_problem(patient_id)
        if problem is not None:
            return Verdict.rejected(problem)
        placed = place_order(
            session=context.session,
            organisation_id=context.organisation_id,
            clinic_id=context.clinic_id,
            patient_id=patient_id,
            intent_id=context.intent.id,
            lines=asked.lines,
            deliver_to=str(asked.deliver_to),
            address=asked.address,
            partial=asked.partial,
            now=context.now,
            hold=hold,
        )
        refused = [r.as_dict() for r in placed.refused]
        order = placed.order
        if order is None:
            reasons = "; ".join(r.reason for r in placed.refused)
            return Verdict.rejected(reasons, alternative={"lines": refused})
        context.touched.add(catalogue_key(context.clinic_id))
        invoice = bill_order(session=context.session, order=order, now=context.now)
        outcome = {
            "order_id": order.id,
            "invoice_id": invoice.id if invoice is not None else None,
            "state": order.state,
            "lines": placed.lines,
            "refused": refused,
            "total": order.total,
            "currency": order.currency,
            "hold_expires_at": order.hold_expires_at.isoformat(),
        }
        if refused:
            return Verdict.accepted_alternative(
                outcome,
                f"{len(placed.lines)} of {len(placed.lines) + len(refused)} lines accepted: "
                + "; ".join(r.reason for r in placed.refused),
            )
        return Verdict.accepted(outcome)

    return place


def cancel_handler() -> Handler:
    """The ``order.cancel`` handler: an order of this clinic that has not shipped."""

    def cancel(context: IntentContext) -> Verdict:
        asked = context.intent.parsed_details()
        assert isinstance(asked, OrderCancel)
        order_id = context.intent.subject_id
        order = context.session.get(Order, order_id) if order_id else None
        if order is None or order.clinic_id != context.clinic_id:
            return Verdict.rejected(f"there is no order {order_id} at this clinic")
        if order.state not in CANCELLABLE_STATES:
            return Verdict.rejected(f"the order is {order.state}; it can no longer be cancelled")
        try:
            done = cancel_order(
                session=context.session,
                order_id=order.id,
                now=context.now,
                actor=Actor.device(context.device_id),
                reason=asked.reason,
            )
        except Conflict as refused:
            return Verdict.rejected(refused.message)
        context.touched.add(catalogue_key(context.clinic_id))
        return Verdict.accepted({"order_id": done.id, "state": done.state})

    return cancel
