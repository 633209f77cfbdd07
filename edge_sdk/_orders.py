"""`client.orders`: order wound-care supplies for a patient, and see the catalogue.

Ordering writes an intent (``order.place``, an immutable record under a new UUIDv7, its
idempotency key) and returns its `IntentStatus`: ``pending`` until the server's
decision syncs down. Only the server can reserve stock, check a prescription or keep
a kit from overselling; the device checks what it can offline (the products are in
the clinic's catalogue as last synced) and leaves the rest to the server. The
catalogue is server-owned reference data synced down read-only (`Catalogue`): it may
be stale offline, so it says when the server wrote it (`generated_at`).
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence

from crdt import (
    Catalogue,
    CatalogueProduct,
    DeliverTo,
    IntentKind,
    OrderLine,
    catalogue_id,
)
from edge_sdk._collections import Collection
from edge_sdk._errors import RecordNotFoundError, RecordValidationError
from edge_sdk._intents import DecisionsCollection, IntentsCollection, IntentStatus
from edge_sdk._replica import Replica

__all__ = ["Orders"]

LineLike = tuple[str, int] | OrderLine
"""An order line: ``(sku or product id, quantity)`` or an `OrderLine`."""


class Orders:
    """Supplies for patients: the clinic's catalogue, and orders the server decides.

    `place` and `cancel` return at once with the intent ``pending`` (see
    `EdgeClient.intent_status` and `EdgeClient.on_decision` for the answer); an
    accepted order's decision names it in ``outcome["order_id"]``.
    """

    def __init__(
        self, replica: Replica, intents: IntentsCollection, decisions: DecisionsCollection
    ) -> None:
        self._replica = replica
        self._intents = intents
        self._decisions = decisions
        self._catalogue: Collection[Catalogue] = Collection(replica, Catalogue)

    # ---------------------------------------------------------------- catalogue
    def catalogue(self) -> Catalogue | None:
        """The clinic's catalogue as last synced, or None if none has arrived yet.
        `generated_at` says how old it is (and so how old `available` is)."""
        try:
            return self._catalogue.get(catalogue_id(self._replica.clinic_id))
        except RecordNotFoundError:
            return None

    def products(
        self,
        *,
        sku: str | None = None,
        category: str | None = None,
        product_class: str | None = None,
        text: str | None = None,
    ) -> builtins.list[CatalogueProduct]:
        """The catalogue's products (as last synced, in catalogue order) matching every
        filter given: `sku` exactly, `category` (``"dressing"``, ``"npwt"``, ...),
        `product_class` (what a prescription names, any case), `text` in the name,
        SKU or class (any case). None before the first sync brings a catalogue: empty.
        """
        catalogue = self.catalogue()
        if catalogue is None:
            return []
        folded = text.casefold() if text is not None else None
        wanted_class = product_class.casefold() if product_class is not None else None
        return [
            product
            for product in catalogue.products
            if sku in (None, product.sku)
            and category in (None, product.category)
            and wanted_class in (None, product.product_class.casefold())
            and (
                folded is None
                or any(
                    folded in value.casefold()
                    for value in (product.name, product.sku, product.product_class)
                )
            )
        ]

    def product(self, sku_or_id: str) -> CatalogueProduct:
        """The catalogue product with this SKU or id (as last synced).

        Raises:
            RecordNotFoundError: The synced catalogue has no such product (or no
                catalogue has been synced yet).
        """
        catalogue = self.catalogue()
        if catalogue is None:
            raise RecordNotFoundError(
                "no catalogue on this device yet (sync to get the clinic's catalogue)"
            )
        found = _find(catalogue, sku_or_id)
        if found is None:
            raise RecordNotFoundError(
                f"no product {sku_or_id!r} in the catalogue"
                f" (as of {catalogue.generated_at.isoformat()})"
            )
        return found

    # ---------------------------------------------------------------- orders
    def place(
        self,
        patient_id: str,
        lines: Sequence[LineLike],
        *,
        deliver_to: DeliverTo | str = DeliverTo.CLINIC,
        address: str | None = None,
        partial: bool = False,
    ) -> IntentStatus:
        """Order supplies for `patient_id`: each line a ``(sku or product id,
        quantity)`` or an `OrderLine`, delivered to the clinic or, with
        ``deliver_to="home"``, to `address`. With `partial`, the server accepts the
        lines it can fill when others cannot; otherwise one refused line refuses the
        order.

        Checked here, offline: the patient is on this device, each product is in the
        clinic's catalogue as last synced (a SKU is turned into its product id), the
        quantities and the delivery are valid. A prescription-only product may be
        ordered: the server checks the patient's prescription, and stock, and decides.
        Without a synced catalogue the products are passed on as given (ids).

        Raises:
            RecordValidationError: A value is invalid (an unknown patient or product, a
                quantity below 1, a home delivery without an address); nothing is
                written.
        """
        catalogue = self.catalogue()
        resolved: builtins.list[dict[str, object]] = []
        problems: builtins.list[str] = []
        for index, line in enumerate(lines):
            try:
                product_id, quantity = (
                    (line.product_id, line.quantity) if isinstance(line, OrderLine) else line
                )
            except (TypeError, ValueError):
                problems.append(f"lines[{index}]: not a (product, quantity) pair: {line!r}")
                continue
            if catalogue is not None and isinstance(product_id, str):
                found = _find(catalogue, product_id)
                if found is None:
                    problems.append(
                        f"lines[{index}].product_id: no product {product_id!r} in the"
                        f" clinic's catalogue (as of {catalogue.generated_at.isoformat()})"
                    )
                    continue
                product_id = found.id
            resolved.append({"product_id": product_id, "quantity": quantity})
        if problems:
            raise RecordValidationError(self._intents.name, problems)
        return self._intents.ask(
            IntentKind.ORDER_PLACE,
            patient_id=patient_id,
            details={
                "lines": resolved,
                "deliver_to": deliver_to,
                "address": address,
                "partial": partial,
            },
        )

    def cancel(self, order_id: str, reason: str | None = None) -> IntentStatus:
        """Ask to cancel order `order_id` (from an accepted decision's
        ``outcome["order_id"]``) before it ships, with a reason a person can read; the
        server releases its stock. Filled in with the order's patient when this device
        placed the order."""
        return self._intents.ask(
            IntentKind.ORDER_CANCEL,
            patient_id=self._intents.patient_of(self._decisions.for_order(order_id)),
            subject_id=order_id,
            details={"reason": reason},
        )

    def list(
        self, patient_id: str | None = None, state: str | None = None
    ) -> builtins.list[IntentStatus]:
        """Order intents (placed and cancelled) with where they stand, oldest first:
        ``pending``, ``accepted`` (``decision.outcome["order_id"]`` names the order)
        or ``rejected`` (``decision.reason`` says why); only `patient_id`'s, only in
        `state`.

        Raises:
            ValueError: An unknown state.
        """
        return self._intents.statuses(kind="order", state=state, patient_id=patient_id)


def _find(catalogue: Catalogue, sku_or_id: str) -> CatalogueProduct | None:
    """The product with this id, else with this SKU."""
    by_id = next((p for p in catalogue.products if p.id == sku_or_id), None)
    return by_id or next((p for p in catalogue.products if p.sku == sku_or_id), None)
