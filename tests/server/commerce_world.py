"""A clinic set up for commerce tests on a live server: Europe/Berlin, a doctor who
prescribes, the organisation's central warehouse and the clinic's store, products of
the test's own (unique SKUs), and tablets (`bookings_world.Tablet`) that write
patients and order intents and push and pull them over HTTP like the SDK does."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from crdt import Decision, IntentKind, RecordDocument
from sync_server.bookings.directory import add_provider, set_clinic_timezone
from sync_server.commerce.catalogue import create_product
from sync_server.commerce.inventory import create_location, receive_lot
from sync_server.commerce.prescriptions import issue_prescription
from sync_server.commerce.tables import Location, Lot, Reservation
from sync_server.identity.principals import Principal
from sync_server.identity.tables import Clinic, Organisation

from .bookings_world import Tablet

TODAY = datetime.now(UTC).date()


def days(n: int) -> date:
    """`n` days from today."""
    return TODAY + timedelta(days=n)


@dataclass
class ClinicView:
    """What a `Tablet` needs of its clinic."""

    server: Any
    clinic_id: str
    tablets: list[Tablet] = field(default_factory=list)

    def tablet(self) -> Tablet:
        device_id, token = self.server.device_token(self.clinic_id)
        tablet = Tablet(device_id, self.server.http(token), self)  # type: ignore[arg-type]
        self.tablets.append(tablet)
        return tablet

    def close(self) -> None:
        for tablet in self.tablets:
            tablet.http.close()


@dataclass
class Shop(ClinicView):
    """One clinic of the test organisation with its store, the warehouse and a doctor."""

    staff: Principal = field(default=None)  # type: ignore[assignment]
    doctor_id: str = ""
    warehouse_id: str = ""
    store_id: str = ""
    suffix: str = ""

    def product(
        self,
        name: str,
        *,
        price: int = 1000,
        rx: bool = False,
        product_class: str | None = None,
        components: tuple[tuple[str, int], ...] = (),
        unit: str = "box of 10",
    ) -> str:
        with self.server.db.write() as session:
            made = create_product(
                session=session,
                principal=self.staff,
                sku=f"{name}-{uuid.uuid4().hex[:10]}",
                name=name,
                category="npwt" if components else "dressing",
                product_class=product_class or name.lower(),
                unit=unit,
                price=price,
                currency="EUR",
                prescription_required=rx,
                components=components,
            )
            return made.id

    def receive(
        self,
        product_id: str,
        quantity: int,
        expires_on: date | None = None,
        *,
        location_id: str | None = None,
        code: str | None = None,
    ) -> str:
        with self.server.db.write() as session:
            lot = receive_lot(
                session=session,
                principal=self.staff,
                location_id=location_id or self.warehouse_id,
                product_id=product_id,
                lot_code=code or f"LOT-{uuid.uuid4().hex[:8]}",
                expires_on=expires_on or days(365),
                quantity=quantity,
            )
            return lot.id

    def prescribe(
        self,
        patient_id: str,
        *,
        product_id: str | None = None,
        product_class: str | None = None,
        quantity: int = 10,
        refills: int = 0,
        issued_on: date | None = None,
        valid_until: date | None = None,
    ) -> str:
        with self.server.db.write() as session:
            made = issue_prescription(
                session=session,
                principal=self.staff,
                patient_id=patient_id,
                prescriber_id=self.doctor_id,
                signature="data:image/png;base64,iVBORw0KGgo=",
                quantity=quantity,
                refills=refills,
                issued_on=issued_on or TODAY,
                product_id=product_id,
                product_class=product_class,
                valid_until=valid_until,
            )
            return made.id

    def lots(self, product_id: str) -> list[Lot]:
        with self.server.db.read() as session:
            return list(
                session.scalars(
                    select(Lot).where(Lot.product_id == product_id).order_by(Lot.expires_on)
                )
            )

    def stock(self, product_id: str) -> tuple[int, int]:
        """(on hand, reserved) of a product over every lot."""
        found = self.lots(product_id)
        return sum(x.on_hand for x in found), sum(x.reserved for x in found)

    def held(self, product_id: str) -> int:
        with self.server.db.read() as session:
            return int(
                session.scalar(
                    select(func.coalesce(func.sum(Reservation.quantity), 0)).where(
                        Reservation.product_id == product_id, Reservation.state == "held"
                    )
                )
            )

    def other_clinic(self) -> ClinicView:
        """Another clinic of the organisation (no store: it orders from the warehouse)."""
        # Its tablets join this shop's list, closed with it.
        return ClinicView(self.server, self.server.new_clinic(), self.tablets)


def place(
    tablet: Tablet,
    patient_id: str,
    lines: list[tuple[str, int]],
    *,
    partial: bool = False,
    **details: Any,
) -> RecordDocument:
    """An ``order.place`` intent of `tablet` (not pushed)."""
    return tablet.intent(
        IntentKind.ORDER_PLACE,
        patient_id=patient_id,
        lines=[{"product_id": p, "quantity": q} for p, q in lines],
        partial=partial,
        **details,
    )


def decide(tablet: Tablet, intent: RecordDocument) -> Decision:
    """Push `intent`, pull, and return its decision."""
    tablet.sync(intent)
    decision = tablet.decision(intent.id)
    assert decision is not None, "no decision came back"
    return decision


def patient_of(tablet: Tablet, family: str = "Okafor") -> str:
    record = tablet.patient(family)
    tablet.push(record)
    return record.id


def build_shop(server: Any, *, own_organisation: bool = False) -> Shop:
    """A fresh clinic in Berlin with its store, the organisation's warehouse (made
    once) and a doctor; with `own_organisation`, in an organisation of its own (its
    catalogue holds only what the test adds)."""
    organisation_id = server.organisation_id
    suffix = uuid.uuid4().hex[:6]
    if own_organisation:
        organisation_id = str(uuid.uuid4())
        clinic_id = str(uuid.uuid4())
        with server.db.write() as session:
            session.add(Organisation(id=organisation_id, name=f"org-{suffix}"))
            session.flush()
            session.add(
                Clinic(
                    id=clinic_id,
                    organisation_id=organisation_id,
                    name=f"clinic-{suffix}",
                    feed_seq=0,
                )
            )
    else:
        clinic_id = server.new_clinic()
    staff = Principal("user", str(uuid.uuid4()), None, organisation_id, "admin")
    with server.db.write() as session:
        set_clinic_timezone(
            session=session, principal=staff, clinic_id=clinic_id, timezone="Europe/Berlin"
        )
        doctor = add_provider(
            session=session, principal=staff, name="Dr Rx", kind="doctor", clinic_id=clinic_id
        )
        warehouse = session.scalar(
            select(Location.id).where(
                Location.organisation_id == organisation_id, Location.kind == "warehouse"
            )
        )
        if warehouse is None:
            warehouse = create_location(
                session=session, principal=staff, kind="warehouse", name="Central warehouse"
            ).id
        store = create_location(
            session=session,
            principal=staff,
            kind="clinic",
            name=f"Store {suffix}",
            clinic_id=clinic_id,
        )
    return Shop(
        server,
        clinic_id,
        staff=staff,
        doctor_id=doctor.id,
        warehouse_id=warehouse,
        store_id=store.id,
        suffix=suffix,
    )
