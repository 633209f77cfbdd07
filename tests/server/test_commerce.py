"""Commerce over real HTTP on SQLite and PostgreSQL: orders decided from devices'
intents (reservations per lot, first-expiry-first-out, kits, partial orders, the
reasons a person can act on), prescriptions (missing, expired, another patient's,
exhausted, valid), the lifecycle and cancellations releasing stock, holds expiring
on the server clock, the published catalogue, staff routes and their refusals, and
replays decided once."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from crdt import (
    Catalogue,
    DecisionStatus,
    IntentKind,
    RecordDocument,
    catalogue_id,
    invoice_record_id,
)
from crdt import (
    Invoice as InvoiceRecord,
)
from sync_server.commerce.holds import expire_holds
from sync_server.commerce.orders import mark_order_paid, set_order_invoice
from sync_server.commerce.tables import Order, Prescription
from sync_server.identity.tables import User
from sync_server.identity.users import create_user
from sync_server.intents.tables import IntentDecision
from sync_server.payments.charging import pay, refund
from sync_server.payments.ledger import verify_ledger
from sync_server.payments.tables import Invoice

from .commerce_world import Shop, build_shop, days, decide, patient_of, place

PASSWORD = "correct horse battery staple"


@pytest.fixture
def shop(server: Any) -> Iterator[Shop]:
    built = build_shop(server)
    yield built
    built.close()


def staff_client(server: Any, role: str = "admin", clinic_id: str | None = None) -> httpx.Client:
    with server.db.write() as session:
        account, _ = create_user(
            session=session,
            username=f"{role}-{uuid.uuid4().hex[:10]}",
            password=PASSWORD,
            role=role,
            organisation_id=server.organisation_id,
            clinic_id=clinic_id,
            with_totp=False,
        )
    assert isinstance(account, User)
    token, _ = server.app.state.signing_key.issue_access_token(
        subject=account.id,
        kind="user",
        clinic_id=account.clinic_id,
        organisation_id=account.organisation_id,
        role=account.role,
        ttl=timedelta(minutes=10),
    )
    return server.http(token)


def pick(server: Any, order_id: str) -> httpx.Response:
    with staff_client(server) as http:
        return http.post(f"/v1/commerce/orders/{order_id}/pick")


# ---------------------------------------------------------------- orders
def test_an_order_is_reserved_per_lot_with_its_total(shop: Shop) -> None:
    foam = shop.product("Foam dressing 10x10", price=1250)
    gauze = shop.product("Gauze", price=300)
    shop.receive(foam, 5, days(100))
    shop.receive(gauze, 50, days(200))
    tablet = shop.tablet()
    patient = patient_of(tablet)
    decision = decide(tablet, place(tablet, patient, [(foam, 3), (gauze, 10)]))
    assert decision.status is DecisionStatus.ACCEPTED, decision.reason
    outcome = decision.outcome or {}
    assert outcome["total"] == 3 * 1250 + 10 * 300 and outcome["currency"] == "EUR"
    assert [line["quantity"] for line in outcome["lines"]] == [3, 10]
    assert outcome["lines"][0]["reservations"][0]["quantity"] == 3
    assert shop.stock(foam) == (5, 3) and shop.held(foam) == 3


def test_a_short_line_refuses_the_order_with_a_reason_unless_partial(shop: Shop) -> None:
    foam = shop.product("Foam dressing 10x10")
    gauze = shop.product("Gauze")
    shop.receive(foam, 3)
    shop.receive(gauze, 10)
    tablet = shop.tablet()
    patient = patient_of(tablet)
    refused = decide(tablet, place(tablet, patient, [(gauze, 2), (foam, 5)]))
    assert refused.status is DecisionStatus.REJECTED
    assert "only 3 of Foam dressing 10x10 (box of 10) in stock, 5 asked for" in (
        refused.reason or ""
    )
    assert refused.alternative == {
        "lines": [{"line": 1, "product_id": foam, "reason": refused.reason, "available": 3}]
    }
    assert shop.stock(gauze) == (10, 0) and shop.stock(foam) == (3, 0)  # nothing held
    partial = decide(tablet, place(tablet, patient, [(gauze, 2), (foam, 5)], partial=True))
    assert partial.status is DecisionStatus.ACCEPTED_ALTERNATIVE
    assert [line["product_id"] for line in (partial.outcome or {})["lines"]] == [gauze]
    assert (partial.outcome or {})["refused"][0]["product_id"] == foam
    assert shop.stock(gauze) == (10, 2) and shop.stock(foam) == (3, 0)


def test_unknown_products_and_patients_are_refused(shop: Shop) -> None:
    tablet = shop.tablet()
    patient = patient_of(tablet)
    missing = str(uuid.uuid4())
    unknown = decide(tablet, place(tablet, patient, [(missing, 1)]))
    assert unknown.status is DecisionStatus.REJECTED and "catalogue" in (unknown.reason or "")
    foam = shop.product("Foam")
    shop.receive(foam, 3)
    stranger = decide(tablet, place(tablet, str(uuid.uuid4()), [(foam, 1)]))
    assert stranger.status is DecisionStatus.REJECTED
    assert "not a patient of this clinic" in (stranger.reason or "")


def test_kits_reserve_their_components(shop: Shop) -> None:
    foam = shop.product("NPWT foam")
    canister = shop.product("Canister 300 ml")
    kit = shop.product("NPWT kit", components=((foam, 2), (canister, 1)))
    shop.receive(foam, 5)
    shop.receive(canister, 10)
    tablet = shop.tablet()
    patient = patient_of(tablet)
    accepted = decide(tablet, place(tablet, patient, [(kit, 2)]))
    assert accepted.status is DecisionStatus.ACCEPTED, accepted.reason
    assert shop.stock(foam) == (5, 4) and shop.stock(canister) == (10, 2)
    refused = decide(tablet, place(tablet, patient, [(kit, 1)]))
    assert refused.status is DecisionStatus.REJECTED
    assert "NPWT kit is out of stock (short of NPWT foam)" in (refused.reason or "")


def test_fefo_with_several_expiries_and_an_expired_lot_never_taken(shop: Shop) -> None:
    foam = shop.product("Foam FEFO")
    expired = shop.receive(foam, 50, days(-3), code="EXPIRED")
    today = shop.receive(foam, 50, days(0), code="TODAY")
    late = shop.receive(foam, 5, days(300), code="LATE")
    soon = shop.receive(foam, 2, days(20), code="SOON")
    middle = shop.receive(foam, 3, days(60), code="MIDDLE")
    store_late = shop.receive(foam, 1, days(400), location_id=shop.store_id, code="STORE")
    tablet = shop.tablet()
    patient = patient_of(tablet)
    decision = decide(tablet, place(tablet, patient, [(foam, 7)]))
    assert decision.status is DecisionStatus.ACCEPTED, decision.reason
    taken = [
        (r["lot_code"], r["quantity"]) for r in (decision.outcome or {})["lines"][0]["reservations"]
    ]
    # The clinic's own store first, then the warehouse by expiry; expired lots never.
    assert taken == [("STORE", 1), ("SOON", 2), ("MIDDLE", 3), ("LATE", 1)]
    refused = decide(tablet, place(tablet, patient, [(foam, 5)]))
    assert refused.status is DecisionStatus.REJECTED
    assert "only 4 of Foam FEFO" in (refused.reason or "")
    order_id = (decision.outcome or {})["order_id"]
    assert pick(shop.server, order_id).status_code == 200
    lots = {lot.id: lot for lot in shop.lots(foam)}
    assert (lots[expired].on_hand, lots[today].on_hand) == (50, 50)
    assert lots[store_late].on_hand == 0 and lots[soon].on_hand == 0
    assert lots[middle].on_hand == 0 and (lots[late].on_hand, lots[late].reserved) == (4, 0)


# ---------------------------------------------------------------- prescriptions
def test_prescription_cases_with_their_reasons(shop: Shop) -> None:
    foam = shop.product("Silver foam 10x10", rx=True, product_class="foam dressing")
    shop.receive(foam, 500)
    tablet = shop.tablet()
    ada, ben, cai, dan = (patient_of(tablet, name) for name in ("Ada", "Ben", "Cai", "Dan"))

    missing = decide(tablet, place(tablet, ada, [(foam, 1)]))
    assert missing.status is DecisionStatus.REJECTED
    assert missing.reason == (
        "Silver foam 10x10 needs a prescription for foam dressing; "
        "there is none on file for this patient"
    )

    shop.prescribe(ben, product_class="foam dressing", quantity=30)  # someone else's
    others = decide(tablet, place(tablet, ada, [(foam, 1)]))
    assert others.status is DecisionStatus.REJECTED and "none on file" in (others.reason or "")

    shop.prescribe(cai, product_id=foam, quantity=10, issued_on=days(-120), valid_until=days(-30))
    expired = decide(tablet, place(tablet, cai, [(foam, 1)]))
    assert expired.status is DecisionStatus.REJECTED
    assert expired.reason == (
        "Silver foam 10x10 needs a prescription for foam dressing; "
        f"the last one expired on {days(-30).isoformat()}"
    )

    prescription = shop.prescribe(dan, product_class="foam dressing", quantity=10, refills=2)
    valid = decide(tablet, place(tablet, dan, [(foam, 30)]))
    assert valid.status is DecisionStatus.ACCEPTED, valid.reason
    assert (valid.outcome or {})["lines"][0]["prescription_id"] == prescription
    exhausted = decide(tablet, place(tablet, dan, [(foam, 1)]))
    assert exhausted.status is DecisionStatus.REJECTED
    assert exhausted.reason == (
        "the prescription for foam dressing is exhausted (0 of 30 left); it needs a new one"
    )
    # A cancellation gives the quantity back.
    cancel = tablet.intent(
        IntentKind.ORDER_CANCEL, subject_id=(valid.outcome or {})["order_id"], reason="wrong size"
    )
    assert decide(tablet, cancel).status is DecisionStatus.ACCEPTED
    with shop.server.db.read() as session:
        row = session.get(Prescription, prescription)
        assert row is not None and row.quantity_remaining == 30
    again = decide(tablet, place(tablet, dan, [(foam, 12)]))
    assert again.status is DecisionStatus.ACCEPTED


def test_prescriptions_through_the_staff_routes(shop: Shop) -> None:
    tablet = shop.tablet()
    patient = patient_of(tablet)
    foam = shop.product("Foam Rx", rx=True, product_class="foam dressing")
    body = {
        "patient_id": patient,
        "prescriber_id": shop.doctor_id,
        "product_class": "foam dressing",
        "quantity": 10,
        "refills": 1,
        "signature": "data:image/png;base64,AAAA",
        "issued_on": days(0).isoformat(),
    }
    with staff_client(shop.server) as http:
        made = http.post("/v1/commerce/prescriptions", json=body)
        assert made.status_code == 201, made.text
        assert made.json()["valid_until"] == days(90).isoformat()
        assert made.json()["quantity_total"] == 20 and "signature" not in made.json()
        listed = http.get("/v1/commerce/prescriptions", params={"patient_id": patient})
        assert [p["id"] for p in listed.json()] == [made.json()["id"]]
        both = http.post("/v1/commerce/prescriptions", json={**body, "product_id": foam})
        assert both.status_code == 400 and both.json()["error"]["code"] == "invalid_item"
        nurse = http.post(
            "/v1/commerce/prescriptions", json={**body, "prescriber_id": str(uuid.uuid4())}
        )
        assert nurse.status_code == 404
        stranger = http.post(
            "/v1/commerce/prescriptions", json={**body, "patient_id": str(uuid.uuid4())}
        )
        assert stranger.status_code == 404
        revoked = http.post(f"/v1/commerce/prescriptions/{made.json()['id']}/revoke")
        assert revoked.status_code == 200 and revoked.json()["revoked_at"]
        twice = http.post(f"/v1/commerce/prescriptions/{made.json()['id']}/revoke")
        assert twice.status_code == 409
    shop.receive(foam, 5)
    refused = decide(tablet, place(tablet, patient, [(foam, 1)]))
    assert refused.status is DecisionStatus.REJECTED and "revoked" in (refused.reason or "")


# ---------------------------------------------------------------- lifecycle
def test_lifecycle_and_cancellations_release_stock(shop: Shop) -> None:
    foam = shop.product("Foam lifecycle")
    shop.receive(foam, 10)
    tablet = shop.tablet()
    patient = patient_of(tablet)
    first = decide(tablet, place(tablet, patient, [(foam, 4)]))
    second = decide(tablet, place(tablet, patient, [(foam, 3)]))
    first_id, second_id = ((d.outcome or {})["order_id"] for d in (first, second))
    assert shop.stock(foam) == (10, 7)
    with staff_client(shop.server) as http:
        assert http.post(f"/v1/commerce/orders/{first_id}/ship").status_code == 409
        picked = http.post(f"/v1/commerce/orders/{first_id}/pick")
        assert picked.status_code == 200 and picked.json()["state"] == "picked"
        assert shop.stock(foam) == (6, 3)
        assert http.post(f"/v1/commerce/orders/{first_id}/ship").json()["state"] == "shipped"
        late = http.post(f"/v1/commerce/orders/{first_id}/cancel", json={})
        assert late.status_code == 409 and late.json()["error"]["code"] == "order_not_cancellable"
        assert http.post(f"/v1/commerce/orders/{first_id}/deliver").json()["state"] == "delivered"
        cancelled = http.post(f"/v1/commerce/orders/{second_id}/cancel", json={"reason": "x"})
        assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
        assert shop.stock(foam) == (6, 0)
        shown = http.get(f"/v1/commerce/orders/{second_id}").json()
        assert {r["state"] for r in shown["reservations"]} == {"released"}
    # A device cancels a picked order: the stock goes back on the shelf.
    third = decide(tablet, place(tablet, patient, [(foam, 2)]))
    third_id = (third.outcome or {})["order_id"]
    assert pick(shop.server, third_id).status_code == 200
    assert shop.stock(foam) == (4, 0)
    cancel = decide(tablet, tablet.intent(IntentKind.ORDER_CANCEL, subject_id=third_id))
    assert cancel.status is DecisionStatus.ACCEPTED and shop.stock(foam) == (6, 0)
    again = decide(tablet, tablet.intent(IntentKind.ORDER_CANCEL, subject_id=third_id))
    assert again.status is DecisionStatus.REJECTED and "cancelled" in (again.reason or "")
    shipped = decide(tablet, tablet.intent(IntentKind.ORDER_CANCEL, subject_id=first_id))
    assert shipped.status is DecisionStatus.REJECTED


def _pay(shop: Shop, invoice_id: str, amount: int, method: str = "tok_success") -> Any:
    """Pay `amount` of an invoice through the server's sandbox gateway."""
    with shop.server.db.write() as session:
        return pay(
            session=session,
            payments=shop.server.app.state.payments,
            organisation_id=shop.server.organisation_id,
            invoice_id=invoice_id,
            amount=amount,
            currency="EUR",
            payment_method=method,
            idempotency_key=f"test-{uuid.uuid4()}",
            now=datetime.now(UTC),
        ).payment


