"""The sandbox gateway: a real `PaymentGateway` backend for development, tests and
demos, with deterministic test tokens:

- ``tok_success``: the charge succeeds;
- ``tok_decline``: the card is declined;
- ``tok_insufficient_funds``: declined for insufficient funds;
- ``tok_timeout``: the charge is made on the gateway's side, but the caller gets a
  timeout; a later `SandboxGateway.retrieve` shows it succeeded.

It keeps its own record in a SQLite file of its own (its own transactions, committed
whatever the server's do), the independent record the server reconciles against; and
it is idempotent by key, as real gateways are. Every charge and refund emits a webhook
event (``charge.succeeded``, ``charge.failed``, ``refund.succeeded``) that
`SandboxGateway.delivery` signs for ``POST /v1/payments/webhooks``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sync_server.payments.gateway import ChargeResult, ChargeStatus, GatewayError, RefundResult
from sync_server.payments.webhooks import signature_header

__all__ = ["TEST_TOKENS", "GatewayEvent", "SandboxGateway"]

TEST_TOKENS = {
    "tok_success": ChargeStatus.SUCCEEDED,
    "tok_decline": ChargeStatus.DECLINED,
    "tok_insufficient_funds": ChargeStatus.INSUFFICIENT_FUNDS,
    "tok_timeout": ChargeStatus.TIMEOUT,
}
"""The sandbox's payment method tokens and what each does."""

