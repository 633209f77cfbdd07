"""A seeded randomized run of payments at the service level: invoices with random
lines, payments with random tokens (successes, declines, insufficient funds,
timeouts), replayed payments, partial and full refunds (some above what is left),
voids, webhook deliveries and redeliveries, reconciles.

After every step: every ledger transaction balances, `verify_ledger` finds nothing,
and the ledger's balances equal an independent recomputation from the sandbox
gateway's own record (its charges and refunds) and the run's own model of what it
billed; no payment or refund is applied twice (one ledger transaction per settled
payment and per refund; the sandbox holds one charge per key)."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from sync_server.db import Database
from sync_server.identity.tables import Clinic, Organisation
from sync_server.payments.charging import (
    PaymentRefused,
    apply_event,
    pay,
    reconcile,
    refund,
)
from sync_server.payments.desk import PaymentsDesk
from sync_server.payments.invoices import Charge, bill, void_invoice
from sync_server.payments.ledger import CLEARING, REFUNDS, balances, verify_ledger
from sync_server.payments.sandbox import SandboxGateway
from sync_server.payments.tables import Invoice, LedgerTransaction, Payment, Refund
from sync_server.payments.webhooks import WebhookEventIn

TOKENS = ["tok_success"] * 5 + [
    "tok_decline",
    "tok_insufficient_funds",
    "tok_timeout",
    "tok_timeout",
]
KINDS = ["order", "appointment", "visit"]


@dataclass
class Stats:
    seeds: int = 0
    steps: int = 0
    payments: int = 0
    succeeded: int = 0
    declined: int = 0
    timeouts: int = 0
    refunds: int = 0
    refused: int = 0
    replays: int = 0
    webhooks: int = 0
    duplicates: int = 0
    voids: int = 0

    def add(self, other: Stats) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def __str__(self) -> str:
        return ", ".join(f"{n}={getattr(self, n)}" for n in self.__dataclass_fields__)


@dataclass
class Model:
    """What the run itself knows: what it billed and voided, which key paid which
    invoice, which timeouts it has not yet seen settled."""

    totals: dict[str, int] = field(default_factory=dict)  # invoice -> total
    patient: dict[str, str] = field(default_factory=dict)  # invoice -> patient
    voided: set[str] = field(default_factory=set)
    key_invoice: dict[str, str] = field(default_factory=dict)
    unsettled: set[str] = field(default_factory=set)  # keys of timeouts not yet settled
    delivered: int = 0  # sandbox events delivered so far


def simulate(seed: int, *, db: Database, steps: int = 20) -> Stats:
    rng = random.Random(seed)
    stats = Stats(seeds=1)
    gateway = SandboxGateway(":memory:")
    desk = PaymentsDesk(gateway, webhook_secret="sim")
    organisation_id, clinic_id = str(uuid.uuid4()), str(uuid.uuid4())
    with db.write() as session:
        session.add(Organisation(id=organisation_id, name=f"sim-{seed}"))
        session.flush()
        session.add(Clinic(id=clinic_id, organisation_id=organisation_id, name="c", feed_seq=0))
    patients = [str(uuid.uuid4()) for _ in range(3)]
    model = Model()
    now = datetime(2026, 6, 1, tzinfo=UTC)
    try:
        for _ in range(steps):
            now += timedelta(minutes=1)
            action = rng.choices(
                ["bill", "pay", "replay", "refund", "void", "webhook", "reconcile"],
                weights=[3, 6, 1, 2, 1, 2, 1],
            )[0]
            _step(
                action,
                rng,
                db,
                desk,
                gateway,
                model,
                stats,
                organisation_id,
                clinic_id,
                patients,
                now,
            )
            stats.steps += 1
            _check(db, gateway, model, organisation_id, seed)
    finally:
        gateway.close()
    return stats


def _step(
    action: str,
    rng: random.Random,
    db: Database,
    desk: PaymentsDesk,
    gateway: SandboxGateway,
    model: Model,
    stats: Stats,
    organisation_id: str,
    clinic_id: str,
    patients: list[str],
    now: datetime,
) -> None:
    invoices = list(model.totals)
    if action == "bill" or not invoices:
        charges = [
            Charge(
                rng.choice(KINDS),
                None,
                "item",
                rng.randint(1, 3),
                rng.choice([0, 250, 999, 4000]),
                "EUR",
            )
            for _ in range(rng.randint(1, 4))
        ]
        patient = rng.choice(patients)
        with db.write() as session:
            made = bill(
                session=session,
                organisation_id=organisation_id,
                clinic_id=clinic_id,
                patient_id=patient,
                charges=charges,
                now=now,
            )
            model.totals[made.id] = made.total
            model.patient[made.id] = patient
        return
    if action in ("pay", "replay"):
        if action == "replay" and model.key_invoice:
            key = rng.choice(sorted(model.key_invoice))
            invoice_id = model.key_invoice[key]
            stats.replays += 1
        else:
            key, invoice_id = str(uuid.uuid4()), rng.choice(invoices)
        token = rng.choice(TOKENS)
        with db.read() as session:
            invoice = session.get(Invoice, invoice_id)
            assert invoice is not None
            owed = invoice.total - invoice.paid - invoice.pending
        amount = max(1, rng.choice([owed, owed, max(1, owed // 2), owed + 1, rng.randint(1, 5000)]))
        try:
            with db.write() as session:
                result = pay(
                    session=session,
                    payments=desk,
                    organisation_id=organisation_id,
                    invoice_id=invoice_id,
                    amount=amount,
                    currency="EUR",
                    payment_method=token,
                    idempotency_key=key,
                    now=now,
                )
                status = result.payment.status
                replayed = result.replayed
        except PaymentRefused:
            stats.refused += 1
            return
        if replayed:
            return
        stats.payments += 1
        model.key_invoice[key] = invoice_id
        if status == "processing":
            stats.timeouts += 1
            model.unsettled.add(key)
        elif status == "succeeded":
            stats.succeeded += 1
        else:
            stats.declined += 1
        return
    if action == "refund":
        with db.read() as session:
            paid = session.scalars(
                select(Payment.id)
                .where(Payment.organisation_id == organisation_id, Payment.status == "succeeded")
                .order_by(Payment.id)
            ).all()
        if not paid:
            return
        payment_id = rng.choice(paid)
        with db.read() as session:
            payment = session.get(Payment, payment_id)
            assert payment is not None
            left = payment.captured - payment.refunded
        amount = rng.choice([left, max(1, left // 3), left + 1, 1])
        key = str(uuid.uuid4())
        for _attempt in range(rng.choice([1, 1, 2])):  # sometimes retried with its key
            try:
                with db.write() as session:
                    refund(
                        session=session,
                        payments=desk,
                        organisation_id=organisation_id,
                        payment_id=payment_id,
                        amount=max(1, amount),
                        idempotency_key=key,
                        now=now,
                    )
                stats.refunds += 1
            except PaymentRefused:
                stats.refused += 1
        return
    if action == "void":
        with db.write() as session:
            invoice_id = rng.choice(invoices)
            if void_invoice(session=session, invoice_id=invoice_id, reason="sim", now=now):
                model.voided.add(invoice_id)
                stats.voids += 1
        return
    if action == "webhook":
        events = gateway.events()
        if not events:
            return
        # New events in order, and some old ones again (redeliveries).
        batch = events[model.delivered :] + rng.sample(events, min(len(events), rng.randint(0, 3)))
        model.delivered = len(events)
        for event in batch:
            with db.write() as session:
                outcome = apply_event(
                    session=session,
                    payments=desk,
                    event=WebhookEventIn(event.id, event.type, event.payload["data"]),
                    now=now,
                )
            stats.webhooks += 1
            stats.duplicates += outcome == "duplicate"
            if event.type == "charge.succeeded":
                model.unsettled.discard(event.payload["data"]["idempotency_key"])
        return
    if action == "reconcile":
        with db.read() as session:
            processing = session.scalars(
                select(Payment.id).where(
                    Payment.organisation_id == organisation_id, Payment.status == "processing"
                )
            ).all()
        for payment_id in processing:
            with db.write() as session:
                payment = reconcile(session=session, payments=desk, payment_id=payment_id, now=now)
                if payment.status != "processing":
                    model.unsettled.discard(payment.idempotency_key)


def _check(
    db: Database, gateway: SandboxGateway, model: Model, organisation_id: str, seed: int
) -> None:
    with db.read() as session:
        problems = verify_ledger(session=session, organisation_id=organisation_id)
        assert not problems, f"seed {seed}: {problems}"
        ledger = balances(session=session, organisation_id=organisation_id)
        # The gateway's own record, with the timeouts nobody has settled yet left out.
        charges = [c for c in gateway.charges() if c["status"] == "succeeded"]
        settled = [c for c in charges if c["idempotency_key"] not in model.unsettled]
        refunds = gateway.refunds()
        captured = sum(c["amount"] for c in settled)
        given_back = sum(r["amount"] for r in refunds)
        assert ledger.get((CLEARING, "EUR"), 0) == captured - given_back, f"seed {seed}: clearing"
        # Refunds on an invoice voided afterwards paid its receivable back, not revenue.
        invoice_of_charge = {
            c["id"]: model.key_invoice[c["idempotency_key"]]
            for c in gateway.charges()
            if c["idempotency_key"] in model.key_invoice
        }
        voided_refunds = [r for r in refunds if invoice_of_charge[r["charge_id"]] in model.voided]
        kept_back = given_back - sum(r["amount"] for r in voided_refunds)
        assert ledger.get((REFUNDS, "EUR"), 0) == kept_back, f"seed {seed}: refunds"
        owed: dict[str, int] = {}
        for invoice_id, total in model.totals.items():
            if invoice_id not in model.voided:
                account = f"receivable:patient:{model.patient[invoice_id]}"
                owed[account] = owed.get(account, 0) + total
        for charge in settled:
            invoice_id = model.key_invoice[charge["idempotency_key"]]
            account = f"receivable:patient:{model.patient[invoice_id]}"
            owed[account] = owed.get(account, 0) - charge["amount"]
        for refund in voided_refunds:
            account = f"receivable:patient:{model.patient[invoice_of_charge[refund['charge_id']]]}"
            owed[account] = owed.get(account, 0) + refund["amount"]
        receivable = {a: v for (a, _c), v in ledger.items() if a.startswith("receivable:")}
        assert receivable == {a: v for a, v in owed.items() if v}, f"seed {seed}: receivables"
        billed = sum(t for i, t in model.totals.items() if i not in model.voided)
        revenue = -sum(v for (a, _c), v in ledger.items() if a.startswith("revenue:"))
        assert revenue == billed, f"seed {seed}: revenue"
        # Nothing applied twice: one ledger transaction per settled payment and refund.
        posted_payments = session.scalar(
            select(func.count())
            .select_from(LedgerTransaction)
            .where(
                LedgerTransaction.organisation_id == organisation_id,
                LedgerTransaction.kind == "payment",
            )
        )
        assert posted_payments == len(settled), f"seed {seed}: payments posted"
        db_refunds = session.scalar(
            select(func.count())
            .select_from(Refund)
            .where(Refund.organisation_id == organisation_id)
        )
        assert db_refunds == len(refunds), f"seed {seed}: refunds applied"
        keys = [c["idempotency_key"] for c in gateway.charges()]
        assert len(keys) == len(set(keys)), f"seed {seed}: a key charged twice"
