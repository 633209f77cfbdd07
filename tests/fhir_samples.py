"""Fully populated records of one patient, for the FHIR tests and benchmark."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from crdt import (
    AllergyIntolerance,
    BlobReference,
    CarePlan,
    Code,
    Condition,
    Contact,
    EmergencyContact,
    Insurance,
    Measurements,
    MedicationStatement,
    ModelOutput,
    Patient,
    Wound,
    WoundAssessment,
)
from fhir_interop import AppointmentInfo, AuditInfo, PatientRecords

CLINIC = "clinic-1"
T0 = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
META = {
    "clinic_id": CLINIC,
    "created_at": T0,
    "created_by": "device-1",
    "updated_at": T0,
    "updated_by": "device-1",
}


def sample_records(patient_id: str = "p-0001", *, assessments: int = 2) -> PatientRecords:
    """One patient with every record kind and every field filled."""
    patient = Patient(
        id=patient_id,
        given_name="Ada",
        family_name="Lovelace",
        birth_date=date(1950, 12, 10),
        sex="female",
        mrn=f"MRN-{patient_id}",
        contacts=(
            Contact(kind="phone", value="+44 20 7946 0000", label="mobile"),
            Contact(kind="email", value="ada@example.org"),
            Contact(kind="address", value="12 St James's Square, London", label="home"),
            Contact(kind="next_of_kin", value="Byron Lovelace", label="son"),
        ),
        emergency_contacts=(
            EmergencyContact(
                name="Mary Somerville",
                relationship="neighbour",
                phone="+44 20 7946 0001",
                email="mary@example.org",
            ),
        ),
        insurance=(
            Insurance(
                payer="Health Fund",
                member_id="HF-123",
                plan="Gold",
                group="G-7",
                subscriber="William King",
                relationship="spouse",
                valid_from=date(2025, 1, 1),
                valid_until=date(2027, 1, 1),
            ),
        ),
        **META,
    )
    wound = Wound(
        id=f"{patient_id}-w1",
        patient_id=patient_id,
        body_site="left heel",
        etiology="diabetic",
        status="healing",
        onset=date(2026, 1, 5),
        **META,
    )
    wound2 = Wound(
        id=f"{patient_id}:w2",
        patient_id=patient_id,
        body_site="sacrum",
        etiology="pressure",
        status="healed",
        **META,
    )
    items = []
    for n in range(assessments):
        items.append(
            WoundAssessment(
                id=f"{patient_id}-a{n}",
                wound_id=wound.id,
                patient_id=patient_id,
                captured_at=T0 + timedelta(days=7 * n),
                device_id="device-1",
                clinician="Nurse Nightingale",
                measurements=Measurements(
                    area_cm2=4.2,
                    perimeter_cm=8.1,
                    length_cm=3.0,
                    width_cm=1.8,
                    max_depth_mm=4.0,
                    mean_depth_mm=2.5,
                    volume_cm3=1.1,
                    ruler_area_cm2=5.4,
                    area_method="measured",
                ),
                model_output=ModelOutput(
                    model_id="wound-seg",
                    model_version="1.2.0",
                    tissue_composition={
                        "granulation": 70.0,
                        "slough": 20.0,
                        "necrotic": 5.0,
                        "epithelial": 5.0,
                    },
                    confidence=0.9,
                ),
                blobs=(
                    BlobReference(
                        sha256="ab" * 32,
                        size=1024,
                        kind="pointcloud",
                        media_type="application/x-ply",
                    ),
                ),
                **META,
            )
        )
    condition = Condition(
        id=f"{patient_id}-c1",
        patient_id=patient_id,
        description="Type 2 diabetes mellitus",
        code=Code(
            system="http://snomed.info/sct", code="44054006", display="Diabetes mellitus type 2"
        ),
        clinical_status="active",
        onset=date(2010, 5, 1),
        note="diet controlled until 2015",
        **META,
    )
    resolved = Condition(
        id=f"{patient_id}-c2",
        patient_id=patient_id,
        description="Cellulitis of left leg",
        clinical_status="resolved",
        onset=date(2024, 2, 1),
        abatement=date(2024, 3, 1),
        **META,
    )
    allergy = AllergyIntolerance(
        id=f"{patient_id}-al1",
        patient_id=patient_id,
        substance="zinc oxide tape",
        code=Code(system="http://snomed.info/sct", code="764146007", display="Penicillin"),
        type="allergy",
        category="environment",
        criticality="low",
        clinical_status="active",
        reaction="rash",
        onset=date(2020, 6, 1),
        note="use silicone tape",
        **META,
    )
    medication = MedicationStatement(
        id=f"{patient_id}-m1",
        patient_id=patient_id,
        medication="metformin 500 mg tablets",
        code=Code(system="http://www.nlm.nih.gov/research/umls/rxnorm", code="861007"),
        status="active",
        dosage="500 mg twice daily",
        route="oral",
        started=date(2015, 1, 1),
        ended=date(2030, 1, 1),
        reason="diabetes",
        note="with food",
        **META,
    )
    plan = CarePlan(
        id=f"{patient_id}-cp1",
        patient_id=patient_id,
        wound_id=wound.id,
        status="active",
        title="Heel ulcer plan",
        goals=("wound closed in 12 weeks", "no infection"),
        dressing="foam dressing",
        dressing_every_days=3,
        offloading="heel offloading boot",
        review_on=date(2026, 4, 1),
        starts_on=date(2026, 3, 1),
        ends_on=date(2026, 6, 1),
        note="review with podiatry",
        **META,
    )
    booking = AppointmentInfo(
        id=f"{patient_id}-b1",
        status="booked",
        kind="appointment",
        service="wound-review",
        starts_at=T0 + timedelta(days=30),
        ends_at=T0 + timedelta(days=30, minutes=30),
        clinic_id=CLINIC,
        provider="Dr Lister",
        provider_id="prov-1",
    )
    event = AuditInfo(
        id="42",
        at=T0,
        action="record-read",
        operation="R",
        actor_kind="user",
        outcome="ok",
        actor_id="user-7",
        role="nurse",
        purpose="treatment",
        address="10.0.0.7",
        targets=(patient_id,),
    )
    return PatientRecords(
        patient=patient,
        wounds=(wound, wound2),
        assessments=tuple(items),
        conditions=(condition, resolved),
        allergies=(allergy,),
        medications=(medication,),
        care_plans=(plan,),
        appointments=(booking,),
        audit_events=(event,),
        devices={"device-1": "Ward 3 tablet"},
    )