def test_unpaid_holds_expire_on_the_server_clock(shop: Shop) -> None:
    foam = shop.product("Foam hold", price=1000)
    shop.receive(foam, 10)
    tablet = shop.tablet()
    patient = patient_of(tablet)
    unpaid_order = decide(tablet, place(tablet, patient, [(foam, 4)])).outcome or {}
    paid_order = decide(tablet, place(tablet, patient, [(foam, 3)])).outcome or {}
    unpaid, paid = unpaid_order["order_id"], paid_order["order_id"]
    # Every accepted order is billed at once, due when its hold expires.
    db, signer = shop.server.db, shop.server.server_signer()
    with db.read() as session:
        billed = session.get(Invoice, paid_order["invoice_id"])
        assert billed is not None and (billed.total, billed.status) == (3000, "open")
        assert billed.due_at is not None and str(billed.number).startswith("INV-")
    payment = _pay(shop, paid_order["invoice_id"], 3000)
    assert payment.status == "succeeded"
    with db.write() as session:
        order = session.get(Order, paid)
        assert order is not None and order.paid_at is not None  # the paid hook
        assert order.invoice_id == paid_order["invoice_id"]
        assert mark_order_paid(session=session, order_id=paid, now=datetime.now(UTC))  # again
        assert not set_order_invoice(session=session, order_id=paid, invoice_id="inv-2")
    now = datetime.now(UTC)
    assert expire_holds(database=db, signer=signer, now=now + timedelta(hours=47)) == 0
    assert shop.stock(foam) == (10, 7)
    assert expire_holds(database=db, signer=signer, now=now + timedelta(hours=49)) >= 1
    assert shop.stock(foam) == (10, 3)
    with db.write() as session:
        order = session.get(Order, unpaid)
        assert order is not None and order.state == "cancelled"
        voided = session.get(Invoice, unpaid_order["invoice_id"])
        assert voided is not None and voided.status == "void"  # nothing left owed
        assert not mark_order_paid(session=session, order_id=unpaid, now=now)  # too late
        kept = session.get(Order, paid)
        assert kept is not None and kept.state == "accepted"
        assert verify_ledger(session=session, organisation_id=shop.server.organisation_id) == []


