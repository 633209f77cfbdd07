"""Routes: the dashboard's queues page (bookings and their decisions, orders to pick and
ship, payments and refunds, prescriptions about to expire) and its actions.

The page reads through `sync_server.dashboard.queues` (the API's own service functions,
with the caller's principal) and audits what it showed like the API reads of the same
records (``RecordsRead`` of bookings, orders, payments, invoices, prescriptions, and the
patients whose names it showed). Each action runs the service function its API route
runs, with the same role checks and audit events:

- ``POST /dashboard/queues/bookings/{id}``: `sync_server.bookings.manage.change_state`
  (``POST /v1/bookings/{id}/state``);
- ``POST /dashboard/queues/orders/{id}/{pick|ship}``:
  `sync_server.commerce.orders.move_order` (``POST /v1/commerce/orders/{id}/{action}``),
  then the catalogue republished after a pick;
- ``POST /dashboard/queues/payments/{id}/refund``: `sync_server.payments.charging.refund`
  through the API's idempotency wrapper (``POST /v1/payments/{id}/refund``; the form
  carries its own ``Idempotency-Key``, so a form sent twice refunds once).

Every action needs the CSRF token. An htmx request gets the item's table row back (its
new state, or why it was refused, with the refusal's status code); a plain form POST
is redirected back to the page (a refusal is an error page).
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from sync_server.audit.events import Actor
from sync_server.audit.services import record_read
from sync_server.bookings.directory import require_writer
from sync_server.bookings.manage import change_state
from sync_server.commerce.orders import move_order
from sync_server.commerce.reference import republish_catalogue
from sync_server.dashboard.queues import queues
from sync_server.dashboard.web import (
    DASHBOARD_PREFIX,
    CsrfChecked,
    Page,
    PageDep,
    error_page,
    render,
)
from sync_server.db import Database, utcnow
from sync_server.deps import ArtifactKeyDep, DbDep
from sync_server.errors import ServerError, Unavailable
from sync_server.payments.charging import derived_key, refund
from sync_server.payments.idempotency import Stored
from sync_server.payments.invoices import publish_changed
from sync_server.payments.routes import (
    _payment_in_scope,
    _payments,
    _require_actor,
    idempotent,
)
from sync_server.payments.schemas import RefundPublic
from sync_server.sync.authorship import ServerSigner

__all__ = ["router"]

router = APIRouter()
log = logging.getLogger("sync_server.dashboard")

_QUEUES = f"{DASHBOARD_PREFIX}/queues"
_FRAGMENT_HEADER = {"X-Dashboard-Fragment": "1"}  # app.js swaps these in, refusals too


@router.get("/queues", response_class=HTMLResponse)
def queues_page(request: Request, page_: PageDep, db: DbDep) -> HTMLResponse:
    """Every queue the caller may see, with the actions their role may take."""
    with db.read() as session:
        found = queues(session=session, principal=page_.caller, today=utcnow().date())
    with db.write() as session:
        for read in found.reads:
            record_read(
                session=session,
                caller=page_.caller,
                collection=read.collection,
                records=read.records,
                clinic_id=read.clinic_id,
            )
    return render(
        request,
        "queues.html",
        {"nav": "queues", "q": found, "form_key": uuid.uuid4().hex},
        page=page_,
    )


@dataclass(frozen=True, slots=True)
class _Refusal:
    status: int
    code: str
    message: str

    @classmethod
    def of(cls, error: ServerError) -> _Refusal:
        from sync_server.app import status_code_of  # the app imports this module

        return cls(status_code_of(error), error.code, error.message)


def _answer(
    request: Request,
    page_: Page,
    *,
    kind: str,
    item_id: str,
    done: str | None = None,
    refused: _Refusal | None = None,
) -> Response:
    """The item's row for htmx (with the refusal's status, if refused), else back to
    the page (or the refusal as an error page)."""
    if request.headers.get("hx-request"):
        response = render(
            request,
            "queue_row.html",
            {"kind": kind, "item_id": item_id, "done": done, "refused": refused},
            page=page_,
            status_code=refused.status if refused else 200,
        )
        response.headers.update(_FRAGMENT_HEADER)
        return response
    if refused is not None:
        return error_page(request, refused.status, refused.code, refused.message)
    return RedirectResponse(f"{_QUEUES}#{kind}s", status_code=303)


@router.post("/queues/bookings/{booking_id}", response_class=HTMLResponse)
def booking_action(
    request: Request,
    booking_id: str,
    page_: CsrfChecked,
    db: DbDep,
    key: ArtifactKeyDep,
    state: Annotated[Literal["confirmed", "en_route", "started", "completed", "cancelled"], Form()],
    reason: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    """Move a booking on (``POST /v1/bookings/{id}/state``'s `change_state`)."""
    try:
        with db.write() as session:
            booking = change_state(
                session=session,
                principal=page_.caller,
                booking_id=booking_id[:64],
                state=state,
                signer=ServerSigner(key),
                # The form's reason field is for cancelling: other moves ignore it.
                reason=(reason.strip() or None) if state == "cancelled" else None,
            )
            done = f"{booking.kind.capitalize()} is now {booking.state.replace('_', ' ')}."
    except ServerError as error:
        refused = _Refusal.of(error)
        return _answer(request, page_, kind="booking", item_id=booking_id, refused=refused)
    return _answer(request, page_, kind="booking", item_id=booking_id, done=done)


def _republish(db: Database, page_: Page, key: ArtifactKeyDep) -> None:
    # As `sync_server.commerce.routes` does after a pick: in a transaction of its own,
    # after the change committed; the hourly housekeeping writes it if this fails.
    try:
        db.write_retrying(
            lambda session: republish_catalogue(
                session=session,
                organisation_id=page_.caller.organisation_id,
                signer=ServerSigner(key),
                now=utcnow(),
            )
        )
    except Unavailable:
        log.warning("catalogue records not refreshed after a change; housekeeping will")


@router.post("/queues/orders/{order_id}/{action}", response_class=HTMLResponse)
def order_action(
    request: Request,
    order_id: str,
    action: Literal["pick", "ship"],
    page_: CsrfChecked,
    db: DbDep,
    key: ArtifactKeyDep,
) -> Response:
    """Mark an order picked or shipped (``POST /v1/commerce/orders/{id}/{action}``)."""
    state = {"pick": "picked", "ship": "shipped"}[action]
    try:
        with db.write() as session:
            require_writer(page_.caller)
            order = move_order(
                session=session,
                principal=page_.caller,
                order_id=order_id[:64],
                state=state,
                now=utcnow(),
            )
            done = f"Order is now {order.state}."
    except ServerError as error:
        refused = _Refusal.of(error)
        return _answer(request, page_, kind="order", item_id=order_id, refused=refused)
    if state == "picked":
        _republish(db, page_, key)
    return _answer(request, page_, kind="order", item_id=order_id, done=done)


@router.post("/queues/payments/{payment_id}/refund", response_class=HTMLResponse)
def refund_action(
    request: Request,
    payment_id: str,
    page_: CsrfChecked,
    db: DbDep,
    key: ArtifactKeyDep,
    amount: Annotated[int, Form(gt=0, le=10**12)],
    idempotency_key: Annotated[str, Form(min_length=1, max_length=100)],
    reason: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    """Refund (part of) a payment (``POST /v1/payments/{id}/refund``: the same checks,
    the same idempotency, the same `refund`)."""
    caller = page_.caller
    why = reason.strip() or None
    try:
        _require_actor(caller)
        payments = _payments(request)

        def work(session: Session) -> Stored:
            payment = _payment_in_scope(session, caller, payment_id)
            now = utcnow()
            made = refund(
                session=session,
                payments=payments,
                organisation_id=caller.organisation_id,
                payment_id=payment.id,
                amount=amount,
                idempotency_key=derived_key("rest-refund", caller.id, idempotency_key),
                now=now,
                reason=why,
                actor=Actor.of(caller),
            )
            publish_changed(session=session, signer=ServerSigner(key), now=now)
            return Stored(200, RefundPublic.model_validate(made).model_dump(mode="json"))

        answered = idempotent(
            request=request,
            caller=caller,
            db=db,
            key=idempotency_key,
            payload={"amount": amount, "reason": why},
            work=work,
        )
    except ServerError as error:
        refused = _Refusal.of(error)
        return _answer(request, page_, kind="payment", item_id=payment_id, refused=refused)
    if answered.status_code != 200:
        said = json.loads(bytes(answered.body))["error"]
        refused = _Refusal(answered.status_code, said["code"], said["message"])
        return _answer(request, page_, kind="payment", item_id=payment_id, refused=refused)
    made = json.loads(bytes(answered.body))
    done = f"Refund {made['status']}: {made['amount']} (minor units) given back."
    return _answer(request, page_, kind="payment", item_id=payment_id, done=done)
