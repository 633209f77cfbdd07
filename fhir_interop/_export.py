"""One patient's records as FHIR R4 resources (JSON-ready dicts)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from datetime import date, datetime
from typing import Any
from urllib.parse import urlsplit

from crdt import (
    AllergyIntolerance,
    CarePlan,
    Condition,
    ContactKind,
    Insurance,
    MedicationStatement,
    Patient,
    Wound,
    WoundAssessment,
    WoundStatus,
)
from fhir_interop import _codes as c
from fhir_interop._ids import fhir_id
from fhir_interop._records import AppointmentInfo, AuditInfo, PatientRecords

__all__ = ["mrn_system", "patient_resources"]

Resource = dict[str, Any]

WOUND_CLINICAL_STATUS = {
    WoundStatus.ACTIVE: "active",
    WoundStatus.HEALING: "active",
    WoundStatus.DETERIORATING: "active",
    WoundStatus.HEALED: "resolved",
    WoundStatus.CLOSED: "resolved",
}
_TELECOM = {ContactKind.PHONE: "phone", ContactKind.EMAIL: "email"}


def mrn_system(clinic_id: str) -> str:
    """The identifier system of MRNs issued by `clinic_id`."""
    return f"urn:coherency:clinic:{clinic_id}:mrn"


def patient_resources(records: PatientRecords, *, base_url: str | None = None) -> list[Resource]:
    """Every FHIR resource of one patient, in a stable order.

    Patient, Coverage, Condition (wounds, then history), AllergyIntolerance,
    MedicationStatement, CarePlan, then per assessment its Observation panels,
    DocumentReferences and Provenance, then Appointment and AuditEvent. References
    between them are relative (``"Patient/<id>"``). `base_url` (the FHIR base) only
    makes blob URLs absolute.

    Raises:
        FhirError: A record id cannot be written as a FHIR id.
    """
    patient = records.patient
    subject = _ref("Patient", patient.id)
    out: list[Resource] = [_patient(patient)]
    out.extend(_coverages(patient, subject))
    out.extend(_wound_condition(wound, subject) for wound in records.wounds)
    out.extend(_condition(condition, subject) for condition in records.conditions)
    out.extend(_allergy(allergy, subject) for allergy in records.allergies)
    out.extend(_medication(medication, subject) for medication in records.medications)
    out.extend(_care_plan(plan, subject) for plan in records.care_plans)
    observations: list[Resource] = []
    documents: list[Resource] = []
    provenances: list[Resource] = []
    for assessment in records.assessments:
        found, docs, provenance = _assessment(assessment, subject, records.devices, base_url)
        observations.extend(found)
        documents.extend(docs)
        provenances.extend(provenance)
    out.extend(observations + documents + provenances)
    out.extend(_appointment(booking, subject) for booking in records.appointments)
    out.extend(_audit_event(event, subject) for event in records.audit_events)
    return out


def _ref(kind: str, record_id: str, suffix: str = "") -> dict[str, str]:
    return {"reference": f"{kind}/{fhir_id(record_id, suffix)}"}


def _identifier(system: str, value: str) -> list[dict[str, str]]:
    return [{"system": system, "value": value}]


def _instant(value: datetime) -> str:
    return value.isoformat()


def _day(value: date) -> str:
    return value.isoformat()


def _text(value: str) -> dict[str, str]:
    return {"text": value}


def _concept(*concepts: c.Concept, text: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"coding": [concept.coding() for concept in concepts]}
    if text:
        out["text"] = text
    return out


def _code(code: Any, text: str) -> dict[str, Any]:
    out: dict[str, Any] = {"text": text}
    if code is not None:
        coding = {"system": code.system, "code": code.code}
        if code.display:
            coding["display"] = code.display
        out["coding"] = [coding]
    return out


def _label(label: str | None) -> dict[str, Any]:
    if not label:
        return {}
    return {"extension": [{"url": c.EXT_CONTACT_LABEL, "valueString": label}]}


def _patient(patient: Patient) -> Resource:
    identifiers: list[dict[str, Any]] = _identifier(c.PATIENT_SYSTEM, patient.id)
    if patient.mrn:
        identifiers.append(
            {
                "use": "usual",
                "type": _concept(c.Concept(c.V2_0203, "MR", "Medical record number")),
                "system": mrn_system(patient.clinic_id),
                "value": patient.mrn,
            }
        )
    resource: Resource = {
        "resourceType": "Patient",
        "id": fhir_id(patient.id),
        "meta": {"lastUpdated": _instant(patient.updated_at)},
        "identifier": identifiers,
        "active": True,
        "name": [{"use": "official", "family": patient.family_name, "given": [patient.given_name]}],
        "gender": patient.sex.value,
        "birthDate": _day(patient.birth_date),
    }
    telecom, addresses, contacts = [], [], []
    for contact in patient.contacts:
        if contact.kind in _TELECOM:
            telecom.append(
                {"system": _TELECOM[contact.kind], "value": contact.value, **_label(contact.label)}
            )
        elif contact.kind is ContactKind.ADDRESS:
            addresses.append({"text": contact.value, **_label(contact.label)})
        else:
            contacts.append(
                {
                    **_label(contact.label),
                    "relationship": [_concept(c.Concept(c.V2_0131, "N", "Next-of-Kin"))],
                    "name": {"text": contact.value},
                }
            )
    for emergency in patient.emergency_contacts:
        relationship = _concept(
            c.Concept(c.V2_0131, "C", "Emergency Contact"), text=emergency.relationship
        )
        entry: dict[str, Any] = {"relationship": [relationship], "name": {"text": emergency.name}}
        points = []
        if emergency.phone:
            points.append({"system": "phone", "value": emergency.phone})
        if emergency.email:
            points.append({"system": "email", "value": emergency.email})
        if points:
            entry["telecom"] = points
        contacts.append(entry)
    if telecom:
        resource["telecom"] = telecom
    if addresses:
        resource["address"] = addresses
    if contacts:
        resource["contact"] = contacts
    return resource


def _coverages(patient: Patient, subject: dict[str, str]) -> Iterator[Resource]:
    for number, insurance in enumerate(patient.insurance, start=1):
        yield _coverage(patient, insurance, number, subject)


def _coverage(
    patient: Patient, insurance: Insurance, number: int, subject: dict[str, str]
) -> Resource:
    resource: Resource = {
        "resourceType": "Coverage",
        "id": fhir_id(patient.id, f"-coverage-{number}"),
        "status": "active",
        "beneficiary": subject,
        "payor": [{"display": insurance.payer}],
    }
    if insurance.member_id:
        resource["subscriberId"] = insurance.member_id
    if insurance.subscriber:
        resource["subscriber"] = {"display": insurance.subscriber}
    if insurance.relationship:
        resource["relationship"] = _text(insurance.relationship)
    classes = []
    for kind, value in (("plan", insurance.plan), ("group", insurance.group)):
        if value:
            classes.append(
                {"type": _concept(c.Concept(c.COVERAGE_CLASS, kind, kind.title())), "value": value}
            )
    if classes:
        resource["class"] = classes
    period = {}
    if insurance.valid_from:
        period["start"] = _day(insurance.valid_from)
    if insurance.valid_until:
        period["end"] = _day(insurance.valid_until)
    if period:
        resource["period"] = period
    return resource


def body_site(text: str) -> dict[str, Any]:
    """A free-text body site as a CodeableConcept: the SNOMED CT site and laterality
    codings it names (as two codings), and the text as written."""
    words = set(re.findall(r"[a-z]+", text.lower()))
    codings = [concept.coding() for name, concept in c.BODY_SITES.items() if name in words][:1]
    side = (
        "bilateral"
        if words & {"bilateral", "both"}
        else next((name for name in ("left", "right") if name in words), None)
    )
    if side:
        codings.append(c.LATERALITY[side].coding())
    out: dict[str, Any] = {"text": text}
    if codings:
        out["coding"] = codings
    return out


def _wound_condition(wound: Wound, subject: dict[str, str]) -> Resource:
    etiology = c.ETIOLOGY_CODES[wound.etiology]
    local = c.Concept(c.LOCAL_ETIOLOGY, wound.etiology.value, wound.etiology.value)
    resource: Resource = {
        "resourceType": "Condition",
        "id": fhir_id(wound.id),
        "meta": {"lastUpdated": _instant(wound.updated_at)},
        "extension": [{"url": c.EXT_WOUND_STATUS, "valueCode": wound.status.value}],
        "identifier": _identifier(c.WOUND_SYSTEM, wound.id),
        "clinicalStatus": _concept(
            c.Concept(c.CONDITION_CLINICAL, WOUND_CLINICAL_STATUS[wound.status], "")
        ),
        "verificationStatus": _concept(
            c.Concept(c.CONDITION_VERIFICATION, "confirmed", "Confirmed")
        ),
        "category": [
            _concept(c.Concept(c.CONDITION_CATEGORY, "problem-list-item", "Problem List Item"))
        ],
        "code": _concept(etiology, local, text=f"{etiology.display} ({wound.body_site})"),
        "bodySite": [body_site(wound.body_site)],
        "subject": subject,
        "recordedDate": _instant(wound.created_at),
    }
    _drop_empty_display(resource["clinicalStatus"])
    if wound.onset:
        resource["onsetDateTime"] = _day(wound.onset)
    return resource


def _drop_empty_display(concept: dict[str, Any]) -> None:
    for coding in concept["coding"]:
        if not coding.get("display"):
            coding.pop("display", None)


def _condition(condition: Condition, subject: dict[str, str]) -> Resource:
    resource: Resource = {
        "resourceType": "Condition",
        "id": fhir_id(condition.id),
        "meta": {"lastUpdated": _instant(condition.updated_at)},
        "identifier": _identifier(c.CONDITION_SYSTEM, condition.id),
        "clinicalStatus": {
            "coding": [{"system": c.CONDITION_CLINICAL, "code": condition.clinical_status.value}]
        },
        "verificationStatus": _concept(
            c.Concept(c.CONDITION_VERIFICATION, "confirmed", "Confirmed")
        ),
        "category": [
            _concept(c.Concept(c.CONDITION_CATEGORY, "problem-list-item", "Problem List Item"))
        ],
        "code": _code(condition.code, condition.description),
        "subject": subject,
        "recordedDate": _instant(condition.created_at),
    }
    if condition.onset:
        resource["onsetDateTime"] = _day(condition.onset)
    if condition.abatement:
        resource["abatementDateTime"] = _day(condition.abatement)
    if condition.note:
        resource["note"] = [_text(condition.note)]
    return resource


def _allergy(allergy: AllergyIntolerance, subject: dict[str, str]) -> Resource:
    resource: Resource = {
        "resourceType": "AllergyIntolerance",
        "id": fhir_id(allergy.id),
        "meta": {"lastUpdated": _instant(allergy.updated_at)},
        "identifier": _identifier(c.ALLERGY_SYSTEM, allergy.id),
        "clinicalStatus": {
            "coding": [{"system": c.ALLERGY_CLINICAL, "code": allergy.clinical_status.value}]
        },
        "verificationStatus": _concept(c.Concept(c.ALLERGY_VERIFICATION, "confirmed", "Confirmed")),
        "code": _code(allergy.code, allergy.substance),
        "patient": subject,
        "recordedDate": _instant(allergy.created_at),
    }
    if allergy.type:
        resource["type"] = allergy.type.value
    if allergy.category:
        resource["category"] = [allergy.category.value]
    if allergy.criticality:
        resource["criticality"] = allergy.criticality.value
    if allergy.onset:
        resource["onsetDateTime"] = _day(allergy.onset)
    if allergy.reaction:
        resource["reaction"] = [{"manifestation": [_text(allergy.reaction)]}]
    if allergy.note:
        resource["note"] = [_text(allergy.note)]
    return resource


def _medication(medication: MedicationStatement, subject: dict[str, str]) -> Resource:
    resource: Resource = {
        "resourceType": "MedicationStatement",
        "id": fhir_id(medication.id),
        "meta": {"lastUpdated": _instant(medication.updated_at)},
        "identifier": _identifier(c.MEDICATION_SYSTEM, medication.id),
        "status": medication.status.value,
        "medicationCodeableConcept": _code(medication.code, medication.medication),
        "subject": subject,
        "dateAsserted": _instant(medication.updated_at),
    }
    period = {}
    if medication.started:
        period["start"] = _day(medication.started)
    if medication.ended:
        period["end"] = _day(medication.ended)
    if period:
        resource["effectivePeriod"] = period
    dosage: dict[str, Any] = {}
    if medication.dosage:
        dosage["text"] = medication.dosage
    if medication.route:
        dosage["route"] = _text(medication.route)
    if dosage:
        resource["dosage"] = [dosage]
    if medication.reason:
        resource["reasonCode"] = [_text(medication.reason)]
    if medication.note:
        resource["note"] = [_text(medication.note)]
    return resource


def _care_plan(plan: CarePlan, subject: dict[str, str]) -> Resource:
    resource: Resource = {
        "resourceType": "CarePlan",
        "id": fhir_id(plan.id),
        "meta": {"lastUpdated": _instant(plan.updated_at)},
        "identifier": _identifier(c.CARE_PLAN_SYSTEM, plan.id),
        "status": plan.status.value,
        "intent": "plan",
        "subject": subject,
        "addresses": [_ref("Condition", plan.wound_id)],
        "created": _instant(plan.created_at),
    }
    if plan.title:
        resource["title"] = plan.title
    if plan.note:
        resource["description"] = plan.note
    period = {}
    if plan.starts_on:
        period["start"] = _day(plan.starts_on)
    if plan.ends_on:
        period["end"] = _day(plan.ends_on)
    if period:
        resource["period"] = period
    if plan.goals:
        # Goals are contained: they exist only as part of this plan.
        resource["contained"] = [
            {
                "resourceType": "Goal",
                "id": f"goal-{number}",
                "lifecycleStatus": "active",
                "description": _text(goal),
                "subject": subject,
                "addresses": [_ref("Condition", plan.wound_id)],
            }
            for number, goal in enumerate(plan.goals, start=1)
        ]
        resource["goal"] = [
            {"reference": f"#goal-{number}"} for number in range(1, len(plan.goals) + 1)
        ]
    activities = []
    if plan.dressing or plan.dressing_every_days:
        detail: dict[str, Any] = {"status": "scheduled", "code": _text("dressing change")}
        if plan.dressing:
            detail["description"] = plan.dressing
        if plan.dressing_every_days:
            detail["scheduledTiming"] = {
                "repeat": {"frequency": 1, "period": plan.dressing_every_days, "periodUnit": "d"}
            }
        activities.append({"detail": detail})
    if plan.offloading:
        activities.append(
            {
                "detail": {
                    "status": "in-progress",
                    "code": _text("offloading"),
                    "description": plan.offloading,
                }
            }
        )
    if plan.review_on:
        activities.append(
            {
                "detail": {
                    "status": "scheduled",
                    "code": _text("wound review"),
                    "scheduledString": _day(plan.review_on),
                }
            }
        )
    if activities:
        resource["activity"] = activities
    return resource


def _blob_url(sha256: str, base_url: str | None) -> str:
    if base_url:
        parts = urlsplit(base_url)
        if parts.scheme and parts.netloc:
            return f"{parts.scheme}://{parts.netloc}/v1/blobs/{sha256}"
    return f"/v1/blobs/{sha256}"


def _assessment(
    assessment: WoundAssessment,
    subject: dict[str, str],
    devices: Mapping[str, str],
    base_url: str | None,
) -> tuple[list[Resource], list[Resource], list[Resource]]:
    """(Observation panels, DocumentReferences, Provenance) of one assessment."""
    aid = assessment.id
    documents = [
        {
            "resourceType": "DocumentReference",
            "id": fhir_id(aid, f"-blob-{blob.sha256[:16]}"),
            "identifier": _identifier(c.BLOB_SYSTEM, blob.sha256),
            "status": "current",
            "type": _text(blob.kind),
            "subject": subject,
            "date": _instant(assessment.captured_at),
            "content": [
                {
                    "attachment": {
                        "contentType": blob.media_type,
                        "size": blob.size,
                        "url": _blob_url(blob.sha256, base_url),
                        "title": f"{blob.kind} {blob.sha256}",
                    }
                }
            ],
            "context": {"related": [_ref("Condition", assessment.wound_id)]},
        }
        for blob in assessment.blobs
    ]
    device_name = devices.get(assessment.device_id) or assessment.device_id
    device = {
        "identifier": {"system": c.DEVICE_SYSTEM, "value": assessment.device_id},
        "display": device_name,
    }
    common: dict[str, Any] = {
        "identifier": _identifier(c.ASSESSMENT_SYSTEM, aid),
        "status": "final",
        "category": [_concept(c.Concept(c.OBSERVATION_CATEGORY, "exam", "Exam"))],
        "subject": subject,
        "focus": [_ref("Condition", assessment.wound_id)],
        "effectiveDateTime": _instant(assessment.captured_at),
        "device": device,
    }
    if assessment.clinician:
        common["performer"] = [{"display": assessment.clinician}]
    if documents:
        common["derivedFrom"] = [{"reference": f"DocumentReference/{d['id']}"} for d in documents]
    observations: list[Resource] = []
    components = []
    for member in c.SIZE_MEMBERS:
        value = getattr(assessment.measurements, member.field)
        if value is None:
            continue
        components.append(
            {
                "code": _concept(member.concept),
                "valueQuantity": {
                    "value": round(value * member.scale, 6),
                    "unit": member.unit,
                    "system": c.UCUM,
                    "code": member.unit,
                },
            }
        )
    if components:
        observations.append(
            {
                "resourceType": "Observation",
                "id": fhir_id(aid, "-size"),
                **common,
                "code": _concept(c.SIZE_PANEL),
                "component": components,
            }
        )
    output = assessment.model_output
    if output and output.tissue_composition:
        tissue = []
        for name, percent in sorted(output.tissue_composition.items()):
            kind = c.TISSUE_CODES.get(name.lower()) or c.Concept(c.LOCAL_TISSUE, name, name)
            tissue.append(
                {
                    "code": _concept(c.TISSUE_PROPORTION, kind, text=f"{name} %"),
                    "valueQuantity": {"value": percent, "unit": "%", "system": c.UCUM, "code": "%"},
                }
            )
        observations.append(
            {
                "resourceType": "Observation",
                "id": fhir_id(aid, "-tissue"),
                **common,
                "code": _concept(c.TISSUE_PANEL),
                "method": _text(f"{output.model_id} {output.model_version}"),
                "component": tissue,
            }
        )
    targets = [{"reference": f"Observation/{o['id']}"} for o in observations]
    targets += [{"reference": f"DocumentReference/{d['id']}"} for d in documents]
    if not targets:
        return observations, documents, []
    agents: list[dict[str, Any]] = [
        {"type": _concept(c.Concept(c.PROVENANCE_AGENT, "author", "Author")), "who": device}
    ]
    if output:
        agents.append(
            {
                "type": _concept(c.Concept(c.PROVENANCE_AGENT, "assembler", "Assembler")),
                "who": {
                    "identifier": {
                        "system": c.MODEL_SYSTEM,
                        "value": f"{output.model_id}@{output.model_version}",
                    },
                    "display": f"{output.model_id} {output.model_version}",
                },
            }
        )
    if assessment.clinician:
        agents.append(
            {
                "type": _concept(c.Concept(c.PROVENANCE_AGENT, "performer", "Performer")),
                "who": {"display": assessment.clinician},
            }
        )
    provenance = {
        "resourceType": "Provenance",
        "id": fhir_id(aid, "-provenance"),
        "target": targets,
        "occurredDateTime": _instant(assessment.captured_at),
        "recorded": _instant(assessment.created_at),
        "agent": agents,
    }
    return observations, documents, [provenance]


def _appointment(booking: AppointmentInfo, subject: dict[str, str]) -> Resource:
    participants: list[dict[str, Any]] = [{"actor": subject, "status": "accepted"}]
    if booking.provider or booking.provider_id:
        actor: dict[str, Any] = {}
        if booking.provider_id:
            actor["identifier"] = {"system": "urn:coherency:provider", "value": booking.provider_id}
        if booking.provider:
            actor["display"] = booking.provider
        participants.append({"actor": actor, "status": "accepted"})
    resource: Resource = {
        "resourceType": "Appointment",
        "id": fhir_id(booking.id),
        "identifier": _identifier(c.BOOKING_SYSTEM, booking.id),
        "status": booking.status,
        "appointmentType": _text(booking.kind),
        "serviceType": [_text(booking.service)],
        "start": _instant(booking.starts_at),
        "end": _instant(booking.ends_at),
        "participant": participants,
    }
    if booking.cancel_reason:
        resource["cancelationReason"] = _text(booking.cancel_reason)
    return resource


_INTERACTION = {"C": "create", "R": "read", "U": "update", "D": "delete", "E": "operation"}
_PURPOSE = {"treatment": ("TREAT", "treatment"), "break-glass": ("ETREAT", "Emergency Treatment")}


def _audit_event(event: AuditInfo, subject: dict[str, str]) -> Resource:
    agent: dict[str, Any] = {"requestor": True}
    if event.actor_kind == "user":
        agent["type"] = _concept(c.Concept(c.SECURITY_ROLE, "humanuser", "human user"))
    else:
        agent["type"] = _concept(c.Concept(c.DICOM, "110153", "Source Role ID"))
    if event.actor_id:
        agent["who"] = {
            "identifier": {"system": f"urn:coherency:{event.actor_kind}", "value": event.actor_id}
        }
    else:
        agent["who"] = {"display": event.actor_kind}
    if event.role:
        agent["role"] = [_text(event.role)]
    if event.address:
        agent["network"] = {"address": event.address, "type": "2"}
    entities: list[dict[str, Any]] = [
        {
            "what": subject,
            "type": {"system": c.AUDIT_ENTITY_TYPE, "code": "1", "display": "Person"},
            "role": {"system": c.OBJECT_ROLE, "code": "1", "display": "Patient"},
        }
    ]
    entities.extend(
        {
            "what": {"identifier": {"value": target}},
            "type": {"system": c.AUDIT_ENTITY_TYPE, "code": "2", "display": "System Object"},
        }
        for target in event.targets
    )
    resource: Resource = {
        "resourceType": "AuditEvent",
        "id": "audit-" + fhir_id(event.id),
        "type": {"system": c.AUDIT_EVENT_TYPE, "code": "rest", "display": "RESTful Operation"},
        "subtype": [
            {"system": c.RESTFUL_INTERACTION, "code": _INTERACTION[event.operation]},
            {"system": c.LOCAL_AUDIT, "code": event.action},
        ],
        "action": event.operation,
        "recorded": _instant(event.at),
        "outcome": "0" if event.outcome == "ok" else "4",
        "agent": [agent],
        "source": {
            "observer": {"display": "Coherency"},
            "type": [{"system": c.SECURITY_SOURCE, "code": "4", "display": "Application Server"}],
        },
        "entity": entities,
    }
    if event.outcome != "ok":
        resource["outcomeDesc"] = event.outcome
    if event.purpose:
        code, display = _PURPOSE.get(event.purpose, (None, event.purpose))
        resource["purposeOfEvent"] = [
            {"coding": [{"system": c.ACT_REASON, "code": code, "display": display}]}
            if code
            else _text(event.purpose)
        ]
    return resource
