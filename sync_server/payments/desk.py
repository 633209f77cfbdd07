"""`PaymentsDesk`: what the payment services share in one server (kept on
``app.state.payments``): the gateway, the webhook secret, and the hooks other domains
register to hear that an invoice was paid in full, without importing them."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from sqlalchemy.orm import Session

from sync_server.keyfiles import load_or_create_secret
from sync_server.payments.gateway import PaymentGateway
from sync_server.payments.sandbox import SandboxGateway
from sync_server.payments.tables import Invoice
from sync_server.settings import Settings

__all__ = ["PaidHook", "PaymentsDesk", "make_payments"]


class PaidHook(Protocol):
    """Called inside the transaction in which `invoice` became fully paid."""

    def __call__(self, *, session: Session, invoice: Invoice, now: datetime) -> None: ...


class PaymentsDesk:
    """The gateway, the webhook secret and the paid hooks."""

    def __init__(self, gateway: PaymentGateway, *, webhook_secret: str) -> None:
        self.gateway = gateway
        self.webhook_secret = webhook_secret
        self._paid: list[PaidHook] = []

    def on_paid(self, hook: PaidHook) -> None:
        """Call `hook(session=, invoice=, now=)` whenever an invoice becomes fully paid
        (e.g. commerce clears the holds of the orders it bills)."""
        self._paid.append(hook)

    def invoice_paid(self, *, session: Session, invoice: Invoice, now: datetime) -> None:
        """Tell every hook that `invoice` is paid (in the caller's transaction)."""
        for hook in self._paid:
            hook(session=session, invoice=invoice, now=now)


def make_payments(settings: Settings) -> PaymentsDesk:
    """The payments desk the settings describe (the gateway backend, the secret)."""
    secret = settings.payment_webhook_secret
    if not secret:
        secret = load_or_create_secret(settings.data_dir / "payment-webhook-secret").hex()
    gateway = SandboxGateway(settings.resolved_payment_sandbox_file)
    return PaymentsDesk(gateway, webhook_secret=secret)