def test_a_paid_order_is_cancelled_only_once_refunded(shop: Shop) -> None:
    foam = shop.product("Foam refund first", price=1000)
    shop.receive(foam, 5)
    tablet = shop.tablet()
    patient = patient_of(tablet)
    placed = decide(tablet, place(tablet, patient, [(foam, 2)])).outcome or {}
    half = _pay(shop, placed["invoice_id"], 500)  # partly paid: the hold still runs
    cancel = decide(tablet, tablet.intent(IntentKind.ORDER_CANCEL, subject_id=placed["order_id"]))
    assert cancel.status is DecisionStatus.REJECTED
    assert "5.00 EUR paid; refund it before cancelling" in (cancel.reason or "")
    assert shop.stock(foam) == (5, 2)  # the refused cancel changed nothing
    later = datetime.now(UTC) + timedelta(days=3)
    signer = shop.server.server_signer()
    assert expire_holds(database=shop.server.db, signer=signer, now=later) == 0
    assert shop.stock(foam) == (5, 2)  # nor did the sweep: money is on the invoice
    with shop.server.db.write() as session:
        refund(
            session=session,
            payments=shop.server.app.state.payments,
            organisation_id=shop.server.organisation_id,
            payment_id=half.id,
            amount=500,
            idempotency_key=f"test-{uuid.uuid4()}",
            now=datetime.now(UTC),
        )
    cancel = decide(tablet, tablet.intent(IntentKind.ORDER_CANCEL, subject_id=placed["order_id"]))
    assert cancel.status is DecisionStatus.ACCEPTED, cancel.reason
    assert shop.stock(foam) == (5, 0)
    with shop.server.db.read() as session:
        assert verify_ledger(session=session, organisation_id=shop.server.organisation_id) == []


