"""The payment gateway as the server sees it: a `PaymentGateway` protocol (charge,
retrieve, refund, each idempotent by key on the gateway's side) and its results.

A timeout is an answer of its own (`ChargeStatus.TIMEOUT`): the charge may or may not
have happened; the payment stays ``processing`` until `PaymentGateway.retrieve` says
what happened. It is never resolved by charging again.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "ChargeResult",
    "ChargeStatus",
    "GatewayError",
    "PaymentGateway",
    "RefundResult",
]


class ChargeStatus(enum.StrEnum):
    """What the gateway said of a charge."""

    SUCCEEDED = "succeeded"
    DECLINED = "declined"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    TIMEOUT = "timeout"  # no answer: unknown until retrieved
    NOT_FOUND = "not_found"  # retrieve: the gateway never saw it


@dataclass(frozen=True, slots=True)
class ChargeResult:
    """The gateway's answer about one charge."""

    status: ChargeStatus
    charge_id: str | None = None
    amount: int = 0
    currency: str | None = None
    message: str | None = None  # a decline's reason, for a person to read

    @property
    def failed(self) -> bool:
        """The charge did not and will not take money."""
        return self.status in (
            ChargeStatus.DECLINED,
            ChargeStatus.INSUFFICIENT_FUNDS,
            ChargeStatus.NOT_FOUND,
        )


@dataclass(frozen=True, slots=True)
class RefundResult:
    """The gateway's answer about one refund."""

    refund_id: str
    charge_id: str
    amount: int
    succeeded: bool
    message: str | None = None


class GatewayError(Exception):
    """The gateway refused a request outright (e.g. a refund above what it holds)."""


class PaymentGateway(Protocol):
    """A card gateway. Every call is idempotent by `idempotency_key` on the gateway's
    side: the same key returns the first call's result, never a second charge."""

    def charge(
        self, idempotency_key: str, amount: int, currency: str, payment_method: str
    ) -> ChargeResult:
        """Charge `amount` minor units to `payment_method` (a token)."""
        ...

    def retrieve(self, reference: str) -> ChargeResult:
        """What became of a charge, by its idempotency key or the gateway's id."""
        ...

    def refund(self, idempotency_key: str, charge_id: str, amount: int) -> RefundResult:
        """Give `amount` back from a succeeded charge."""
        ...
