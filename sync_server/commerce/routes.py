"""Routes: the catalogue, stock, orders and prescriptions as staff handle them.

Clinicians, staff and admins read; staff and admins write (403 ``forbidden`` for a
clinician, 403 ``staff_only`` for a device). Everything is scoped to the caller's
organisation (and clinic, for a clinic-bound account): anything outside answers 404
like a missing one. Changes that move the catalogue or stock republish the devices'
`crdt.Catalogue` records right after, in a transaction of their own. Devices place and cancel orders
with intents (`sync_server.commerce.deciders`), not here.
"""

from __future__ import annotations

import logging
from typing import Annotated, Literal

from fastapi import APIRouter, Query, status
from sqlalchemy.orm import Session

from sync_server.audit.services import record_read
from sync_server.bookings.directory import actor_of, require_writer
from sync_server.commerce.catalogue import (
    components_by_kit,
    create_product,
    list_products,
    product_in_scope,
    update_product,
)
from sync_server.commerce.inventory import (
    adjust_lot,
    create_location,
    list_locations,
    list_lots,
    receive_lot,
)
from sync_server.commerce.orders import (
    cancel_order,
    list_orders,
    move_order,
    order_in_scope,
    order_lines,
    order_reservations,
)
from sync_server.commerce.prescriptions import (
    issue_prescription,
    list_prescriptions,
    revoke_prescription,
)
from sync_server.commerce.reference import republish_catalogue
from sync_server.commerce.schemas import (
    ComponentIn,
    LocationCreate,
    LocationPublic,
    LotAdjust,
    LotPublic,
    LotReceive,
    OrderCancelBody,
    OrderLinePublic,
    OrderPublic,
    PrescriptionCreate,
    PrescriptionPublic,
    ProductCreate,
    ProductPublic,
    ProductUpdate,
    ReservationPublic,
)
from sync_server.commerce.tables import Order, Product
from sync_server.db import Database, utcnow
from sync_server.deps import ArtifactKeyDep, DbDep, StaffCaller
from sync_server.errors import Unavailable
from sync_server.identity.principals import Principal
from sync_server.models.signing import ArtifactKey
from sync_server.sync.authorship import ServerSigner

__all__ = ["router"]

router = APIRouter(prefix="/v1/commerce", tags=["commerce"])
log = logging.getLogger("sync_server.commerce")

IdQuery = Annotated[str | None, Query(min_length=1, max_length=64)]


def _republish(db: Database, caller: Principal, key: ArtifactKey) -> None:
    # In a transaction of its own, after the change committed: catalogue records take
    # clinic row locks, never after the warehouse's (`sync_server.commerce.stock`). If
    # it cannot be written now, the hourly housekeeping writes it.
    try:
        db.write_retrying(
            lambda session: republish_catalogue(
                session=session,
                organisation_id=caller.organisation_id,
                signer=ServerSigner(key),
                now=utcnow(),
            )
        )
    except Unavailable:
        log.warning("catalogue records not refreshed after a change; housekeeping will")


def _product(session: Session, product: Product) -> ProductPublic:
    parts = components_by_kit(session=session, kit_ids=[product.id]).get(product.id, [])
    public = ProductPublic.model_validate(product)
    public.components = [ComponentIn(product_id=p, quantity=q) for p, q in parts]
    return public


def _order(session: Session, order: Order) -> OrderPublic:
    public = OrderPublic.model_validate(order)
    public.lines = [
        OrderLinePublic.model_validate(x) for x in order_lines(session=session, order_id=order.id)
    ]
    public.reservations = [
        ReservationPublic.model_validate(r)
        for r in order_reservations(session=session, order_id=order.id)
    ]
    return public


# ---------------------------------------------------------------- catalogue
@router.get("/products", response_model=list[ProductPublic], summary="List products")
def get_products(
    caller: StaffCaller,
    db: DbDep,
    category: Annotated[str | None, Query(max_length=20)] = None,
    include_inactive: bool = False,
) -> list[ProductPublic]:
    """The organisation's products and kits by name."""
    with db.read() as session:
        found = list_products(
            session=session,
            principal=caller,
            include_inactive=include_inactive,
            category=category,
        )
        return [_product(session, p) for p in found]


@router.post(
    "/products",
    status_code=status.HTTP_201_CREATED,
    response_model=ProductPublic,
    summary="Add a product or kit",
    responses={409: {"description": "`sku_taken`: a product with that SKU."}},
)
def post_product(
    body: ProductCreate, caller: StaffCaller, db: DbDep, key: ArtifactKeyDep
) -> ProductPublic:
    """Add a product (a kit when ``components`` are given). 409 ``sku_taken`` for a
    SKU the organisation already has; 400 for an unknown component or a kit in a kit."""
    with db.write() as session:
        product = create_product(
            session=session,
            principal=caller,
            sku=body.sku,
            name=body.name,
            category=body.category,
            product_class=body.product_class,
            unit=body.unit,
            price=body.price,
            currency=body.currency,
            prescription_required=body.prescription_required,
            hcpcs=body.hcpcs,
            components=[(c.product_id, c.quantity) for c in body.components],
        )
        made = _product(session, product)
    _republish(db, caller, key)
    return made


