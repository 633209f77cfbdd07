"""Invoices: billing other domains' things (`bill`), numbering without gaps per
organisation, voiding, reading, and the read-only `crdt.Invoice` record each invoice
syncs down as to its clinic.

Gapless: the number comes from the organisation's `InvoiceCounter` row, incremented
by an UPDATE in the transaction that inserts the invoice. The UPDATE locks the row
until that transaction ends (PostgreSQL row lock; SQLite's one writer), so concurrent
creators take numbers one after another, and a rolled-back invoice rolls its number
back with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import event, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from crdt import Invoice as InvoiceRecord
from crdt import InvoiceStatus, RecordDocument, invoice_record_id
from sync_server.audit.events import OPERATIONS, Actor, InvoiceIssued, InvoiceVoided
from sync_server.audit.services import record_event
from sync_server.db import new_id, rowcount
from sync_server.errors import Conflict, Forbidden, Invalid, NotFound
from sync_server.identity.principals import Principal
from sync_server.identity.tables import Clinic
from sync_server.payments.ledger import (
    REFUNDS,
    post,
    receivable_account,
    revenue_account,
    reverse,
)
from sync_server.payments.tables import (
    Invoice,
    InvoiceCounter,
    InvoiceLine,
    LedgerTransaction,
    Payment,
    Refund,
)
from sync_server.sync.authorship import ServerSigner
from sync_server.sync.documents import upserted_record, write_documents

__all__ = [
    "LINE_KINDS",
    "PAYMENT_HANDLERS",
    "Charge",
    "bill",
    "changed_records",
    "invoice_in_scope",
    "invoice_parts",
    "invoice_record",
    "list_invoices",
    "mark_changed",
    "number_invoices",
    "payment_in_scope",
    "publish_changed",
    "publish_stale",
    "require_payment_handler",
    "void_invoice",
]

LINE_KINDS = frozenset({"order", "appointment", "visit"})
"""What an invoice line may bill."""

_CHANGED = "payments.changed_invoices"
_UNNUMBERED = "payments.unnumbered_invoices"  # issued in this transaction, in order


@dataclass(frozen=True, slots=True)
class Charge:
    """One thing to bill: `quantity` x `unit_price` minor units of `currency`."""

    kind: str  # order | appointment | visit
    reference_id: str | None
    description: str
    quantity: int
    unit_price: int
    currency: str


def mark_changed(*, session: Session, invoice: Invoice) -> None:
    """Note that `invoice` changed: its synced record is to be rewritten."""
    session.execute(
        update(Invoice)
        .where(Invoice.id == invoice.id)
        .values(version=Invoice.version + 1)
        .execution_options(synchronize_session=False)
    )
    session.info.setdefault(_CHANGED, set()).add(invoice.id)


def bill(
    *,
    session: Session,
    organisation_id: str,
    clinic_id: str,
    patient_id: str | None,
    charges: Sequence[Charge],
    now: datetime,
    due_at: datetime | None = None,
    payer: str | None = None,
    actor: Actor | None = None,
) -> Invoice:
    """Issue an invoice of `charges` to `patient_id` (or `payer`) at `clinic_id` and
    post it to the ledger, in the caller's transaction. Its number, next in the
    organisation, is given at the end of that transaction (`number_invoices`, run by
    the record writers and before commit), so the organisation's counter row is
    locked only for the transaction's last moments.

    Raises:
        Invalid: ``bad_charges``: no charges, an unknown kind, a bad quantity or
            price, mixed currencies; ``no_payer``: neither patient nor payer.
        NotFound: The clinic is not the organisation's.
    """
    _check_charges(charges)
    if not patient_id and not payer:
        raise Invalid("an invoice needs a patient or a payer", code="no_payer")
    clinic = session.get(Clinic, clinic_id)
    if clinic is None or clinic.organisation_id != organisation_id:
        raise NotFound("no such clinic", code="not_found")
    total = sum(c.quantity * c.unit_price for c in charges)
    invoice = Invoice(
        id=new_id(),
        organisation_id=organisation_id,
        clinic_id=clinic_id,
        patient_id=patient_id,
        payer=payer,
        number=None,  # at the end of the transaction: `number_invoices`
        sequence=None,
        status=str(InvoiceStatus.OPEN if total else InvoiceStatus.PAID),
        currency=charges[0].currency,
        total=total,
        paid=0,
        pending=0,
        refunded=0,
        issued_at=now,
        due_at=due_at,
        version=0,
        published_version=0,
        created_at=now,
        updated_at=now,
    )
    session.add(invoice)
    session.info.setdefault(_UNNUMBERED, []).append(invoice.id)
    session.add_all(
        InvoiceLine(
            id=new_id(),
            invoice_id=invoice.id,
            position=n,
            kind=c.kind,
            reference_id=c.reference_id,
            description=c.description,
            quantity=c.quantity,
            unit_price=c.unit_price,
            amount=c.quantity * c.unit_price,
        )
        for n, c in enumerate(charges)
    )
    session.flush()
    if total:
        by_kind: dict[str, int] = {}
        for c in charges:
            by_kind[c.kind] = by_kind.get(c.kind, 0) + c.quantity * c.unit_price
        post(
            session=session,
            organisation_id=organisation_id,
            kind="invoice",
            reference_id=invoice.id,
            currency=invoice.currency,
            postings=[
                (receivable_account(invoice), total),
                *((revenue_account(kind), -amount) for kind, amount in sorted(by_kind.items())),
            ],
            now=now,
            invoice_id=invoice.id,
        )
    mark_changed(session=session, invoice=invoice)
    record_event(
        session=session,
        event=InvoiceIssued(
            actor=actor or Actor("system"),
            clinic_id=clinic_id,
            patient_ids=_patients(invoice),
            purpose=OPERATIONS,
            invoice_id=invoice.id,
            total=total,
        ),
    )
    return invoice


def _patients(invoice: Invoice) -> tuple[str, ...]:
    return () if invoice.patient_id is None else (invoice.patient_id,)


def void_invoice(
    *,
    session: Session,
    invoice_id: str,
    reason: str | None,
    now: datetime,
    actor: Actor | None = None,
) -> bool:
    """Void an open invoice on which nothing is kept: nothing paid, or everything paid
    refunded, and nothing being paid. Its ledger transaction is reversed, and refunds
    already given on it are moved off the refunds account onto the receivable they
    paid back (nothing was billed, so nothing was refunded of revenue). Returns False
    (and changes nothing) otherwise."""
    invoice = session.get(Invoice, invoice_id)
    if invoice is None:
        return False
    done = session.execute(
        update(Invoice)
        .where(
            Invoice.id == invoice_id,
            Invoice.status == str(InvoiceStatus.OPEN),
            Invoice.paid == Invoice.refunded,
            Invoice.pending == 0,
        )
        .values(status=str(InvoiceStatus.VOID), void_reason=reason, updated_at=now)
    )
    if rowcount(done) != 1:
        return False
    session.refresh(invoice)
    issued = session.scalar(
        select(LedgerTransaction).where(
            LedgerTransaction.kind == "invoice", LedgerTransaction.reference_id == invoice.id
        )
    )
    if issued is not None:
        reverse(session=session, original=issued, kind="void", reference_id=invoice.id, now=now)
    if invoice.refunded:
        post(
            session=session,
            organisation_id=invoice.organisation_id,
            kind="void-refunds",
            reference_id=invoice.id,
            currency=invoice.currency,
            postings=[
                (receivable_account(invoice), invoice.refunded),
                (REFUNDS, -invoice.refunded),
            ],
            now=now,
            invoice_id=invoice.id,
        )
    mark_changed(session=session, invoice=invoice)
    record_event(
        session=session,
        event=InvoiceVoided(
            actor=actor or Actor("system"),
            clinic_id=invoice.clinic_id,
            patient_ids=_patients(invoice),
            purpose=OPERATIONS,
            invoice_id=invoice.id,
        ),
    )
    return True


def invoice_in_scope(*, session: Session, principal: Principal, invoice_id: str) -> Invoice:
    """The invoice, if it is in the caller's clinics.

    Raises:
        NotFound: No such invoice in scope (as for a missing one).
    """
    invoice = session.get(Invoice, invoice_id)
    if (
        invoice is None
        or invoice.organisation_id != principal.organisation_id
        or not principal.can_see_clinic(invoice.clinic_id)
    ):
        raise NotFound("no such invoice", code="not_found")
    return invoice


def payment_in_scope(*, session: Session, principal: Principal, payment_id: str) -> Payment:
    """The payment, if its invoice is in the caller's clinics.

    Raises:
        NotFound: No such payment in scope (as for a missing one).
    """
    payment = session.get(Payment, payment_id)
    if payment is not None:
        invoice = session.get(Invoice, payment.invoice_id)
        if (
            invoice is not None
            and invoice.organisation_id == principal.organisation_id
            and principal.can_see_clinic(invoice.clinic_id)
        ):
            return payment
    raise NotFound("no such payment", code="not_found")


PAYMENT_HANDLERS = frozenset({"staff", "admin"})
"""The roles that handle invoices, payments and refunds (clinicians do not)."""


def require_payment_handler(principal: Principal) -> None:
    """Refuse a caller whose role does not handle payments.

    Raises:
        Forbidden: ``forbidden``: a clinician, a device.
    """
    if principal.role not in PAYMENT_HANDLERS:
        raise Forbidden("only staff and admins handle payments", code="forbidden")


def invoice_parts(
    *, session: Session, invoice_id: str
) -> tuple[list[InvoiceLine], list[Payment], list[Refund]]:
    """An invoice's lines, payments and refunds, in order."""
    lines = session.scalars(
        select(InvoiceLine)
        .where(InvoiceLine.invoice_id == invoice_id)
        .order_by(InvoiceLine.position)
    ).all()
    payments = session.scalars(
        select(Payment).where(Payment.invoice_id == invoice_id).order_by(Payment.created_at)
    ).all()
    refunds = session.scalars(
        select(Refund).where(Refund.invoice_id == invoice_id).order_by(Refund.created_at)
    ).all()
    return list(lines), list(payments), list(refunds)


