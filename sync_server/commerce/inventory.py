"""Stock locations and lots as staff manage them: add locations, receive lots,
correct counts, list stock. Every change of a count is a conditional ``UPDATE``
(the lots' CHECKs have the last word) and is audited.
"""

from __future__ import annotations

from datetime import date

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from sync_server.audit.events import StockAdjusted, StockLocationCreated, StockReceived
from sync_server.audit.services import record_event
from sync_server.bookings.directory import actor_of, clinic_in_scope, require_writer
from sync_server.commerce.catalogue import components_by_kit, product_in_scope
from sync_server.commerce.stock import lock_shared
from sync_server.commerce.tables import Location, Lot
from sync_server.db import new_id, rowcount
from sync_server.errors import Conflict, Invalid, NotFound
from sync_server.identity.principals import Principal

__all__ = [
    "LOCATION_KINDS",
    "adjust_lot",
    "create_location",
    "list_locations",
    "list_lots",
    "location_in_scope",
    "receive_lot",
]

LOCATION_KINDS = frozenset({"warehouse", "clinic", "shelf"})
"""A central warehouse (one per organisation, no clinic), a clinic's store, an edge
clinic's shelf (both bound to a clinic)."""


def location_in_scope(*, session: Session, principal: Principal, location_id: str) -> Location:
    """The location, if the caller may see it (organisation; clinic-bound accounts see
    their clinic's and the warehouse).

    Raises:
        NotFound: No such location in the caller's scope.
    """
    location = session.get(Location, location_id)
    if (
        location is None
        or location.organisation_id != principal.organisation_id
        or (location.clinic_id is not None and not principal.can_see_clinic(location.clinic_id))
    ):
        raise NotFound("no such stock location", code="not_found")
    return location


def create_location(
    *, session: Session, principal: Principal, kind: str, name: str, clinic_id: str | None = None
) -> Location:
    """Add a stock location.

    Raises:
        Forbidden: The caller may not change stock.
        Invalid: An unknown kind; a warehouse with a clinic, a store or shelf without.
        NotFound: The clinic is not in the caller's scope.
        Conflict: ``warehouse_exists`` (one per organisation) or ``location_name_taken``.
    """
    require_writer(principal)
    if kind not in LOCATION_KINDS:
        raise Invalid(f"no location kind {kind!r}", code="invalid_location")
    if kind == "warehouse":
        if clinic_id is not None:
            raise Invalid("the central warehouse belongs to no clinic", code="invalid_location")
        if session.scalar(
            select(Location.id).where(
                Location.organisation_id == principal.organisation_id, Location.kind == "warehouse"
            )
        ):
            raise Conflict("the organisation already has a warehouse", code="warehouse_exists")
    else:
        if clinic_id is None:
            raise Invalid(f"a {kind} location belongs to a clinic", code="invalid_location")
        clinic_in_scope(session=session, principal=principal, clinic_id=clinic_id)
    location = Location(
        id=new_id(),
        organisation_id=principal.organisation_id,
        kind=kind,
        name=name,
        clinic_id=clinic_id,
    )
    savepoint = session.begin_nested()
    try:
        session.add(location)
        session.flush()
    except IntegrityError:
        savepoint.rollback()
        raise Conflict(
            f"a location called {name!r} already exists", code="location_name_taken"
        ) from None
    savepoint.commit()
    record_event(
        session=session,
        event=StockLocationCreated(
            actor=actor_of(principal), clinic_id=clinic_id, location_id=location.id
        ),
    )
    return location


def list_locations(*, session: Session, principal: Principal) -> list[Location]:
    """The organisation's locations the caller may see, by name."""
    found = session.scalars(
        select(Location)
        .where(Location.organisation_id == principal.organisation_id)
        .order_by(Location.name, Location.id)
    )
    return [
        loc for loc in found if loc.clinic_id is None or principal.can_see_clinic(loc.clinic_id)
    ]


