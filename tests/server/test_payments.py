"""Payments over real HTTP on SQLite and PostgreSQL: payment intents pushed by a
tablet (replayed through one bundle, a second push, a charge whose push died), the
staff REST routes with ``Idempotency-Key`` (retried, 400, 422, 409), gateway timeouts
settled by a status query or a webhook without a second charge, webhooks delivered
three times, refund limits, voids, gapless numbering under concurrent creators, the
ledger's immutability and balances, and the synced invoice record."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text, update
from sqlalchemy.exc import DBAPIError

from crdt import DecisionStatus, IntentKind, InvoiceStatus, RecordDocument, invoice_record_id
from crdt import Invoice as InvoiceRecord
from sync_server.payments.charging import derived_key
from sync_server.payments.invoices import Charge, bill
from sync_server.payments.ledger import ledger_snapshot, verify_ledger
from sync_server.payments.sandbox import SandboxGateway
from sync_server.payments.tables import IdempotencyKey, Invoice, LedgerPosting, Payment

from .bookings_world import Tablet


@dataclass
class World:
    """A clinic with a tablet and a staff client (admin) of the server's organisation."""

    server: Any
    clinic_id: str
    staff: httpx.Client
    staff_id: str
    tablet: Tablet

    @property
    def gateway(self) -> SandboxGateway:
        gateway = self.server.app.state.payments.gateway
        assert isinstance(gateway, SandboxGateway)
        return gateway

    @property
    def secret(self) -> str:
        return str(self.server.app.state.payments.webhook_secret)

    def invoice(self, *prices: int, currency: str = "EUR", patient: str | None = None) -> Invoice:
        with self.server.db.write() as session:
            return bill(
                session=session,
                organisation_id=self.server.organisation_id,
                clinic_id=self.clinic_id,
                patient_id=patient or str(uuid.uuid4()),
                charges=[Charge("visit", None, "dressing change", 1, p, currency) for p in prices],
                now=datetime.now(UTC),
            )

    def read(self, invoice_id: str) -> Invoice:
        with self.server.db.read() as session:
            found = session.get(Invoice, invoice_id)
            assert found is not None
            return found

    def charges_for(self, key: str) -> list[dict[str, Any]]:
        return [c for c in self.gateway.charges() if c["idempotency_key"] == key]

    def pay(self, invoice_id: str, key: str | None, **body: Any) -> httpx.Response:
        headers = {"Idempotency-Key": key} if key else {}
        payload = {"amount": 1000, "currency": "EUR", "payment_method": "tok_success", **body}
        return self.staff.post(f"/v1/invoices/{invoice_id}/pay", json=payload, headers=headers)

    def refund(self, payment_id: str, key: str, amount: int) -> httpx.Response:
        return self.staff.post(
            f"/v1/payments/{payment_id}/refund",
            json={"amount": amount},
            headers={"Idempotency-Key": key},
        )

    def deliver(self, event: Any, *, at: int | None = None) -> httpx.Response:
        body, headers = SandboxGateway.delivery(event, self.secret, at=at)
        return self.staff.post("/v1/payments/webhooks", content=body, headers=headers)

    def ledger_problems(self) -> list[str]:
        with ledger_snapshot(database=self.server.db) as session:
            return verify_ledger(session=session, organisation_id=self.server.organisation_id)


class _TabletWorld:
    def __init__(self, server: Any, clinic_id: str) -> None:
        self.server, self.clinic_id = server, clinic_id


@pytest.fixture
def world(server: Any) -> Iterator[World]:
    clinic_id = server.new_clinic()
    staff_id = str(uuid.uuid4())
    token, _ = server.app.state.signing_key.issue_access_token(
        subject=staff_id,
        kind="user",
        clinic_id=None,
        organisation_id=server.organisation_id,
        role="admin",
        ttl=timedelta(minutes=15),
    )
    from sync_server.identity.tables import User

    with server.db.write() as session:
        session.add(
            User(
                id=staff_id,
                username=f"pay-{staff_id[:8]}",
                password_hash="x",
                role="admin",
                organisation_id=server.organisation_id,
                active=True,
            )
        )
    device_id, device_token = server.device_token(clinic_id)
    tablet = Tablet(device_id, server.http(device_token), _TabletWorld(server, clinic_id))  # type: ignore[arg-type]
    made = World(server, clinic_id, server.http(token), staff_id, tablet)
    try:
        yield made
    finally:
        made.staff.close()
        tablet.http.close()


