"""Payments and refunds through the gateway, and what settles them later: status
queries (`reconcile`, `sweep_processing`) and signed webhook events (`apply_event`).

The invariants are held by the database: a payment reserves its amount on the
invoice with a conditional UPDATE (``paid + pending + amount <= total``, also a CHECK),
settles with a conditional UPDATE from ``processing`` (so a status query, a webhook
and a retry settle it once between them), and a refund takes its amount with a
conditional UPDATE on the payment (``refunded + amount <= captured``, also a CHECK).
Each posts its ledger transaction once (unique kind and reference).

The gateway is called with the payment's idempotency key, so a retried push or
request that reaches it again gets the first charge back, never a second one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from crdt import InvoiceStatus, format_money
from sync_server.audit.events import OPERATIONS, Actor, PaymentRecorded, PaymentRefunded
from sync_server.audit.services import record_event
from sync_server.db import Database, new_id, rowcount
from sync_server.errors import Conflict, Invalid, NotFound
from sync_server.identity.principals import Principal
from sync_server.notifications.events import NoticeKind, notify, patient_recipients
from sync_server.payments.desk import PaymentsDesk
from sync_server.payments.gateway import ChargeStatus, GatewayError
from sync_server.payments.invoices import (
    mark_changed,
    number_invoices,
    payment_in_scope,
    publish_changed,
    require_payment_handler,
)
from sync_server.payments.ledger import CLEARING, REFUNDS, post, receivable_account
from sync_server.payments.tables import Invoice, Payment, Refund, WebhookEvent
from sync_server.payments.webhooks import WebhookEventIn
from sync_server.sync.authorship import ServerSigner

__all__ = [
    "PaymentRefused",
    "PaymentResult",
    "apply_event",
    "derived_key",
    "pay",
    "reconcile",
    "refund",
    "staff_refund",
    "sweep_processing",
]


class PaymentRefused(Conflict):
    """A payment or refund that cannot be made as asked (the reason is for a person)."""

    code = "payment_refused"


@dataclass(frozen=True, slots=True)
class PaymentResult:
    """A payment and where its invoice stands."""

    payment: Payment
    invoice: Invoice
    replayed: bool = False

    @property
    def remaining(self) -> int:
        """What is still owed on the invoice (not counting payments in flight)."""
        return self.invoice.total - self.invoice.paid

    def outcome(self) -> dict[str, object]:
        """The decision's outcome / the route's answer."""
        return {
            "payment_id": self.payment.id,
            "invoice_id": self.invoice.id,
            "invoice_number": self.invoice.number,
            "status": self.payment.status,
            "amount": self.payment.amount,
            "currency": self.payment.currency,
            "remaining": self.remaining,
            "invoice_status": self.invoice.status,
        }


def derived_key(*parts: str) -> str:
    """A gateway idempotency key derived from a REST key and its scope (stable across
    retries; 64 hex characters)."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def pay(
    *,
    session: Session,
    payments: PaymentsDesk,
    organisation_id: str,
    invoice_id: str,
    amount: int,
    currency: str,
    payment_method: str,
    idempotency_key: str,
    now: datetime,
    clinic_id: str | None = None,
    intent_id: str | None = None,
    actor: Actor | None = None,
) -> PaymentResult:
    """Charge `amount` of an invoice through the gateway under `idempotency_key`.

    The same key again answers the first payment (no second charge). A gateway
    timeout leaves the payment ``processing`` (its amount reserved on the invoice)
    until `reconcile` or a webhook settles it. A declined payment is recorded
    ``failed`` with the gateway's reason.

    Raises:
        PaymentRefused: The invoice is not open, the currency differs, or the amount is
            more than is still owed.
        NotFound: No such invoice (of the organisation; of `clinic_id` if given).
    """
    number_invoices(session=session)  # one issued in this transaction shows its number
    existing = session.scalar(select(Payment).where(Payment.idempotency_key == idempotency_key))
    if existing is not None:
        invoice = session.get(Invoice, existing.invoice_id)
        assert invoice is not None
        return PaymentResult(existing, invoice, replayed=True)
    invoice = session.scalar(
        select(Invoice)
        .where(Invoice.id == invoice_id, Invoice.organisation_id == organisation_id)
        .with_for_update()
    )
    if invoice is None or (clinic_id is not None and invoice.clinic_id != clinic_id):
        raise NotFound("no such invoice", code="not_found")
    if invoice.status != InvoiceStatus.OPEN:
        raise PaymentRefused(f"invoice {invoice.number} is {invoice.status}; nothing to pay")
    if currency != invoice.currency:
        raise PaymentRefused(
            f"invoice {invoice.number} is in {invoice.currency}, not {currency}",
            code="currency_mismatch",
        )
    owed = invoice.total - invoice.paid - invoice.pending
    if amount > owed:
        raise PaymentRefused(
            f"only {format_money(owed, currency)} is still owed on invoice {invoice.number}"
            + (" (a payment is being processed)" if invoice.pending else ""),
            code="overpayment",
        )
    reserved = session.execute(
        update(Invoice)
        .where(
            Invoice.id == invoice.id,
            Invoice.status == str(InvoiceStatus.OPEN),
            Invoice.paid + Invoice.pending + amount <= Invoice.total,
        )
        .values(pending=Invoice.pending + amount, updated_at=now)
    )
    if rowcount(reserved) != 1:
        raise PaymentRefused(
            f"invoice {invoice.number} cannot take that payment now", code="overpayment"
        )
    payment = Payment(
        id=new_id(),
        organisation_id=organisation_id,
        invoice_id=invoice.id,
        idempotency_key=idempotency_key,
        amount=amount,
        currency=currency,
        payment_method=payment_method,
        status="processing",
        captured=0,
        refunded=0,
        intent_id=intent_id,
        created_at=now,
    )
    session.add(payment)
    session.flush()
    result = payments.gateway.charge(idempotency_key, amount, currency, payment_method)
    if result.status is ChargeStatus.SUCCEEDED:
        _settle(session, payments, payment, result.charge_id, now)
    elif result.failed:
        _fail(session, payment, result.message or "the card was declined", now)
    else:  # a timeout: the gateway may have charged; only a status query will tell
        mark_changed(session=session, invoice=invoice)
    session.refresh(invoice)
    session.refresh(payment)
    record_event(
        session=session,
        event=PaymentRecorded(
            actor=actor or Actor("system"),
            clinic_id=invoice.clinic_id,
            patient_ids=() if invoice.patient_id is None else (invoice.patient_id,),
            purpose=OPERATIONS,
            payment_id=payment.id,
            amount=amount,
            status=payment.status,
        ),
    )
    return PaymentResult(payment, invoice)