_MESSAGES = {
    ChargeStatus.DECLINED: "the card was declined",
    ChargeStatus.INSUFFICIENT_FUNDS: "the card was declined: insufficient funds",
}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS charges (
    id TEXT PRIMARY KEY, idempotency_key TEXT NOT NULL UNIQUE, amount INTEGER NOT NULL,
    currency TEXT NOT NULL, payment_method TEXT NOT NULL, status TEXT NOT NULL,
    refunded INTEGER NOT NULL DEFAULT 0 CHECK (refunded <= amount), created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS refunds (
    id TEXT PRIMARY KEY, idempotency_key TEXT NOT NULL UNIQUE, charge_id TEXT NOT NULL,
    amount INTEGER NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, type TEXT NOT NULL,
    payload TEXT NOT NULL, created REAL NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class GatewayEvent:
    """A webhook event the sandbox emitted."""

    seq: int
    id: str
    type: str
    payload: dict[str, Any]

    def body(self) -> bytes:
        """The event as the webhook's JSON body."""
        return json.dumps(self.payload, sort_keys=True, separators=(",", ":")).encode()


class SandboxGateway:
    """The sandbox gateway over its own SQLite file (``":memory:"``: this process only)."""

    def __init__(self, path: str | Path = ":memory:") -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        self._db.isolation_level = None
        if self.path != ":memory:":
            self._db.execute("PRAGMA journal_mode = WAL")
            # A test gateway: its record survives the server's crashes, not the host's.
            self._db.execute("PRAGMA synchronous = NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the sandbox's file."""
        with self._lock:
            self._db.close()

    # ---------------------------------------------------------------- the protocol
    def charge(
        self, idempotency_key: str, amount: int, currency: str, payment_method: str
    ) -> ChargeResult:
        """Charge as the token says; the same key answers the first charge again."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._charge_row("idempotency_key", idempotency_key)
                if row is None:
                    wanted = TEST_TOKENS.get(payment_method, ChargeStatus.DECLINED)
                    status = "succeeded" if wanted in _TAKES_MONEY else str(wanted)
                    charge_id = f"ch_{uuid.uuid4().hex}"
                    self._db.execute(
                        "INSERT INTO charges (id, idempotency_key, amount, currency,"
                        " payment_method, status, created) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (
                            charge_id,
                            idempotency_key,
                            amount,
                            currency,
                            payment_method,
                            status,
                            time.time(),
                        ),
                    )
                    self._emit(
                        "charge.succeeded" if status == "succeeded" else "charge.failed",
                        _charge_object(charge_id, idempotency_key, amount, currency, status),
                    )
                    self._db.execute("COMMIT")
                    if wanted is ChargeStatus.TIMEOUT:
                        return ChargeResult(ChargeStatus.TIMEOUT)  # made, but no answer
                    return self._result(self._charge_row("id", charge_id))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return self._result(row)

    def retrieve(self, reference: str) -> ChargeResult:
        """A charge by its idempotency key or its id; NOT_FOUND if never made."""
        with self._lock:
            row = self._charge_row("idempotency_key", reference) or self._charge_row(
                "id", reference
            )
        return self._result(row)

    def refund(self, idempotency_key: str, charge_id: str, amount: int) -> RefundResult:
        """Give back `amount` of a succeeded charge (never more than it holds)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                done = self._db.execute(
                    "SELECT id, charge_id, amount FROM refunds WHERE idempotency_key = ?",
                    (idempotency_key,),
                ).fetchone()
                if done is None:
                    updated = self._db.execute(
                        "UPDATE charges SET refunded = refunded + ? WHERE id = ?"
                        " AND status = 'succeeded' AND refunded + ? <= amount",
                        (amount, charge_id, amount),
                    )
                    if updated.rowcount != 1:
                        raise GatewayError("the charge cannot be refunded that much")
                    refund_id = f"re_{uuid.uuid4().hex}"
                    self._db.execute(
                        "INSERT INTO refunds (id, idempotency_key, charge_id, amount, created)"
                        " VALUES (?, ?, ?, ?, ?)",
                        (refund_id, idempotency_key, charge_id, amount, time.time()),
                    )
                    self._emit(
                        "refund.succeeded",
                        {
                            "object": "refund",
                            "id": refund_id,
                            "idempotency_key": idempotency_key,
                            "charge_id": charge_id,
                            "amount": amount,
                        },
                    )
                    done = (refund_id, charge_id, amount)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return RefundResult(done[0], done[1], int(done[2]), True)

    # ---------------------------------------------------------------- its record
    def charges(self) -> list[dict[str, Any]]:
        """Every charge the sandbox holds (its own record, for reconciliation)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, idempotency_key, amount, currency, payment_method, status,"
                " refunded FROM charges ORDER BY created, id"
            ).fetchall()
        names = (
            "id",
            "idempotency_key",
            "amount",
            "currency",
            "payment_method",
            "status",
            "refunded",
        )
        return [dict(zip(names, row, strict=True)) for row in rows]

    def refunds(self) -> list[dict[str, Any]]:
        """Every refund the sandbox made."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, idempotency_key, charge_id, amount FROM refunds ORDER BY created, id"
            ).fetchall()
        names = ("id", "idempotency_key", "charge_id", "amount")
        return [dict(zip(names, row, strict=True)) for row in rows]

    def events(self, *, after: int = 0) -> list[GatewayEvent]:
        """The webhook events emitted after sequence number `after`, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, id, type, payload FROM events WHERE seq > ? ORDER BY seq", (after,)
            ).fetchall()
        return [GatewayEvent(int(r[0]), r[1], r[2], json.loads(r[3])) for r in rows]

    @staticmethod
    def delivery(
        event: GatewayEvent, secret: str, *, at: int | None = None
    ) -> tuple[bytes, dict[str, str]]:
        """The body and headers of delivering `event` to the server's webhook route."""
        body = event.body()
        stamp = int(time.time()) if at is None else at
        return body, {
            "content-type": "application/json",
            "coherency-signature": signature_header(secret, body, stamp),
        }

    # ---------------------------------------------------------------- internals
    def _charge_row(self, column: str, value: str) -> tuple[Any, ...] | None:
        row = self._db.execute(
            f"SELECT id, amount, currency, status FROM charges WHERE {column} = ?",
            (value,),
        ).fetchone()
        return None if row is None else tuple(row)

    @staticmethod
    def _result(row: tuple[Any, ...] | None) -> ChargeResult:
        if row is None:
            return ChargeResult(ChargeStatus.NOT_FOUND, message="the gateway has no such charge")
        status = ChargeStatus(row[3])
        return ChargeResult(status, row[0], int(row[1]), row[2], _MESSAGES.get(status))

    def _emit(self, kind: str, data: dict[str, Any]) -> None:
        event_id = f"evt_{uuid.uuid4().hex}"
        payload = {"id": event_id, "type": kind, "created": int(time.time()), "data": data}
        self._db.execute(
            "INSERT INTO events (id, type, payload, created) VALUES (?, ?, ?, ?)",
            (event_id, kind, json.dumps(payload, sort_keys=True), time.time()),
        )


_TAKES_MONEY = frozenset({ChargeStatus.SUCCEEDED, ChargeStatus.TIMEOUT})


def _charge_object(
    charge_id: str, key: str, amount: int, currency: str, status: str
) -> dict[str, Any]:
    return {
        "object": "charge",
        "id": charge_id,
        "idempotency_key": key,
        "amount": amount,
        "currency": currency,
        "status": status,
    }