@router.get("/products/{product_id}", response_model=ProductPublic, summary="Show a product")
def get_product(product_id: str, caller: StaffCaller, db: DbDep) -> ProductPublic:
    """One product or kit with its components."""
    with db.read() as session:
        return _product(
            session, product_in_scope(session=session, principal=caller, product_id=product_id)
        )


@router.patch(
    "/products/{product_id}",
    response_model=ProductPublic,
    summary="Change a product",
    responses={409: {"description": "`sku_taken`: a product with that SKU."}},
)
def patch_product(
    product_id: str, body: ProductUpdate, caller: StaffCaller, db: DbDep, key: ArtifactKeyDep
) -> ProductPublic:
    """Change a product's name, class, price, prescription flag, HCPCS code or whether
    it is sold (``active``). Accepted orders keep their prices."""
    with db.write() as session:
        product = update_product(
            session=session,
            principal=caller,
            product_id=product_id,
            changes=body.model_dump(exclude_unset=True),
        )
        changed = _product(session, product)
    _republish(db, caller, key)
    return changed


# ---------------------------------------------------------------- stock
@router.get("/locations", response_model=list[LocationPublic], summary="List stock locations")
def get_locations(caller: StaffCaller, db: DbDep) -> list[LocationPublic]:
    """The warehouse and the clinic stores and shelves the caller may see."""
    with db.read() as session:
        return [
            LocationPublic.model_validate(x)
            for x in list_locations(session=session, principal=caller)
        ]


@router.post(
    "/locations",
    status_code=status.HTTP_201_CREATED,
    response_model=LocationPublic,
    summary="Add a stock location",
    responses={409: {"description": "`warehouse_exists`, `location_name_taken`."}},
)
def post_location(body: LocationCreate, caller: StaffCaller, db: DbDep) -> LocationPublic:
    """Add the central warehouse (one per organisation, 409 ``warehouse_exists``), or
    a clinic store or shelf (``clinic_id`` required)."""
    with db.write() as session:
        location = create_location(
            session=session,
            principal=caller,
            kind=body.kind,
            name=body.name,
            clinic_id=body.clinic_id,
        )
        return LocationPublic.model_validate(location)


@router.get("/stock", response_model=list[LotPublic], summary="List stock by lot")
def get_stock(
    caller: StaffCaller, db: DbDep, location_id: IdQuery = None, product_id: IdQuery = None
) -> list[LotPublic]:
    """Lots (on hand, reserved, expiry) by location, first to expire first."""
    with db.read() as session:
        found = list_lots(
            session=session, principal=caller, location_id=location_id, product_id=product_id
        )
        return [LotPublic.model_validate(x) for x in found]


@router.post(
    "/lots",
    status_code=status.HTTP_201_CREATED,
    response_model=LotPublic,
    summary="Receive stock",
    responses={
        409: {"description": "A lot that exists with other details (`lot_expiry_mismatch`)."}
    },
)
def post_lot(body: LotReceive, caller: StaffCaller, db: DbDep, key: ArtifactKeyDep) -> LotPublic:
    """Receive a lot at a location (or more of a lot already there). 400 for a kit
    (stocked as its components); 409 ``lot_expiry_mismatch``."""
    with db.write() as session:
        lot = receive_lot(
            session=session,
            principal=caller,
            location_id=body.location_id,
            product_id=body.product_id,
            lot_code=body.lot_code,
            expires_on=body.expires_on,
            quantity=body.quantity,
        )
        received = LotPublic.model_validate(lot)
    _republish(db, caller, key)
    return received


@router.post(
    "/lots/{lot_id}/adjust",
    response_model=LotPublic,
    summary="Correct a lot's count",
    responses={409: {"description": "`below_reserved`: fewer on hand than reserved, or below 0."}},
)
def post_adjust(
    lot_id: str, body: LotAdjust, caller: StaffCaller, db: DbDep, key: ArtifactKeyDep
) -> LotPublic:
    """Change a lot's on-hand count by ``delta``; 409 ``below_reserved`` when fewer
    would be on hand than orders hold."""
    with db.write() as session:
        lot = adjust_lot(session=session, principal=caller, lot_id=lot_id, delta=body.delta)
        adjusted = LotPublic.model_validate(lot)
    _republish(db, caller, key)
    return adjusted


