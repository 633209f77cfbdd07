"""Benchmark: FHIR R4 export and validation (issue 19's figure).

A clinic of `scale / 10` patients (default scale 10,000: 1,000 patients), each with one
wound and 10 assessments (measurements, tissue composition, two scan blobs), held in a
device store.

- ``fhir.export.memory_resources_per_s``: `fhir_interop.export_bundle` of every
  patient's `PatientRecords`, already in memory (the mapping alone).
- ``fhir.export.store_resources_per_s``: `EdgeClient.fhir_export()` of every patient
  (reading and parsing the records from the encrypted store, then the mapping).
- ``fhir.validate.resources_per_s``: `fhir_interop.validate` of each resource of up to
  100 patients against the fhir.resources R4B models.

Each is the median over `repeat` runs.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

from benchmarks import _data
from benchmarks._common import new_client, progress
from benchmarks._harness import Figure, scratch_dir
from fhir_interop import PatientRecords, export_bundle, validate

__all__ = ["run"]

ASSESSMENTS = 10
VALIDATED_PATIENTS = 100


def run(*, scale: int, repeat: int, root: Path) -> list[Figure]:
    """Run the FHIR benchmark; `scale / 10` patients (at least 2)."""
    patients = max(2, scale // 10)
    rng = random.Random(19)
    memory: list[float] = []
    store: list[float] = []
    validation: list[float] = []
    with scratch_dir(root, "fhir") as folder:
        client = new_client(folder / "store")
        try:
            progress(f"fhir: a clinic of {patients:,} patients, {ASSESSMENTS} assessments each")
            with client.batch():
                for _ in range(patients):
                    patient = client.patients.add(**_data.patient_values(rng))
                    wound = client.wounds.add(**_data.wound_values(rng, patient.id))
                    for _ in range(ASSESSMENTS):
                        client.assessments.add(
                            **_data.assessment_values(rng, patient.id, wound.id, client.device_id)
                        )
            records = _records(client)
            resources = 0
            for _ in range(repeat):
                start = time.perf_counter()
                bundle = export_bundle(records)
                took = time.perf_counter() - start
                resources = len(bundle["entry"])
                memory.append(resources / took)
                start = time.perf_counter()
                from_store = client.fhir_export()
                store.append(len(from_store["entry"]) / (time.perf_counter() - start))
                assert len(from_store["entry"]) == resources
                sample = [e["resource"] for e in bundle["entry"]]
                sample = sample[: len(sample) * min(VALIDATED_PATIENTS, patients) // patients]
                start = time.perf_counter()
                for resource in sample:
                    validate(resource)
                validation.append(len(sample) / (time.perf_counter() - start))
        finally:
            client.close()
    extra: dict[str, Any] = {"patients": patients, "assessments": patients * ASSESSMENTS}
    extra["resources"] = resources
    return [
        Figure(
            "fhir",
            "fhir.export.memory_resources_per_s",
            f"FHIR export from PatientRecords in memory ({patients:,} patients x "
            f"{ASSESSMENTS} assessments)",
            "resources/s",
            memory,
            extra=extra,
        ),
        Figure(
            "fhir",
            "fhir.export.store_resources_per_s",
            "FHIR export of every patient from a device store (EdgeClient.fhir_export)",
            "resources/s",
            store,
            extra=extra,
        ),
        Figure(
            "fhir",
            "fhir.validate.resources_per_s",
            "FHIR R4B validation (fhir.resources 8.3.0), one resource at a time",
            "resources/s",
            validation,
            extra=extra,
        ),
    ]


def _records(client: Any) -> list[PatientRecords]:
    """Every patient's records, read once from the store (not timed)."""
    wounds: dict[str, list[Any]] = {}
    assessments: dict[str, list[Any]] = {}
    for wound in client.wounds.list():
        wounds.setdefault(wound.patient_id, []).append(wound)
    for assessment in client.assessments.list():
        assessments.setdefault(assessment.patient_id, []).append(assessment)
    return [
        PatientRecords(
            patient=patient,
            wounds=tuple(wounds.get(patient.id, ())),
            assessments=tuple(assessments.get(patient.id, ())),
        )
        for patient in client.patients.list()
    ]
