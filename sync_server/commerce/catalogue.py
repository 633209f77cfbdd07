"""The catalogue as staff manage it: products and kits. Services: no HTTP here; every
function scopes by the caller's organisation, raises the server's error tree and
audits each change. Callers republish the devices' `crdt.Catalogue` records
(`sync_server.commerce.reference.republish_catalogue`) in the same transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from crdt import ProductCategory
from sync_server.audit.events import ProductCreated, ProductUpdated
from sync_server.audit.services import record_event
from sync_server.bookings.directory import actor_of, require_writer
from sync_server.commerce.tables import KitComponentRow, Product
from sync_server.db import new_id, utcnow
from sync_server.errors import Conflict, Invalid, NotFound
from sync_server.identity.principals import Principal

__all__ = [
    "UPDATABLE_FIELDS",
    "components_by_kit",
    "create_product",
    "list_products",
    "product_in_scope",
    "update_product",
]

UPDATABLE_FIELDS = frozenset(
    {
        "name",
        "category",
        "product_class",
        "unit",
        "price",
        "currency",
        "prescription_required",
        "hcpcs",
        "active",
    }
)
"""What `update_product` may change (a SKU and a kit's components are fixed)."""


def product_in_scope(*, session: Session, principal: Principal, product_id: str) -> Product:
    """The product, if it is of the caller's organisation.

    Raises:
        NotFound: No such product in the caller's organisation.
    """
    product = session.get(Product, product_id)
    if product is None or product.organisation_id != principal.organisation_id:
        raise NotFound("no such product", code="not_found")
    return product


def components_by_kit(
    *, session: Session, kit_ids: Sequence[str]
) -> dict[str, list[tuple[str, int]]]:
    """The components (product id, quantity) of each kit in `kit_ids` that has any."""
    found: dict[str, list[tuple[str, int]]] = {}
    if not kit_ids:
        return found
    rows = session.execute(
        select(KitComponentRow.kit_id, KitComponentRow.product_id, KitComponentRow.quantity)
        .where(KitComponentRow.kit_id.in_(list(kit_ids)))
        .order_by(KitComponentRow.kit_id, KitComponentRow.product_id)
    ).all()
    for kit_id, product_id, quantity in rows:
        found.setdefault(kit_id, []).append((product_id, quantity))
    return found


def create_product(
    *,
    session: Session,
    principal: Principal,
    sku: str,
    name: str,
    category: ProductCategory | str,
    product_class: str,
    unit: str,
    price: int,
    currency: str,
    prescription_required: bool = False,
    hcpcs: str | None = None,
    components: Sequence[tuple[str, int]] = (),
) -> Product:
    """Add a product, or a kit when `components` (product id, quantity) are given.

    Raises:
        Forbidden: The caller may not change the catalogue.
        Invalid: A negative price, an unknown category, a component that is unknown,
            a kit itself, repeated or the kit.
        Conflict: ``sku_taken``: the organisation already has a product with this SKU.
    """
    require_writer(principal)
    _check_values({"price": price, "category": category})
    product_id = new_id()
    seen: set[str] = set()
    for component_id, quantity in components:
        if component_id in seen:
            raise Invalid("a kit lists each component once", code="invalid_component")
        seen.add(component_id)
        if quantity < 1:
            raise Invalid("a component's quantity is at least 1", code="invalid_component")
        part = session.get(Product, component_id)
        if part is None or part.organisation_id != principal.organisation_id:
            raise Invalid(f"no product {component_id} to put in a kit", code="invalid_component")
        if components_by_kit(session=session, kit_ids=[component_id]):
            raise Invalid("a kit cannot hold another kit", code="invalid_component")
    product = Product(
        id=product_id,
        organisation_id=principal.organisation_id,
        sku=sku,
        name=name,
        category=str(ProductCategory(category)),
        product_class=product_class,
        unit=unit,
        price=price,
        currency=currency,
        prescription_required=prescription_required,
        hcpcs=hcpcs,
        active=True,
    )
    savepoint = session.begin_nested()
    try:
        session.add(product)
        session.flush()
        for component_id, quantity in components:
            session.add(
                KitComponentRow(kit_id=product_id, product_id=component_id, quantity=quantity)
            )
        session.flush()
    except IntegrityError:
        savepoint.rollback()
        raise Conflict(f"a product with SKU {sku!r} already exists", code="sku_taken") from None
    savepoint.commit()
    record_event(
        session=session, event=ProductCreated(actor=actor_of(principal), product_id=product_id)
    )
    return product


def list_products(
    *,
    session: Session,
    principal: Principal,
    include_inactive: bool = False,
    category: str | None = None,
) -> list[Product]:
    """The organisation's products by name (active ones unless told otherwise)."""
    query = select(Product).where(Product.organisation_id == principal.organisation_id)
    if not include_inactive:
        query = query.where(Product.active.is_(True))
    if category is not None:
        query = query.where(Product.category == category)
    return list(session.scalars(query.order_by(Product.name, Product.id)))


def update_product(
    *, session: Session, principal: Principal, product_id: str, changes: dict[str, Any]
) -> Product:
    """Change some of a product's `UPDATABLE_FIELDS`; orders already accepted keep
    the price they were accepted at.

    Raises:
        Forbidden: The caller may not change the catalogue.
        NotFound: No such product.
        Invalid: A field that cannot change, a negative price, an unknown category.
    """
    require_writer(principal)
    product = product_in_scope(session=session, principal=principal, product_id=product_id)
    unknown = set(changes) - UPDATABLE_FIELDS
    if unknown:
        raise Invalid(f"cannot change {', '.join(sorted(unknown))}", code="invalid_field")
    _check_values(changes)
    if "category" in changes:
        changes = {**changes, "category": str(ProductCategory(changes["category"]))}
    for name, value in changes.items():
        setattr(product, name, value)
    product.updated_at = utcnow()
    session.flush()
    record_event(
        session=session,
        event=ProductUpdated(
            actor=actor_of(principal), product_id=product.id, fields=tuple(sorted(changes))
        ),
    )
    return product


def _check_values(values: dict[str, Any]) -> None:
    if "price" in values and (not isinstance(values["price"], int) or values["price"] < 0):
        raise Invalid("a price is a whole number of minor units, 0 or more", code="invalid_price")
    if "category" in values:
        try:
            ProductCategory(values["category"])
        except ValueError:
            raise Invalid(f"no category {values['category']!r}", code="invalid_category") from None
