"""`coherency payments ...` and `coherency invoices ...`: a patient's invoices as
synced down, and asking the server to take a payment (an intent, pending until
`coherency sync` brings the server's decision; its id is the payment's idempotency
key, so however often it is pushed the server charges it once). `coherency payments
refund` is the one staff command here: it works on the server's database, like the
``coherency server`` commands."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import click

from cli._app import App, with_app
from cli._intents import STATES, show_status
from cli._output import csv_option, emit, json_option, show_fields, table
from cli._server import _database_options, _reported, _settings
from crdt import Invoice, InvoiceStatus, format_money
from edge_sdk import IntentStatus, RecordNotFoundError, balance_due, invoice_id_of

__all__ = ["invoices", "payments"]


def _payment_table(statuses: list[IntentStatus]) -> None:
    table(
        ["intent", "state", "invoice", "amount", "method", "reason"],
        (
            [
                s.id,
                s.state,
                s.intent.subject_id,
                format_money(s.intent.details["amount"], s.intent.details["currency"]),
                s.intent.details["payment_method"],
                s.decision.reason if s.decision is not None else None,
            ]
            for s in statuses
        ),
        empty="no payment intents",
    )


def _invoice_table(found: list[Invoice]) -> None:
    table(
        ["number", "invoice", "patient", "status", "total", "paid", "due", "due at"],
        (
            [
                i.number,
                invoice_id_of(i),
                i.patient_id,
                i.status,
                format_money(i.total, i.currency),
                format_money(i.paid, i.currency),
                format_money(balance_due(i), i.currency),
                i.due_at,
            ]
            for i in found
        ),
        empty="no invoices synced for that (run `coherency sync`)",
    )


def _show_invoice(invoice: Invoice) -> None:
    def amounts(items: Any, *names: str) -> list[dict[str, Any]]:
        shown = []
        for item in items:
            values = item.model_dump(mode="json")
            for name in names:
                values[name] = format_money(values[name], invoice.currency)
            shown.append(values)
        return shown

    show_fields(
        {
            "number": invoice.number,
            "invoice": invoice_id_of(invoice),
            "patient": invoice.patient_id,
            "status": invoice.status,
            "total": format_money(invoice.total, invoice.currency),
            "paid": format_money(invoice.paid, invoice.currency),
            "refunded": format_money(invoice.refunded, invoice.currency),
            "balance due": format_money(balance_due(invoice), invoice.currency),
            "issued at": invoice.issued_at,
            "due at": invoice.due_at,
            "lines": amounts(invoice.lines, "unit_price", "amount"),
            "payments": amounts(invoice.payments, "amount"),
            "as of": invoice.updated_at,
        }
    )


@click.group()
def payments() -> None:
    """Pay invoices and list payments (decided by the server)."""


@payments.command("pay")
@click.argument("invoice")
@click.option(
    "--amount",
    type=click.IntRange(min=1),
    required=True,
    help="How much, in minor units of the currency (cents: 1250 is 12.50).",
)
@click.option("--currency", help="ISO 4217 code, e.g. EUR (default: the invoice's).")
@click.option(
    "--method",
    "payment_method",
    required=True,
    help="The payment-method token from the gateway (never a card number).",
)
@json_option
@with_app
def payments_pay(
    app: App,
    invoice: str,
    amount: int,
    currency: str | None,
    payment_method: str,
    as_json: bool,
) -> None:
    """Pay INVOICE (its id or number) or part of it (pending until the server decides).

    Refused here, before anything is written, when the invoice is synced and the
    amount is more than is left to pay or the currency is not the invoice's.
    """
    client = app.client()
    if currency is None:
        try:
            currency = client.payments.invoice(invoice).currency
        except RecordNotFoundError:
            raise click.UsageError(
                f"invoice {invoice!r} is not on this device: give --currency"
            ) from None
    emit(as_json, client.payments.pay(invoice, amount, currency, payment_method), show_status)


@payments.command("list")
@click.option("--state", type=click.Choice(STATES), help="Only intents in this state.")
@click.option("--patient", "patient_id", help="Only this patient's.")
@json_option
@csv_option
@with_app
def payments_list(
    app: App, state: str | None, patient_id: str | None, as_json: bool, as_csv: bool
) -> None:
    """List payments asked for here, and the server's decisions."""
    emit(as_json, app.client().payments.list(patient_id, state), _payment_table, as_csv=as_csv)


@payments.command("refund")
@click.argument("payment_id")
@click.option(
    "--amount",
    type=click.IntRange(min=1),
    required=True,
    help="How much to give back, in minor units (at most what is left of the payment).",
)
@click.option(
    "--idempotency-key",
    help="Makes a retry safe: the same key answers the first refund and gives nothing "
    "back twice (default: a new key, printed so a retry can reuse it).",
)
@click.option("--reason", help="Why, for the audit and the patient's invoice.")
@click.option(
    "--organisation",
    default="default",
    show_default=True,
    help="The organisation the payment belongs to.",
)
@_database_options
@json_option
def payments_refund(
    payment_id: str,
    amount: int,
    idempotency_key: str | None,
    reason: str | None,
    organisation: str,
    data_dir: Path | None,
    database_url: str | None,
    as_json: bool,
) -> None:
    """Staff: refund AMOUNT of the succeeded payment PAYMENT_ID through the server's
    gateway (partial or full; never more than was captured minus refunded)."""
    key = idempotency_key or f"cli-refund-{secrets.token_hex(12)}"
    with _reported():
        from sync_server import refund_payment

        settings = _settings(data_dir=data_dir, database_url=database_url)
        refunded = refund_payment(
            settings,
            payment_id=payment_id,
            amount=amount,
            idempotency_key=key,
            reason=reason,
            organisation=organisation,
        )

    def human(r: Any) -> None:
        show_fields(
            {
                "refund": r.refund_id,
                "payment": r.payment_id,
                "invoice": r.invoice_id,
                "amount (minor units)": r.amount,
                "status": r.status,
                "idempotency key": r.idempotency_key,
                "at": r.created_at,
            }
        )

    emit(as_json, refunded, human)


@click.group()
def invoices() -> None:
    """Patients' invoices, as synced from the server (read-only here)."""


@invoices.command("list")
@click.option("--patient", "patient_id", help="Only this patient's.")
@click.option(
    "--status",
    type=click.Choice([s.value for s in InvoiceStatus]),
    help="Only invoices in this status.",
)
@json_option
@csv_option
@with_app
def invoices_list(
    app: App, patient_id: str | None, status: str | None, as_json: bool, as_csv: bool
) -> None:
    """List invoices by number, with what is left to pay."""
    emit(
        as_json,
        app.client().payments.invoices(patient_id, status),
        _invoice_table,
        as_csv=as_csv,
        csv_schema=Invoice,
    )


@invoices.command("show")
@click.argument("invoice")
@json_option
@with_app
def invoices_show(app: App, invoice: str, as_json: bool) -> None:
    """Show one invoice (by id or number): its lines, payments and refunds."""
    emit(as_json, app.client().payments.invoice(invoice), _show_invoice)