def reconcile(
    *, session: Session, payments: PaymentsDesk, payment_id: str, now: datetime
) -> Payment:
    """Settle a ``processing`` payment from the gateway's record (a status query;
    never a new charge). Anything else is returned as it is.

    Raises:
        NotFound: No such payment.
    """
    payment = session.get(Payment, payment_id)
    if payment is None:
        raise NotFound("no such payment", code="not_found")
    if payment.status != "processing":
        return payment
    found = payments.gateway.retrieve(payment.idempotency_key)
    if found.status is ChargeStatus.SUCCEEDED:
        _settle(session, payments, payment, found.charge_id, now)
    elif found.failed:
        _fail(session, payment, found.message or "the charge failed", now)
    session.refresh(payment)
    return payment


def staff_refund(
    *,
    session: Session,
    payments: PaymentsDesk,
    principal: Principal,
    payment_id: str,
    amount: int,
    reason: str | None,
    request_key: str,
    signer: ServerSigner,
    now: datetime,
) -> Refund:
    """A staff member's refund of (part of) a payment in their clinics (`refund`, keyed
    by the caller and their request's idempotency key), with the invoice records it
    changed rewritten: what ``POST /v1/payments/{id}/refund`` and the dashboard's
    refund button both do.

    Raises:
        Forbidden: The caller does not handle payments (`require_payment_handler`).
        NotFound: No such payment in the caller's clinics.
        PaymentRefused: ``refund_too_large`` and the other refusals of `refund`.
    """
    require_payment_handler(principal)
    payment = payment_in_scope(session=session, principal=principal, payment_id=payment_id)
    made = refund(
        session=session,
        payments=payments,
        organisation_id=principal.organisation_id,
        payment_id=payment.id,
        amount=amount,
        idempotency_key=derived_key("rest-refund", principal.id, request_key),
        now=now,
        reason=reason,
        actor=Actor.of(principal),
    )
    publish_changed(session=session, signer=signer, now=now)
    return made


def sweep_processing(*, database: Database, payments: PaymentsDesk, now: datetime) -> int:
    """Housekeeping: reconcile every ``processing`` payment, one short transaction
    each; returns how many were settled."""
    with database.read() as session:
        ids = session.scalars(select(Payment.id).where(Payment.status == "processing")).all()
    settled = 0
    for payment_id in ids:
        with database.write() as session:
            if (
                reconcile(session=session, payments=payments, payment_id=payment_id, now=now).status
                != "processing"
            ):
                settled += 1
    return settled


