"""`client.payments`: a patient's invoices as synced down, and paying them.

Invoices are server-owned records synced down read-only (`Invoice`: what is owed,
what was paid and refunded). Paying writes an intent (``payment.pay``, an immutable
record under a new UUIDv7, which is also the payment's idempotency key: the server
charges it once however often it is pushed) and returns its `IntentStatus`:
``pending`` until the server's decision syncs down. Only the server charges the
gateway; the device refuses offline what cannot be right (more than is left to pay on
the invoice as last synced, another currency).
"""

from __future__ import annotations

import builtins
from typing import Any

from crdt import (
    IntentKind,
    Invoice,
    InvoiceStatus,
    PaymentPay,
    invoice_record_id,
)
from edge_sdk._collections import Collection
from edge_sdk._errors import InvalidArgumentError, RecordNotFoundError, RecordValidationError
from edge_sdk._intents import PENDING, IntentsCollection, IntentStatus

__all__ = ["InvoicesCollection", "Payments", "balance_due", "invoice_id_of"]

_RECORD_PREFIX = invoice_record_id("")
_SETTLED = frozenset({InvoiceStatus.PAID, InvoiceStatus.VOID, InvoiceStatus.REFUNDED})


def invoice_id_of(invoice: Invoice) -> str:
    """The server's id of `invoice` (what a payment names), from its record id."""
    return invoice.id.removeprefix(_RECORD_PREFIX)


def balance_due(invoice: Invoice) -> int:
    """What is left to pay on `invoice` as synced, in minor units: its total less what
    was paid, and nothing on an invoice that is paid, void or refunded. (A refund
    returns money; it does not make the invoice owed again.)"""
    if invoice.status in _SETTLED:
        return 0
    return max(invoice.total - invoice.paid, 0)


class InvoicesCollection(Collection[Invoice]):
    """Invoices (server-owned, read-only on a device), by patient, status and number."""


class Payments:
    """Invoices, and payments the server decides.

    `pay` returns at once with the intent ``pending`` (see `EdgeClient.intent_status`
    and `EdgeClient.on_decision` for the answer); the invoice as synced afterwards
    shows the payment.
    """

    def __init__(self, invoices: InvoicesCollection, intents: IntentsCollection) -> None:
        self._invoices = invoices
        self._intents = intents

    # ---------------------------------------------------------------- invoices
    def invoices(
        self, patient_id: str | None = None, status: InvoiceStatus | str | None = None
    ) -> builtins.list[Invoice]:
        """The invoices as last synced, by number: only `patient_id`'s, only in
        `status` (``"draft"``, ``"open"``, ``"paid"``, ``"void"``, ``"refunded"``).

        Raises:
            InvalidArgumentError: An unknown status (a ValueError).
        """
        filters: dict[str, Any] = {}
        if patient_id is not None:
            filters["patient_id"] = patient_id
        if status is not None:
            try:
                filters["status"] = InvoiceStatus(status).value
            except ValueError:
                known = ", ".join(s.value for s in InvoiceStatus)
                raise InvalidArgumentError(
                    f"no invoice status {status!r} (known: {known})"
                ) from None
        return sorted(self._invoices.list(**filters), key=lambda i: (i.number, i.id))

    def invoice(self, invoice: str) -> Invoice:
        """The invoice with this id (the server's, as a payment names it, or its
        record id) or number (``"INV-000042"``), as last synced.

        Raises:
            RecordNotFoundError: No such invoice on this device.
        """
        for record_id in (invoice_record_id(invoice), invoice):
            if record_id.startswith(_RECORD_PREFIX):
                try:
                    return self._invoices.get(record_id)
                except RecordNotFoundError:
                    pass
        numbered = self._invoices.list(number=invoice, limit=1)
        if numbered:
            return numbered[0]
        raise RecordNotFoundError(
            f"no invoice {invoice!r} on this device (sync to get the latest invoices)"
        )

    # ---------------------------------------------------------------- payments
    def pay(self, invoice: str, amount: int, currency: str, payment_method: str) -> IntentStatus:
        """Pay `amount` (in minor units of `currency`: cents) of `invoice` (its id or,
        if synced, its number) with `payment_method`, a gateway payment-method token.

        Checked here, offline, when the invoice is on this device: `currency` is the
        invoice's and `amount` is at most what is left to pay (`balance_due`, less
        the payments of it this device has asked for that are still pending). An
        invoice not synced yet is named by its id, and only the server checks it.

        Raises:
            RecordValidationError: The amount or currency is invalid, or more than is
                left to pay; nothing is written.
        """
        try:
            known: Invoice | None = self.invoice(invoice)
        except RecordNotFoundError:
            known = None
        invoice_id = invoice if known is None else invoice_id_of(known)
        details = {"amount": amount, "currency": currency, "payment_method": payment_method}
        if known is not None:
            problems: builtins.list[str] = []
            if currency != known.currency:
                problems.append(
                    f"currency: invoice {known.number} is in {known.currency}, not {currency}"
                )
            left = balance_due(known) - self._pending_amount(invoice_id)
            if isinstance(amount, int) and amount > left:
                problems.append(
                    f"amount: {amount} is more than the {max(left, 0)} {known.currency}"
                    f" (minor units) left to pay on invoice {known.number}"
                    f" ({known.status.value}, as synced)"
                )
            if problems:
                raise RecordValidationError(self._intents.name, problems)
        return self._intents.ask(
            IntentKind.PAYMENT_PAY,
            patient_id=known.patient_id if known is not None else None,
            subject_id=invoice_id,
            details=details,
        )

    def list(
        self, patient_id: str | None = None, state: str | None = None
    ) -> builtins.list[IntentStatus]:
        """Payment intents with where they stand, oldest first: ``pending``,
        ``accepted`` or ``rejected`` (``decision.reason`` says why, e.g. a declined
        card); only `patient_id`'s (known when the invoice was synced), only in
        `state`.

        Raises:
            InvalidArgumentError: An unknown state (a ValueError).
        """
        return self._intents.statuses(kind="payment", state=state, patient_id=patient_id)

    def _pending_amount(self, invoice_id: str) -> int:
        """What this device has asked to pay on `invoice_id` that is not decided yet."""
        pending = self._intents.statuses(kind=IntentKind.PAYMENT_PAY.value, state=PENDING)
        return sum(
            PaymentPay.model_validate(status.intent.details).amount
            for status in pending
            if status.intent.subject_id == invoice_id
        )
