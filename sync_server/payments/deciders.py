"""How the server decides payment intents (``payment.pay``) inside the push that
delivers them: the intent's id is the gateway's idempotency key, so the intent is
charged at most once whatever the network does (a retried push gets the first charge
back from the gateway). A decline is a rejection with the gateway's reason; a timeout
is accepted as ``processing`` and settled later by a status query, never by charging
again."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from crdt import IntentKind, PaymentPay, RecordDocument
from sync_server.audit.events import Actor
from sync_server.errors import NotFound
from sync_server.intents.desk import IntentContext, IntentDesk, Verdict
from sync_server.payments.charging import PaymentRefused, pay
from sync_server.payments.desk import PaymentsDesk
from sync_server.payments.invoices import changed_records

__all__ = ["register"]


def register(desk: IntentDesk, payments: PaymentsDesk) -> None:
    """Give `desk` the payment handler, and the refresh of changed invoices' records."""

    def decide(context: IntentContext) -> Verdict:
        return pay_invoice(context, payments)

    desk.register(IntentKind.PAYMENT_PAY, decide)
    desk.after_decisions(refresh_invoices)


def pay_invoice(context: IntentContext, payments: PaymentsDesk) -> Verdict:
    """Pay an invoice of the pushing clinic through the gateway."""
    asked = context.intent.parsed_details()
    assert isinstance(asked, PaymentPay)
    invoice_id = context.intent.subject_id
    assert invoice_id is not None  # the schema requires it
    try:
        result = pay(
            session=context.session,
            payments=payments,
            organisation_id=context.organisation_id,
            invoice_id=invoice_id,
            amount=asked.amount,
            currency=asked.currency,
            payment_method=asked.payment_method,
            idempotency_key=context.intent.id,
            now=context.now,
            clinic_id=context.clinic_id,
            intent_id=context.intent.id,
            actor=Actor.device(context.device_id),
        )
    except PaymentRefused as refused:
        return Verdict.rejected(refused.message)
    except NotFound:
        return Verdict.rejected(f"invoice {invoice_id} is not an invoice of this clinic")
    context.touched.add(("invoice", result.invoice.id))
    if result.payment.status == "failed":
        return Verdict.rejected(
            result.payment.failure_reason or "the card was declined",
            patient_id=result.invoice.patient_id,
        )
    reason = (
        "the gateway did not answer in time; the payment is processing and will be "
        "settled from the gateway's record"
        if result.payment.status == "processing"
        else None
    )
    return Verdict.accepted(result.outcome(), reason=reason)


def refresh_invoices(
    *, session: Session, clinic_id: str, touched: set[tuple[str, ...]], now: datetime, author: str
) -> list[RecordDocument]:
    """After decisions: the records of the clinic's invoices changed in the batch
    (invoices billed by other domains' handlers too)."""
    return changed_records(session=session, clinic_id=clinic_id, now=now, author=author)
