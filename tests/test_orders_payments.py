"""Orders and payments on a device: `client.orders` and `client.payments` write
immutable intents the server decides, check offline what the synced catalogue and
invoices allow, and read those server-owned records as synced down.

The server is played by a `MemoryHub`: it writes the catalogue, invoices and decisions
as the server does (`write_documents`, signed by its key, under the ids `crdt` defines).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from crdt import (
    Catalogue,
    Decision,
    DeliverTo,
    IntentKind,
    Invoice,
    OrderLine,
    Record,
    RecordDocument,
    RecordValidationError,
    catalogue_id,
    decision_id,
    format_money,
    invoice_record_id,
)
from edge_sdk import (
    EdgeClient,
    IntentStatus,
    MemoryHub,
    ReadOnlyCollectionError,
    RecordNotFoundError,
    balance_due,
    invoice_id_of,
)
from edge_sdk._store import SCHEMA_VERSION
from tests.conftest import connect

GENERATED = datetime(2026, 12, 4, 6, 0, tzinfo=UTC)
PRODUCTS = [
    {
        "id": "prod-foam-10",
        "sku": "FOAM-10X10",
        "name": "Foam dressing 10x10 cm",
        "category": "dressing",
        "product_class": "foam dressing",
        "unit": "box of 10",
        "price": 2450,
        "currency": "EUR",
        "prescription_required": True,
        "hcpcs": "A6210",
        "available": 12,
    },
    {
        "id": "prod-saline",
        "sku": "SALINE-250",
        "name": "Saline wound cleanser 250 ml",
        "category": "cleanser",
        "product_class": "cleanser",
        "unit": "bottle",
        "price": 650,
        "currency": "EUR",
        "available": 40,
    },
    {
        "id": "prod-npwt-kit",
        "sku": "NPWT-KIT-M",
        "name": "NPWT dressing kit, medium",
        "category": "npwt",
        "product_class": "NPWT kit",
        "unit": "kit",
        "price": 8900,
        "currency": "EUR",
        "components": [{"product_id": "prod-foam-10", "quantity": 2}],
        "available": 6,
    },
]


def add_patient(client: EdgeClient, given: str = "Ada") -> str:
    return client.patients.add(given_name=given, family_name="Okafor", birth_date="1950-03-01").id


def server_writes(
    hub: MemoryHub, clinic_id: str, schema: type[Record], record_id: str, **values: Any
) -> RecordDocument:
    """Put a server-made record in the clinic's feed, as the server would."""
    document = RecordDocument.create(
        schema,
        values,
        device_id=hub.server_device_id,
        clinic_id=clinic_id,
        record_id=record_id,
    )
    hub.write_documents(clinic_id, [document])
    return document


def server_updates(hub: MemoryHub, document: RecordDocument, **changes: Any) -> None:
    """Change a server-made record, as the server does when it refreshes one."""
    document.update(changes, device_id=hub.server_device_id)
    hub.write_documents(document.read().clinic_id, [document])


def decide(
    hub: MemoryHub, clinic_id: str, intent_id: str, status: str = "accepted", **values: Any
) -> None:
    server_writes(
        hub,
        clinic_id,
        Decision,
        decision_id(intent_id),
        intent_id=intent_id,
        status=status,
        **values,
    )


def publish_catalogue(hub: MemoryHub, clinic_id: str) -> None:
    server_writes(
        hub,
        clinic_id,
        Catalogue,
        catalogue_id(clinic_id),
        generated_at=GENERATED,
        products=PRODUCTS,
    )


def publish_invoice(
    hub: MemoryHub, clinic_id: str, invoice_id: str, patient_id: str | None, **values: Any
) -> RecordDocument:
    fields: dict[str, Any] = {
        "number": "INV-000001",
        "patient_id": patient_id,
        "status": "open",
        "currency": "EUR",
        "total": 3100,
        "issued_at": GENERATED,
        "lines": [
            {
                "kind": "order",
                "reference_id": "order-1",
                "description": "Foam dressing 10x10 cm",
                "quantity": 1,
                "unit_price": 2450,
                "amount": 2450,
            },
            {
                "kind": "order",
                "reference_id": "order-1",
                "description": "Saline wound cleanser 250 ml",
                "quantity": 1,
                "unit_price": 650,
                "amount": 650,
            },
        ],
    }
    fields.update(values)
    return server_writes(hub, clinic_id, Invoice, invoice_record_id(invoice_id), **fields)


