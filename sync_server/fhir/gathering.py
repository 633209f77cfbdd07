"""A patient's records as the FHIR mapping reads them (`fhir_interop.PatientRecords`),
gathered from the server's database.

Patients, wounds and assessments come from their projections (each row keeps the
record's JSON); conditions, allergies, medications and care plans from their Automerge
documents (indexed by patient); appointments and visits from the bookings; the audit
events that concern the patient from the audit log; device names from the devices
table. Records marked deleted are left out, and so is a record that no longer
validates against its schema (logged: a damaged row must not take an export down).

`gather_patients` reads any number of patients of one clinic in a fixed number of
queries (one per kind of record, whatever the number of patients): the per-patient
reads and the clinic export share it.
"""

from __future__ import annotations

import json
import logging
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import false, select, true
from sqlalchemy.orm import Session

from crdt import (
    AllergyIntolerance,
    CarePlan,
    Condition,
    CrdtError,
    MedicationStatement,
    Patient,
    Record,
    RecordDocument,
    Wound,
    WoundAssessment,
)
from fhir_interop import AppointmentInfo, AuditInfo, PatientRecords
from sync_server.audit.tables import AuditEvent, AuditPatient
from sync_server.bookings.tables import Booking, Provider
from sync_server.identity.tables import Device
from sync_server.sync.tables import AssessmentRow, Document, PatientRow, WoundRow

__all__ = [
    "APPOINTMENT_STATUS",
    "HISTORY_COLLECTIONS",
    "gather_clinic",
    "gather_patients",
]

log = logging.getLogger(__name__)

APPOINTMENT_STATUS: Mapping[str, str] = {
    "booked": "booked",
    "confirmed": "booked",
    "en_route": "booked",
    "started": "booked",
    "completed": "fulfilled",
    "cancelled": "cancelled",
    "no_show": "noshow",
    "missed": "noshow",
}
"""FHIR's appointment status of each booking state (a state not listed: ``booked``)."""

HISTORY_COLLECTIONS: Mapping[str, type[Record]] = {
    "conditions": Condition,
    "allergies": AllergyIntolerance,
    "medications": MedicationStatement,
    "care_plans": CarePlan,
}
"""The patient's records that have no projection: read from their documents."""

_ID = re.compile(r"[A-Za-z0-9_\-]{1,64}")
_R = TypeVar("_R", bound=Record)


@dataclass
class _Gathered:
    patient: Patient
    wounds: list[Wound]
    assessments: list[WoundAssessment]
    history: dict[str, list[Record]]
    appointments: list[AppointmentInfo]
    audit_events: list[AuditInfo]


def _validated(schema: type[_R], values: Any, where: str) -> _R | None:
    try:
        record = schema.validate_values(values)
    except CrdtError as exc:
        log.warning("left out of the FHIR view: %s %s does not validate: %s", schema.__name__,
                    where, exc)  # fmt: skip
        return None
    assert isinstance(record, schema)
    return record


def _targets(target: str | None) -> tuple[str, ...]:
    """The record ids and blob addresses an audit row's target names (never text)."""
    if not target:
        return ()
    try:
        parsed: Any = json.loads(target)
    except ValueError:
        parsed = target.split(",")
    values: list[Any] = []
    if isinstance(parsed, dict):
        for value in parsed.values():
            values.extend(value if isinstance(value, list) else [value])
    elif isinstance(parsed, list):
        values = parsed
    return tuple(v for v in dict.fromkeys(values) if isinstance(v, str) and _ID.fullmatch(v))


def _audit_info(event: AuditEvent) -> AuditInfo:
    operation = event.operation if event.operation in ("C", "R", "U", "D", "E") else "E"
    return AuditInfo(
        id=str(event.seq if event.seq is not None else event.id),
        at=event.at,
        action=event.action,
        operation=operation,  # type: ignore[arg-type]
        actor_kind=event.actor_kind,
        outcome=event.outcome,
        actor_id=event.actor_id,
        role=event.role,
        purpose=event.purpose,
        address=event.address,
        targets=_targets(event.target),
    )


