"""Stock moves, each one conditional ``UPDATE`` whose row count says whether it
happened (never read-then-write): reserving first-expiry-first-out, releasing,
picking, receiving and adjusting. The lots' CHECK constraints (`tables.Lot`) are the
last word: whatever this code believed, the database refuses stock below zero or
more reserved than on hand.

Where an order's stock comes from: the clinic's own locations (its store, its shelf)
first, then the organisation's central warehouse (`sourcing_locations`); within each
location the lot that expires first is taken first. A lot whose expiry date is on or
before the clinic's today (`usable_after`) is never reserved or picked.

Lock order, the same for every transaction, so none waits in a cycle: first the
clinic's row (a push deciding the clinic's intents holds it; staff moving or
cancelling an order and the hold sweep take the order's clinic first too), then the
central warehouse's `stock_locations` row (`lock_shared`, taken just before the
first warehouse lot is touched), then orders, lots and prescriptions. A clinic's own
store and shelf are only moved under its clinic's lock, so orders served from them
run in parallel across clinics; orders that reach into the shared warehouse queue on
its one lock instead of taking its lots in different orders and deadlocking.
Catalogue records (clinic row locks of every clinic) are written by staff routes and
the hold sweep in a transaction of their own, after the stock moves committed.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import case, func, select, update
from sqlalchemy.orm import Session

from sync_server.commerce.tables import KitComponentRow, Location, Lot, Reservation
from sync_server.db import new_id, rowcount
from sync_server.identity.tables import Clinic

__all__ = [
    "Taken",
    "available",
    "components_of",
    "lock_shared",
    "pick_reservation",
    "release_reservation",
    "reserve",
    "restock_reservation",
    "sourcing_locations",
    "usable_after",
]


_SOURCING = "commerce:sourcing"
_COMPONENTS = "commerce:components"


def usable_after(clinic: Clinic | None, now: datetime) -> date:
    """The clinic's today: lots expiring on or before it are never reserved or picked."""
    try:
        zone = ZoneInfo(clinic.timezone) if clinic is not None and clinic.timezone else None
    except (ZoneInfoNotFoundError, ValueError):
        zone = None
    return now.astimezone(zone).date() if zone is not None else now.date()


def sourcing_locations(*, session: Session, organisation_id: str, clinic_id: str) -> list[str]:
    """The locations a clinic's orders take stock from, in order: the clinic's own
    (store, shelf) by name, then the organisation's warehouses by name. Kept for the
    session's transaction (one push)."""
    kept: dict[tuple[str, str], list[str]] = session.info.setdefault(_SOURCING, {})
    key = (organisation_id, clinic_id)
    if key not in kept:
        kept[key] = _sourcing(session, organisation_id, clinic_id)
    return kept[key]


def _sourcing(session: Session, organisation_id: str, clinic_id: str) -> list[str]:
    rows = session.execute(
        select(Location.id, Location.kind, Location.clinic_id, Location.name)
        .where(Location.organisation_id == organisation_id)
        .order_by(Location.name, Location.id)
    ).all()
    own = [r.id for r in rows if r.clinic_id == clinic_id and r.kind != "warehouse"]
    central = [r.id for r in rows if r.kind == "warehouse"]
    return own + central


def components_of(*, session: Session, product_id: str) -> dict[str, int]:
    """What one unit of `product_id` takes from stock: its kit components and their
    quantities, or the product itself. Kept for the session's transaction (a kit's
    components never change)."""
    kept: dict[str, dict[str, int]] = session.info.setdefault(_COMPONENTS, {})
    if product_id not in kept:
        rows = session.execute(
            select(KitComponentRow.product_id, KitComponentRow.quantity).where(
                KitComponentRow.kit_id == product_id
            )
        ).all()
        kept[product_id] = {r.product_id: r.quantity for r in rows} or {product_id: 1}
    return kept[product_id]


def available(
    *, session: Session, product_ids: Sequence[str], location_ids: Sequence[str], after: date
) -> dict[str, int]:
    """Free stock (on hand minus reserved, in lots expiring after `after`) of each of
    `product_ids` (stocked products, not kits) over `location_ids`."""
    if not product_ids or not location_ids:
        return dict.fromkeys(product_ids, 0)
    rows = session.execute(
        select(Lot.product_id, func.sum(Lot.on_hand - Lot.reserved))
        .where(
            Lot.product_id.in_(list(product_ids)),
            Lot.location_id.in_(list(location_ids)),
            Lot.expires_on > after,
        )
        .group_by(Lot.product_id)
    ).all()
    found = {r[0]: int(r[1] or 0) for r in rows}
    return {p: found.get(p, 0) for p in product_ids}


def lock_shared(*, session: Session, location_ids: Sequence[str]) -> None:
    """Take the row lock of each warehouse among `location_ids` (in id order) before
    moving its lots (see the module docstring; SQLite serializes writers anyway)."""
    if location_ids:
        session.execute(
            select(Location.id)
            .where(Location.id.in_(list(location_ids)), Location.kind == "warehouse")
            .order_by(Location.id)
            .with_for_update()
        ).all()


def _lock_lot_location(session: Session, lot_id: str) -> None:
    location = session.scalar(select(Lot.location_id).where(Lot.id == lot_id))
    if location is not None:
        lock_shared(session=session, location_ids=[location])


