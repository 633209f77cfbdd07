"""FHIR Bundles read back into record values: what each patient's resources map to,
and what does not map.

Nothing here touches a store: `read_bundle` parses, validates and maps; the device
store (`EdgeClient.fhir_import`) matches patients and writes.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fhir_interop import _codes as c
from fhir_interop._errors import FhirError
from fhir_interop._validate import validate

__all__ = ["FhirImport", "ImportedPatient", "ImportedRecord", "read_bundle"]

_NAMESPACE = uuid.UUID("0b6a3c53-4f51-5b8e-8d7e-2f6f3c1d9a44")
_ETIOLOGY_BY_SNOMED = {
    concept.code: etiology.value for etiology, concept in reversed(list(c.ETIOLOGY_CODES.items()))
}
_WOUND_STATUS_BY_CLINICAL = {"active": "active", "resolved": "healed", "inactive": "closed"}
_TELECOM_KINDS = {"phone": "phone", "email": "email"}
_BUNDLE_TYPES = frozenset(
    {"document", "message", "transaction", "transaction-response", "batch"}
    | {"batch-response", "history", "searchset", "collection"}
)
_COMMON = {"resourceType", "id", "meta", "text", "identifier"}
_MAPPED: Mapping[str, frozenset[str]] = {
    "Patient": frozenset(
        _COMMON | {"active", "name", "gender", "birthDate", "telecom", "address", "contact"}
    ),
    "Coverage": frozenset(
        _COMMON
        | {"status", "beneficiary", "payor", "subscriberId", "subscriber", "relationship"}
        | {"class", "period"}
    ),
    "Condition": frozenset(
        _COMMON
        | {"clinicalStatus", "verificationStatus", "category", "code", "bodySite", "subject"}
        | {"onsetDateTime", "abatementDateTime", "note", "recordedDate", "extension"}
    ),
    "AllergyIntolerance": frozenset(
        _COMMON
        | {"clinicalStatus", "verificationStatus", "code", "patient", "recordedDate", "type"}
        | {"category", "criticality", "onsetDateTime", "reaction", "note"}
    ),
    "MedicationStatement": frozenset(
        _COMMON
        | {"status", "medicationCodeableConcept", "subject", "dateAsserted", "effectivePeriod"}
        | {"effectiveDateTime", "dosage", "reasonCode", "note"}
    ),
}


@dataclass(frozen=True, slots=True)
class ImportedRecord:
    """One record a resource maps to.

    Attributes:
        collection: "wounds", "conditions", "allergies" or "medications".
        record_id: The record's id: ours when the resource came from Coherency (its
            identifier says so), else one derived from the resource's identity in the
            bundle (its first identifier, else its fullUrl), the same at every import.
        values: The record's data fields (without patient_id).
        source: The resource, as "<type>/<id>".
    """

    collection: str
    record_id: str
    values: dict[str, Any]
    source: str


@dataclass(frozen=True, slots=True)
class ImportedPatient:
    """One Patient resource and the records that belong to it.

    Attributes:
        record_id: Our patient id when the resource carries Coherency's identifier.
        mrns: The medical record numbers it carries (identifier type MR).
        new_id: The id a new patient record gets when none matches.
        values: The Patient record's data fields the resource gives.
        records: Its wounds, conditions, allergies and medications.
        source: The resource, as "Patient/<id>".
    """

    record_id: str | None
    mrns: tuple[str, ...]
    new_id: str
    values: dict[str, Any]
    records: list[ImportedRecord] = field(default_factory=list)
    source: str = ""


@dataclass(frozen=True, slots=True)
class FhirImport:
    """What a Bundle maps to, per patient, and what it could not map.

    Attributes:
        patients: One entry per Patient resource, in bundle order.
        unmapped: Human-readable lines: "Observation/abc: resource type not mapped",
            "Patient/x.maritalStatus: field not mapped", ...
    """

    patients: list[ImportedPatient]
    unmapped: list[str]


def read_bundle(data: bytes | str | Mapping[str, Any]) -> FhirImport:
    """Parse, validate and map a FHIR Bundle (JSON text or a decoded dict).

    Patients, Coverage (as the patient's insurance), Conditions (a wound we exported
    updates the wound; any other is a medical-history condition), AllergyIntolerance
    and MedicationStatement map; everything else is listed in `unmapped`.

    Raises:
        FhirError: Not JSON, not a Bundle, or a resource the mapping cannot read.
        FhirValidationError: The Bundle does not validate against FHIR R4B.
    """
    if isinstance(data, (bytes, str)):
        try:
            data = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise FhirError(f"not JSON: {exc}") from None
    if not isinstance(data, Mapping) or data.get("resourceType") != "Bundle":
        found = data.get("resourceType") if isinstance(data, Mapping) else type(data).__name__
        raise FhirError(f"not a FHIR Bundle (resourceType {found!r})")
    validate(data)
    if data.get("type") not in _BUNDLE_TYPES:
        raise FhirError(f"not a FHIR Bundle type: {data.get('type')!r}")
    entries = [entry for entry in data.get("entry") or () if entry.get("resource")]
    unmapped: list[str] = []
    patients: dict[str, ImportedPatient] = {}  # by every name a reference may use
    ordered: list[ImportedPatient] = []
    for entry in entries:
        resource = entry["resource"]
        if resource["resourceType"] == "Patient":
            patient = _patient(resource, entry.get("fullUrl"), unmapped)
            ordered.append(patient)
            for name in _names(resource, entry.get("fullUrl")):
                patients[name] = patient
    for entry in entries:
        resource = entry["resource"]
        kind = resource["resourceType"]
        source = f"{kind}/{resource.get('id', '?')}"
        if kind == "Patient":
            continue
        if kind not in _MAPPED:
            unmapped.append(f"{source}: resource type not mapped")
            continue
        reference = (resource.get("subject") or resource.get("patient") or {}).get("reference") or (
            resource.get("beneficiary") or {}
        ).get("reference")
        owner = patients.get(reference or "")
        if owner is None:
            unmapped.append(f"{source}: its patient ({reference}) is not in the bundle")
            continue
        _unmapped_fields(resource, source, unmapped)
        identity = _identity(resource, entry.get("fullUrl"))
        if kind == "Coverage":
            owner.values.setdefault("insurance", []).append(_insurance(resource))
        elif kind == "Condition":
            owner.records.append(_condition(resource, identity, source))
        elif kind == "AllergyIntolerance":
            owner.records.append(_allergy(resource, identity, source))
        else:
            owner.records.append(_medication(resource, identity, source))
    for patient in ordered:
        if "insurance" in patient.values:
            patient.values["insurance"] = tuple(patient.values["insurance"])
    return FhirImport(patients=ordered, unmapped=unmapped)


def _names(resource: Mapping[str, Any], full_url: str | None) -> list[str]:
    names = [f"Patient/{resource.get('id')}"]
    if full_url:
        names.append(full_url)
        if "/Patient/" in full_url:
            names.append("Patient/" + full_url.rsplit("/Patient/", 1)[1])
    return names


def _ours(resource: Mapping[str, Any], system: str) -> str | None:
    for identifier in resource.get("identifier") or ():
        if identifier.get("system") == system and identifier.get("value"):
            return str(identifier["value"])
    return None


def _identity(resource: Mapping[str, Any], full_url: str | None) -> str:
    """A deterministic record id for a resource from another system."""
    for identifier in resource.get("identifier") or ():
        if identifier.get("value"):
            key = f"{identifier.get('system', '')}|{identifier['value']}"
            break
    else:
        key = full_url or f"{resource['resourceType']}/{resource.get('id')}"
    return f"fhir-{uuid.uuid5(_NAMESPACE, key)}"


def _unmapped_fields(resource: Mapping[str, Any], source: str, unmapped: list[str]) -> None:
    known = _MAPPED[resource["resourceType"]]
    for name in resource:
        if name not in known:
            unmapped.append(f"{source}.{name}: field not mapped")
    for extension in resource.get("extension") or ():
        if extension.get("url") != c.EXT_WOUND_STATUS:
            unmapped.append(f"{source}.extension({extension.get('url')}): extension not mapped")


def _text(concept: Mapping[str, Any] | None) -> str | None:
    if not concept:
        return None
    if concept.get("text"):
        return str(concept["text"])
    for coding in concept.get("coding") or ():
        if coding.get("display"):
            return str(coding["display"])
    return None


def _code(concept: Mapping[str, Any] | None) -> dict[str, Any] | None:
    for coding in (concept or {}).get("coding") or ():
        if coding.get("system") and coding.get("code"):
            out = {"system": coding["system"], "code": coding["code"]}
            if coding.get("display"):
                out["display"] = coding["display"]
            return out
    return None


def _status(concept: Mapping[str, Any] | None) -> str | None:
    for coding in (concept or {}).get("coding") or ():
        if coding.get("code"):
            return str(coding["code"])
    return None


def _label(element: Mapping[str, Any]) -> str | None:
    for extension in element.get("extension") or ():
        if extension.get("url") == c.EXT_CONTACT_LABEL:
            return str(extension.get("valueString"))
    return None


def _relationship(contact: Mapping[str, Any]) -> tuple[str | None, str | None]:
    for concept in contact.get("relationship") or ():
        for coding in concept.get("coding") or ():
            if coding.get("system") == c.V2_0131 and coding.get("code") in ("C", "N"):
                return coding["code"], concept.get("text")
        return None, _text(concept)
    return None, None


def _name_text(name: Mapping[str, Any] | None) -> str | None:
    if not name:
        return None
    if name.get("text"):
        return str(name["text"])
    parts = [*(name.get("given") or ()), name.get("family")]
    return " ".join(str(part) for part in parts if part) or None


def _address_text(address: Mapping[str, Any]) -> str | None:
    if address.get("text"):
        return str(address["text"])
    parts = [*(address.get("line") or ())]
    parts += [address.get(key) for key in ("city", "state", "postalCode", "country")]
    return ", ".join(str(part) for part in parts if part) or None


def _patient(
    resource: Mapping[str, Any], full_url: str | None, unmapped: list[str]
) -> ImportedPatient:
    source = f"Patient/{resource.get('id', '?')}"
    _unmapped_fields(resource, source, unmapped)
    values: dict[str, Any] = {}
    names = resource.get("name") or []
    name = next((n for n in names if n.get("use") == "official"), names[0] if names else None)
    if name:
        if name.get("family"):
            values["family_name"] = name["family"]
        if name.get("given"):
            values["given_name"] = " ".join(name["given"])
    if resource.get("birthDate"):
        values["birth_date"] = resource["birthDate"]
    if resource.get("gender"):
        values["sex"] = resource["gender"]
    mrns = []
    for identifier in resource.get("identifier") or ():
        codes = [
            coding.get("code") for coding in (identifier.get("type") or {}).get("coding") or ()
        ]
        if "MR" in codes and identifier.get("value"):
            mrns.append(str(identifier["value"]))
    if mrns:
        values["mrn"] = mrns[0]
    contacts: list[dict[str, Any]] = []
    for point in resource.get("telecom") or ():
        kind = _TELECOM_KINDS.get(point.get("system", ""))
        if kind and point.get("value"):
            contacts.append({"kind": kind, "value": point["value"], "label": _label(point)})
        else:
            unmapped.append(f"{source}.telecom({point.get('system')}): not mapped")
    for address in resource.get("address") or ():
        text = _address_text(address)
        if text:
            contacts.append({"kind": "address", "value": text, "label": _label(address)})
    emergency: list[dict[str, Any]] = []
    for contact in resource.get("contact") or ():
        code, relationship = _relationship(contact)
        who = _name_text(contact.get("name"))
        if not who:
            unmapped.append(f"{source}.contact: a contact without a name is not mapped")
            continue
        if code == "N":
            contacts.append({"kind": "next_of_kin", "value": who, "label": _label(contact)})
            continue
        item: dict[str, Any] = {"name": who, "relationship": relationship}
        for point in contact.get("telecom") or ():
            if point.get("system") in ("phone", "email") and point.get("value"):
                item.setdefault(point["system"], point["value"])
        emergency.append(item)
    # Coherency writes contacts in the order phone/email, address, next of kin.
    if contacts:
        values["contacts"] = tuple(
            {key: value for key, value in contact.items() if value is not None}
            for contact in contacts
        )
    if emergency:
        values["emergency_contacts"] = tuple(
            {key: value for key, value in item.items() if value is not None} for item in emergency
        )
    ours = _ours(resource, c.PATIENT_SYSTEM)
    return ImportedPatient(
        record_id=ours,
        mrns=tuple(mrns),
        new_id=ours or _identity(resource, full_url),
        values=values,
        source=source,
    )


def _insurance(resource: Mapping[str, Any]) -> dict[str, Any]:
    payors = resource.get("payor") or [{}]
    out: dict[str, Any] = {"payer": payors[0].get("display") or "unknown payer"}
    if resource.get("subscriberId"):
        out["member_id"] = resource["subscriberId"]
    if (resource.get("subscriber") or {}).get("display"):
        out["subscriber"] = resource["subscriber"]["display"]
    relationship = _text(resource.get("relationship")) or _status(resource.get("relationship"))
    if relationship:
        out["relationship"] = relationship
    for item in resource.get("class") or ():
        kind = _status(item.get("type"))
        if kind in ("plan", "group") and item.get("value"):
            out[kind] = item["value"]
    period = resource.get("period") or {}
    if period.get("start"):
        out["valid_from"] = period["start"][:10]
    if period.get("end"):
        out["valid_until"] = period["end"][:10]
    return out


def _day(value: Any) -> str | None:
    return str(value)[:10] if value else None


def _note(resource: Mapping[str, Any]) -> str | None:
    notes = [note.get("text") for note in resource.get("note") or () if note.get("text")]
    return "\n".join(notes) or None


def _condition(resource: Mapping[str, Any], identity: str, source: str) -> ImportedRecord:
    wound_id = _ours(resource, c.WOUND_SYSTEM)
    if wound_id is not None:
        values: dict[str, Any] = {}
        for coding in (resource.get("code") or {}).get("coding") or ():
            if coding.get("system") == c.LOCAL_ETIOLOGY:
                values["etiology"] = coding.get("code")
        if "etiology" not in values:
            values["etiology"] = _ETIOLOGY_BY_SNOMED.get(
                _status(resource.get("code")) or "", "unknown"
            )
        status = next(
            (
                e.get("valueCode")
                for e in resource.get("extension") or ()
                if e.get("url") == c.EXT_WOUND_STATUS
            ),
            None,
        )
        clinical = _status(resource.get("clinicalStatus")) or "active"
        values["status"] = status or _WOUND_STATUS_BY_CLINICAL.get(clinical, "active")
        sites = resource.get("bodySite") or []
        if sites:
            values["body_site"] = _text(sites[0]) or "unknown"
        values["onset"] = _day(resource.get("onsetDateTime"))
        return ImportedRecord("wounds", wound_id, values, source)
    description = _text(resource.get("code"))
    if not description:
        raise FhirError(f"{source}: a condition needs code.text or a coding with a display")
    return ImportedRecord(
        "conditions",
        _ours(resource, c.CONDITION_SYSTEM) or identity,
        {
            "description": description[:200],
            "code": _code(resource.get("code")),
            "clinical_status": _status(resource.get("clinicalStatus")) or "active",
            "onset": _day(resource.get("onsetDateTime")),
            "abatement": _day(resource.get("abatementDateTime")),
            "note": _note(resource),
        },
        source,
    )


def _allergy(resource: Mapping[str, Any], identity: str, source: str) -> ImportedRecord:
    substance = _text(resource.get("code"))
    if not substance:
        raise FhirError(f"{source}: an allergy needs code.text or a coding with a display")
    reactions = [
        _text(manifestation)
        for reaction in resource.get("reaction") or ()
        for manifestation in reaction.get("manifestation") or ()
    ]
    categories = resource.get("category") or []
    return ImportedRecord(
        "allergies",
        _ours(resource, c.ALLERGY_SYSTEM) or identity,
        {
            "substance": substance[:200],
            "code": _code(resource.get("code")),
            "type": resource.get("type"),
            "category": categories[0] if categories else None,
            "criticality": resource.get("criticality"),
            "clinical_status": _status(resource.get("clinicalStatus")) or "active",
            "reaction": next((text for text in reactions if text), None),
            "onset": _day(resource.get("onsetDateTime")),
            "note": _note(resource),
        },
        source,
    )


def _medication(resource: Mapping[str, Any], identity: str, source: str) -> ImportedRecord:
    medication = _text(resource.get("medicationCodeableConcept"))
    if not medication:
        raise FhirError(f"{source}: a medication needs medicationCodeableConcept text or display")
    dosage = (resource.get("dosage") or [{}])[0]
    period = resource.get("effectivePeriod") or {}
    reasons = [_text(reason) for reason in resource.get("reasonCode") or ()]
    status = resource.get("status")
    return ImportedRecord(
        "medications",
        _ours(resource, c.MEDICATION_SYSTEM) or identity,
        {
            "medication": medication[:200],
            "code": _code(resource.get("medicationCodeableConcept")),
            "status": status if status != "entered-in-error" else "unknown",
            "dosage": dosage.get("text"),
            "route": _text(dosage.get("route")),
            "started": _day(period.get("start") or resource.get("effectiveDateTime")),
            "ended": _day(period.get("end")),
            "reason": next((text for text in reasons if text), None),
            "note": _note(resource),
        },
        source,
    )