def _pay_intent(
    world: World, invoice_id: str, amount: int, token: str = "tok_success"
) -> RecordDocument:
    return world.tablet.intent(
        IntentKind.PAYMENT_PAY,
        subject_id=invoice_id,
        amount=amount,
        currency="EUR",
        payment_method=token,
    )


# ---------------------------------------------------------------- device intents
def test_a_payment_intent_replayed_is_charged_once(world: World) -> None:
    invoice = world.invoice(6000, 4000)
    intent = _pay_intent(world, invoice.id, 4000)
    world.tablet.push(intent, intent)  # the same intent twice in one bundle
    world.tablet.push(intent)  # and a retried push
    world.tablet.pull()
    decision = world.tablet.decision(intent.id)
    assert decision is not None and decision.status is DecisionStatus.ACCEPTED
    assert decision.outcome is not None
    assert decision.outcome["status"] == "succeeded" and decision.outcome["remaining"] == 6000
    assert len(world.charges_for(intent.id)) == 1
    assert world.read(invoice.id).paid == 4000
    record = RecordDocument.load(world.tablet.held[invoice_record_id(invoice.id)]).read()
    assert isinstance(record, InvoiceRecord)
    assert record.paid == 4000 and record.status is InvoiceStatus.OPEN and len(record.payments) == 1
    assert world.ledger_problems() == []


def test_a_charge_whose_push_died_is_not_charged_again(world: World) -> None:
    invoice = world.invoice(2500)
    intent = _pay_intent(world, invoice.id, 2500)
    # The push reached the gateway, then its transaction died: the gateway has the
    # charge, the server nothing. The retried push gets that charge back.
    world.gateway.charge(intent.id, 2500, "EUR", "tok_success")
    world.tablet.sync(intent)
    decision = world.tablet.decision(intent.id)
    assert decision is not None and decision.status is DecisionStatus.ACCEPTED
    assert len(world.charges_for(intent.id)) == 1
    assert world.read(invoice.id).status == "paid"
    assert world.ledger_problems() == []


def test_declines_overpayments_and_currency_are_refused_with_reasons(world: World) -> None:
    invoice = world.invoice(3000)
    declined = _pay_intent(world, invoice.id, 1000, "tok_insufficient_funds")
    too_much = _pay_intent(world, invoice.id, 3001)
    other = world.tablet.intent(
        IntentKind.PAYMENT_PAY,
        subject_id=invoice.id,
        amount=100,
        currency="USD",
        payment_method="tok_success",
    )
    world.tablet.sync(declined, too_much, other)
    reasons = {}
    for intent in (declined, too_much, other):
        decision = world.tablet.decision(intent.id)
        assert decision is not None and decision.status is DecisionStatus.REJECTED
        reasons[intent.id] = decision.reason
    assert reasons[declined.id] == "the card was declined: insufficient funds"
    assert "only 30.00 EUR is still owed" in str(reasons[too_much.id])
    assert "EUR, not USD" in str(reasons[other.id])
    assert world.read(invoice.id).paid == 0
    assert world.ledger_problems() == []


def test_a_timeout_is_settled_by_a_status_query_not_a_second_charge(world: World) -> None:
    invoice = world.invoice(5000)
    intent = _pay_intent(world, invoice.id, 5000, "tok_timeout")
    world.tablet.sync(intent)
    decision = world.tablet.decision(intent.id)
    assert decision is not None and decision.status is DecisionStatus.ACCEPTED
    assert decision.outcome is not None and decision.outcome["status"] == "processing"
    assert world.read(invoice.id).pending == 5000
    # While it is processing nothing more can be paid.
    again = _pay_intent(world, invoice.id, 5000)
    world.tablet.sync(again)
    refused = world.tablet.decision(again.id)
    assert refused is not None and refused.status is DecisionStatus.REJECTED
    payment_id = decision.outcome["payment_id"]
    answer = world.staff.post(f"/v1/payments/{payment_id}/reconcile")
    assert answer.status_code == 200 and answer.json()["status"] == "succeeded"
    assert world.staff.post(f"/v1/payments/{payment_id}/reconcile").json()["status"] == "succeeded"
    assert len(world.charges_for(intent.id)) == 1
    settled = world.read(invoice.id)
    assert (settled.status, settled.paid, settled.pending) == ("paid", 5000, 0)
    assert world.ledger_problems() == []


