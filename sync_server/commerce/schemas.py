"""Request and response bodies of the commerce routes (catalogue, stock, orders,
prescriptions). Create and Update schemas bound what a client may send; the
services check the rest. Public schemas are built from rows with `model_validate`
and never carry a prescription's signature.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from crdt import ProductCategory

__all__ = [
    "ComponentIn",
    "LocationCreate",
    "LocationPublic",
    "LotAdjust",
    "LotPublic",
    "LotReceive",
    "OrderCancelBody",
    "OrderLinePublic",
    "OrderPublic",
    "PrescriptionCreate",
    "PrescriptionPublic",
    "ProductCreate",
    "ProductPublic",
    "ProductUpdate",
    "ReservationPublic",
]

Id = Annotated[str, Field(min_length=1, max_length=64)]
Text200 = Annotated[str, Field(min_length=1, max_length=200)]
Money = Annotated[int, Field(ge=0, le=100_000_000)]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", examples=["EUR"])]
Hcpcs = Annotated[str, Field(pattern=r"^[A-Z][0-9]{4}$", examples=["A6209"])]


class _Request(BaseModel):
    """A request body: no NUL characters (PostgreSQL and the synced records cannot
    carry one), no unknown fields."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _no_nul(self) -> _Request:
        bad = sorted(n for n, v in self if isinstance(v, str) and "\x00" in v)
        if bad:
            raise ValueError(f"text may not contain a NUL character: {', '.join(bad)}")
        return self


class _Public(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# ---------------------------------------------------------------- catalogue
class ComponentIn(_Request):
    """A product in a kit, and how many of it one kit holds."""

    product_id: Id
    quantity: int = Field(ge=1, le=1000)


class ProductCreate(_Request):
    """A product, or a kit when it has components (its stock is theirs)."""

    sku: Annotated[str, Field(min_length=1, max_length=100)]
    name: Text200
    category: ProductCategory
    product_class: Text200
    unit: Annotated[str, Field(min_length=1, max_length=100)]
    price: Money
    currency: Currency
    prescription_required: bool = False
    hcpcs: Hcpcs | None = None
    components: Annotated[list[ComponentIn], Field(max_length=50)] = []


class ProductUpdate(_Request):
    """What may change about a product (omitted fields stay)."""

    name: Text200 | None = None
    category: ProductCategory | None = None
    product_class: Text200 | None = None
    unit: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    price: Money | None = None
    currency: Currency | None = None
    prescription_required: bool | None = None
    hcpcs: Hcpcs | None = None
    active: bool | None = None


class ProductPublic(_Public):
    id: str
    sku: str
    name: str
    category: str
    product_class: str
    unit: str
    price: int
    currency: str
    prescription_required: bool
    hcpcs: str | None
    active: bool
    components: list[ComponentIn] = []


# ---------------------------------------------------------------- stock
class LocationCreate(_Request):
    """A central warehouse (no clinic), a clinic store or an edge clinic's shelf."""

    kind: Literal["warehouse", "clinic", "shelf"]
    name: Text200
    clinic_id: Id | None = None


class LocationPublic(_Public):
    id: str
    kind: str
    name: str
    clinic_id: str | None


class LotReceive(_Request):
    """Stock arriving at a location."""

    location_id: Id
    product_id: Id
    lot_code: Annotated[str, Field(min_length=1, max_length=100)]
    expires_on: date
    quantity: int = Field(ge=1, le=1_000_000)


class LotAdjust(_Request):
    """A correction of a lot's on-hand count (a count, damage, loss)."""

    delta: int = Field(ge=-1_000_000, le=1_000_000)


class LotPublic(_Public):
    id: str
    product_id: str
    location_id: str
    lot_code: str
    expires_on: date
    on_hand: int
    reserved: int


# ---------------------------------------------------------------- orders
class ReservationPublic(_Public):
    lot_id: str
    product_id: str
    quantity: int
    state: str


class OrderLinePublic(_Public):
    line_no: int
    product_id: str
    quantity: int
    unit_price: int
    prescription_id: str | None


class OrderPublic(_Public):
    id: str
    clinic_id: str
    patient_id: str
    state: str
    deliver_to: str
    total: int
    currency: str
    hold_expires_at: datetime
    paid_at: datetime | None
    invoice_id: str | None
    cancel_reason: str | None
    created_at: datetime
    lines: list[OrderLinePublic] = []
    reservations: list[ReservationPublic] = []


class OrderCancelBody(_Request):
    """Why staff cancel an order."""

    reason: Annotated[str, Field(max_length=500)] | None = None


# ---------------------------------------------------------------- prescriptions
class PrescriptionCreate(_Request):
    """A doctor's prescription: one product or any product of a class, `quantity`
    with `refills` repeats (quantity * (1 + refills) in all), signed."""

    patient_id: Id
    prescriber_id: Id
    product_id: Id | None = None
    product_class: Text200 | None = None
    quantity: int = Field(ge=1, le=100_000)
    refills: int = Field(default=0, ge=0, le=100)
    signature: Annotated[str, Field(min_length=1, max_length=200_000)]
    issued_on: date
    valid_until: date | None = None


class PrescriptionPublic(_Public):
    id: str
    patient_id: str
    prescriber_id: str
    product_id: str | None
    product_class: str | None
    quantity: int
    refills: int
    quantity_total: int
    quantity_remaining: int
    issued_on: date
    valid_until: date
    revoked_at: datetime | None
