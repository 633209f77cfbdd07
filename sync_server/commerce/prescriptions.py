"""Prescriptions: issued by a doctor of the booking directory (staff record them),
for one patient and one product or any product of a class, for ``quantity`` with
``refills`` repeats: ``quantity_total = quantity * (1 + refills)`` units may be
ordered in all, until ``valid_until`` (by default 90 days after issue: surgical
dressings need a new prescription every three months).

An order line of a prescription-only product takes its quantity from one valid
prescription of the patient with a conditional ``UPDATE ... WHERE
quantity_remaining >= :n`` (`claim`), and a cancelled order gives it back
(`give_back`); the CHECKs keep ``0 <= quantity_remaining <= quantity_total``.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from crdt import ProviderKind
from sync_server.audit.events import PrescriptionIssued, PrescriptionRevoked, purpose_of
from sync_server.audit.services import record_event
from sync_server.bookings.directory import actor_of, require_writer
from sync_server.bookings.tables import Provider
from sync_server.commerce.catalogue import product_in_scope
from sync_server.commerce.tables import Prescription, Product
from sync_server.db import new_id, rowcount
from sync_server.errors import Conflict, Invalid, NotFound
from sync_server.identity.principals import Principal
from sync_server.identity.tables import Clinic
from sync_server.sync.tables import Document

__all__ = [
    "EXPIRY_DAYS",
    "VALIDITY",
    "claim",
    "expires_soon",
    "expiring_on",
    "give_back",
    "issue_prescription",
    "list_prescriptions",
    "prescription_in_scope",
    "revoke_prescription",
]

VALIDITY = timedelta(days=90)
"""How long a prescription is valid when no end date is given."""

EXPIRY_DAYS = 14
"""A prescription valid for at most this many more days (and not used up) is about to
expire: the staff dashboard lists it and its patient is told (one rule for both)."""


def expires_soon(prescription: Prescription, *, today: date) -> bool:
    """Whether `prescription` is about to expire on `today`: not revoked, units left,
    and valid until a day from `today` to `EXPIRY_DAYS` days after it."""
    return (
        prescription.revoked_at is None
        and prescription.quantity_remaining > 0
        and today <= prescription.valid_until <= today + timedelta(days=EXPIRY_DAYS)
    )


def expiring_on(*, session: Session, today: date) -> list[Prescription]:
    """Every organisation's prescriptions about to expire on `today` (`expires_soon`,
    the same test in SQL), oldest end first. For the notification sweep; staff read
    their own through `list_prescriptions`."""
    query = select(Prescription).where(
        Prescription.revoked_at.is_(None),
        Prescription.quantity_remaining > 0,
        Prescription.valid_until >= today,
        Prescription.valid_until <= today + timedelta(days=EXPIRY_DAYS),
    )
    found = session.scalars(query.order_by(Prescription.valid_until, Prescription.id))
    return [p for p in found if expires_soon(p, today=today)]


def issue_prescription(
    *,
    session: Session,
    principal: Principal,
    patient_id: str,
    prescriber_id: str,
    signature: str,
    quantity: int,
    issued_on: date,
    refills: int = 0,
    product_id: str | None = None,
    product_class: str | None = None,
    valid_until: date | None = None,
) -> Prescription:
    """Record a doctor's prescription.

    Raises:
        Forbidden: The caller may not record prescriptions.
        NotFound: No such patient, product or prescriber in the caller's scope.
        Invalid: Neither or both of product and class; a prescriber who is not an
            active doctor; no signature; a quantity below 1; negative refills; an end
            before the issue date.
    """
    require_writer(principal)
    if (product_id is None) == (product_class is None):
        raise Invalid("a prescription names a product or a product class", code="invalid_item")
    if product_id is not None:
        product_in_scope(session=session, principal=principal, product_id=product_id)
    if quantity < 1 or refills < 0:
        raise Invalid("quantity is at least 1 and refills at least 0", code="invalid_quantity")
    if not signature.strip():
        raise Invalid("a prescription carries the prescriber's signature", code="no_signature")
    prescriber = session.get(Provider, prescriber_id)
    if prescriber is None or prescriber.organisation_id != principal.organisation_id:
        raise NotFound("no such prescriber", code="not_found")
    if prescriber.kind != ProviderKind.DOCTOR.value or not prescriber.active:
        raise Invalid("prescriptions are issued by an active doctor", code="not_a_doctor")
    _patient_in_scope(session, principal, patient_id)
    until = valid_until or issued_on + VALIDITY
    if until < issued_on:
        raise Invalid("a prescription ends after it is issued", code="invalid_dates")
    total = quantity * (1 + refills)
    prescription = Prescription(
        id=new_id(),
        organisation_id=principal.organisation_id,
        patient_id=patient_id,
        product_id=product_id,
        product_class=product_class,
        quantity=quantity,
        refills=refills,
        quantity_total=total,
        quantity_remaining=total,
        prescriber_id=prescriber.id,
        signature=signature,
        issued_on=issued_on,
        valid_until=until,
    )
    session.add(prescription)
    session.flush()
    record_event(
        session=session,
        event=PrescriptionIssued(
            actor=actor_of(principal),
            patient_ids=(prescription.patient_id,),
            purpose=purpose_of(principal),
            prescription_id=prescription.id,
        ),
    )
    return prescription


def prescription_in_scope(
    *, session: Session, principal: Principal, prescription_id: str
) -> Prescription:
    """The prescription, if it is of the caller's organisation.

    Raises:
        NotFound: No such prescription.
    """
    found = session.get(Prescription, prescription_id)
    if found is None or found.organisation_id != principal.organisation_id:
        raise NotFound("no such prescription", code="not_found")
    return found


def list_prescriptions(
    *,
    session: Session,
    principal: Principal,
    patient_id: str | None = None,
    include_revoked: bool = False,
) -> list[Prescription]:
    """The organisation's prescriptions (of one patient), newest first."""
    query = select(Prescription).where(Prescription.organisation_id == principal.organisation_id)
    if patient_id is not None:
        query = query.where(Prescription.patient_id == patient_id)
    if not include_revoked:
        query = query.where(Prescription.revoked_at.is_(None))
    return list(session.scalars(query.order_by(Prescription.issued_on.desc(), Prescription.id)))