def refund(
    *,
    session: Session,
    payments: PaymentsDesk,
    organisation_id: str,
    payment_id: str,
    amount: int,
    idempotency_key: str,
    now: datetime,
    reason: str | None = None,
    actor: Actor | None = None,
) -> Refund:
    """Give back `amount` of a succeeded payment under `idempotency_key` (the same key
    again answers the first refund). A full refund of everything paid on a paid
    invoice makes it ``refunded``.

    Raises:
        PaymentRefused: More than captured minus refunded, or the payment has not
            succeeded.
        NotFound: No such payment in the organisation.
    """
    existing = session.scalar(select(Refund).where(Refund.idempotency_key == idempotency_key))
    if existing is not None:
        return existing
    payment = session.get(Payment, payment_id)
    if payment is None or payment.organisation_id != organisation_id:
        raise NotFound("no such payment", code="not_found")
    invoice = session.scalar(
        select(Invoice).where(Invoice.id == payment.invoice_id).with_for_update()
    )
    assert invoice is not None
    if payment.status != "succeeded":
        raise PaymentRefused(
            f"only a succeeded payment can be refunded; this one is {payment.status}"
        )
    left = payment.captured - payment.refunded
    if amount > left:
        raise PaymentRefused(
            f"only {format_money(left, payment.currency)} of this payment can still be refunded",
            code="refund_too_large",
        )
    taken = session.execute(
        update(Payment)
        .where(
            Payment.id == payment.id,
            Payment.status == "succeeded",
            Payment.refunded + amount <= Payment.captured,
        )
        .values(refunded=Payment.refunded + amount)
    )
    if rowcount(taken) != 1:
        raise PaymentRefused("this payment cannot be refunded that much", code="refund_too_large")
    try:
        answer = payments.gateway.refund(idempotency_key, payment.gateway_charge_id or "", amount)
    except GatewayError as exc:
        raise PaymentRefused(
            f"the gateway refused the refund: {exc}", code="refund_refused"
        ) from None
    made = Refund(
        id=new_id(),
        organisation_id=organisation_id,
        payment_id=payment.id,
        invoice_id=invoice.id,
        idempotency_key=idempotency_key,
        amount=amount,
        status="succeeded",
        gateway_refund_id=answer.refund_id,
        reason=reason,
        created_at=now,
    )
    session.add(made)
    session.execute(
        update(Invoice)
        .where(Invoice.id == invoice.id)
        .values(refunded=Invoice.refunded + amount, updated_at=now)
    )
    session.flush()
    post(
        session=session,
        organisation_id=organisation_id,
        kind="refund",
        reference_id=made.id,
        currency=payment.currency,
        postings=[(REFUNDS, amount), (CLEARING, -amount)],
        now=now,
        invoice_id=invoice.id,
    )
    session.execute(
        update(Invoice)
        .where(
            Invoice.id == invoice.id,
            Invoice.status == str(InvoiceStatus.PAID),
            Invoice.refunded == Invoice.paid,
            Invoice.paid == Invoice.total,
        )
        .values(status=str(InvoiceStatus.REFUNDED))
    )
    session.refresh(invoice)
    session.refresh(payment)
    mark_changed(session=session, invoice=invoice)
    if invoice.patient_id is not None:
        notify(
            session=session,
            clinic_id=invoice.clinic_id,
            kind=NoticeKind.PAYMENT_REFUNDED,
            dedupe_key=f"refund:{made.id}",
            recipients=patient_recipients(invoice.patient_id),
            detail={
                "payment_id": payment.id,
                "refund_id": made.id,
                "amount": amount,
                "currency": payment.currency,
                "invoice_id": invoice.id,
            },
        )
    record_event(
        session=session,
        event=PaymentRefunded(
            actor=actor or Actor("system"),
            clinic_id=invoice.clinic_id,
            patient_ids=() if invoice.patient_id is None else (invoice.patient_id,),
            purpose=OPERATIONS,
            payment_id=payment.id,
            refund_id=made.id,
            amount=amount,
        ),
    )
    return made


