"""The double-entry ledger, in integer minor units: every transaction's postings sum
to zero (checked here at insert, and `verify_ledger` checks it again with a query);
postings are never changed (triggers refuse UPDATE and DELETE; a void posts a
reversal). Debits are positive, credits negative.

Accounts:

- ``receivable:patient:<id>`` (or ``receivable:payer:<name>``): what is owed;
- ``revenue:<kind>`` (order, appointment, visit): what was billed;
- ``gateway:clearing``: money the gateway captured for us;
- ``refunds``: money given back (a contra-revenue account).

What each event posts: an invoice issued debits receivable and credits revenue; a
payment debits clearing and credits receivable; a refund debits refunds and credits
clearing; a void reverses the invoice's transaction (and, on an invoice paid and
refunded in full, moves its refunds from the refunds account back onto its
receivable). So, per organisation and currency: receivable = sum(total - paid) of
invoices not void, revenue = sum total of invoices not void, clearing = sum captured -
sum refunded, refunds = sum refunded on invoices not void.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from sync_server.db import Database, new_id
from sync_server.payments.tables import (
    Invoice,
    LedgerPosting,
    LedgerTransaction,
    Payment,
    Refund,
)

__all__ = [
    "CLEARING",
    "REFUNDS",
    "balances",
    "ledger_snapshot",
    "post",
    "receivable_account",
    "revenue_account",
    "reverse",
    "verify_ledger",
]

CLEARING = "gateway:clearing"
REFUNDS = "refunds"


def receivable_account(invoice: Invoice) -> str:
    """Who owes an invoice, as an account."""
    if invoice.patient_id:
        return f"receivable:patient:{invoice.patient_id}"
    return f"receivable:payer:{invoice.payer or 'unknown'}"


def revenue_account(kind: str) -> str:
    """The revenue account of a kind of line."""
    return f"revenue:{kind}"


def post(
    *,
    session: Session,
    organisation_id: str,
    kind: str,
    reference_id: str,
    currency: str,
    postings: Sequence[tuple[str, int]],
    now: datetime,
    invoice_id: str | None = None,
    reverses_id: str | None = None,
) -> LedgerTransaction:
    """Post one balanced transaction (at most once per `kind`, `reference_id`: the
    database refuses a second).

    Raises:
        ValueError: The postings do not sum to zero, or there are none (a bug).
    """
    legs = [(account, amount) for account, amount in postings if amount != 0]
    if not legs or sum(amount for _, amount in legs) != 0:
        raise ValueError(f"unbalanced ledger transaction {kind} {reference_id}: {legs}")
    transaction = LedgerTransaction(
        id=new_id(),
        organisation_id=organisation_id,
        kind=kind,
        reference_id=reference_id,
        invoice_id=invoice_id,
        currency=currency,
        reverses_id=reverses_id,
        created_at=now,
    )
    session.add(transaction)
    session.flush()
    session.add_all(
        LedgerPosting(transaction_id=transaction.id, account=account, amount=amount)
        for account, amount in legs
    )
    session.flush()
    return transaction


def reverse(
    *, session: Session, original: LedgerTransaction, kind: str, reference_id: str, now: datetime
) -> LedgerTransaction:
    """Post the reversal of `original` (every leg negated)."""
    legs = session.execute(
        select(LedgerPosting.account, LedgerPosting.amount).where(
            LedgerPosting.transaction_id == original.id
        )
    ).all()
    return post(
        session=session,
        organisation_id=original.organisation_id,
        kind=kind,
        reference_id=reference_id,
        currency=original.currency,
        postings=[(account, -amount) for account, amount in legs],
        now=now,
        invoice_id=original.invoice_id,
        reverses_id=original.id,
    )


@contextmanager
def ledger_snapshot(*, database: Database) -> Iterator[Session]:
    """A read-only session that sees one snapshot of the database (REPEATABLE READ on
    PostgreSQL; SQLite's read transactions are snapshots): `verify_ledger` compares
    tables with each other, and must not see a payment settle halfway through."""
    with database.read() as session:
        if not database.sqlite:
            session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        yield session


def balances(*, session: Session, organisation_id: str) -> dict[tuple[str, str], int]:
    """Each account's balance, derived from the postings: {(account, currency): amount}
    (debit positive); accounts that net to zero are left out."""
    rows = session.execute(
        select(LedgerPosting.account, LedgerTransaction.currency, func.sum(LedgerPosting.amount))
        .join(LedgerTransaction, LedgerTransaction.id == LedgerPosting.transaction_id)
        .where(LedgerTransaction.organisation_id == organisation_id)
        .group_by(LedgerPosting.account, LedgerTransaction.currency)
    ).all()
    return {(account, currency): int(total) for account, currency, total in rows if total}


def verify_ledger(*, session: Session, organisation_id: str) -> list[str]:
    """What is wrong with the organisation's ledger (nothing: an empty list): every
    transaction balances, and the balances match the invoices, payments and refunds.
    Run it in one snapshot (`ledger_snapshot`) while payments may be settling."""
    problems: list[str] = []
    unbalanced = session.execute(
        select(LedgerTransaction.id, func.sum(LedgerPosting.amount))
        .join(LedgerPosting, LedgerPosting.transaction_id == LedgerTransaction.id)
        .where(LedgerTransaction.organisation_id == organisation_id)
        .group_by(LedgerTransaction.id)
        .having(func.sum(LedgerPosting.amount) != 0)
    ).all()
    problems += [f"transaction {tid} sums to {total}" for tid, total in unbalanced]
    expected: dict[tuple[str, str], int] = {}

    def add(account: str, currency: str, amount: int) -> None:
        expected[(account, currency)] = expected.get((account, currency), 0) + amount

    invoices = session.scalars(
        select(Invoice).where(Invoice.organisation_id == organisation_id, Invoice.status != "void")
    ).all()
    paid_by_invoice: dict[str, int] = {
        invoice_id: int(total)
        for invoice_id, total in session.execute(
            select(Payment.invoice_id, func.sum(Payment.captured))
            .where(Payment.organisation_id == organisation_id, Payment.status == "succeeded")
            .group_by(Payment.invoice_id)
        )
    }
    for invoice in invoices:
        add(receivable_account(invoice), invoice.currency, invoice.total - invoice.paid)
        paid = int(paid_by_invoice.get(invoice.id) or 0)
        if paid != invoice.paid:
            problems.append(f"invoice {invoice.number}: paid {invoice.paid} but payments {paid}")
    revenue = session.execute(
        select(Invoice.currency, func.sum(Invoice.total))
        .where(Invoice.organisation_id == organisation_id, Invoice.status != "void")
        .group_by(Invoice.currency)
    ).all()
    captured = session.execute(
        select(Payment.currency, func.sum(Payment.captured), func.sum(Payment.refunded))
        .where(Payment.organisation_id == organisation_id, Payment.status == "succeeded")
        .group_by(Payment.currency)
    ).all()
    refunded = session.execute(
        select(Payment.currency, func.sum(Refund.amount))
        .join(Payment, Payment.id == Refund.payment_id)
        .where(Refund.organisation_id == organisation_id, Refund.status == "succeeded")
        .group_by(Payment.currency)
    ).all()
    for currency, total, _refunded in captured:
        add(CLEARING, currency, int(total))
    refunded_kept = session.execute(
        select(Payment.currency, func.sum(Refund.amount))
        .join(Payment, Payment.id == Refund.payment_id)
        .join(Invoice, Invoice.id == Refund.invoice_id)
        .where(
            Refund.organisation_id == organisation_id,
            Refund.status == "succeeded",
            Invoice.status != "void",
        )
        .group_by(Payment.currency)
    ).all()
    for currency, total in refunded:
        add(CLEARING, currency, -int(total))
    for currency, total in refunded_kept:
        add(REFUNDS, currency, int(total))
    for currency, _total, by_payments in captured:
        refund_rows = {c: int(t) for c, t in refunded}
        if int(by_payments) != refund_rows.get(currency, 0):
            problems.append(f"payments say {by_payments} refunded, refunds say {refund_rows}")
    actual = balances(session=session, organisation_id=organisation_id)
    revenue_actual: dict[str, int] = {}
    for (account, currency), amount in actual.items():
        if account.startswith("revenue:"):
            revenue_actual[currency] = revenue_actual.get(currency, 0) - amount
    for currency, total in revenue:
        if revenue_actual.pop(currency, 0) != int(total):
            problems.append(f"revenue in {currency} does not match the invoices' totals {total}")
    problems += [f"revenue in {c} without invoices" for c, v in revenue_actual.items() if v]
    others = {k: v for k, v in actual.items() if not k[0].startswith("revenue:")}
    wanted = {k: v for k, v in expected.items() if v}
    if others != wanted:
        keys = sorted(set(others) | set(wanted))
        problems += [
            f"{account} {currency}: ledger {others.get((account, currency), 0)}, "
            f"expected {wanted.get((account, currency), 0)}"
            for account, currency in keys
            if others.get((account, currency), 0) != wanted.get((account, currency), 0)
        ]
    return problems