def revoke_prescription(
    *, session: Session, principal: Principal, prescription_id: str, now: datetime
) -> Prescription:
    """Revoke a prescription: nothing more is accepted against it (orders already
    accepted stand).

    Raises:
        Forbidden: The caller may not change prescriptions.
        NotFound: No such prescription.
        Conflict: ``already_revoked``.
    """
    require_writer(principal)
    found = prescription_in_scope(
        session=session, principal=principal, prescription_id=prescription_id
    )
    done = session.execute(
        update(Prescription)
        .where(Prescription.id == found.id, Prescription.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    if rowcount(done) != 1:
        raise Conflict("this prescription is already revoked", code="already_revoked")
    session.refresh(found)
    record_event(
        session=session,
        event=PrescriptionRevoked(
            actor=actor_of(principal),
            patient_ids=(found.patient_id,),
            purpose=purpose_of(principal),
            prescription_id=found.id,
        ),
    )
    return found


def claim(
    *,
    session: Session,
    organisation_id: str,
    patient_id: str,
    product: Product,
    quantity: int,
    day: date,
) -> tuple[str | None, str | None]:
    """Take `quantity` of `product` from one of the patient's valid prescriptions
    (the one that ends first). Returns ``(prescription id, None)``, or
    ``(None, reason)`` with the reason for a clinician when none can give it."""
    mine = list(
        session.scalars(
            select(Prescription)
            .where(
                Prescription.organisation_id == organisation_id,
                Prescription.patient_id == patient_id,
                or_(
                    Prescription.product_id == product.id,
                    Prescription.product_class == product.product_class,
                ),
            )
            .order_by(Prescription.valid_until, Prescription.issued_on, Prescription.id)
        )
    )
    usable = [
        p for p in mine if p.revoked_at is None and p.issued_on <= day and p.valid_until >= day
    ]
    for prescription in usable:
        if prescription.quantity_remaining < quantity:
            continue
        done = session.execute(
            update(Prescription)
            .where(
                Prescription.id == prescription.id,
                Prescription.quantity_remaining >= quantity,
                Prescription.revoked_at.is_(None),
            )
            .values(quantity_remaining=Prescription.quantity_remaining - quantity)
        )
        if rowcount(done) == 1:
            return prescription.id, None
    what = product.product_class
    if usable:
        best = max(usable, key=lambda p: p.quantity_remaining)
        left = best.quantity_remaining
        if left == 0:
            return None, (
                f"the prescription for {what} is exhausted "
                f"({left} of {best.quantity_total} left); it needs a new one"
            )
        return None, (
            f"the prescription for {what} has {left} of {best.quantity_total} left, "
            f"{quantity} asked for"
        )
    needs = f"{product.name} needs a prescription for {what}"
    if not mine:
        return None, f"{needs}; there is none on file for this patient"
    expired = [p for p in mine if p.valid_until < day and p.revoked_at is None]
    if expired:
        last = max(p.valid_until for p in expired)
        return None, f"{needs}; the last one expired on {last.isoformat()}"
    if any(p.revoked_at is not None for p in mine):
        return None, f"{needs}; the last one was revoked"
    start = min(p.issued_on for p in mine)
    return None, f"{needs}; the one on file is valid from {start.isoformat()}"


def give_back(*, session: Session, prescription_id: str, quantity: int) -> None:
    """Return `quantity` to a prescription (its order was cancelled)."""
    session.execute(
        update(Prescription)
        .where(
            Prescription.id == prescription_id,
            Prescription.quantity_remaining + quantity <= Prescription.quantity_total,
        )
        .values(quantity_remaining=Prescription.quantity_remaining + quantity)
    )


def _patient_in_scope(session: Session, principal: Principal, patient_id: str) -> None:
    clinic = session.execute(
        select(Document.clinic_id)
        .join(Clinic, Clinic.id == Document.clinic_id)
        .where(
            Document.id == patient_id,
            Document.collection == "patients",
            Clinic.organisation_id == principal.organisation_id,
        )
    ).first()
    if clinic is None or not principal.can_see_clinic(clinic[0]):
        raise NotFound("no such patient", code="not_found")
