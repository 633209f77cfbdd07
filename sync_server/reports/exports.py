"""A clinic's tables as Parquet files for analysts' own tools (DuckDB, pandas, ...):
one file per table in a folder, read in batches, written with pyarrow.

No patient is named unless the export is `identified` (given and family names, full
birth date and free text then included); the MRN is never exported, nor the records'
JSON (it holds names). Each export is audited (`RecordsExported`, kind
``parquet-tables``) with the rows written and the patients they belong to.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import Select, TypeDecorator, func, select
from sqlalchemy.orm import InstrumentedAttribute

from sync_server.audit.events import Actor, RecordsExported
from sync_server.audit.services import record_event
from sync_server.bookings.tables import Booking
from sync_server.commerce.tables import Location, Lot, Order, OrderLineRow, Reservation
from sync_server.db import Database
from sync_server.errors import Invalid
from sync_server.payments.tables import Invoice, Payment, Refund
from sync_server.sync.tables import AssessmentRow, PatientRow, WoundRow

__all__ = ["TABLES", "ParquetExport", "export_parquet"]

Column = InstrumentedAttribute[Any]


@dataclass(frozen=True, slots=True)
class _Table:
    name: str
    columns: tuple[Column, ...]
    identified_only: tuple[Column, ...]
    query: Callable[[str, Sequence[Column]], Select[Any]]
    patient: Column | None


def _by_clinic(model: Any) -> Callable[[str, Sequence[Column]], Select[Any]]:
    return lambda clinic_id, cols: (
        select(*cols).where(model.clinic_id == clinic_id).order_by(model.id)
    )


def _lines(clinic_id: str, cols: Sequence[Column]) -> Select[Any]:
    return (
        select(*cols)
        .join(Order, Order.id == OrderLineRow.order_id)
        .where(Order.clinic_id == clinic_id)
        .order_by(OrderLineRow.id)
    )


def _reservations(clinic_id: str, cols: Sequence[Column]) -> Select[Any]:
    return (
        select(*cols)
        .join(Order, Order.id == Reservation.order_id)
        .where(Order.clinic_id == clinic_id)
        .order_by(Reservation.id)
    )


def _lots(clinic_id: str, cols: Sequence[Column]) -> Select[Any]:
    return (
        select(*cols)
        .join(Location, Location.id == Lot.location_id)
        .where(Location.clinic_id == clinic_id)
        .order_by(Lot.id)
    )


def _of_invoices(model: Any) -> Callable[[str, Sequence[Column]], Select[Any]]:
    return lambda clinic_id, cols: (
        select(*cols)
        .join(Invoice, Invoice.id == model.invoice_id)
        .where(Invoice.clinic_id == clinic_id)
        .order_by(model.id)
    )


P, W, A, B = PatientRow, WoundRow, AssessmentRow, Booking
_SPECS: tuple[_Table, ...] = (
    _Table(
        "patients",
        (P.id, P.clinic_id, P.sex, P.deleted, P.updated_at),
        (P.given_name, P.family_name, P.birth_date),
        _by_clinic(P),
        P.id,
    ),
    _Table(
        "wounds",
        (
            W.id,
            W.clinic_id,
            W.patient_id,
            W.body_site,
            W.etiology,
            W.status,
            W.onset,
            W.deleted,
            W.updated_at,
        ),
        (),
        _by_clinic(W),
        W.patient_id,
    ),
    _Table(
        "assessments",
        (
            A.id,
            A.clinic_id,
            A.wound_id,
            A.patient_id,
            A.captured_at,
            A.device_id,
            A.area_cm2,
            A.perimeter_cm,
            A.length_cm,
            A.width_cm,
            A.max_depth_mm,
            A.mean_depth_mm,
            A.volume_cm3,
            A.model_id,
            A.deleted,
        ),
        (A.clinician,),
        _by_clinic(A),
        A.patient_id,
    ),
    _Table(
        "bookings",
        (
            B.id,
            B.clinic_id,
            B.kind,
            B.provider_id,
            B.patient_id,
            B.service,
            B.starts_at,
            B.ends_at,
            B.state,
            B.late_cancellation,
            B.rating,
            B.reviewed_at,
            B.created_at,
        ),
        (B.area, B.cancel_reason, B.review_comment),
        _by_clinic(B),
        B.patient_id,
    ),
    _Table(
        "orders",
        (
            Order.id,
            Order.clinic_id,
            Order.patient_id,
            Order.state,
            Order.deliver_to,
            Order.total,
            Order.currency,
            Order.paid_at,
            Order.invoice_id,
            Order.created_at,
        ),
        (Order.address, Order.cancel_reason),
        _by_clinic(Order),
        Order.patient_id,
    ),
    _Table(
        "order_lines",
        (
            OrderLineRow.id,
            OrderLineRow.order_id,
            OrderLineRow.line_no,
            OrderLineRow.product_id,
            OrderLineRow.quantity,
            OrderLineRow.unit_price,
            OrderLineRow.prescription_id,
        ),
        (),
        _lines,
        None,
    ),
    _Table(
        "stock_reservations",
        (
            Reservation.id,
            Reservation.order_id,
            Reservation.line_id,
            Reservation.lot_id,
            Reservation.product_id,
            Reservation.quantity,
            Reservation.state,
        ),
        (),
        _reservations,
        None,
    ),
    _Table(
        "stock_lots",
        (
            Lot.id,
            Lot.product_id,
            Lot.location_id,
            Lot.lot_code,
            Lot.expires_on,
            Lot.on_hand,
            Lot.reserved,
            Lot.received_at,
        ),
        (),
        _lots,
        None,
    ),
    _Table(
        "invoices",
        (
            Invoice.id,
            Invoice.clinic_id,
            Invoice.patient_id,
            Invoice.number,
            Invoice.status,
            Invoice.currency,
            Invoice.total,
            Invoice.paid,
            Invoice.pending,
            Invoice.refunded,
            Invoice.issued_at,
            Invoice.due_at,
            Invoice.created_at,
        ),
        (Invoice.payer, Invoice.void_reason),
        _by_clinic(Invoice),
        Invoice.patient_id,
    ),
    _Table(
        "payments",
        (
            Payment.id,
            Payment.invoice_id,
            Payment.amount,
            Payment.currency,
            Payment.status,
            Payment.captured,
            Payment.refunded,
            Payment.created_at,
            Payment.settled_at,
        ),
        (),
        _of_invoices(Payment),
        None,
    ),
    _Table(
        "refunds",
        (
            Refund.id,
            Refund.payment_id,
            Refund.invoice_id,
            Refund.amount,
            Refund.status,
            Refund.created_at,
        ),
        (Refund.reason,),
        _of_invoices(Refund),
        None,
    ),
)

TABLES = tuple(spec.name for spec in _SPECS)
"""The tables exported, one ``<name>.parquet`` each."""


@dataclass(frozen=True, slots=True)
class ParquetExport:
    """What an export wrote: the folder, rows per table, and whether it names
    patients."""

    folder: Path
    rows: dict[str, int]
    identified: bool


def _arrow_type(column: Column) -> pa.DataType:
    kind = column.type
    python = (kind.impl if isinstance(kind, TypeDecorator) else kind).python_type
    if python is bool:
        return pa.bool_()
    if python is int:
        return pa.int64()
    if python is float:
        return pa.float64()
    if python is datetime:
        return pa.timestamp("us", tz="UTC")
    if python is date:
        return pa.date32()
    return pa.string()


def export_parquet(
    db: Database,
    *,
    clinic_id: str,
    folder: Path,
    actor: Actor,
    purpose: str,
    identified: bool = False,
    batch_size: int = 5000,
) -> ParquetExport:
    """Write clinic `clinic_id`'s tables (`TABLES`) into `folder` (created; existing
    files of those names replaced), each read a batch at a time, and audit it.

    Raises:
        Invalid: ``invalid_folder``: `folder` exists and is not a folder.
    """
    if folder.exists() and not folder.is_dir():
        raise Invalid(f"{folder} is not a folder", code="invalid_folder")
    folder.mkdir(parents=True, exist_ok=True)
    rows: dict[str, int] = {}
    patients: set[str] = set()
    for spec in _SPECS:
        columns = spec.columns + (spec.identified_only if identified else ())
        if spec.name == "patients" and not identified:
            year = func.substr(PatientRow.birth_date, 1, 4).label("birth_year")
            chosen: list[Any] = [*columns, year]
            schema = pa.schema(
                [(c.key, _arrow_type(c)) for c in columns] + [("birth_year", pa.string())]
            )
        else:
            chosen = list(columns)
            schema = pa.schema([(c.key, _arrow_type(c)) for c in columns])
        count = 0
        with db.read() as session, pq.ParquetWriter(folder / f"{spec.name}.parquet", schema) as out:
            result = session.execute(
                spec.query(clinic_id, chosen).execution_options(yield_per=batch_size)
            )
            for batch in result.partitions(batch_size):
                data = [dict(zip(schema.names, row, strict=True)) for row in batch]
                out.write_table(pa.Table.from_pylist(data, schema=schema))
                count += len(data)
                if spec.patient is not None:
                    key = spec.patient.key
                    patients.update(str(r[key]) for r in data if r[key])
        rows[spec.name] = count
    with db.write() as session:
        record_event(
            session=session,
            event=RecordsExported(
                actor=actor,
                clinic_id=clinic_id,
                patient_ids=tuple(sorted(patients)),
                purpose=purpose,
                kind="parquet-tables",
                format="parquet",
                filters=(("identified", "true" if identified else "false"),),
                rows=sum(rows.values()),
            ),
        )
    return ParquetExport(folder=folder, rows=rows, identified=identified)