def receive_lot(
    *,
    session: Session,
    principal: Principal,
    location_id: str,
    product_id: str,
    lot_code: str,
    expires_on: date,
    quantity: int,
) -> Lot:
    """Put `quantity` of a lot on a location's shelf (a new lot, or more of one
    already there with the same code and expiry).

    Raises:
        Forbidden: The caller may not change stock.
        NotFound: No such location or product in scope.
        Invalid: A quantity below 1; a kit (kits are stocked as their components).
        Conflict: ``lot_expiry_mismatch``: the lot is there with another expiry date.
    """
    require_writer(principal)
    location = location_in_scope(session=session, principal=principal, location_id=location_id)
    product_in_scope(session=session, principal=principal, product_id=product_id)
    if quantity < 1:
        raise Invalid("a delivery holds at least 1", code="invalid_quantity")
    if components_by_kit(session=session, kit_ids=[product_id]):
        raise Invalid("a kit is stocked as its components", code="kit_not_stocked")
    lock_shared(session=session, location_ids=[location.id])
    lot = _lot(session, product_id, location.id, lot_code)
    if lot is None:
        savepoint = session.begin_nested()
        try:
            lot = Lot(
                id=new_id(),
                product_id=product_id,
                location_id=location.id,
                lot_code=lot_code,
                expires_on=expires_on,
                on_hand=quantity,
                reserved=0,
            )
            session.add(lot)
            session.flush()
            savepoint.commit()
        except IntegrityError:  # received at the same moment by someone else
            savepoint.rollback()
            lot = _lot(session, product_id, location.id, lot_code)
            assert lot is not None
            _add_on_hand(session, lot, expires_on, quantity)
    else:
        _add_on_hand(session, lot, expires_on, quantity)
    record_event(
        session=session,
        event=StockReceived(
            actor=actor_of(principal),
            clinic_id=location.clinic_id,
            lot_id=lot.id,
            quantity=quantity,
        ),
    )
    return lot


def adjust_lot(*, session: Session, principal: Principal, lot_id: str, delta: int) -> Lot:
    """Correct a lot's on-hand count by `delta` (a count, damage, loss); it never goes
    below what orders have reserved of it.

    Raises:
        Forbidden: The caller may not change stock.
        NotFound: No such lot in scope.
        Invalid: A zero delta.
        Conflict: ``below_reserved``: fewer would be on hand than is reserved.
    """
    require_writer(principal)
    lot = session.get(Lot, lot_id)
    if lot is None:
        raise NotFound("no such lot", code="not_found")
    location = location_in_scope(session=session, principal=principal, location_id=lot.location_id)
    if delta == 0:
        raise Invalid("an adjustment changes the count", code="invalid_quantity")
    lock_shared(session=session, location_ids=[location.id])
    done = session.execute(
        update(Lot)
        .where(Lot.id == lot_id, Lot.on_hand + delta >= Lot.reserved, Lot.on_hand + delta >= 0)
        .values(on_hand=Lot.on_hand + delta)
    )
    if rowcount(done) != 1:
        session.refresh(lot)
        raise Conflict(
            f"lot {lot.lot_code} has {lot.on_hand} on hand, {lot.reserved} of them reserved: "
            f"it cannot change by {delta}",
            code="below_reserved",
        )
    session.refresh(lot)
    record_event(
        session=session,
        event=StockAdjusted(
            actor=actor_of(principal), clinic_id=location.clinic_id, lot_id=lot.id, delta=delta
        ),
    )
    return lot


def list_lots(
    *,
    session: Session,
    principal: Principal,
    location_id: str | None = None,
    product_id: str | None = None,
) -> list[Lot]:
    """Lots in the caller's scope, by location then expiry (first to go first)."""
    visible = [loc.id for loc in list_locations(session=session, principal=principal)]
    if location_id is not None:
        location_in_scope(session=session, principal=principal, location_id=location_id)
        visible = [location_id]
    query = select(Lot).where(Lot.location_id.in_(visible))
    if product_id is not None:
        query = query.where(Lot.product_id == product_id)
    return list(session.scalars(query.order_by(Lot.location_id, Lot.expires_on, Lot.id)))


def _lot(session: Session, product_id: str, location_id: str, lot_code: str) -> Lot | None:
    return session.scalar(
        select(Lot).where(
            Lot.product_id == product_id, Lot.location_id == location_id, Lot.lot_code == lot_code
        )
    )


def _add_on_hand(session: Session, lot: Lot, expires_on: date, quantity: int) -> None:
    if lot.expires_on != expires_on:
        raise Conflict(
            f"lot {lot.lot_code} is here with expiry {lot.expires_on.isoformat()}",
            code="lot_expiry_mismatch",
        )
    session.execute(update(Lot).where(Lot.id == lot.id).values(on_hand=Lot.on_hand + quantity))
    session.refresh(lot)