# ---------------------------------------------------------------- orders
@router.get("/orders", response_model=list[OrderPublic], summary="List orders")
def get_orders(
    caller: StaffCaller,
    db: DbDep,
    clinic_id: IdQuery = None,
    patient_id: IdQuery = None,
    state: Literal["accepted", "picked", "shipped", "delivered", "cancelled"] | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[OrderPublic]:
    """Orders in the caller's scope, newest first."""
    with db.read() as session:
        found = list_orders(
            session=session,
            principal=caller,
            clinic_id=clinic_id,
            state=state,
            patient_id=patient_id,
            limit=limit,
        )
        orders = [_order(session, o) for o in found]
    with db.write() as session:
        record_read(
            session=session,
            caller=caller,
            collection="orders",
            records=[(o.id, o.patient_id) for o in orders],
            clinic_id=clinic_id,
        )
    return orders


@router.get("/orders/{order_id}", response_model=OrderPublic, summary="Show an order")
def get_order(order_id: str, caller: StaffCaller, db: DbDep) -> OrderPublic:
    """One order with its lines and per-lot reservations."""
    with db.write() as session:
        order = order_in_scope(session=session, principal=caller, order_id=order_id)
        record_read(
            session=session,
            caller=caller,
            collection="orders",
            records=[(order.id, order.patient_id)],
            clinic_id=order.clinic_id,
        )
        return _order(session, order)


@router.post(
    "/orders/{order_id}/cancel",
    response_model=OrderPublic,
    summary="Cancel an order",
    responses={409: {"description": "`order_not_cancellable`, `order_paid`."}},
)
def post_order_cancel(
    order_id: str, body: OrderCancelBody, caller: StaffCaller, db: DbDep, key: ArtifactKeyDep
) -> OrderPublic:
    """Cancel an order that has not shipped and release its stock (409
    ``order_not_cancellable`` after shipping)."""
    with db.write() as session:
        require_writer(caller)
        order_in_scope(session=session, principal=caller, order_id=order_id)
        order = cancel_order(
            session=session,
            order_id=order_id,
            now=utcnow(),
            actor=actor_of(caller),
            reason=body.reason,
        )
        cancelled = _order(session, order)
    _republish(db, caller, key)
    return cancelled


@router.post(
    "/orders/{order_id}/{action}",
    response_model=OrderPublic,
    summary="Move an order on",
    responses={409: {"description": "`order_state`, `out_of_stock`."}},
)
def post_order_action(
    order_id: str,
    action: Literal["pick", "ship", "deliver"],
    caller: StaffCaller,
    db: DbDep,
    key: ArtifactKeyDep,
) -> OrderPublic:
    """``pick`` (stock leaves the shelves, first-expiry-first-out), ``ship``,
    ``deliver``; 409 ``order_state`` from the wrong state."""
    state = {"pick": "picked", "ship": "shipped", "deliver": "delivered"}[action]
    with db.write() as session:
        require_writer(caller)
        order = move_order(
            session=session, principal=caller, order_id=order_id, state=state, now=utcnow()
        )
        moved = _order(session, order)
    if state == "picked":
        _republish(db, caller, key)
    return moved


# ---------------------------------------------------------------- prescriptions
@router.get("/prescriptions", response_model=list[PrescriptionPublic], summary="List prescriptions")
def get_prescriptions(
    caller: StaffCaller, db: DbDep, patient_id: IdQuery = None, include_revoked: bool = False
) -> list[PrescriptionPublic]:
    """The organisation's prescriptions (of one patient), newest first."""
    with db.read() as session:
        found = list_prescriptions(
            session=session,
            principal=caller,
            patient_id=patient_id,
            include_revoked=include_revoked,
        )
        prescriptions = [PrescriptionPublic.model_validate(p) for p in found]
    with db.write() as session:
        record_read(
            session=session,
            caller=caller,
            collection="prescriptions",
            records=[(p.id, p.patient_id) for p in prescriptions],
        )
    return prescriptions


@router.post(
    "/prescriptions",
    status_code=status.HTTP_201_CREATED,
    response_model=PrescriptionPublic,
    summary="Record a prescription",
)
def post_prescription(
    body: PrescriptionCreate, caller: StaffCaller, db: DbDep
) -> PrescriptionPublic:
    """Record a doctor's signed prescription for a patient: a product or a product
    class, quantity and refills, valid 90 days unless ``valid_until`` says otherwise.
    400 for a prescriber who is not a doctor; 404 for an unknown patient."""
    with db.write() as session:
        prescription = issue_prescription(
            session=session,
            principal=caller,
            patient_id=body.patient_id,
            prescriber_id=body.prescriber_id,
            signature=body.signature,
            quantity=body.quantity,
            refills=body.refills,
            issued_on=body.issued_on,
            product_id=body.product_id,
            product_class=body.product_class,
            valid_until=body.valid_until,
        )
        return PrescriptionPublic.model_validate(prescription)


@router.post(
    "/prescriptions/{prescription_id}/revoke",
    response_model=PrescriptionPublic,
    summary="Revoke a prescription",
    responses={409: {"description": "`already_revoked`."}},
)
def post_prescription_revoke(
    prescription_id: str, caller: StaffCaller, db: DbDep
) -> PrescriptionPublic:
    """Nothing more is accepted against it (409 ``already_revoked``)."""
    with db.write() as session:
        found = revoke_prescription(
            session=session, principal=caller, prescription_id=prescription_id, now=utcnow()
        )
        return PrescriptionPublic.model_validate(found)
