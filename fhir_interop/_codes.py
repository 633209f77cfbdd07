"""Every code system and code the mapping writes, in one place.

SNOMED CT wound codes follow the HL7 Lower Extremity Skin Wound Assessment IG's wound
type value set (``woundTypeVS``) where it has the concept; a local code system carries
what no standard code says (volume, perimeter, mean depth, the wound's own status and
etiology as recorded).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from crdt import Etiology

__all__ = [
    "BODY_SITES",
    "ETIOLOGY_CODES",
    "LATERALITY",
    "LOINC",
    "SIZE_MEMBERS",
    "SNOMED",
    "TISSUE_CODES",
    "UCUM",
    "Concept",
]

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
LOCAL = "https://coherency.example/fhir"
LOCAL_MEASURE = f"{LOCAL}/CodeSystem/wound-measure"
LOCAL_ETIOLOGY = f"{LOCAL}/CodeSystem/wound-etiology"
LOCAL_TISSUE = f"{LOCAL}/CodeSystem/wound-tissue"
LOCAL_AUDIT = f"{LOCAL}/CodeSystem/audit-action"
EXT_WOUND_STATUS = f"{LOCAL}/StructureDefinition/wound-status"
EXT_CONTACT_LABEL = f"{LOCAL}/StructureDefinition/contact-label"

PATIENT_SYSTEM = "urn:coherency:patient"
WOUND_SYSTEM = "urn:coherency:wound"
CONDITION_SYSTEM = "urn:coherency:condition"
ALLERGY_SYSTEM = "urn:coherency:allergy"
MEDICATION_SYSTEM = "urn:coherency:medication"
CARE_PLAN_SYSTEM = "urn:coherency:care-plan"
ASSESSMENT_SYSTEM = "urn:coherency:assessment"
DEVICE_SYSTEM = "urn:coherency:device"
MODEL_SYSTEM = "urn:coherency:model"
BLOB_SYSTEM = "urn:coherency:blob-sha256"
BOOKING_SYSTEM = "urn:coherency:booking"

V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
V2_0131 = "http://terminology.hl7.org/CodeSystem/v2-0131"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
ALLERGY_CLINICAL = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"
ALLERGY_VERIFICATION = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"
COVERAGE_CLASS = "http://terminology.hl7.org/CodeSystem/coverage-class"
SUBSCRIBER_RELATIONSHIP = "http://terminology.hl7.org/CodeSystem/subscriber-relationship"
PROVENANCE_AGENT = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
AUDIT_EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
RESTFUL_INTERACTION = "http://hl7.org/fhir/restful-interaction"
AUDIT_ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SECURITY_SOURCE = "http://terminology.hl7.org/CodeSystem/security-source-type"
SECURITY_ROLE = "http://terminology.hl7.org/CodeSystem/extra-security-role-type"
DICOM = "http://dicom.nema.org/resources/ontology/DCM"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"


class Concept(NamedTuple):
    """One code of one system, with its display."""

    system: str
    code: str
    display: str

    def coding(self) -> dict[str, Any]:
        """The concept as a FHIR Coding."""
        return {"system": self.system, "code": self.code, "display": self.display}


# The wound's etiology as a SNOMED CT disorder. Other and unknown are "Wound".
ETIOLOGY_CODES: Mapping[Etiology, Concept] = {
    Etiology.PRESSURE: Concept(SNOMED, "399912005", "Pressure injury"),
    Etiology.VENOUS: Concept(SNOMED, "371032004", "Stasis ulcer"),
    Etiology.ARTERIAL: Concept(SNOMED, "13954005", "Ischemic ulcer"),
    Etiology.DIABETIC: Concept(SNOMED, "280137006", "Diabetic foot ulcer"),
    Etiology.SURGICAL: Concept(SNOMED, "416462003", "Wound"),
    Etiology.TRAUMATIC: Concept(SNOMED, "19130008", "Traumatic abnormality"),
    Etiology.BURN: Concept(SNOMED, "284196006", "Burn of skin"),
    Etiology.OTHER: Concept(SNOMED, "416462003", "Wound"),
    Etiology.UNKNOWN: Concept(SNOMED, "416462003", "Wound"),
}

# Body sites a free-text site is matched against (skin of the region: a wound's site).
BODY_SITES: Mapping[str, Concept] = {
    "heel": Concept(SNOMED, "84607009", "Skin structure of heel"),
    "sacrum": Concept(SNOMED, "50938007", "Skin structure of sacrococcygeal region"),
    "coccyx": Concept(SNOMED, "50938007", "Skin structure of sacrococcygeal region"),
    "buttock": Concept(SNOMED, "22180002", "Skin structure of buttock"),
    "knee": Concept(SNOMED, "63464009", "Skin structure of knee"),
    "elbow": Concept(SNOMED, "74757004", "Skin structure of elbow"),
    "shoulder": Concept(SNOMED, "76552005", "Skin structure of shoulder"),
    "hip": Concept(SNOMED, "49812005", "Skin structure of hip"),
    "scapula": Concept(SNOMED, "181516000", "Skin structure over scapula"),
    "occiput": Concept(SNOMED, "181486008", "Occipital region of scalp"),
    "foot": Concept(SNOMED, "56459004", "Foot structure"),
    "leg": Concept(SNOMED, "30021000", "Lower leg structure"),
}

LATERALITY: Mapping[str, Concept] = {
    "left": Concept(SNOMED, "7771000", "Left"),
    "right": Concept(SNOMED, "24028007", "Right"),
    "bilateral": Concept(SNOMED, "51440002", "Right and left"),
}

SIZE_PANEL = Concept(LOINC, "72287-6", "Wound size panel")
TISSUE_PANEL = Concept(LOINC, "72371-8", "Wound tissue appearance")
TISSUE_PROPORTION = Concept(LOINC, "72370-0", "Wound tissue type proportion")


class Member(NamedTuple):
    """One member of the size panel: the `Measurements` field, its code, its unit."""

    field: str
    concept: Concept
    unit: str
    scale: float = 1.0  # multiplies the stored value into `unit`


SIZE_MEMBERS: tuple[Member, ...] = (
    Member("length_cm", Concept(LOINC, "39126-8", "Length of Wound"), "cm"),
    Member("width_cm", Concept(LOINC, "39125-0", "Width of Wound"), "cm"),
    # The record holds millimetres; LOINC's depth is reported in centimetres.
    Member("max_depth_mm", Concept(LOINC, "39127-6", "Depth of Wound"), "cm", 0.1),
    Member("area_cm2", Concept(LOINC, "89260-4", "Area of wound"), "cm2"),
    Member("volume_cm3", Concept(LOCAL_MEASURE, "volume", "Wound volume"), "cm3"),
    Member("perimeter_cm", Concept(LOCAL_MEASURE, "perimeter", "Wound perimeter"), "cm"),
    Member("mean_depth_mm", Concept(LOCAL_MEASURE, "mean-depth", "Mean wound depth"), "mm"),
    Member(
        "ruler_area_cm2",
        Concept(LOCAL_MEASURE, "ruler-area", "Wound area by ruler (length x width)"),
        "cm2",
    ),
)

# Tissue names the wound model writes -> SNOMED CT tissue concepts.
TISSUE_CODES: Mapping[str, Concept] = {
    "granulation": Concept(SNOMED, "225541009", "Granulation tissue"),
    "slough": Concept(SNOMED, "449746002", "Slough"),
    "necrotic": Concept(SNOMED, "421306004", "Necrotic eschar"),
    "necrosis": Concept(SNOMED, "421306004", "Necrotic eschar"),
    "eschar": Concept(SNOMED, "421306004", "Necrotic eschar"),
    "epithelial": Concept(SNOMED, "449743005", "Epithelialization"),
    "epithelium": Concept(SNOMED, "449743005", "Epithelialization"),
    "epithelialization": Concept(SNOMED, "449743005", "Epithelialization"),
}