# ---------------------------------------------------------------- webhooks
def test_a_webhook_delivered_three_times_settles_once(world: World) -> None:
    invoice = world.invoice(1200)
    before = world.gateway.events()[-1].seq if world.gateway.events() else 0
    response = world.pay(
        invoice.id, "wh-" + uuid.uuid4().hex, amount=1200, payment_method="tok_timeout"
    )
    assert response.status_code == 200 and response.json()["status"] == "processing"
    (event,) = [e for e in world.gateway.events(after=before) if e.type == "charge.succeeded"]
    outcomes = [world.deliver(event).json()["outcome"] for _ in range(3)]
    assert outcomes == ["settled", "duplicate", "duplicate"]
    assert world.read(invoice.id).paid == 1200
    payment_id = response.json()["payment_id"]
    refund = world.refund(payment_id, "r-" + uuid.uuid4().hex, 1200)
    assert refund.status_code == 200, refund.text
    (refunded,) = [e for e in world.gateway.events(after=event.seq) if e.type == "refund.succeeded"]
    outcomes = [world.deliver(refunded).json()["outcome"] for _ in range(3)]
    assert outcomes == ["already_applied", "duplicate", "duplicate"]
    final = world.read(invoice.id)
    assert (final.status, final.paid, final.refunded) == ("refunded", 1200, 1200)
    assert len(world.gateway.refunds()) == len({r["id"] for r in world.gateway.refunds()})
    assert world.ledger_problems() == []


def test_webhook_signatures_are_verified(world: World) -> None:
    invoice = world.invoice(100)
    world.pay(invoice.id, "sig-" + uuid.uuid4().hex, amount=100)
    event = world.gateway.events()[-1]
    body, headers = SandboxGateway.delivery(event, "not-the-secret")
    assert (
        world.staff.post("/v1/payments/webhooks", content=body, headers=headers).status_code == 401
    )
    stale = world.deliver(event, at=int(time.time()) - 3600)
    assert stale.status_code == 401
    body, headers = SandboxGateway.delivery(event, world.secret)
    tampered = world.staff.post("/v1/payments/webhooks", content=body + b" ", headers=headers)
    assert tampered.status_code == 401
    bare = world.staff.post("/v1/payments/webhooks", content=body)
    assert bare.status_code == 400
    assert world.deliver(event).status_code == 200


# ---------------------------------------------------------------- REST idempotency
def test_rest_payments_need_and_honour_idempotency_keys(world: World) -> None:
    invoice = world.invoice(5000)
    assert world.pay(invoice.id, None).status_code == 400
    key = "pay-" + uuid.uuid4().hex
    first = world.pay(invoice.id, key, amount=2000)
    assert first.status_code == 200, first.text
    again = world.pay(invoice.id, key, amount=2000)
    assert again.status_code == 200 and again.json() == first.json()
    assert again.headers.get("Idempotent-Replayed") == "true"
    different = world.pay(invoice.id, key, amount=2001)
    assert different.status_code == 422
    assert different.json()["error"]["code"] == "idempotency_key_reused"
    assert len(world.charges_for(derived_key("rest", world.staff_id, key))) == 1
    assert world.read(invoice.id).paid == 2000
    # A decline is a result too: stored and replayed (402 with the reason).
    declined_key = "dec-" + uuid.uuid4().hex
    declined = world.pay(invoice.id, declined_key, amount=100, payment_method="tok_decline")
    assert (
        declined.status_code == 402
        and declined.json()["error"]["message"] == "the card was declined"
    )
    assert (
        world.pay(invoice.id, declined_key, amount=100, payment_method="tok_decline").status_code
        == 402
    )
    # An overpayment is refused, and that answer is replayed too.
    over_key = "over-" + uuid.uuid4().hex
    assert world.pay(invoice.id, over_key, amount=3001).status_code == 409
    assert world.pay(invoice.id, over_key, amount=3001).status_code == 409


def test_a_retry_while_the_first_is_running_is_409(world: World) -> None:
    invoice = world.invoice(5000)
    key = "busy-" + uuid.uuid4().hex
    with world.server.db.write() as session:  # the first request holds the key
        session.add(
            IdempotencyKey(
                id=str(uuid.uuid4()),
                scope=f"user:{world.staff_id}",
                route="POST /v1/invoices/{invoice_id}/pay",
                key=key,
                fingerprint=__import__(
                    "sync_server.payments.idempotency", fromlist=["x"]
                ).fingerprint(
                    {
                        "path": {"invoice_id": invoice.id},
                        "body": {
                            "amount": 1000,
                            "currency": "EUR",
                            "payment_method": "tok_success",
                        },
                    }
                ),
                state="running",
                created_at=datetime.now(UTC),
                locked_at=datetime.now(UTC),
            )
        )
    busy = world.pay(invoice.id, key)
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "idempotency_key_in_use"
    assert world.read(invoice.id).paid == 0