def gather_patients(
    *, session: Session, clinic_id: str, patient_ids: Sequence[str] | None = None
) -> list[PatientRecords]:
    """The records of the live patients `patient_ids` of `clinic_id` (every live patient
    of the clinic when None), by family then given name; a patient who is missing,
    deleted or of another clinic is left out.

    A fixed number of queries, whatever the number of patients."""
    patients = select(PatientRow).where(
        PatientRow.clinic_id == clinic_id, PatientRow.deleted == false()
    )
    if patient_ids is not None:
        if not patient_ids:
            return []
        patients = patients.where(PatientRow.id.in_(list(patient_ids)))
    gathered: dict[str, _Gathered] = {}
    for row in session.scalars(
        patients.order_by(PatientRow.family_name, PatientRow.given_name, PatientRow.id)
    ):
        patient = _validated(Patient, json.loads(row.record), row.id)
        if patient is not None:
            gathered[row.id] = _Gathered(patient, [], [], defaultdict(list), [], [])
    if not gathered:
        return []
    ids = list(gathered)

    # One clinic's rows, narrowed to the patients asked for (a whole clinic needs no
    # IN list: the clinic's index does it).
    def narrowed(column: Any) -> Any:
        return column.in_(ids) if patient_ids is not None else true()

    for wound_row in session.scalars(
        select(WoundRow)
        .where(WoundRow.clinic_id == clinic_id, WoundRow.deleted == false(),
               narrowed(WoundRow.patient_id))
        .order_by(WoundRow.onset.nulls_last(), WoundRow.id)
    ):  # fmt: skip
        wound = _validated(Wound, json.loads(wound_row.record), wound_row.id)
        if wound is not None and wound.patient_id in gathered:
            gathered[wound.patient_id].wounds.append(wound)
    device_ids: set[str] = set()
    for assessment_row in session.scalars(
        select(AssessmentRow)
        .where(AssessmentRow.clinic_id == clinic_id, AssessmentRow.deleted == false(),
               narrowed(AssessmentRow.patient_id))
        .order_by(AssessmentRow.captured_at, AssessmentRow.id)
    ):  # fmt: skip
        assessment = _validated(
            WoundAssessment, json.loads(assessment_row.record), assessment_row.id
        )
        if assessment is not None and assessment.patient_id in gathered:
            gathered[assessment.patient_id].assessments.append(assessment)
            device_ids.add(assessment.device_id)
    for document in session.scalars(
        select(Document)
        .where(Document.clinic_id == clinic_id,
               Document.collection.in_(list(HISTORY_COLLECTIONS)),
               narrowed(Document.patient_id))
        .order_by(Document.id)
    ):  # fmt: skip
        if document.patient_id not in gathered:
            continue
        try:
            values = RecordDocument.load(bytes(document.data), device_id=None).values()
        except CrdtError as exc:
            log.warning("left out of the FHIR view: document %s: %s", document.id, exc)
            continue
        record = _validated(HISTORY_COLLECTIONS[document.collection], values, document.id)
        if record is not None and not record.deleted:
            gathered[document.patient_id].history[document.collection].append(record)
    _add_bookings(session, clinic_id, gathered, narrowed(Booking.patient_id))
    _add_audit(session, clinic_id, gathered, patient_ids is not None)
    devices = _device_names(session, device_ids)
    return [
        PatientRecords(
            patient=g.patient,
            wounds=tuple(g.wounds),
            assessments=tuple(g.assessments),
            conditions=tuple(g.history["conditions"]),  # type: ignore[arg-type]
            allergies=tuple(g.history["allergies"]),  # type: ignore[arg-type]
            medications=tuple(g.history["medications"]),  # type: ignore[arg-type]
            care_plans=tuple(g.history["care_plans"]),  # type: ignore[arg-type]
            appointments=tuple(g.appointments),
            audit_events=tuple(g.audit_events),
            devices={d: devices[d] for d in sorted({a.device_id for a in g.assessments})},
        )
        for g in gathered.values()
    ]


def gather_clinic(*, session: Session, clinic_id: str) -> list[PatientRecords]:
    """The records of every live patient of `clinic_id` (`gather_patients`)."""
    return gather_patients(session=session, clinic_id=clinic_id)


def _add_bookings(
    session: Session, clinic_id: str, gathered: dict[str, _Gathered], narrowed: Any
) -> None:
    rows = session.execute(
        select(Booking, Provider.name)
        .join(Provider, Provider.id == Booking.provider_id)
        .where(Booking.clinic_id == clinic_id, narrowed)
        .order_by(Booking.starts_at, Booking.id)
    )
    for booking, provider in rows:
        if booking.patient_id not in gathered:
            continue
        gathered[booking.patient_id].appointments.append(
            AppointmentInfo(
                id=booking.id,
                status=APPOINTMENT_STATUS.get(booking.state, "booked"),
                kind=booking.kind,
                service=booking.service,
                starts_at=booking.starts_at,
                ends_at=booking.ends_at,
                clinic_id=booking.clinic_id,
                provider=provider,
                provider_id=booking.provider_id,
                cancel_reason=booking.cancel_reason,
            )
        )


def _add_audit(
    session: Session, clinic_id: str, gathered: dict[str, _Gathered], narrowed: bool
) -> None:
    """The committed audit events naming each patient, oldest first."""
    query = (
        select(AuditPatient.patient_id, AuditEvent)
        .join(AuditEvent, AuditEvent.id == AuditPatient.event_id)
        .where(AuditEvent.seq.is_not(None))
    )
    if narrowed:
        query = query.where(AuditPatient.patient_id.in_(list(gathered)))
    else:
        query = query.join(PatientRow, PatientRow.id == AuditPatient.patient_id).where(
            PatientRow.clinic_id == clinic_id
        )
    for patient_id, event in session.execute(query.order_by(AuditEvent.seq)):
        if patient_id in gathered:
            gathered[patient_id].audit_events.append(_audit_info(event))


def _device_names(session: Session, device_ids: Iterable[str]) -> dict[str, str]:
    """Each device's name (its id when it has none, or is not enrolled here)."""
    wanted = sorted(set(device_ids))
    names = {d: d for d in wanted}
    for start in range(0, len(wanted), 500):
        for device_id, name in session.execute(
            select(Device.id, Device.name).where(Device.id.in_(wanted[start : start + 500]))
        ):
            if name:
                names[device_id] = name
    return names
