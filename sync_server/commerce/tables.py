"""Commerce tables: products and kits, stock locations and lots, orders with their
lines and per-lot reservations, prescriptions.

Stock below zero is impossible in the database, not only in code: every lot carries
CHECKs ``on_hand >= 0``, ``reserved >= 0`` and ``reserved <= on_hand``, and every stock
move is one conditional ``UPDATE ... WHERE on_hand - reserved >= :n`` whose row count
says whether it happened (`sync_server.commerce.stock`). A prescription's
``quantity_remaining`` is held between 0 and its total the same way.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from sync_server.db import Base, Id, UTCDateTime, utcnow

__all__ = [
    "CANCELLABLE_STATES",
    "ORDER_STATES",
    "KitComponentRow",
    "Location",
    "Lot",
    "Order",
    "OrderLineRow",
    "Prescription",
    "Product",
    "Reservation",
]

ORDER_STATES = ("accepted", "picked", "shipped", "delivered", "cancelled")
"""An order's lifecycle: accepted → picked → shipped → delivered, or cancelled."""
CANCELLABLE_STATES = ("accepted", "picked")
"""States an order can still be cancelled from (not once shipped)."""


class Product(Base):
    """A supply of the organisation's catalogue (a kit when it has components)."""

    __tablename__ = "products"
    __table_args__ = (
        UniqueConstraint("organisation_id", "sku", name="uq_products_org_sku"),
        CheckConstraint("price >= 0", name="ck_products_price"),
    )

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    organisation_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"), index=True)
    sku: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(200))
    category: Mapped[str] = mapped_column(String(20))  # crdt.ProductCategory
    product_class: Mapped[str] = mapped_column(String(200))  # e.g. "foam dressing"
    unit: Mapped[str] = mapped_column(String(100))  # "box of 10", "each"
    price: Mapped[int] = mapped_column(Integer)  # minor units of `currency`
    currency: Mapped[str] = mapped_column(String(3))
    prescription_required: Mapped[bool] = mapped_column(Boolean, default=False)
    hcpcs: Mapped[str | None] = mapped_column(String(5))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class KitComponentRow(Base):
    """One component of a kit: a kit holds no stock of its own, only its components'."""

    __tablename__ = "kit_components"
    __table_args__ = (CheckConstraint("quantity >= 1", name="ck_kit_components_quantity"),)

    kit_id: Mapped[str] = mapped_column(ForeignKey("products.id"), primary_key=True)
    product_id: Mapped[str] = mapped_column(ForeignKey("products.id"), primary_key=True)
    quantity: Mapped[int] = mapped_column(Integer)