# ---------------------------------------------------------------- catalogue
def test_the_catalogue_syncs_down_with_availability(shop: Shop) -> None:
    foam = shop.product("Foam catalogue", price=990)
    canister = shop.product("Canister catalogue")
    kit = shop.product("Kit catalogue", components=((foam, 2), (canister, 1)))
    shop.receive(foam, 9)
    shop.receive(canister, 3)
    with shop.server.db.write() as session:
        from sync_server.commerce.reference import republish_catalogue

        republish_catalogue(
            session=session,
            organisation_id=shop.server.organisation_id,
            signer=shop.server.server_signer(),
            now=datetime.now(UTC),
        )
    tablet = shop.tablet()
    patient = patient_of(tablet)

    def seen() -> dict[str, Any]:
        tablet.pull()
        record = RecordDocument.load(tablet.held[catalogue_id(shop.clinic_id)]).read()
        assert isinstance(record, Catalogue)
        return {p.id: p for p in record.products}

    listed = seen()
    assert listed[foam].available == 9 and listed[foam].price == 990
    assert listed[kit].available == 3 and len(listed[kit].components) == 2
    decide(tablet, place(tablet, patient, [(kit, 2)]))
    listed = seen()
    assert (listed[foam].available, listed[canister].available, listed[kit].available) == (5, 1, 1)