# ---------------------------------------------------------------- catalogue


def test_the_catalogue_as_synced_down_and_searchable(tmp_store: Any) -> None:
    hub = MemoryHub()
    client = tmp_store()
    assert client.orders.catalogue() is None
    assert client.orders.products() == []
    with pytest.raises(RecordNotFoundError, match="no catalogue on this device"):
        client.orders.product("FOAM-10X10")

    publish_catalogue(hub, client.clinic_id)
    client.sync(transport=connect(hub, client))

    catalogue = client.orders.catalogue()
    assert catalogue is not None and catalogue.generated_at == GENERATED
    assert [p.sku for p in catalogue.products] == ["FOAM-10X10", "SALINE-250", "NPWT-KIT-M"]

    def skus(**filters: Any) -> list[str]:
        return [p.sku for p in client.orders.products(**filters)]

    assert skus(sku="SALINE-250") == ["SALINE-250"]
    assert skus(category="npwt") == ["NPWT-KIT-M"]
    assert skus(product_class="Foam Dressing") == ["FOAM-10X10"]  # any case
    assert skus(text="dressing") == ["FOAM-10X10", "NPWT-KIT-M"]
    assert skus(category="dressing", text="saline") == []
    foam = client.orders.product("FOAM-10X10")
    assert foam == client.orders.product("prod-foam-10")  # by SKU or by id
    assert foam.prescription_required and foam.price == 2450 and foam.available == 12
    (component,) = client.orders.product("NPWT-KIT-M").components
    assert (component.product_id, component.quantity) == ("prod-foam-10", 2)
    with pytest.raises(RecordNotFoundError, match=r"no product 'GAUZE'.*2026-12-04"):
        client.orders.product("GAUZE")

    # The catalogue is the server's: a device never writes it.
    with pytest.raises(ReadOnlyCollectionError, match="server-owned"):
        client.collection("catalogue").add(generated_at=GENERATED, products=[])
    assert client.find(catalogue_id(client.clinic_id)).name == "catalogue"


# ---------------------------------------------------------------- orders


def test_an_order_is_a_pending_intent_until_the_server_decides(tmp_store: Any) -> None:
    hub = MemoryHub()
    client = tmp_store()
    patient = add_patient(client)
    publish_catalogue(hub, client.clinic_id)
    client.sync(transport=connect(hub, client))
    heard: list[Decision] = []
    client.on_decision(heard.append)

    # A prescription-only dressing may be asked for: the server checks the prescription.
    placed = client.orders.place(
        patient,
        [("FOAM-10X10", 2), OrderLine(product_id="prod-saline", quantity=1)],
        deliver_to="home",
        address="12 Canal Street, Riverside",
        partial=True,
    )
    assert isinstance(placed, IntentStatus)
    assert (placed.state, placed.decision) == ("pending", None)
    intent = placed.intent
    assert intent.kind is IntentKind.ORDER_PLACE
    assert (intent.patient_id, intent.subject_id) == (patient, None)
    details = intent.parsed_details()
    # The SKU was turned into the product id the server knows.
    assert [(line.product_id, line.quantity) for line in details.lines] == [  # type: ignore[attr-defined]
        ("prod-foam-10", 2),
        ("prod-saline", 1),
    ]
    assert details.deliver_to is DeliverTo.HOME  # type: ignore[attr-defined]
    assert details.address == "12 Canal Street, Riverside"  # type: ignore[attr-defined]
    assert details.partial is True  # type: ignore[attr-defined]
    assert [entry.verified for entry in client.intents.history(intent.id)] == [True]
    with pytest.raises(RecordValidationError, match="cannot change after creation"):
        client.intents.update(intent.id, patient_id=add_patient(client, "Bea"))

    client.sync(transport=connect(hub, client))
    assert intent.id in hub.document_heads(client.clinic_id)
    assert client.intent_status(intent.id).state == "pending"
    assert heard == []

    outcome = {"order_id": "order-1", "lines": [{"product_id": "prod-foam-10", "reserved": 2}]}
    decide(hub, client.clinic_id, intent.id, outcome=outcome, reason="reserved")
    client.sync(transport=connect(hub, client))
    assert [d.intent_id for d in heard] == [intent.id]
    (listed,) = client.orders.list()
    assert listed.state == "accepted" and listed.intent == intent
    assert listed.decision is not None and listed.decision.outcome == outcome
    assert listed.decision.outcome.get("order_id") == "order-1"

    # A cancellation names the order; its patient is known from the order placed here.
    cancel = client.orders.cancel("order-1", reason="healed faster than expected")
    assert cancel.intent.kind is IntentKind.ORDER_CANCEL
    assert (cancel.intent.subject_id, cancel.intent.patient_id) == ("order-1", patient)
    assert cancel.intent.details == {"reason": "healed faster than expected"}
    # An order this device did not place: its patient is unknown here.
    assert client.orders.cancel("order-elsewhere").intent.patient_id is None

    assert [s.state for s in client.orders.list(patient)] == ["accepted", "pending"]
    assert [s.state for s in client.orders.list(state="pending")] == ["pending", "pending"]
    assert [s.intent.kind for s in client.list_intents("order")] == [
        IntentKind.ORDER_PLACE,
        IntentKind.ORDER_CANCEL,
        IntentKind.ORDER_CANCEL,
    ]
    assert client.list_intents("appointment") == []


