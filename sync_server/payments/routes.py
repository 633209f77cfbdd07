"""Routes: invoices, payments and refunds as staff handle them, the ledger's
balances, and the gateway's signed webhooks.

Staff and admins act (403 for clinicians and devices); everything is scoped to the
caller's organisation and clinics (outside: 404 as for a missing one). Paying and
refunding need an ``Idempotency-Key`` header (400 without it; 422 for the same key
with another payload; 409 while the first request with it runs); a retry gets the
first response again, with ``Idempotent-Replayed: true``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, status
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from sync_server.audit.events import Actor
from sync_server.audit.services import record_read
from sync_server.db import utcnow
from sync_server.deps import ArtifactKeyDep, DbDep, StaffCaller
from sync_server.errors import (
    Conflict,
    Invalid,
    NotFound,
    ServerError,
)
from sync_server.identity.principals import Principal
from sync_server.openapi import GATEWAY_SIGNATURE, documents
from sync_server.payments.charging import (
    PaymentResult,
    apply_event,
    derived_key,
    pay,
    reconcile,
    staff_refund,
)
from sync_server.payments.desk import PaymentsDesk
from sync_server.payments.idempotency import Stored, run_once
from sync_server.payments.invoices import (
    Charge,
    bill,
    invoice_in_scope,
    invoice_parts,
    list_invoices,
    payment_in_scope,
    publish_changed,
    require_payment_handler,
    void_invoice,
)
from sync_server.payments.ledger import balances, ledger_snapshot, verify_ledger
from sync_server.payments.schemas import (
    InvoiceCreate,
    InvoiceLinePublic,
    InvoicePublic,
    LedgerBalance,
    LedgerReport,
    PaymentPublic,
    PayRequest,
    RefundPublic,
    RefundRequest,
    VoidRequest,
)
from sync_server.payments.tables import Invoice
from sync_server.payments.webhooks import SIGNATURE_HEADER, verified_event
from sync_server.statuses import status_code_of
from sync_server.sync.authorship import ServerSigner

__all__ = ["IdempotencyKeyHeader", "idempotent", "router"]

router = APIRouter(prefix="/v1", tags=["payments"])

IdempotencyKeyHeader = Annotated[
    str | None,
    Header(alias="Idempotency-Key", description="Required: one key per intended operation."),
]
_IDEMPOTENT: dict[int | str, dict[str, Any]] = {
    409: {
        "description": "`idempotency_key_in_use`: the key was used for another request, "
        "or its first request is still running; or the state refuses it."
    }
}
"""What every route run through `idempotent` may answer besides its own refusals."""


def _payments(request: Request) -> PaymentsDesk:
    desk = request.app.state.payments
    assert isinstance(desk, PaymentsDesk)
    return desk


def _error(error: ServerError) -> Stored:
    return Stored(
        status_code_of(error),
        {"error": {"code": error.code, "message": error.message}, **error.details()},
    )


def idempotent(
    *,
    request: Request,
    caller: Principal,
    db: DbDep,
    key: str | None,
    payload: Any,
    work: Callable[[Session], Stored],
) -> JSONResponse:
    """Run `work` once per caller, route and ``Idempotency-Key`` (see the module); for
    any POST route that must not run twice.

    Raises:
        Invalid: ``idempotency_key_missing`` (400): no key, or a bad one.
    """
    if not key or len(key) > 255 or not key.isprintable():
        raise Invalid(
            "this request needs an Idempotency-Key header (1-255 printable characters)",
            code="idempotency_key_missing",
        )
    route = request.scope.get("route")
    stored = run_once(
        database=db,
        scope=f"{caller.kind}:{caller.id}",
        route=f"{request.method} {getattr(route, 'path', request.url.path)}",
        key=key,
        payload={"path": request.path_params, "body": payload},
        work=work,
        error_response=_error,
    )
    headers = {"Idempotent-Replayed": "true"} if stored.replayed else {}
    return JSONResponse(stored.body, status_code=stored.status_code, headers=headers)


def _invoice_public(session: Session, invoice: Invoice) -> InvoicePublic:
    lines, payments, refunds = invoice_parts(session=session, invoice_id=invoice.id)
    return InvoicePublic.model_validate(
        {
            **{
                c: getattr(invoice, c)
                for c in (
                    "id",
                    "number",
                    "clinic_id",
                    "patient_id",
                    "payer",
                    "status",
                    "currency",
                    "total",
                    "paid",
                    "pending",
                    "refunded",
                    "issued_at",
                    "due_at",
                    "void_reason",
                )
            },
            "remaining": invoice.total - invoice.paid,
            "lines": [InvoiceLinePublic.model_validate(x) for x in lines],
            "payments": [PaymentPublic.model_validate(x) for x in payments],
            "refunds": [RefundPublic.model_validate(x) for x in refunds],
        }
    )


@router.post(
    "/invoices",
    response_model=InvoicePublic,
    status_code=status.HTTP_201_CREATED,
    summary="Issue an invoice",
    responses={409: {"description": "`invoice_numbering`: numbering raced; retry."}},
)
def post_invoice(
    body: InvoiceCreate, caller: StaffCaller, db: DbDep, key: ArtifactKeyDep
) -> InvoicePublic:
    """Issue an invoice with lines (orders, appointments, visits), numbered next in the
    organisation without gaps, posted to the ledger and synced to the clinic."""
    require_payment_handler(caller)
    if not caller.can_see_clinic(body.clinic_id):
        raise NotFound("no such clinic", code="not_found")
    signer = ServerSigner(key)
    with db.write() as session:
        now = _now()
        invoice = bill(
            session=session,
            organisation_id=caller.organisation_id,
            clinic_id=body.clinic_id,
            patient_id=body.patient_id,
            payer=body.payer,
            charges=[
                Charge(
                    x.kind, x.reference_id, x.description, x.quantity, x.unit_price, body.currency
                )
                for x in body.lines
            ],
            now=now,
            due_at=body.due_at,
            actor=Actor.of(caller),
        )
        publish_changed(session=session, signer=signer, now=now)
        return _invoice_public(session, invoice)


@router.get("/invoices", response_model=list[InvoicePublic], summary="List invoices")
def get_invoices(
    caller: StaffCaller,
    db: DbDep,
    clinic_id: str | None = None,
    patient_id: str | None = None,
    state: str | None = None,
    limit: int = 100,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
) -> list[InvoicePublic]:
    """Invoices the caller may see, newest first."""
    with db.read() as session:
        found = list_invoices(
            session=session,
            principal=caller,
            clinic_id=clinic_id,
            patient_id=patient_id,
            status=state,
            limit=max(1, min(limit, 500)),
            offset=max(0, offset),
        )
        invoices = [_invoice_public(session, i) for i in found]
    with db.write() as session:
        record_read(
            session=session,
            caller=caller,
            collection="invoices",
            records=[(i.id, i.patient_id) for i in invoices],
            clinic_id=clinic_id,
        )
    return invoices


@router.get("/invoices/{invoice_id}", response_model=InvoicePublic, summary="Read an invoice")
def get_invoice(invoice_id: str, caller: StaffCaller, db: DbDep) -> InvoicePublic:
    """One invoice with its lines, payments and refunds."""
    with db.write() as session:
        invoice = invoice_in_scope(session=session, principal=caller, invoice_id=invoice_id)
        record_read(
            session=session,
            caller=caller,
            collection="invoices",
            records=[(invoice.id, invoice.patient_id)],
            clinic_id=invoice.clinic_id,
        )
        return _invoice_public(session, invoice)


@router.post(
    "/invoices/{invoice_id}/void",
    response_model=InvoicePublic,
    summary="Void an invoice",
    responses={409: {"description": "`not_voidable`: only an open invoice with nothing paid is."}},
)
def post_void(
    invoice_id: str, body: VoidRequest, caller: StaffCaller, db: DbDep, key: ArtifactKeyDep
) -> InvoicePublic:
    """Void an open invoice nothing was paid on (409 ``not_voidable`` otherwise)."""
    require_payment_handler(caller)
    with db.write() as session:
        invoice = invoice_in_scope(session=session, principal=caller, invoice_id=invoice_id)
        now = _now()
        if not void_invoice(
            session=session,
            invoice_id=invoice.id,
            reason=body.reason,
            now=now,
            actor=Actor.of(caller),
        ):
            raise Conflict(
                f"invoice {invoice.number} is {invoice.status}"
                + (" with payments" if invoice.paid or invoice.pending else "")
                + "; only an open invoice with nothing paid can be voided",
                code="not_voidable",
            )
        publish_changed(session=session, signer=ServerSigner(key), now=now)
        session.refresh(invoice)
        return _invoice_public(session, invoice)


@router.post(
    "/invoices/{invoice_id}/pay",
    summary="Pay an invoice",
    responses={
        **_IDEMPOTENT,
        402: {"description": "`card_declined`: the gateway declined; `payment` says how."},
    },
)
def post_pay(
    invoice_id: str,
    body: PayRequest,
    request: Request,
    caller: StaffCaller,
    db: DbDep,
    key: ArtifactKeyDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JSONResponse:
    """Charge a payment method for (part of) an invoice through the gateway: 200 with
    the payment (``succeeded``, or ``processing`` after a gateway timeout), 402
    ``card_declined`` with the reason, 409 ``payment_refused`` (more than is owed, the
    wrong currency, an invoice not open). Needs ``Idempotency-Key``."""
    require_payment_handler(caller)
    payments = _payments(request)

    def work(session: Session) -> Stored:
        invoice_in_scope(session=session, principal=caller, invoice_id=invoice_id)
        now = _now()
        result = pay(
            session=session,
            payments=payments,
            organisation_id=caller.organisation_id,
            invoice_id=invoice_id,
            amount=body.amount,
            currency=body.currency,
            payment_method=body.payment_method,
            idempotency_key=derived_key("rest", caller.id, str(idempotency_key)),
            now=now,
            actor=Actor.of(caller),
        )
        publish_changed(session=session, signer=ServerSigner(key), now=now)
        return _paid(result)

    return idempotent(
        request=request,
        caller=caller,
        db=db,
        key=idempotency_key,
        payload=body.model_dump(mode="json"),
        work=work,
    )


def _paid(result: PaymentResult) -> Stored:
    outcome = result.outcome()
    if result.payment.status == "failed":
        reason = result.payment.failure_reason or "the card was declined"
        return Stored(
            402, {"error": {"code": "card_declined", "message": reason}, "payment": outcome}
        )
    return Stored(200, outcome)


@router.get("/payments/{payment_id}", response_model=PaymentPublic, summary="Read a payment")
def get_payment(payment_id: str, caller: StaffCaller, db: DbDep) -> PaymentPublic:
    """One payment."""
    with db.write() as session:
        payment = payment_in_scope(session=session, principal=caller, payment_id=payment_id)
        invoice = session.get(Invoice, payment.invoice_id)
        record_read(
            session=session,
            caller=caller,
            collection="payments",
            records=[(payment.id, invoice.patient_id if invoice else None)],
            clinic_id=invoice.clinic_id if invoice else None,
        )
        return PaymentPublic.model_validate(payment)


@router.post("/payments/{payment_id}/refund", summary="Refund a payment", responses=_IDEMPOTENT)
def post_refund(
    payment_id: str,
    body: RefundRequest,
    request: Request,
    caller: StaffCaller,
    db: DbDep,
    key: ArtifactKeyDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JSONResponse:
    """Refund (part of) a succeeded payment: never more than captured minus refunded
    (409 ``refund_too_large``). Needs ``Idempotency-Key``."""
    require_payment_handler(caller)
    payments = _payments(request)

    def work(session: Session) -> Stored:
        made = staff_refund(
            session=session,
            payments=payments,
            principal=caller,
            payment_id=payment_id,
            amount=body.amount,
            reason=body.reason,
            request_key=str(idempotency_key),
            signer=ServerSigner(key),
            now=_now(),
        )
        return Stored(200, RefundPublic.model_validate(made).model_dump(mode="json"))

    return idempotent(
        request=request,
        caller=caller,
        db=db,
        key=idempotency_key,
        payload=body.model_dump(mode="json"),
        work=work,
    )


@router.post("/payments/{payment_id}/reconcile", response_model=PaymentPublic, summary="Reconcile")
def post_reconcile(
    payment_id: str, request: Request, caller: StaffCaller, db: DbDep, key: ArtifactKeyDep
) -> PaymentPublic:
    """Settle a ``processing`` payment from the gateway's record (a status query,
    never a new charge)."""
    require_payment_handler(caller)
    with db.write() as session:
        payment_in_scope(session=session, principal=caller, payment_id=payment_id)
        now = _now()
        payment = reconcile(
            session=session, payments=_payments(request), payment_id=payment_id, now=now
        )
        publish_changed(session=session, signer=ServerSigner(key), now=now)
        return PaymentPublic.model_validate(payment)


@router.get("/ledger", response_model=LedgerReport, summary="Ledger balances")
def get_ledger(caller: StaffCaller, db: DbDep) -> LedgerReport:
    """Every account's balance derived from the postings, and whatever does not add
    up (unbalanced transactions, balances that differ from the invoices)."""
    require_payment_handler(caller)
    with ledger_snapshot(database=db) as session:
        found = balances(session=session, organisation_id=caller.organisation_id)
        problems = verify_ledger(session=session, organisation_id=caller.organisation_id)
    return LedgerReport(
        balances=[
            LedgerBalance(account=a, currency=c, balance=b) for (a, c), b in sorted(found.items())
        ],
        problems=problems,
    )


@documents(
    security=(GATEWAY_SIGNATURE,),
    errors={401: "A bad or stale signature (`bad_signature`)."},
)
async def _gateway_signature(request: Request) -> str | None:
    """The gateway's signature header, checked with the body by `verified_event`."""
    return request.headers.get(SIGNATURE_HEADER)


GatewaySignature = Annotated[str | None, Depends(_gateway_signature)]


@router.post(
    "/payments/webhooks",
    summary="Gateway webhook",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    },
)
async def post_webhook(
    request: Request, signature: GatewaySignature, db: DbDep, key: ArtifactKeyDep
) -> dict[str, str]:
    """A signed gateway event (``Coherency-Signature: t=...,v1=...``): 400 malformed,
    401 a bad or stale signature; applied once per event id (a redelivery answers
    ``duplicate``)."""
    body = await request.body()
    payments = _payments(request)
    event = verified_event(
        secret=payments.webhook_secret,
        body=body,
        header=signature,
        now=int(time.time()),
    )

    def apply(session: Session) -> str:
        now = _now()
        outcome = apply_event(session=session, payments=payments, event=event, now=now)
        publish_changed(session=session, signer=ServerSigner(key), now=now)
        return outcome

    outcome = await run_in_threadpool(db.write_retrying, apply)
    return {"event_id": event.id, "outcome": outcome}


def _now() -> datetime:
    return utcnow()
