"""Payment tables: invoices and their lines, the per-organisation invoice counter,
payments and refunds, the double-entry ledger, REST idempotency keys and the gateway
webhook events applied.

The money invariants are the database's: an invoice is never paid past its total
(``paid + pending <= total``), a payment never refunded past what it captured
(``refunded <= captured``), a ledger transaction is posted once per thing it records
(unique ``kind, reference_id``), a webhook event is applied once (its id is the
primary key), and ledger postings are never changed (migration 0005 adds triggers
that refuse UPDATE and DELETE on ``ledger_postings``).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from sync_server.db import Base, Id, UTCDateTime, utcnow

__all__ = [
    "IdempotencyKey",
    "Invoice",
    "InvoiceCounter",
    "InvoiceLine",
    "LedgerPosting",
    "LedgerTransaction",
    "Payment",
    "Refund",
    "WebhookEvent",
]

Money = BigInteger().with_variant(Integer, "sqlite")
"""Integer minor units (cents)."""


class InvoiceCounter(Base):
    """The last invoice number an organisation issued: incremented by an UPDATE in
    the transaction that inserts the invoices it numbers, so numbers have no gaps."""

    __tablename__ = "invoice_counters"
    __table_args__ = (CheckConstraint("last_number >= 0", name="ck_invoice_counters_positive"),)

    organisation_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"), primary_key=True)
    last_number: Mapped[int] = mapped_column(Integer, default=0)


class Invoice(Base):
    """What a patient (or payer) owes: lines, paid, pending (payments whose outcome
    the gateway has not told yet) and refunded, in integer minor units."""

    __tablename__ = "invoices"
    __table_args__ = (
        UniqueConstraint("organisation_id", "number", name="uq_invoices_org_number"),
        CheckConstraint("total >= 0", name="ck_invoices_total"),
        CheckConstraint("paid >= 0 AND pending >= 0", name="ck_invoices_paid_pending"),
        CheckConstraint("paid + pending <= total", name="ck_invoices_not_overpaid"),
        CheckConstraint("refunded >= 0 AND refunded <= paid", name="ck_invoices_refunded"),
    )

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    organisation_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"), index=True)
    clinic_id: Mapped[str] = mapped_column(ForeignKey("clinics.id"), index=True)
    patient_id: Mapped[str | None] = mapped_column(Id, index=True)
    payer: Mapped[str | None] = mapped_column(String(200))  # a payer other than the patient
    # e.g. INV-000042; None only inside the transaction that issues it, until it is
    # numbered at the end of that transaction (`invoices.number_invoices`).
    number: Mapped[str | None] = mapped_column(String(40))
    sequence: Mapped[int | None] = mapped_column(Integer)  # the number as an integer
    status: Mapped[str] = mapped_column(String(20))  # crdt.InvoiceStatus
    currency: Mapped[str] = mapped_column(String(3))
    total: Mapped[int] = mapped_column(Money)
    paid: Mapped[int] = mapped_column(Money, default=0)
    pending: Mapped[int] = mapped_column(Money, default=0)
    refunded: Mapped[int] = mapped_column(Money, default=0)
    issued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    void_reason: Mapped[str | None] = mapped_column(String(500))
    # Bumped on every change; the synced record is rewritten until it says this one.
    version: Mapped[int] = mapped_column(Integer, default=1)
    published_version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class InvoiceLine(Base):
    """One billed thing: an order, an appointment or a caregiver visit."""

    __tablename__ = "invoice_lines"
    __table_args__ = (
        CheckConstraint("quantity >= 1", name="ck_invoice_lines_quantity"),
        CheckConstraint("unit_price >= 0", name="ck_invoice_lines_price"),
        CheckConstraint("amount = quantity * unit_price", name="ck_invoice_lines_amount"),
    )

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    invoice_id: Mapped[str] = mapped_column(ForeignKey("invoices.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(20))  # order | appointment | visit
    reference_id: Mapped[str | None] = mapped_column(Id)
    description: Mapped[str] = mapped_column(String(200))
    quantity: Mapped[int] = mapped_column(Integer)
    unit_price: Mapped[int] = mapped_column(Money)
    amount: Mapped[int] = mapped_column(Money)


class Payment(Base):
    """A charge of an invoice through the gateway, under its idempotency key (a
    device intent's id, or derived from a REST ``Idempotency-Key``)."""

    __tablename__ = "payments"
    __table_args__ = (
        CheckConstraint("amount > 0", name="ck_payments_amount"),
        CheckConstraint("captured >= 0 AND captured <= amount", name="ck_payments_captured"),
        CheckConstraint("refunded >= 0 AND refunded <= captured", name="ck_payments_refunded"),
        Index("ix_payments_status", "status"),
    )

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    organisation_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"), index=True)
    invoice_id: Mapped[str] = mapped_column(ForeignKey("invoices.id"), index=True)
    idempotency_key: Mapped[str] = mapped_column(String(100), unique=True)
    amount: Mapped[int] = mapped_column(Money)
    currency: Mapped[str] = mapped_column(String(3))
    payment_method: Mapped[str] = mapped_column(String(200))
    # processing (asked, outcome unknown) -> succeeded | failed
    status: Mapped[str] = mapped_column(String(20))
    captured: Mapped[int] = mapped_column(Money, default=0)
    refunded: Mapped[int] = mapped_column(Money, default=0)
    gateway_charge_id: Mapped[str | None] = mapped_column(String(100))
    failure_reason: Mapped[str | None] = mapped_column(String(500))
    intent_id: Mapped[str | None] = mapped_column(Id)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    settled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Refund(Base):
    """Money given back from one payment, under its own idempotency key."""

    __tablename__ = "refunds"
    __table_args__ = (CheckConstraint("amount > 0", name="ck_refunds_amount"),)

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    organisation_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"), index=True)
    payment_id: Mapped[str] = mapped_column(ForeignKey("payments.id"), index=True)
    invoice_id: Mapped[str] = mapped_column(ForeignKey("invoices.id"), index=True)
    idempotency_key: Mapped[str] = mapped_column(String(100), unique=True)
    amount: Mapped[int] = mapped_column(Money)
    status: Mapped[str] = mapped_column(String(20))  # succeeded
    gateway_refund_id: Mapped[str | None] = mapped_column(String(100))
    reason: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LedgerTransaction(Base):
    """One balanced set of postings recording one thing (an invoice issued, a payment,
    a refund, a void), at most once (unique kind and reference)."""

    __tablename__ = "ledger_transactions"
    __table_args__ = (UniqueConstraint("kind", "reference_id", name="uq_ledger_kind_reference"),)

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    organisation_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"), index=True)
    kind: Mapped[str] = mapped_column(String(20))  # invoice | payment | refund | void
    reference_id: Mapped[str] = mapped_column(Id)
    invoice_id: Mapped[str | None] = mapped_column(Id, index=True)
    currency: Mapped[str] = mapped_column(String(3))
    reverses_id: Mapped[str | None] = mapped_column(ForeignKey("ledger_transactions.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LedgerPosting(Base):
    """One leg of a transaction: a signed amount (debit positive, credit negative)
    on an account. Never updated or deleted."""

    __tablename__ = "ledger_postings"
    __table_args__ = (CheckConstraint("amount <> 0", name="ck_ledger_postings_nonzero"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    transaction_id: Mapped[str] = mapped_column(ForeignKey("ledger_transactions.id"), index=True)
    account: Mapped[str] = mapped_column(String(200), index=True)
    amount: Mapped[int] = mapped_column(Money)


class IdempotencyKey(Base):
    """A REST request's ``Idempotency-Key``, scoped by caller and route: the request's
    fingerprint, whether it is still running, and the first response, replayed to
    retries."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (
        UniqueConstraint("scope", "route", "key", name="uq_idempotency_scope_route_key"),
    )

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    scope: Mapped[str] = mapped_column(String(100))  # who: "user:<id>", "device:<id>"
    route: Mapped[str] = mapped_column(String(200))
    key: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(20))  # running | done
    status_code: Mapped[int | None] = mapped_column(Integer)
    response: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    locked_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebhookEvent(Base):
    """A gateway webhook event applied (its id: applied once)."""

    __tablename__ = "payment_webhook_events"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    kind: Mapped[str] = mapped_column(String(60))
    outcome: Mapped[str] = mapped_column(String(40))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