class Taken(NamedTuple):
    """Stock `reserve` took from one lot."""

    lot_id: str
    quantity: int
    lot_code: str
    expires_on: date


def reserve(
    *,
    session: Session,
    product_id: str,
    quantity: int,
    location_ids: Sequence[str],
    after: date,
) -> list[Taken]:
    """Reserve up to `quantity` of `product_id`, first the earlier locations, within
    each the lot that expires first. Returns what was taken per lot; it adds up to
    less than `quantity` when the stock is short (the caller rolls back). A
    warehouse's lock is taken before its first lot is touched (`lock_shared`).
    """
    if not location_ids:
        return []
    priority = case({location: n for n, location in enumerate(location_ids)}, value=Lot.location_id)
    lots = session.execute(
        select(Lot.id, Lot.on_hand - Lot.reserved, Lot.lot_code, Lot.expires_on, Location.kind)
        .join(Location, Location.id == Lot.location_id)
        .where(
            Lot.product_id == product_id,
            Lot.location_id.in_(list(location_ids)),
            Lot.expires_on > after,
            Lot.on_hand > Lot.reserved,
        )
        .order_by(priority, Lot.expires_on, Lot.id)
    ).all()
    taken: list[Taken] = []
    need = quantity
    locked = False
    for lot_id, free, lot_code, expires_on, kind in lots:
        if kind == "warehouse" and not locked:
            lock_shared(session=session, location_ids=location_ids)
            locked = True
        while need > 0 and free > 0:
            take = min(need, free)
            done = session.execute(
                update(Lot)
                .where(Lot.id == lot_id, Lot.on_hand - Lot.reserved >= take, Lot.expires_on > after)
                .values(reserved=Lot.reserved + take)
            )
            if rowcount(done) == 1:
                taken.append(Taken(lot_id, take, lot_code, expires_on))
                need -= take
                break
            # Someone took from this lot since it was read: see what is left of it.
            free = int(
                session.scalar(select(Lot.on_hand - Lot.reserved).where(Lot.id == lot_id)) or 0
            )
        if need == 0:
            break
    return taken


def release_reservation(*, session: Session, reservation: Reservation) -> None:
    """Give a held reservation's stock back to its lot (the reservation becomes
    ``released``); nothing for one not held."""
    marked = session.execute(
        update(Reservation)
        .where(Reservation.id == reservation.id, Reservation.state == "held")
        .values(state="released")
    )
    if rowcount(marked) != 1:
        return
    _lock_lot_location(session, reservation.lot_id)
    done = session.execute(
        update(Lot)
        .where(Lot.id == reservation.lot_id, Lot.reserved >= reservation.quantity)
        .values(reserved=Lot.reserved - reservation.quantity)
    )
    if rowcount(done) != 1:
        raise RuntimeError(f"lot {reservation.lot_id} holds less than its reservations")
    reservation.state = "released"


def restock_reservation(*, session: Session, reservation: Reservation) -> None:
    """Put a picked reservation's stock back on its lot's shelf (a picked order
    cancelled before it shipped)."""
    marked = session.execute(
        update(Reservation)
        .where(Reservation.id == reservation.id, Reservation.state == "picked")
        .values(state="released")
    )
    if rowcount(marked) != 1:
        return
    _lock_lot_location(session, reservation.lot_id)
    session.execute(
        update(Lot)
        .where(Lot.id == reservation.lot_id)
        .values(on_hand=Lot.on_hand + reservation.quantity)
    )
    reservation.state = "released"


def pick_reservation(
    *, session: Session, reservation: Reservation, location_ids: Sequence[str], after: date
) -> list[Reservation] | None:
    """Take a held reservation's stock off the shelf (on hand and reserved both go
    down). If its lot has expired since, the stock is reserved again from the next
    lots first-expiry-first-out and those are picked instead.

    Returns the reservations picked, or None when the expired stock cannot be
    replaced (the caller rolls back).
    """
    _lock_lot_location(session, reservation.lot_id)
    done = session.execute(
        update(Lot)
        .where(
            Lot.id == reservation.lot_id,
            Lot.reserved >= reservation.quantity,
            Lot.on_hand >= reservation.quantity,
            Lot.expires_on > after,
        )
        .values(
            on_hand=Lot.on_hand - reservation.quantity,
            reserved=Lot.reserved - reservation.quantity,
        )
    )
    if rowcount(done) == 1:
        session.execute(
            update(Reservation).where(Reservation.id == reservation.id).values(state="picked")
        )
        reservation.state = "picked"
        return [reservation]
    release_reservation(session=session, reservation=reservation)
    taken = reserve(
        session=session,
        product_id=reservation.product_id,
        quantity=reservation.quantity,
        location_ids=location_ids,
        after=after,
    )
    if sum(t.quantity for t in taken) < reservation.quantity:
        return None
    picked: list[Reservation] = []
    for lot_id, quantity, _, _ in taken:
        fresh = Reservation(
            id=new_id(),
            order_id=reservation.order_id,
            line_id=reservation.line_id,
            lot_id=lot_id,
            product_id=reservation.product_id,
            quantity=quantity,
            state="held",
        )
        session.add(fresh)
        session.flush()
        again = pick_reservation(
            session=session, reservation=fresh, location_ids=location_ids, after=after
        )
        if again is None:
            return None
        picked += again
    return picked