def apply_event(
    *, session: Session, payments: PaymentsDesk, event: WebhookEventIn, now: datetime
) -> str:
    """Apply a verified gateway event once per event id; returns what it did
    (``duplicate`` for an event seen before).

    Raises:
        Invalid: ``bad_event``: an event without the fields its type needs.
    """
    savepoint = session.begin_nested()
    try:
        session.add(
            WebhookEvent(id=event.id, kind=event.type[:60], outcome="received", received_at=now)
        )
        session.flush()
        savepoint.commit()
    except IntegrityError:
        savepoint.rollback()
        return "duplicate"
    key = event.data.get("idempotency_key")
    outcome = "ignored"
    if event.type in ("charge.succeeded", "charge.failed") and isinstance(key, str):
        payment = session.scalar(select(Payment).where(Payment.idempotency_key == key))
        if payment is None:
            outcome = "unknown_payment"
        elif payment.status != "processing":
            outcome = "already_settled"
        elif event.type == "charge.succeeded":
            charge_id = event.data.get("id")
            settled = _settle(
                session, payments, payment, charge_id if isinstance(charge_id, str) else None, now
            )
            outcome = "settled" if settled else "already_settled"
        else:
            outcome = (
                "failed" if _fail(session, payment, "the charge failed", now) else "already_settled"
            )
    elif event.type == "refund.succeeded" and isinstance(key, str):
        known = session.scalar(select(Refund.id).where(Refund.idempotency_key == key))
        outcome = "already_applied" if known is not None else "unknown_refund"
    elif event.type.startswith(("charge.", "refund.")):
        raise Invalid("the event lacks its idempotency key", code="bad_event")
    session.execute(update(WebhookEvent).where(WebhookEvent.id == event.id).values(outcome=outcome))
    return outcome


# ---------------------------------------------------------------- settling
def _settle(
    session: Session, payments: PaymentsDesk, payment: Payment, charge_id: str | None, now: datetime
) -> bool:
    """processing -> succeeded, once: the money moves from pending to paid, the ledger
    records it, and an invoice paid in full tells the paid hooks."""
    moved = session.execute(
        update(Payment)
        .where(Payment.id == payment.id, Payment.status == "processing")
        .values(
            status="succeeded", captured=Payment.amount, gateway_charge_id=charge_id, settled_at=now
        )
    )
    if rowcount(moved) != 1:
        return False
    session.execute(
        update(Invoice)
        .where(Invoice.id == payment.invoice_id)
        .values(
            pending=Invoice.pending - payment.amount,
            paid=Invoice.paid + payment.amount,
            updated_at=now,
        )
    )
    invoice = session.get(Invoice, payment.invoice_id)
    assert invoice is not None
    session.refresh(invoice)
    post(
        session=session,
        organisation_id=payment.organisation_id,
        kind="payment",
        reference_id=payment.id,
        currency=payment.currency,
        postings=[(CLEARING, payment.amount), (receivable_account(invoice), -payment.amount)],
        now=now,
        invoice_id=invoice.id,
    )
    became_paid = session.execute(
        update(Invoice)
        .where(
            Invoice.id == invoice.id,
            Invoice.status == str(InvoiceStatus.OPEN),
            Invoice.paid == Invoice.total,
        )
        .values(status=str(InvoiceStatus.PAID))
    )
    session.refresh(invoice)
    mark_changed(session=session, invoice=invoice)
    if rowcount(became_paid) == 1:
        payments.invoice_paid(session=session, invoice=invoice, now=now)
    return True


def _fail(session: Session, payment: Payment, reason: str, now: datetime) -> bool:
    """processing -> failed, once: the reserved amount is released."""
    moved = session.execute(
        update(Payment)
        .where(Payment.id == payment.id, Payment.status == "processing")
        .values(status="failed", failure_reason=reason[:500], settled_at=now)
    )
    if rowcount(moved) != 1:
        return False
    session.execute(
        update(Invoice)
        .where(Invoice.id == payment.invoice_id)
        .values(pending=Invoice.pending - payment.amount, updated_at=now)
    )
    invoice = session.get(Invoice, payment.invoice_id)
    assert invoice is not None
    session.refresh(invoice)
    mark_changed(session=session, invoice=invoice)
    if invoice.patient_id is not None:
        notify(
            session=session,
            clinic_id=invoice.clinic_id,
            kind=NoticeKind.PAYMENT_FAILED,
            dedupe_key=f"payment:{payment.id}:failed",
            recipients=patient_recipients(invoice.patient_id),
            detail={
                "payment_id": payment.id,
                "invoice_id": invoice.id,
                "amount": payment.amount,
                "currency": payment.currency,
                "reason": reason[:500],
            },
        )
    return True
