"""`coherency orders ...`: the clinic's supplies catalogue, and asking the server to
place or cancel an order for a patient (each an intent, pending until `coherency sync`
brings the server's decision)."""

from __future__ import annotations

from typing import Any

import click

from cli._app import App, with_app
from cli._intents import STATES, show_status
from cli._output import csv_option, emit, json_option, table
from crdt import Catalogue, CatalogueProduct, DeliverTo, ProductCategory, format_money
from edge_sdk import IntentStatus

__all__ = ["orders"]


class LineType(click.ParamType[tuple[str, int]]):
    """An order line as typed: ``SKU`` (one) or ``SKU:QUANTITY`` (a product id too)."""

    name = "sku[:quantity]"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, int]:
        if isinstance(value, tuple):
            return value
        product, colon, quantity = str(value).rpartition(":")
        if not colon:
            return str(value), 1
        if not product or not quantity.isdigit():
            self.fail(f"{value!r} is not SKU or SKU:QUANTITY (e.g. FOAM-10X10:2)", param, ctx)
        return product, int(quantity)


def _product_table(products: list[CatalogueProduct], catalogue: Catalogue | None) -> None:
    if catalogue is not None:
        click.echo(f"catalogue as of {catalogue.generated_at.isoformat()}")
    table(
        ["sku", "name", "category", "class", "unit", "price", "available", "prescription"],
        (
            [
                p.sku,
                p.name,
                p.category,
                p.product_class,
                p.unit,
                format_money(p.price, p.currency),
                p.available,
                p.prescription_required,
            ]
            for p in products
        ),
        empty="no products synced for that (run `coherency sync`)",
    )


def _lines(status: IntentStatus, names: dict[str, str]) -> str | None:
    lines = status.intent.details.get("lines")
    if not lines:
        return None
    return ", ".join(
        f"{names.get(line['product_id'], line['product_id'])} x{line['quantity']}" for line in lines
    )


def _order(status: IntentStatus) -> Any:
    """The order an intent acts on, or the one its decision made."""
    outcome = status.decision.outcome if status.decision is not None else None
    return (outcome or {}).get("order_id") or status.intent.subject_id


def _order_table(statuses: list[IntentStatus], names: dict[str, str]) -> None:
    table(
        ["intent", "kind", "state", "patient", "lines", "order", "reason"],
        (
            [
                s.id,
                s.intent.kind,
                s.state,
                s.intent.patient_id,
                _lines(s, names),
                _order(s),
                s.decision.reason if s.decision is not None else None,
            ]
            for s in statuses
        ),
        empty="no order intents",
    )


@click.group()
def orders() -> None:
    """The supplies catalogue; place, cancel and list orders (decided by the server)."""


@orders.command("products")
@click.option("--sku", help="Only the product with this SKU.")
@click.option(
    "--category",
    type=click.Choice([c.value for c in ProductCategory]),
    help="Only products of this category.",
)
@click.option("--class", "product_class", help="Only this product class (as prescribed).")
@click.option("--search", "text", help="Only products with this in their name, SKU or class.")
@json_option
@with_app
def orders_products(
    app: App,
    sku: str | None,
    category: str | None,
    product_class: str | None,
    text: str | None,
    as_json: bool,
) -> None:
    """Show the clinic's catalogue as last synced (prices in the product's currency)."""
    client = app.client()
    found = client.orders.products(
        sku=sku, category=category, product_class=product_class, text=text
    )
    catalogue = client.orders.catalogue()
    emit(as_json, found, lambda ps: _product_table(ps, catalogue))


@orders.command("place")
@click.option("--patient", "patient_id", required=True, help="The patient's id.")
@click.option(
    "--line",
    "lines",
    type=LineType(),
    multiple=True,
    required=True,
    help="A product and how many, SKU:QUANTITY (QUANTITY 1 if left out); repeat per line.",
)
@click.option(
    "--deliver-to",
    type=click.Choice([d.value for d in DeliverTo]),
    default=DeliverTo.CLINIC.value,
    show_default=True,
    help="To this clinic, or to the patient's home (needs --address).",
)
@click.option("--address", help="The delivery address, for --deliver-to home.")
@click.option("--partial", is_flag=True, help="Accept the lines that can be had if others cannot.")
@json_option
@with_app
def orders_place(
    app: App,
    patient_id: str,
    lines: tuple[tuple[str, int], ...],
    deliver_to: str,
    address: str | None,
    partial: bool,
    as_json: bool,
) -> None:
    """Order supplies for a patient (pending until the server decides)."""
    status = app.client().orders.place(
        patient_id, list(lines), deliver_to=deliver_to, address=address, partial=partial
    )
    emit(as_json, status, show_status)


@orders.command("cancel")
@click.argument("order_id")
@click.option("--reason", help="Why, for the clinic to read.")
@json_option
@with_app
def orders_cancel(app: App, order_id: str, reason: str | None, as_json: bool) -> None:
    """Ask to cancel an order that has not shipped (pending until the server decides)."""
    emit(as_json, app.client().orders.cancel(order_id, reason), show_status)


@orders.command("list")
@click.option("--state", type=click.Choice(STATES), help="Only intents in this state.")
@click.option("--patient", "patient_id", help="Only this patient's.")
@json_option
@csv_option
@with_app
def orders_list(
    app: App, state: str | None, patient_id: str | None, as_json: bool, as_csv: bool
) -> None:
    """List orders placed and cancelled, and the server's decisions."""
    client = app.client()
    found = client.orders.list(patient_id, state)
    catalogue = client.orders.catalogue()
    names = {p.id: p.sku for p in catalogue.products} if catalogue is not None else {}
    emit(as_json, found, lambda ss: _order_table(ss, names), as_csv=as_csv)