def test_a_rejected_order_carries_the_servers_reason(tmp_store: Any) -> None:
    hub = MemoryHub()
    client = tmp_store()
    ada, bea = add_patient(client), add_patient(client, "Bea")
    publish_catalogue(hub, client.clinic_id)
    client.sync(transport=connect(hub, client))
    refused = client.orders.place(ada, [("FOAM-10X10", 1)])
    accepted = client.orders.place(bea, [("SALINE-250", 3)])
    client.sync(transport=connect(hub, client))
    reason = "needs a prescription for foam dressing; the last one expired on 2026-11-02"
    decide(hub, client.clinic_id, refused.id, "rejected", reason=reason)
    decide(hub, client.clinic_id, accepted.id, outcome={"order_id": "order-2"})
    client.sync(transport=connect(hub, client))

    (rejected,) = client.orders.list(state="rejected")
    assert rejected.id == refused.id
    assert rejected.decision is not None and rejected.decision.reason == reason
    assert [s.id for s in client.orders.list(patient_id=bea)] == [accepted.id]
    assert client.orders.list(patient_id=bea)[0].state == "accepted"
    with pytest.raises(ValueError, match="no intent state"):
        client.orders.list(state="shipped")


def test_bad_orders_are_refused_offline_and_write_nothing(tmp_store: Any) -> None:
    hub = MemoryHub()
    client = tmp_store()
    patient = add_patient(client)
    publish_catalogue(hub, client.clinic_id)
    client.sync(transport=connect(hub, client))
    orders = client.orders
    refused: list[tuple[str, Any]] = [
        (
            r"lines\[1\].product_id: no product 'GAUZE' in the clinic's catalogue",
            lambda: orders.place(patient, [("SALINE-250", 1), ("GAUZE", 2)]),
        ),
        ("patient_id", lambda: orders.place("p-9", [("SALINE-250", 1)])),
        ("quantity", lambda: orders.place(patient, [("SALINE-250", 0)])),
        ("needs an address", lambda: orders.place(patient, [("SALINE-250", 1)], deliver_to="home")),
        ("lines", lambda: orders.place(patient, [])),
        (r"lines\[0\]: not a \(product, quantity\) pair", lambda: orders.place(patient, ["x"])),
        ("deliver_to", lambda: orders.place(patient, [("SALINE-250", 1)], deliver_to="moon")),
    ]
    heads = client.replica.document_heads()
    for problem, ask in refused:
        with pytest.raises(RecordValidationError, match=problem):
            ask()
    assert client.orders.list() == []
    assert client.replica.document_heads() == heads


