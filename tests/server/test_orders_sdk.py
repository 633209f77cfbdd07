"""The SDK against a live server, for supplies: a tablet orders from the synced
catalogue, gets the order's invoice down with the decision, and pays it; the payment
intent also travels through a bundle to a second tablet (imported twice) and both
tablets push it: it is decided once and charged once. SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from crdt import DecisionStatus
from edge_sdk import (
    Argon2Params,
    EdgeClient,
    PassphraseKeyProvider,
    export_bundle,
    import_bundle,
    invoice_id_of,
)
from sync_server.commerce.reference import republish_catalogue
from sync_server.identity.enrolment import create_enrolment_token
from sync_server.intents.tables import IntentDecision
from sync_server.payments.ledger import verify_ledger
from sync_server.payments.tables import Payment

from .commerce_world import Shop, build_shop

PASSPHRASE = "bundle pass phrase"


@pytest.fixture
def shop(server: Any) -> Iterator[Shop]:
    built = build_shop(server)
    yield built
    built.close()


@pytest.fixture
def tablets(tmp_path: Path, shop: Shop) -> Iterator[list[EdgeClient]]:
    made = []
    for name in ("ward", "home"):
        client = EdgeClient.init(
            tmp_path / name,
            PassphraseKeyProvider("pass phrase", params=Argon2Params.fast()),
            clinic_id=shop.clinic_id,
        )
        with shop.server.db.write() as session:
            token, _ = create_enrolment_token(
                session=session, clinic_id=shop.clinic_id, ttl=timedelta(minutes=10)
            )
        client.enroll(shop.server.url, token, name=name)
        made.append(client)
    yield made
    for client in made:
        client.close()


def test_an_order_paid_through_a_bundle_twice_is_charged_once(
    shop: Shop, tablets: list[EdgeClient], tmp_path: Path
) -> None:
    ward, home = tablets
    foam = shop.product("Foam SDK", price=1490)
    shop.receive(foam, 10)
    with shop.server.db.write() as session:
        republish_catalogue(
            session=session,
            organisation_id=shop.server.organisation_id,
            signer=shop.server.server_signer(),
            now=datetime.now(UTC),
        )
    ward.sync()
    sku = ward.orders.product(foam).sku
    patient = ward.patients.add(given_name="Ola", family_name="Nordby", birth_date=date(1944, 4, 4))
    placed = ward.orders.place(patient.id, [(sku, 3)])
    ward.sync()
    order = ward.intent_status(placed.id)
    assert order.state == DecisionStatus.ACCEPTED.value, order
    assert order.decision is not None and order.decision.outcome is not None
    invoice = ward.payments.invoice(str(order.decision.outcome["invoice_id"]))
    assert (invoice.total, invoice.status, invoice.currency) == (4470, "open", "EUR")

    # Offline: the ward pays; the intent goes to the home tablet by bundle, twice.
    paying = ward.payments.pay(invoice_id_of(invoice), 4470, "EUR", "tok_success")
    bundle = tmp_path / "pay.bundle"
    export_bundle(ward, bundle, passphrase=PASSPHRASE, kdf=Argon2Params.fast())
    import_bundle(home, bundle, passphrase=PASSPHRASE)
    import_bundle(home, bundle, passphrase=PASSPHRASE)  # again: nothing new
    home.sync()  # the home tablet delivers the ward's intent first
    ward.sync()  # then the ward pushes it again
    home.sync()
    for tablet in tablets:
        status = tablet.intent_status(paying.id)
        assert status.state == DecisionStatus.ACCEPTED.value, status
        assert tablet.payments.invoice(invoice_id_of(invoice)).status == "paid"
    with shop.server.db.read() as session:
        payments = session.query(Payment).filter(Payment.invoice_id == invoice_id_of(invoice))
        assert [(p.status, p.captured) for p in payments] == [("succeeded", 4470)]
        assert session.get(IntentDecision, paying.id) is not None
        assert verify_ledger(session=session, organisation_id=shop.server.organisation_id) == []
    gateway = shop.server.app.state.payments.gateway
    assert [c["amount"] for c in gateway.charges() if c["idempotency_key"] == paying.id] == [4470]
