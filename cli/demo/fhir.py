"""The FHIR part of `coherency demo`: the demo patient's whole record as a FHIR R4
Bundle, validated against the R4B models (the ``fhir`` extra).

Runs last: the bundle holds the patient's name in plaintext (it is an export for
another system), so it is written after every check that no name is on disk.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from cli.demo._scenario import Say, Scenario, check, demo_kdf, demo_key_provider
from edge_sdk import EdgeClient

__all__ = ["FhirDemoReport", "run_fhir_demo"]


@dataclass(slots=True)
class FhirDemoReport:
    """Where the demo patient's FHIR Bundle is, and what it holds."""

    path: Path
    resources: dict[str, int] = field(default_factory=dict)
    steps: list[str] = field(default_factory=list)


def run_fhir_demo(
    workdir: Path, store: Path, *, say: Say = lambda line: None, fast_kdf: bool = True
) -> FhirDemoReport:
    """Add medical history to the demo patient in `store`, export the patient as a
    FHIR collection Bundle to ``workdir/fhir/demo-patient.json`` and validate it.

    Raises:
        DemoFailedError: The bundle does not hold what it must, or does not validate.
    """
    from fhir_interop import FhirValidationError, validate

    path = workdir / "fhir" / "demo-patient.json"
    report = FhirDemoReport(path=path)
    step = Scenario(report.steps, say).step
    with EdgeClient.open(store, demo_key_provider(demo_kdf(fast_kdf))) as client:
        (patient,) = client.patients.list()
        (wound,) = client.wounds.list()
        client.conditions.add(
            patient_id=patient.id,
            description="Type 2 diabetes mellitus",
            code={"system": "http://snomed.info/sct", "code": "44054006"},
            onset="2012-04-01",
        )
        client.allergies.add(patient_id=patient.id, substance="latex", category="environment")
        client.medications.add(
            patient_id=patient.id, medication="metformin 500 mg", dosage="500 mg twice daily"
        )
        client.care_plans.add(
            patient_id=patient.id,
            wound_id=wound.id,
            goals=["heel wound closed in 8 weeks"],
            dressing="foam dressing",
            dressing_every_days=3,
            offloading="heel offloading boot",
            review_on="2026-12-01",
        )
        step("ward tablet: medical history, an allergy, a medication and a care plan added")
        bundle = client.fhir_export(patient.id)
    try:
        validate(bundle)
    except FhirValidationError as exc:
        check(False, f"the FHIR bundle validates ({'; '.join(exc.problems[:3])})")
    for entry in bundle["entry"]:
        kind = entry["resource"]["resourceType"]
        report.resources[kind] = report.resources.get(kind, 0) + 1
    for kind in ("Patient", "Condition", "Observation", "Provenance", "CarePlan"):
        check(kind in report.resources, f"the FHIR bundle holds a {kind}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(bundle, indent=2, ensure_ascii=False), encoding="utf-8")
    counts = ", ".join(f"{n} {kind}" for kind, n in report.resources.items())
    step(f"FHIR R4 bundle of the demo patient ({counts}) validated, written to {path}")
    return report