def test_without_a_synced_catalogue_products_go_to_the_server_as_given(tmp_store: Any) -> None:
    client = tmp_store()
    patient = add_patient(client)
    placed = client.orders.place(patient, [("prod-anything", 4)])
    assert placed.intent.details["lines"] == [{"product_id": "prod-anything", "quantity": 4}]
    assert placed.intent.details["deliver_to"] == "clinic"
    assert placed.intent.details["partial"] is False


# ---------------------------------------------------------------- invoices and payments


def test_invoices_as_synced_down(tmp_store: Any) -> None:
    hub = MemoryHub()
    client = tmp_store()
    ada, bea = add_patient(client), add_patient(client, "Bea")
    assert client.payments.invoices() == []
    publish_invoice(hub, client.clinic_id, "inv-b", ada, number="INV-000002")
    publish_invoice(hub, client.clinic_id, "inv-a", ada, number="INV-000001", paid=3100)
    publish_invoice(
        hub, client.clinic_id, "inv-c", bea, number="INV-000003", status="paid", paid=3100
    )
    client.sync(transport=connect(hub, client))

    def numbers(**filters: Any) -> list[str]:
        return [i.number for i in client.payments.invoices(**filters)]

    assert numbers() == ["INV-000001", "INV-000002", "INV-000003"]  # by number
    assert numbers(patient_id=ada) == ["INV-000001", "INV-000002"]
    assert numbers(status="paid") == ["INV-000003"]
    assert numbers(patient_id=bea, status="open") == []
    with pytest.raises(ValueError, match="no invoice status 'late'"):
        client.payments.invoices(status="late")

    shown = client.payments.invoice("inv-b")
    assert shown == client.payments.invoice("INV-000002")  # by number
    assert shown == client.payments.invoice(invoice_record_id("inv-b"))  # by record id
    assert invoice_id_of(shown) == "inv-b"
    assert (shown.total, shown.paid, balance_due(shown)) == (3100, 0, 3100)
    assert [line.amount for line in shown.lines] == [2450, 650]
    assert balance_due(client.payments.invoice("inv-c")) == 0  # paid
    with pytest.raises(RecordNotFoundError, match="no invoice 'INV-9'"):
        client.payments.invoice("INV-9")
    with pytest.raises(ReadOnlyCollectionError):
        client.invoices.update(shown.id, paid=3100)


def test_a_payment_is_a_pending_intent_until_the_server_decides(tmp_store: Any) -> None:
    hub = MemoryHub()
    client = tmp_store()
    patient = add_patient(client)
    invoice_document = publish_invoice(hub, client.clinic_id, "inv-1", patient)
    client.sync(transport=connect(hub, client))
    heard: list[Decision] = []
    client.on_decision(heard.append)

    paid = client.payments.pay("INV-000001", 1000, "EUR", "tok_success")
    intent = paid.intent
    assert paid.state == "pending"
    assert intent.kind is IntentKind.PAYMENT_PAY
    assert (intent.subject_id, intent.patient_id) == ("inv-1", patient)  # the server's id
    assert intent.details == {"amount": 1000, "currency": "EUR", "payment_method": "tok_success"}
    assert intent.id[14] == "7"  # a UUIDv7: the payment's idempotency key

    client.sync(transport=connect(hub, client))
    decide(hub, client.clinic_id, intent.id, outcome={"payment_id": "pay-1", "amount": 1000})
    server_updates(
        hub,
        invoice_document,
        paid=1000,
        payments=[
            {
                "id": "pay-1",
                "kind": "payment",
                "amount": 1000,
                "status": "succeeded",
                "at": GENERATED,
            }
        ],
    )
    client.sync(transport=connect(hub, client))
    assert [d.intent_id for d in heard] == [intent.id]
    invoice = client.payments.invoice("inv-1")
    assert (invoice.paid, balance_due(invoice)) == (1000, 2100)
    assert [p.id for p in invoice.payments] == ["pay-1"]

    declined = client.payments.pay("inv-1", 2100, "EUR", "tok_decline")
    client.sync(transport=connect(hub, client))
    decide(hub, client.clinic_id, declined.id, "rejected", reason="the card was declined")
    client.sync(transport=connect(hub, client))
    statuses = client.payments.list()
    assert [s.state for s in statuses] == ["accepted", "rejected"]
    assert statuses[1].decision is not None
    assert statuses[1].decision.reason == "the card was declined"
    assert [s.id for s in client.payments.list(patient, state="rejected")] == [declined.id]
    assert client.payments.list(patient_id="someone-else") == []
    # A declined payment is not pending: the whole balance can be asked for again.
    assert client.payments.pay("inv-1", 2100, "EUR", "tok_success").state == "pending"