# ---------------------------------------------------------------- staff routes
def test_staff_routes_round_trip_and_refuse_bad_input(shop: Shop) -> None:
    server = shop.server
    sku = f"FOAM-{uuid.uuid4().hex[:8]}"
    body = {
        "sku": sku,
        "name": "Foam dressing 10x10",
        "category": "dressing",
        "product_class": "foam dressing",
        "unit": "box of 10",
        "price": 1250,
        "currency": "EUR",
        "hcpcs": "A6209",
    }
    with staff_client(server) as http:
        made = http.post("/v1/commerce/products", json=body)
        assert made.status_code == 201, made.text
        product = made.json()["id"]
        assert http.post("/v1/commerce/products", json=body).status_code == 409
        for bad in (
            {**body, "sku": "x1", "price": -1},
            {**body, "sku": "x2", "category": "cake"},
            {**body, "sku": "x3", "hcpcs": "nope"},
            {**body, "sku": "x4", "currency": "euro"},
            {**body, "sku": "x5", "surprise": 1},
            {**body, "sku": "x6", "name": "a\x00b"},
        ):
            assert http.post("/v1/commerce/products", json=bad).status_code == 422
        kit = http.post(
            "/v1/commerce/products",
            json={**body, "sku": f"KIT-{sku}", "components": [{"product_id": str(uuid.uuid4()),
                                                                "quantity": 1}]},
        )  # fmt: skip
        assert kit.status_code == 400
        patched = http.patch(f"/v1/commerce/products/{product}", json={"price": 1300})
        assert patched.status_code == 200 and patched.json()["price"] == 1300
        assert http.patch(f"/v1/commerce/products/{product}", json={"sku": "x"}).status_code == 422
        assert http.get(f"/v1/commerce/products/{uuid.uuid4()}").status_code == 404
        received = http.post(
            "/v1/commerce/lots",
            json={
                "location_id": shop.store_id,
                "product_id": product,
                "lot_code": "L1",
                "expires_on": days(30).isoformat(),
                "quantity": 4,
            },
        )
        assert received.status_code == 201, received.text
        lot = received.json()["id"]
        mismatch = http.post(
            "/v1/commerce/lots",
            json={
                "location_id": shop.store_id,
                "product_id": product,
                "lot_code": "L1",
                "expires_on": days(31).isoformat(),
                "quantity": 1,
            },
        )
        assert mismatch.status_code == 409
        assert http.post(f"/v1/commerce/lots/{lot}/adjust", json={"delta": -5}).status_code == 409
        adjusted = http.post(f"/v1/commerce/lots/{lot}/adjust", json={"delta": -1})
        assert adjusted.status_code == 200 and adjusted.json()["on_hand"] == 3
        stock = http.get("/v1/commerce/stock", params={"product_id": product}).json()
        assert [(s["lot_code"], s["on_hand"]) for s in stock] == [("L1", 3)]
        warehouse = http.post(
            "/v1/commerce/locations", json={"kind": "warehouse", "name": f"Second {sku}"}
        )
        assert warehouse.status_code == 409
        shelf = http.post("/v1/commerce/locations", json={"kind": "shelf", "name": f"Shelf {sku}"})
        assert shelf.status_code == 400
        assert http.post(f"/v1/commerce/orders/{uuid.uuid4()}/pick").status_code == 404
        assert http.post(f"/v1/commerce/orders/{uuid.uuid4()}/dance").status_code == 422
    with staff_client(server, role="clinician", clinic_id=shop.clinic_id) as http:
        assert http.get("/v1/commerce/products").status_code == 200
        assert http.post("/v1/commerce/products", json={**body, "sku": "c"}).status_code == 403
    _device, token = server.device_token(shop.clinic_id)
    with server.http(token) as http:
        assert http.get("/v1/commerce/products").status_code == 403


