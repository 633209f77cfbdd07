"""Request and response bodies of the payment routes (invoices, payments, refunds,
the ledger). Amounts are integer minor units."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "InvoiceCreate",
    "InvoiceLineIn",
    "InvoiceLinePublic",
    "InvoicePublic",
    "LedgerBalance",
    "LedgerReport",
    "PayRequest",
    "PaymentPublic",
    "RefundPublic",
    "RefundRequest",
    "VoidRequest",
]

Amount = Annotated[int, Field(ge=1, le=100_000_000)]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
IdText = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[0-9a-zA-Z._:-]+$")]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InvoiceLineIn(_In):
    """One line to bill."""

    kind: Literal["order", "appointment", "visit"]
    reference_id: IdText | None = None
    description: Annotated[str, Field(min_length=1, max_length=200)]
    quantity: Annotated[int, Field(ge=1, le=10_000)] = 1
    unit_price: Annotated[int, Field(ge=0, le=100_000_000)]


class InvoiceCreate(_In):
    """A new invoice, issued (numbered) at once."""

    clinic_id: IdText
    patient_id: IdText | None = None
    payer: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    currency: Currency
    due_at: datetime | None = None
    lines: Annotated[list[InvoiceLineIn], Field(min_length=1, max_length=200)]


class VoidRequest(_In):
    """Why an invoice is voided."""

    reason: Annotated[str, Field(max_length=500)] | None = None


class PayRequest(_In):
    """Pay (part of) an invoice with a gateway payment method token."""

    amount: Amount
    currency: Currency
    payment_method: Annotated[str, Field(min_length=1, max_length=200)]


class RefundRequest(_In):
    """Refund (part of) a payment."""

    amount: Amount
    reason: Annotated[str, Field(max_length=500)] | None = None


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class InvoiceLinePublic(_Out):
    """A line of an invoice."""

    kind: str
    reference_id: str | None
    description: str
    quantity: int
    unit_price: int
    amount: int


class PaymentPublic(_Out):
    """A payment."""

    id: str
    invoice_id: str
    amount: int
    currency: str
    status: str
    captured: int
    refunded: int
    failure_reason: str | None
    created_at: datetime
    settled_at: datetime | None


class RefundPublic(_Out):
    """A refund."""

    id: str
    payment_id: str
    invoice_id: str
    amount: int
    status: str
    reason: str | None
    created_at: datetime


class InvoicePublic(_Out):
    """An invoice with its lines, payments and refunds."""

    id: str
    number: str
    clinic_id: str
    patient_id: str | None
    payer: str | None
    status: str
    currency: str
    total: int
    paid: int
    pending: int
    refunded: int
    remaining: int
    issued_at: datetime | None
    due_at: datetime | None
    void_reason: str | None
    lines: list[InvoiceLinePublic] = []
    payments: list[PaymentPublic] = []
    refunds: list[RefundPublic] = []


class LedgerBalance(BaseModel):
    """One account's balance (debit positive)."""

    account: str
    currency: str
    balance: int


class LedgerReport(BaseModel):
    """The organisation's balances and what `verify_ledger` found wrong."""

    balances: list[LedgerBalance]
    problems: list[str]
