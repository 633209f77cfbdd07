"""The catalogue devices read offline: one server-owned `crdt.Catalogue` record per
clinic (id `crdt.catalogue_id`), listing the organisation's active products with
what is available to the clinic's orders (`stock.sourcing_locations`: its own store
and shelf, then the central warehouse; unexpired lots, on hand minus reserved).

A record is rewritten only when what it says changed, as a new change of the same
document. It is refreshed after staff edits (`republish_catalogue`), after a batch
of decisions that moved stock for the pushing clinic (`refresh_touched`, an
`sync_server.intents.AfterDecisions` hook), and by the housekeeping for every
clinic (`publish_everywhere`): stock taken through the warehouse by one clinic
shows in the others' catalogues at their next refresh.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from crdt import Catalogue, RecordDocument, catalogue_id
from sync_server.commerce.catalogue import components_by_kit
from sync_server.commerce.stock import available, sourcing_locations, usable_after
from sync_server.commerce.tables import Product
from sync_server.db import Database
from sync_server.identity.tables import Clinic
from sync_server.sync.authorship import ServerSigner
from sync_server.sync.documents import upserted_record, write_documents

__all__ = [
    "catalogue_key",
    "catalogue_record",
    "publish_catalogue",
    "publish_everywhere",
    "refresh_touched",
    "republish_catalogue",
]


def catalogue_key(clinic_id: str) -> tuple[str, ...]:
    """The touched-key a decision records when it moves stock `clinic_id` sees."""
    return ("catalogue", clinic_id)


def catalogue_record(
    *, session: Session, clinic: Clinic, now: datetime, author: str
) -> RecordDocument | None:
    """The clinic's catalogue record as the tables say it now; None if the stored one
    already says it."""
    products = list(
        session.scalars(
            select(Product)
            .where(Product.organisation_id == clinic.organisation_id, Product.active.is_(True))
            .order_by(Product.name, Product.id)
        )
    )
    kits = components_by_kit(session=session, kit_ids=[p.id for p in products])
    stocked = sorted(
        {p.id for p in products if p.id not in kits}
        | {c for parts in kits.values() for c, _ in parts}
    )
    free = available(
        session=session,
        product_ids=stocked,
        location_ids=sourcing_locations(
            session=session, organisation_id=clinic.organisation_id, clinic_id=clinic.id
        ),
        after=usable_after(clinic, now),
    )
    entries: list[dict[str, Any]] = []
    for product in products:
        parts = kits.get(product.id, [])
        count = min(free.get(c, 0) // q for c, q in parts) if parts else free.get(product.id, 0)
        entries.append(
            {
                "id": product.id,
                "sku": product.sku,
                "name": product.name,
                "category": product.category,
                "product_class": product.product_class,
                "unit": product.unit,
                "price": product.price,
                "currency": product.currency,
                "prescription_required": product.prescription_required,
                "hcpcs": product.hcpcs,
                "components": [{"product_id": c, "quantity": q} for c, q in parts],
                "available": max(count, 0),
            }
        )
    return upserted_record(
        session=session,
        schema=Catalogue,
        record_id=catalogue_id(clinic.id),
        clinic_id=clinic.id,
        values={"products": entries},
        now=now,
        author=author,
        stamped=True,
    )


def refresh_touched(
    *,
    session: Session,
    clinic_id: str,
    touched: set[tuple[str, ...]],
    now: datetime,
    author: str,
) -> list[RecordDocument]:
    """After decisions: the pushing clinic's catalogue, if they moved its stock."""
    if catalogue_key(clinic_id) not in touched:
        return []
    clinic = session.get(Clinic, clinic_id)
    if clinic is None:
        return []
    record = catalogue_record(session=session, clinic=clinic, now=now, author=author)
    return [] if record is None else [record]


def publish_catalogue(
    *, session: Session, clinic_ids: Sequence[str], signer: ServerSigner, now: datetime
) -> int:
    """Write the catalogue record of each clinic where it changed; returns how many."""
    written = 0
    for clinic_id in clinic_ids:
        clinic = session.get(Clinic, clinic_id)
        if clinic is None:
            continue
        record = catalogue_record(session=session, clinic=clinic, now=now, author=signer.device_id)
        if record is not None:
            write_documents(session=session, clinic_id=clinic.id, documents=[record], signer=signer)
            written += 1
    return written


def republish_catalogue(
    *, session: Session, organisation_id: str, signer: ServerSigner, now: datetime
) -> int:
    """After a catalogue or stock change: every clinic's catalogue of the organisation."""
    clinic_ids = session.scalars(
        select(Clinic.id).where(Clinic.organisation_id == organisation_id).order_by(Clinic.id)
    ).all()
    return publish_catalogue(session=session, clinic_ids=clinic_ids, signer=signer, now=now)


def publish_everywhere(*, database: Database, signer: ServerSigner, now: datetime) -> int:
    """`publish_catalogue` for every clinic of every organisation with a catalogue,
    one short transaction per clinic (housekeeping). Returns how many were written."""
    with database.read() as session:
        clinic_ids = session.scalars(
            select(Clinic.id)
            .where(Clinic.organisation_id.in_(select(Product.organisation_id).distinct()))
            .order_by(Clinic.id)
        ).all()
    written = 0
    for clinic_id in clinic_ids:
        with database.write() as session:
            written += publish_catalogue(
                session=session, clinic_ids=[clinic_id], signer=signer, now=now
            )
    return written