def list_invoices(
    *,
    session: Session,
    principal: Principal,
    clinic_id: str | None = None,
    patient_id: str | None = None,
    status: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[Invoice]:
    """Invoices the caller may see, newest number first."""
    query = select(Invoice).where(Invoice.organisation_id == principal.organisation_id)
    if not principal.organisation_wide:
        query = query.where(Invoice.clinic_id == principal.clinic_id)
    if clinic_id:
        query = query.where(Invoice.clinic_id == clinic_id)
    if patient_id:
        query = query.where(Invoice.patient_id == patient_id)
    if status:
        query = query.where(Invoice.status == status)
    query = query.order_by(Invoice.sequence.desc()).limit(limit).offset(offset)
    return list(session.scalars(query))


def invoice_record(
    *, session: Session, invoice: Invoice, now: datetime, author: str
) -> RecordDocument | None:
    """The invoice's synced record brought up to date (None: it already says it)."""
    lines, payments, refunds = invoice_parts(session=session, invoice_id=invoice.id)
    values: dict[str, Any] = {
        "number": invoice.number,
        "patient_id": invoice.patient_id,
        "status": invoice.status,
        "currency": invoice.currency,
        "total": invoice.total,
        "paid": invoice.paid,
        "refunded": invoice.refunded,
        "issued_at": invoice.issued_at.isoformat() if invoice.issued_at else None,
        "due_at": invoice.due_at.isoformat() if invoice.due_at else None,
        "lines": [
            {
                "kind": line.kind,
                "reference_id": line.reference_id,
                "description": line.description,
                "quantity": line.quantity,
                "unit_price": line.unit_price,
                "amount": line.amount,
            }
            for line in lines
        ],
        "payments": [
            *(
                {
                    "id": p.id,
                    "kind": "payment",
                    "amount": p.amount,
                    "status": p.status,
                    "at": p.created_at.isoformat(),
                }
                for p in payments
            ),
            *(
                {
                    "id": r.id,
                    "kind": "refund",
                    "amount": r.amount,
                    "status": r.status,
                    "at": r.created_at.isoformat(),
                }
                for r in refunds
            ),
        ],
    }
    return upserted_record(
        session=session,
        schema=InvoiceRecord,
        record_id=invoice_record_id(invoice.id),
        clinic_id=invoice.clinic_id,
        values=values,
        now=now,
        author=author,
    )


def changed_records(
    *, session: Session, clinic_id: str, now: datetime, author: str
) -> list[RecordDocument]:
    """The records of `clinic_id`'s invoices changed in this transaction (an
    `AfterDecisions` hook's part); others stay for `publish_changed`/`publish_stale`."""
    number_invoices(session=session)
    ids: set[str] = session.info.get(_CHANGED, set())
    records: list[RecordDocument] = []
    for invoice_id in sorted(ids):
        invoice = session.get(Invoice, invoice_id)
        if invoice is None or invoice.clinic_id != clinic_id:
            continue
        record = invoice_record(session=session, invoice=invoice, now=now, author=author)
        if record is not None:
            records.append(record)
        _published(session, invoice_id)
        ids.discard(invoice_id)
    return records


def publish_changed(*, session: Session, signer: ServerSigner, now: datetime) -> int:
    """Write the records of every invoice changed in this transaction; returns how many."""
    number_invoices(session=session)
    ids: set[str] = session.info.get(_CHANGED, set())
    written = 0
    by_clinic: dict[str, list[RecordDocument]] = {}
    for invoice_id in sorted(ids):
        invoice = session.get(Invoice, invoice_id)
        if invoice is None:
            continue
        record = invoice_record(session=session, invoice=invoice, now=now, author=signer.device_id)
        if record is not None:
            by_clinic.setdefault(invoice.clinic_id, []).append(record)
        _published(session, invoice_id)
    ids.clear()
    for clinic_id, records in sorted(by_clinic.items()):
        write_documents(session=session, clinic_id=clinic_id, documents=records, signer=signer)
        written += len(records)
    session.flush()
    return written


def publish_stale(
    *, session: Session, signer: ServerSigner, now: datetime, limit: int = 500
) -> int:
    """Housekeeping: write the records of invoices whose record is behind (changed in
    a transaction that could not write their clinic's feed)."""
    stale = session.scalars(
        select(Invoice.id).where(Invoice.published_version != Invoice.version).limit(limit)
    ).all()
    session.info.setdefault(_CHANGED, set()).update(stale)
    return publish_changed(session=session, signer=signer, now=now)


def _published(session: Session, invoice_id: str) -> None:
    session.execute(
        update(Invoice)
        .where(Invoice.id == invoice_id)
        .values(published_version=Invoice.version)
        .execution_options(synchronize_session=False)
    )


def _check_charges(charges: Sequence[Charge]) -> None:
    if not charges:
        raise Invalid("an invoice needs at least one line", code="bad_charges")
    currencies = {c.currency for c in charges}
    if len(currencies) != 1:
        raise Invalid("an invoice's lines must share one currency", code="bad_charges")
    for c in charges:
        if c.kind not in LINE_KINDS:
            raise Invalid(
                f"an invoice line bills an order, appointment or visit, not {c.kind!r}",
                code="bad_charges",
            )
        if c.quantity < 1 or c.unit_price < 0 or c.quantity * c.unit_price > 10**12:
            raise Invalid(
                "a line's quantity must be at least 1 and its price not negative",
                code="bad_charges",
            )
        if len(c.currency) != 3 or not c.currency.isupper():
            raise Invalid("a currency is a 3-letter ISO code", code="bad_charges")


def number_invoices(*, session: Session) -> None:
    """Number the invoices issued in this transaction that are still in it (one
    rolled back with a savepoint takes no number), in the order they were issued,
    next in each organisation. Runs before every commit (`_number_before_commit`);
    the record writers run it first too, since a record shows the number."""
    pending: list[str] = session.info.pop(_UNNUMBERED, [])
    if not pending:
        return
    session.flush()
    order = {invoice_id: n for n, invoice_id in enumerate(pending)}
    kept = session.execute(
        select(Invoice.id, Invoice.organisation_id).where(
            Invoice.id.in_(pending), Invoice.number.is_(None)
        )
    ).all()
    by_organisation: dict[str, list[str]] = {}
    for invoice_id, organisation_id in sorted(kept, key=lambda row: order[row[0]]):
        by_organisation.setdefault(organisation_id, []).append(invoice_id)
    for organisation_id, ids in sorted(by_organisation.items()):
        last = _take_numbers(session, organisation_id, len(ids))
        for sequence, invoice_id in enumerate(ids, start=last - len(ids) + 1):
            session.execute(
                update(Invoice)
                .where(Invoice.id == invoice_id)
                .values(number=f"INV-{sequence:06d}", sequence=sequence)
            )


# First of the before-commit hooks (insert=True): the audit log seals last, so the
# counter row is always locked before the log's head, never after (no deadlock).
@event.listens_for(Session, "before_commit", insert=True)
def _number_before_commit(session: Session) -> None:
    if session.info.get(_UNNUMBERED):
        number_invoices(session=session)


def _take_numbers(session: Session, organisation_id: str, count: int) -> int:
    """Take the organisation's next `count` invoice numbers in this transaction
    (locked until it ends; given back if it rolls back); returns the last."""
    for _ in range(3):
        number = session.execute(
            update(InvoiceCounter)
            .where(InvoiceCounter.organisation_id == organisation_id)
            .values(last_number=InvoiceCounter.last_number + count)
            .returning(InvoiceCounter.last_number)
            .execution_options(synchronize_session=False)
        ).scalar()
        if number is not None:
            return int(number)
        savepoint = session.begin_nested()
        try:
            session.add(InvoiceCounter(organisation_id=organisation_id, last_number=0))
            savepoint.commit()
        except IntegrityError:  # another creator made the row first: use it
            savepoint.rollback()
    raise Conflict("could not number the invoice; retry", code="invoice_numbering")
