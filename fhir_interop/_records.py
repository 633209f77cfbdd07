"""What the FHIR mapping reads: one patient's records, as the device store or the server
holds them, with the server-side facts (appointments, audit events) that are not
replicated records."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from crdt import (
    AllergyIntolerance,
    CarePlan,
    Condition,
    MedicationStatement,
    Patient,
    Wound,
    WoundAssessment,
)

__all__ = ["AppointmentInfo", "AuditInfo", "PatientRecords"]


@dataclass(frozen=True, slots=True)
class AppointmentInfo:
    """A booked appointment or caregiver visit of the patient (the server decides them).

    Attributes:
        id: The booking's id.
        status: FHIR's appointment status: proposed, booked, fulfilled, cancelled,
            noshow.
        kind: "appointment" (at a clinic) or "visit" (a caregiver at home).
        service: The service code, or a visit's skill.
        starts_at, ends_at: When, as aware datetimes.
        provider: The provider's display name, or None.
        provider_id: The provider's id, or None.
        clinic_id: The clinic it belongs to.
        cancel_reason: Why it was cancelled, when it was.
    """

    id: str
    status: str
    kind: str
    service: str
    starts_at: datetime
    ends_at: datetime
    clinic_id: str
    provider: str | None = None
    provider_id: str | None = None
    cancel_reason: str | None = None


@dataclass(frozen=True, slots=True)
class AuditInfo:
    """One event of the audit trail that concerns the patient (a read, a change, an
    export, a break-glass access), as the server's tamper-evident log holds it.

    Attributes:
        id: The event's id in the log (its sequence number, as text).
        at: When it happened.
        action: The event kind as the log names it ("record-read", "export", ...).
        operation: C, R, U, D or E (FHIR's AuditEvent action codes).
        actor_kind: "user", "device", "system" or "feed".
        actor_id: Who acted, or None for the system.
        role: The actor's role, when a user.
        outcome: "ok" or the refusal's code.
        purpose: Why ("treatment", "break-glass", ...), or None.
        address: The caller's network address, or None.
        targets: Record ids or blob addresses the event touched (no names).
    """

    id: str
    at: datetime
    action: str
    operation: Literal["C", "R", "U", "D", "E"]
    actor_kind: str
    outcome: str
    actor_id: str | None = None
    role: str | None = None
    purpose: str | None = None
    address: str | None = None
    targets: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PatientRecords:
    """Everything held about one patient that the FHIR export maps.

    Records marked deleted are left out by whoever builds this. `devices` names the
    devices that captured assessments (device id -> a display name), for Provenance;
    a device without a name is named by its id.
    """

    patient: Patient
    wounds: tuple[Wound, ...] = ()
    assessments: tuple[WoundAssessment, ...] = ()
    conditions: tuple[Condition, ...] = ()
    allergies: tuple[AllergyIntolerance, ...] = ()
    medications: tuple[MedicationStatement, ...] = ()
    care_plans: tuple[CarePlan, ...] = ()
    appointments: tuple[AppointmentInfo, ...] = ()
    audit_events: tuple[AuditInfo, ...] = ()
    devices: Mapping[str, str] = field(default_factory=dict)