class Location(Base):
    """Where stock is kept: the organisation's central warehouse, a clinic's store or
    an edge clinic's shelf (both bound to their clinic)."""

    __tablename__ = "stock_locations"
    __table_args__ = (UniqueConstraint("organisation_id", "name", name="uq_locations_org_name"),)

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    organisation_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"), index=True)
    kind: Mapped[str] = mapped_column(String(20))  # warehouse | clinic | shelf
    name: Mapped[str] = mapped_column(String(200))
    clinic_id: Mapped[str | None] = mapped_column(ForeignKey("clinics.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Lot(Base):
    """One lot of a product at a location: what is on the shelf, and how much of it
    accepted orders hold."""

    __tablename__ = "stock_lots"
    __table_args__ = (
        UniqueConstraint("product_id", "location_id", "lot_code", name="uq_lots_code"),
        CheckConstraint("on_hand >= 0", name="ck_lots_on_hand"),
        CheckConstraint("reserved >= 0", name="ck_lots_reserved"),
        CheckConstraint("reserved <= on_hand", name="ck_lots_reserved_on_hand"),
        Index("ix_lots_product_location", "product_id", "location_id", "expires_on"),
    )

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    product_id: Mapped[str] = mapped_column(ForeignKey("products.id"))
    location_id: Mapped[str] = mapped_column(ForeignKey("stock_locations.id"), index=True)
    lot_code: Mapped[str] = mapped_column(String(100))
    expires_on: Mapped[date] = mapped_column(Date)
    on_hand: Mapped[int] = mapped_column(Integer, default=0)
    reserved: Mapped[int] = mapped_column(Integer, default=0)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Order(Base):
    """An accepted order of supplies for one patient (rejected ones are only decisions)."""

    __tablename__ = "orders"
    __table_args__ = (
        CheckConstraint("total >= 0", name="ck_orders_total"),
        Index("ix_orders_hold", "state", "hold_expires_at"),
    )

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    organisation_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"), index=True)
    clinic_id: Mapped[str] = mapped_column(ForeignKey("clinics.id"), index=True)
    patient_id: Mapped[str] = mapped_column(Id, index=True)
    intent_id: Mapped[str] = mapped_column(Id, unique=True)  # the intent that placed it
    state: Mapped[str] = mapped_column(String(20))  # ORDER_STATES
    deliver_to: Mapped[str] = mapped_column(String(20))  # crdt.DeliverTo
    address: Mapped[str | None] = mapped_column(Text)
    total: Mapped[int] = mapped_column(Integer)  # minor units of `currency`
    currency: Mapped[str] = mapped_column(String(3))
    hold_expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    invoice_id: Mapped[str | None] = mapped_column(Id)  # the payments domain's (no FK)
    cancel_reason: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class OrderLineRow(Base):
    """One accepted line of an order, at the price it was accepted at."""

    __tablename__ = "order_lines"
    __table_args__ = (CheckConstraint("quantity >= 1", name="ck_order_lines_quantity"),)

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"), index=True)
    line_no: Mapped[int] = mapped_column(Integer)  # its index in the intent's lines
    product_id: Mapped[str] = mapped_column(ForeignKey("products.id"))
    quantity: Mapped[int] = mapped_column(Integer)
    unit_price: Mapped[int] = mapped_column(Integer)
    prescription_id: Mapped[str | None] = mapped_column(ForeignKey("prescriptions.id"))


class Reservation(Base):
    """Stock of one lot held for one order line: ``held`` counts in the lot's
    ``reserved``; ``picked`` has left ``on_hand``; ``released`` is history."""

    __tablename__ = "stock_reservations"
    __table_args__ = (CheckConstraint("quantity >= 1", name="ck_reservations_quantity"),)

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"), index=True)
    line_id: Mapped[str] = mapped_column(ForeignKey("order_lines.id"))
    lot_id: Mapped[str] = mapped_column(ForeignKey("stock_lots.id"), index=True)
    product_id: Mapped[str] = mapped_column(ForeignKey("products.id"))
    quantity: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(20), default="held")  # held | picked | released


class Prescription(Base):
    """A doctor's prescription of a product (or any product of a class) for a patient:
    ``quantity_total`` = quantity * (1 + refills), of which ``quantity_remaining``
    may still be ordered until ``valid_until`` (inclusive)."""

    __tablename__ = "prescriptions"
    __table_args__ = (
        CheckConstraint("quantity >= 1", name="ck_prescriptions_quantity"),
        CheckConstraint("refills >= 0", name="ck_prescriptions_refills"),
        CheckConstraint("quantity_remaining >= 0", name="ck_prescriptions_remaining"),
        CheckConstraint(
            "quantity_remaining <= quantity_total", name="ck_prescriptions_remaining_total"
        ),
        CheckConstraint(
            "product_id IS NOT NULL OR product_class IS NOT NULL", name="ck_prescriptions_item"
        ),
        Index("ix_prescriptions_patient", "organisation_id", "patient_id"),
    )

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    organisation_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"))
    patient_id: Mapped[str] = mapped_column(Id)
    product_id: Mapped[str | None] = mapped_column(ForeignKey("products.id"))
    product_class: Mapped[str | None] = mapped_column(String(200))
    quantity: Mapped[int] = mapped_column(Integer)
    refills: Mapped[int] = mapped_column(Integer, default=0)
    quantity_total: Mapped[int] = mapped_column(Integer)
    quantity_remaining: Mapped[int] = mapped_column(Integer)
    prescriber_id: Mapped[str] = mapped_column(ForeignKey("providers.id"))
    signature: Mapped[str] = mapped_column(Text)  # the prescriber's signature, as given
    issued_on: Mapped[date] = mapped_column(Date)
    valid_until: Mapped[date] = mapped_column(Date)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