def test_payments_that_cannot_be_right_are_refused_offline(tmp_store: Any) -> None:
    hub = MemoryHub()
    client = tmp_store()
    patient = add_patient(client)
    publish_invoice(hub, client.clinic_id, "inv-1", patient, paid=1100)
    publish_invoice(
        hub, client.clinic_id, "inv-2", patient, number="INV-000002", status="paid", paid=3100
    )
    client.sync(transport=connect(hub, client))
    pay = client.payments.pay
    refused: list[tuple[str, Any]] = [
        ("amount: 2001 is more than the 2000 EUR", lambda: pay("inv-1", 2001, "EUR", "tok")),
        ("currency: invoice INV-000001 is in EUR, not USD", lambda: pay("inv-1", 5, "USD", "tok")),
        ("more than the 0 EUR .* INV-000002 \\(paid", lambda: pay("INV-000002", 1, "EUR", "tok")),
        ("amount", lambda: pay("inv-1", 0, "EUR", "tok")),
        ("payment_method", lambda: pay("inv-1", 5, "EUR", "")),
        ("currency", lambda: pay("inv-unknown", 5, "euro", "tok")),
    ]
    for problem, ask in refused:
        with pytest.raises(RecordValidationError, match=problem):
            ask()
    assert client.payments.list() == []

    # Payments asked for here and not decided yet count against the balance: a
    # double tap offline cannot pay twice.
    first = pay("inv-1", 1500, "EUR", "tok_success")
    with pytest.raises(RecordValidationError, match="more than the 500 EUR"):
        pay("inv-1", 501, "EUR", "tok_success")
    second = pay("inv-1", 500, "EUR", "tok_success")
    assert [s.id for s in client.payments.list()] == [first.id, second.id]

    # An invoice not synced yet goes to the server by its id, for it to check.
    unknown = pay("inv-unknown", 99_999, "EUR", "tok_success")
    assert (unknown.intent.subject_id, unknown.intent.patient_id) == ("inv-unknown", None)


# ---------------------------------------------------------------- older stores


def test_a_version_2_store_opens_and_takes_the_catalogue(tmp_store: Any) -> None:
    hub = MemoryHub()
    client = tmp_store("old")
    patient = add_patient(client)
    store = client.replica.store
    with store.transaction():  # what version 2 made: no commerce tables
        for table in ("catalogue", "invoices"):
            store.execute(f"DROP TABLE {table}")
        store.set_meta("schema_version", "2")
    client.close()

    reopened = tmp_store.open("old")
    assert reopened.replica.store.get_meta("schema_version") == str(SCHEMA_VERSION)
    assert reopened.orders.catalogue() is None
    publish_catalogue(hub, reopened.clinic_id)
    publish_invoice(hub, reopened.clinic_id, "inv-1", patient)
    reopened.sync(transport=connect(hub, reopened))
    assert reopened.orders.product("SALINE-250").price == 650
    assert [i.number for i in reopened.payments.invoices(patient_id=patient)] == ["INV-000001"]


@pytest.mark.parametrize(
    ("amount", "currency", "shown"),
    [
        (3100, "EUR", "31.00 EUR"),
        (5, "USD", "0.05 USD"),
        (-2490, "EUR", "-24.90 EUR"),
        (500, "JPY", "500 JPY"),
        (1234, "KWD", "1.234 KWD"),
    ],
)
def test_amounts_read_in_the_currencys_major_unit(amount: int, currency: str, shown: str) -> None:
    assert format_money(amount, currency) == shown