def test_concurrent_retries_of_one_key_charge_once(world: World) -> None:
    invoice = world.invoice(5000)
    key = "race-" + uuid.uuid4().hex
    codes: list[int] = []

    def go() -> None:
        codes.append(world.pay(invoice.id, key, amount=5000).status_code)

    threads = [threading.Thread(target=go) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(codes) <= {200, 409} and 200 in codes
    assert len(world.charges_for(derived_key("rest", world.staff_id, key))) == 1
    assert world.read(invoice.id).paid == 5000


# ---------------------------------------------------------------- refunds and voids
def test_refunds_never_exceed_what_was_captured(world: World) -> None:
    invoice = world.invoice(5000)
    paid = world.pay(invoice.id, "p-" + uuid.uuid4().hex, amount=5000).json()
    payment_id = paid["payment_id"]
    first_key = "r1-" + uuid.uuid4().hex
    assert world.refund(payment_id, first_key, 3000).status_code == 200
    assert world.refund(payment_id, first_key, 3000).status_code == 200  # replayed
    too_much = world.refund(payment_id, "r2-" + uuid.uuid4().hex, 2001)
    assert too_much.status_code == 409 and too_much.json()["error"]["code"] == "refund_too_large"
    assert world.refund(payment_id, "r3-" + uuid.uuid4().hex, 2000).status_code == 200
    assert world.refund(payment_id, "r4-" + uuid.uuid4().hex, 1).status_code == 409
    final = world.read(invoice.id)
    assert (final.status, final.refunded) == ("refunded", 5000)
    # The database holds the limit whatever the code does.
    with pytest.raises(DBAPIError), world.server.db.write() as session:
        session.execute(update(Payment).where(Payment.id == payment_id).values(refunded=5001))
    assert world.ledger_problems() == []


def test_void_only_what_nothing_was_paid_on(world: World) -> None:
    open_one, paid_one = world.invoice(700), world.invoice(800)
    world.pay(paid_one.id, "v-" + uuid.uuid4().hex, amount=100)
    voided = world.staff.post(f"/v1/invoices/{open_one.id}/void", json={"reason": "duplicate"})
    assert voided.status_code == 200 and voided.json()["status"] == "void"
    refused = world.staff.post(f"/v1/invoices/{paid_one.id}/void", json={})
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "not_voidable"
    assert world.ledger_problems() == []


# ---------------------------------------------------------------- invoices and the ledger
def test_staff_create_list_and_read_invoices(world: World) -> None:
    made = world.staff.post(
        "/v1/invoices",
        json={
            "clinic_id": world.clinic_id,
            "patient_id": str(uuid.uuid4()),
            "currency": "EUR",
            "lines": [
                {"kind": "order", "description": "foam dressing", "quantity": 3, "unit_price": 450},
                {"kind": "appointment", "description": "wound review", "unit_price": 6000},
            ],
        },
    )
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["total"] == 7350 and body["number"].startswith("INV-") and body["status"] == "open"
    listed = world.staff.get("/v1/invoices", params={"clinic_id": world.clinic_id}).json()
    assert body["id"] in {i["id"] for i in listed}
    assert world.staff.get(f"/v1/invoices/{body['id']}").json()["lines"][0]["amount"] == 1350
    bad = world.staff.post(
        "/v1/invoices",
        json={
            "clinic_id": world.clinic_id,
            "currency": "EUR",
            "lines": [{"kind": "order", "description": "x", "unit_price": 1}],
        },
    )
    assert bad.status_code == 400  # neither patient nor payer
    ledger = world.staff.get("/v1/ledger").json()
    assert ledger["problems"] == []


def test_invoice_numbers_have_no_gaps_under_concurrent_creators(world: World) -> None:
    server = world.server
    errors: list[BaseException] = []

    def creator(n: int) -> None:
        for i in range(5):
            try:

                def work(session: Any, i: int = i) -> None:
                    bill(
                        session=session,
                        organisation_id=server.organisation_id,
                        clinic_id=world.clinic_id,
                        patient_id=str(uuid.uuid4()),
                        charges=[Charge("order", None, "x", 1, 100, "EUR")],
                        now=datetime.now(UTC),
                    )
                    if (n + i) % 3 == 0:
                        raise RuntimeError("rolled back")  # its number must come back

                server.db.write_retrying(work, attempts=10)
            except RuntimeError:
                pass
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

    threads = [threading.Thread(target=creator, args=(n,)) for n in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    with server.db.read() as session:
        numbers = sorted(
            session.scalars(
                select(Invoice.sequence).where(Invoice.organisation_id == server.organisation_id)
            )
        )
    assert numbers == list(range(1, len(numbers) + 1))


def test_invoices_of_one_transaction_are_numbered_in_order_at_its_end(world: World) -> None:
    server = world.server

    def issue(session: Any, patient: str) -> Invoice:
        return bill(
            session=session,
            organisation_id=server.organisation_id,
            clinic_id=world.clinic_id,
            patient_id=patient,
            charges=[Charge("order", None, "x", 1, 100, "EUR")],
            now=datetime.now(UTC),
        )

    with server.db.write() as session:
        first = issue(session, "first")
        refused = session.begin_nested()  # as a refused intent's savepoint
        issue(session, "rolled back")
        refused.rollback()
        last = issue(session, "last")
        assert first.number is None and last.number is None  # until the end
        ids = (first.id, last.id)
    with server.db.read() as session:
        numbered = [session.get(Invoice, invoice_id) for invoice_id in ids]
        sequences = [i.sequence for i in numbered if i is not None]
        assert len(sequences) == 2 and sequences[1] == sequences[0] + 1  # no gap
        assert [i.number for i in numbered if i is not None] == [f"INV-{n:06d}" for n in sequences]


def test_ledger_postings_are_never_changed(world: World) -> None:
    world.invoice(999)
    for statement in (update(LedgerPosting).values(amount=1), text("DELETE FROM ledger_postings")):
        with pytest.raises(DBAPIError), world.server.db.write() as session:
            session.execute(statement)


def test_the_paid_hook_hears_of_fully_paid_invoices(world: World) -> None:
    heard: list[str] = []
    desk = world.server.app.state.payments
    desk.on_paid(lambda *, session, invoice, now: heard.append(invoice.id))
    try:
        invoice = world.invoice(300)
        world.pay(invoice.id, "h1-" + uuid.uuid4().hex, amount=100)
        assert heard == []
        world.pay(invoice.id, "h2-" + uuid.uuid4().hex, amount=200)
        assert heard == [invoice.id]
    finally:
        desk._paid.pop()


def test_concurrent_devices_racing_for_one_invoice_pay_it_once(world: World) -> None:
    server = world.server
    invoice = world.invoice(9000)
    tablets = []
    for _ in range(10):
        device_id, token = server.device_token(world.clinic_id)
        tablets.append(Tablet(device_id, server.http(token), world.tablet.world))
    intents = [
        t.intent(IntentKind.PAYMENT_PAY, subject_id=invoice.id, amount=amount, currency="EUR",
                 payment_method="tok_success")
        for t, amount in zip(tablets, [9000, 9000, 4500, 4500, 4500, 3000, 3000, 3000, 3000, 1],
                             strict=True)
    ]  # fmt: skip
    threads = [
        threading.Thread(target=t.push, args=(i,)) for t, i in zip(tablets, intents, strict=True)
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        accepted = 0
        for tablet, intent in zip(tablets, intents, strict=True):
            tablet.pull()
            decision = tablet.decision(intent.id)
            assert decision is not None
            accepted += decision.status is DecisionStatus.ACCEPTED
            if decision.status is DecisionStatus.REJECTED:
                assert "still owed" in str(decision.reason) or "is paid" in str(decision.reason)
    finally:
        for tablet in tablets:
            tablet.http.close()
    final = world.read(invoice.id)
    assert final.paid <= 9000 and final.pending == 0 and accepted >= 1
    keys = {i.id for i in intents}
    charged = [c for c in world.gateway.charges() if c["idempotency_key"] in keys]
    assert sum(c["amount"] for c in charged if c["status"] == "succeeded") == final.paid
    assert world.ledger_problems() == []


def test_the_housekeeping_sweep_settles_timeouts_from_the_gateway(world: World) -> None:
    from sync_server.payments.charging import sweep_processing

    invoice = world.invoice(800)
    key = "sweep-" + uuid.uuid4().hex
    assert world.pay(invoice.id, key, amount=800, payment_method="tok_timeout").json()[
        "status"
    ] == ("processing")
    desk = world.server.app.state.payments
    assert sweep_processing(database=world.server.db, payments=desk, now=datetime.now(UTC)) >= 1
    assert world.read(invoice.id).status == "paid"
    assert len(world.charges_for(derived_key("rest", world.staff_id, key))) == 1
    assert world.ledger_problems() == []
