"""Demo supplies for `coherency server seed-demo`, next to the demo booking directory
(`sync_server.bookings.seed`): a catalogue of wound-care supplies (dressings by type
and size, compression, an NPWT kit made of its components, cleansers; several with
HCPCS codes), the organisation's central warehouse, the Berlin clinic's store and the
Lisbon clinic's shelf, lots with several expiry dates (one already expired), two demo
patients of the Berlin clinic (written as server records, so prescriptions can name
them) and their prescriptions: one valid, one expired.

Idempotent: products are found by SKU, locations by name, lots by code, patients by
their fixed ids and prescriptions by patient and item; nothing is created twice and a
second run changes nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from crdt import Patient, RecordDocument
from sync_server.bookings.tables import Provider
from sync_server.commerce.catalogue import create_product
from sync_server.commerce.inventory import create_location, receive_lot
from sync_server.commerce.prescriptions import issue_prescription
from sync_server.commerce.reference import republish_catalogue
from sync_server.commerce.tables import Location, Lot, Prescription, Product
from sync_server.identity.principals import Principal
from sync_server.identity.tables import Clinic
from sync_server.sync.authorship import ServerSigner
from sync_server.sync.documents import write_documents
from sync_server.sync.tables import Document

__all__ = ["DEMO_PATIENTS", "SeededCommerce", "seed_demo_commerce"]

# sku: (name, category, class, unit, price in cents, prescription, HCPCS, components)
_PRODUCTS: dict[str, tuple[str, str, str, str, int, bool, str | None, tuple[Any, ...]]] = {
    "FOAM-10": ("Foam dressing 10x10 cm", "dressing", "foam dressing", "box of 10", 2490, True,
                "A6209", ()),
    "FOAM-15": ("Foam dressing 15x15 cm", "dressing", "foam dressing", "box of 10", 3890, True,
                "A6210", ()),
    "AG-FOAM-10": ("Silver foam dressing 10x10 cm", "dressing", "antimicrobial dressing",
                   "box of 10", 4590, True, None, ()),
    "ALG-10": ("Alginate dressing 10x10 cm", "dressing", "alginate dressing", "box of 10",
               2150, False, "A6196", ()),
    "HCOL-10": ("Hydrocolloid dressing 10x10 cm", "dressing", "hydrocolloid dressing",
                "box of 10", 1790, False, "A6234", ()),
    "GAUZE-5": ("Sterile gauze swabs 5x5 cm", "dressing", "gauze", "box of 100", 450, False,
                None, ()),
    "COMP-2L": ("Two-layer compression system", "compression", "compression bandage", "kit",
                2890, False, None, ()),
    "COMP-STK-2": ("Compression stocking class 2", "compression", "compression stocking",
                   "pair", 3500, False, None, ()),
    "NPWT-FOAM-M": ("NPWT foam dressing, medium", "npwt", "npwt dressing", "each", 3200, True,
                    None, ()),
    "NPWT-CAN-300": ("NPWT canister 300 ml", "npwt", "npwt canister", "each", 1850, False,
                     None, ()),
    "NPWT-KIT": ("NPWT starter kit", "npwt", "npwt dressing", "kit", 14900, True, None,
                 (("NPWT-FOAM-M", 3), ("NPWT-CAN-300", 1))),
    "SALINE-250": ("Wound cleanser, saline 250 ml", "cleanser", "wound cleanser", "bottle",
                   690, False, None, ()),
    "PHMB-350": ("PHMB wound irrigation solution 350 ml", "cleanser", "wound cleanser",
                 "bottle", 1290, False, None, ()),
}  # fmt: skip

_WAREHOUSE = "Central warehouse"
# location name: (kind, clinic name or None)
_LOCATIONS = {
    _WAREHOUSE: ("warehouse", None),
    "Wound Clinic Berlin store": ("clinic", "Wound Clinic Berlin"),
    "Wound Clinic Lisbon shelf": ("shelf", "Wound Clinic Lisbon"),
}
# (location, sku, lot code, days from the first run to expiry, quantity)
_LOTS = [
    (_WAREHOUSE, "FOAM-10", "F10-EXPIRED", -10, 40),  # expired: never picked
    (_WAREHOUSE, "FOAM-10", "F10-A", 45, 60),
    (_WAREHOUSE, "FOAM-10", "F10-B", 400, 200),
    (_WAREHOUSE, "FOAM-15", "F15-A", 120, 80),
    (_WAREHOUSE, "AG-FOAM-10", "AGF-A", 200, 30),
    (_WAREHOUSE, "ALG-10", "ALG-A", 90, 50),
    (_WAREHOUSE, "ALG-10", "ALG-B", 500, 100),
    (_WAREHOUSE, "HCOL-10", "HC-A", 300, 120),
    (_WAREHOUSE, "GAUZE-5", "GZ-A", 700, 500),
    (_WAREHOUSE, "COMP-2L", "C2L-A", 600, 40),
    (_WAREHOUSE, "COMP-STK-2", "CS2-A", 900, 25),
    (_WAREHOUSE, "NPWT-FOAM-M", "NF-A", 150, 30),
    (_WAREHOUSE, "NPWT-FOAM-M", "NF-B", 365, 30),
    (_WAREHOUSE, "NPWT-CAN-300", "NC-A", 730, 12),
    (_WAREHOUSE, "SALINE-250", "SAL-A", 60, 100),
    (_WAREHOUSE, "SALINE-250", "SAL-B", 365, 100),
    (_WAREHOUSE, "PHMB-350", "PH-A", 540, 60),
    ("Wound Clinic Berlin store", "FOAM-10", "F10-BER", 20, 6),
    ("Wound Clinic Berlin store", "GAUZE-5", "GZ-BER", 400, 20),
    ("Wound Clinic Lisbon shelf", "SALINE-250", "SAL-LIS", 30, 12),
]
DEMO_PATIENTS = {
    # fixed ids: the same patients on every run
    "Ada Okafor": str(uuid.UUID("6f1c1f6e-0d7a-4a8e-9f1e-2a1d3c4b5a01")),
    "Ben Schmidt": str(uuid.UUID("6f1c1f6e-0d7a-4a8e-9f1e-2a1d3c4b5a02")),
}
"""The demo patients of the Berlin clinic the seeded prescriptions are for."""
_PRESCRIBER = "Dr Lena Vogt"  # a doctor of the demo directory


@dataclass(frozen=True, slots=True)
class SeededCommerce:
    """What `seed_demo_commerce` found and made."""

    products: int
    lots: int
    prescriptions: int
    created: int  # rows created by this run (0 on a second run)
    records_published: int


def seed_demo_commerce(
    *, session: Session, organisation_id: str, signer: ServerSigner, now: datetime
) -> SeededCommerce:
    """Load the demo supplies into the organisation (see the module docstring), then
    publish its clinics' catalogues, in `session`'s transaction. The demo clinics and
    doctors must be there (`seed_demo_directory` first). Audited as the system."""
    operator = Principal("user", "", None, organisation_id, "admin")
    clinics = {
        c.name: c
        for c in session.scalars(select(Clinic).where(Clinic.organisation_id == organisation_id))
    }
    created = 0
    products: dict[str, str] = {}
    for sku, (name, category, cls, unit, price, rx, hcpcs, parts) in _PRODUCTS.items():
        found = session.scalar(
            select(Product.id).where(Product.organisation_id == organisation_id, Product.sku == sku)
        )
        if found is None:
            found = create_product(
                session=session,
                principal=operator,
                sku=sku,
                name=name,
                category=category,
                product_class=cls,
                unit=unit,
                price=price,
                currency="EUR",
                prescription_required=rx,
                hcpcs=hcpcs,
                components=[(products[p], q) for p, q in parts],
            ).id
            created += 1
        products[sku] = found
    locations: dict[str, str] = {}
    for name, (kind, clinic_name) in _LOCATIONS.items():
        found = session.scalar(
            select(Location.id).where(
                Location.organisation_id == organisation_id,
                Location.name == name if kind != "warehouse" else Location.kind == "warehouse",
            )
        )
        if found is None:
            clinic = clinics.get(clinic_name) if clinic_name else None
            if clinic_name and clinic is None:
                continue
            found = create_location(
                session=session,
                principal=operator,
                kind=kind,
                name=name,
                clinic_id=clinic.id if clinic else None,
            ).id
            created += 1
        locations[name] = found
    lots = 0
    for location, sku, code, days, quantity in _LOTS:
        if location not in locations:
            continue
        exists = session.scalar(
            select(Lot.id).where(
                Lot.product_id == products[sku],
                Lot.location_id == locations[location],
                Lot.lot_code == code,
            )
        )
        if exists is None:
            receive_lot(
                session=session,
                principal=operator,
                location_id=locations[location],
                product_id=products[sku],
                lot_code=code,
                expires_on=now.date() + timedelta(days=days),
                quantity=quantity,
            )
            created += 1
        lots += 1
    prescriptions = 0
    berlin = clinics.get("Wound Clinic Berlin")
    doctor = session.scalar(
        select(Provider.id).where(
            Provider.organisation_id == organisation_id,
            Provider.name == _PRESCRIBER,
            Provider.kind == "doctor",
        )
    )
    if berlin is not None and doctor is not None:
        created += _patients(session, berlin, signer, now)
        today = now.date()
        for patient, item, quantity, refills, issued, until in (
            ("Ada Okafor", "foam dressing", 30, 2, today - timedelta(days=10), None),
            ("Ada Okafor", "NPWT-KIT", 2, 0, today - timedelta(days=10), None),
            (
                "Ben Schmidt",
                "foam dressing",
                20,
                0,
                today - timedelta(days=130),
                today - timedelta(days=40),
            ),
        ):
            c = _prescription(
                session,
                operator,
                patient_id=DEMO_PATIENTS[patient],
                doctor=doctor,
                product_id=products.get(item),
                product_class=None if item in products else item,
                quantity=quantity,
                refills=refills,
                issued_on=issued,
                valid_until=until,
            )
            created += c
            prescriptions += 1
    published = republish_catalogue(
        session=session, organisation_id=organisation_id, signer=signer, now=now
    )
    return SeededCommerce(
        products=len(products),
        lots=lots,
        prescriptions=prescriptions,
        created=created,
        records_published=published,
    )


def _patients(session: Session, clinic: Clinic, signer: ServerSigner, now: datetime) -> int:
    missing = []
    for name, patient_id in DEMO_PATIENTS.items():
        if session.get(Document, patient_id) is None:
            given, family = name.split(" ", 1)
            missing.append(
                RecordDocument.create(
                    Patient,
                    {"given_name": given, "family_name": family, "birth_date": date(1948, 5, 17)},
                    device_id=signer.device_id,
                    clinic_id=clinic.id,
                    record_id=patient_id,
                    now=now,
                )
            )
    if missing:
        write_documents(session=session, clinic_id=clinic.id, documents=missing, signer=signer)
    return len(missing)


def _prescription(
    session: Session,
    operator: Principal,
    *,
    patient_id: str,
    doctor: str,
    product_id: str | None,
    product_class: str | None,
    quantity: int,
    refills: int,
    issued_on: date,
    valid_until: date | None,
) -> int:
    exists = session.scalar(
        select(Prescription.id).where(
            Prescription.organisation_id == operator.organisation_id,
            Prescription.patient_id == patient_id,
            Prescription.product_id == product_id
            if product_id
            else Prescription.product_class == product_class,
        )
    )
    if exists is not None:
        return 0
    issue_prescription(
        session=session,
        principal=operator,
        patient_id=patient_id,
        prescriber_id=doctor,
        signature="signed: " + _PRESCRIBER,
        quantity=quantity,
        refills=refills,
        issued_on=issued_on,
        product_id=product_id,
        product_class=product_class,
        valid_until=valid_until,
    )
    return 1