# ---------------------------------------------------------------- replays
def test_a_replayed_intent_is_decided_once(shop: Shop) -> None:
    foam = shop.product("Foam replay")
    shop.receive(foam, 10)
    tablet = shop.tablet()
    patient = patient_of(tablet)
    intent = place(tablet, patient, [(foam, 4)])
    first = decide(tablet, intent)
    tablet.push(intent)
    tablet.push(intent)
    other = shop.tablet()
    other.push(intent)  # relayed by another device of the clinic
    assert first.status is DecisionStatus.ACCEPTED
    assert shop.stock(foam) == (10, 4)
    with shop.server.db.read() as session:
        rows = session.scalars(
            select(IntentDecision.intent_id).where(IntentDecision.intent_id == intent.id)
        ).all()
        orders = session.scalars(select(Order.id).where(Order.intent_id == intent.id)).all()
    assert len(rows) == 1 and len(orders) == 1


# ---------------------------------------------------------------- seed-demo
def test_seed_demo_adds_supplies_once(tmp_path: Any) -> None:
    from sync_server import Settings, migrate, seed_demo
    from sync_server.commerce.tables import KitComponentRow, Lot, Product
    from sync_server.db import open_database

    settings = Settings(data_dir=tmp_path / "server")
    migrate(settings)
    first = seed_demo(settings, organisation="Supplies Demo")
    again = seed_demo(settings, organisation="Supplies Demo")
    assert first.created > 0 and (again.created, again.records_published) == (0, 0)
    with open_database(settings, must_exist=True) as database, database.read() as session:
        products = {p.sku: p for p in session.scalars(select(Product))}
        assert products["FOAM-10"].hcpcs == "A6209" and products["FOAM-10"].prescription_required
        kit = session.scalars(
            select(KitComponentRow).where(KitComponentRow.kit_id == products["NPWT-KIT"].id)
        ).all()
        assert len(kit) == 2
        expired = session.scalar(select(Lot).where(Lot.lot_code == "F10-EXPIRED"))
        assert expired is not None and expired.expires_on < datetime.now(UTC).date()
        assert len(session.scalars(select(Prescription)).all()) == 3


def test_a_device_pays_its_order_and_the_hold_stops(shop: Shop) -> None:
    foam = shop.product("Foam billed", price=1250)
    shop.receive(foam, 5)
    tablet = shop.tablet()
    patient = patient_of(tablet)
    placed = decide(tablet, place(tablet, patient, [(foam, 2)])).outcome or {}
    invoice = RecordDocument.load(tablet.held[invoice_record_id(placed["invoice_id"])]).read()
    assert isinstance(invoice, InvoiceRecord)
    assert invoice.number.startswith("INV-") and (invoice.total, invoice.status) == (2500, "open")
    # the invoice synced down with the decision, numbered
    paying = tablet.intent(
        IntentKind.PAYMENT_PAY,
        subject_id=placed["invoice_id"],
        amount=2500,
        currency="EUR",
        payment_method="tok_success",
    )
    paid = decide(tablet, paying)
    assert paid.status is DecisionStatus.ACCEPTED, paid.reason
    tablet.sync(paying)  # delivered again: decided once, charged once
    with shop.server.db.read() as session:
        order = session.get(Order, placed["order_id"])
        assert order is not None and order.paid_at is not None  # the paid hook, end to end
    gateway = shop.server.app.state.payments.gateway
    assert [c["amount"] for c in gateway.charges() if c["idempotency_key"] == paying.id] == [2500]
    later = datetime.now(UTC) + timedelta(days=30)
    expire_holds(database=shop.server.db, signer=shop.server.server_signer(), now=later)
    assert shop.stock(foam) == (5, 2)  # paid: the hold does not expire
