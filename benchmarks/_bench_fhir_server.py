"""Benchmark: the server's FHIR R4 export and endpoint (issue 19).

A clinic of ``scale // 10`` patients (1,000 at the default scale; at least 10), each
with a wound and 10 assessments (figures, model output with a tissue mix, a scan
reference), is seeded straight into the server's projection tables (the rows a sync
leaves, built from valid records by the server's own projection code), on embedded
SQLite and on PostgreSQL.

- ``fhir.export.resources_per_s.{backend}``: resources per second of wall time of
  `sync_server.export_fhir` over the whole clinic (what ``coherency server fhir-export
  --clinic`` runs: gathering in a fixed number of queries, the mapping, the validation
  of the Bundle against the fhir.resources models, the audit row).
- ``fhir.everything.p50_ms.{backend}``: the median latency of ``GET
  /fhir/R4/Patient/{id}/$everything`` (about 34 resources), over HTTP to the server in
  this process (`ThreadedServer`, uvicorn on loopback), 20 requests for different
  patients per repeat, audited like every read. Its ``staff_read_p50_ms`` is the median
  of ``GET /v1/patients/{id}`` over the same requests: what any audited staff read costs
  (token check, the audit row's transaction), for comparison.

Without PostgreSQL its figures are reported missing, with the reason.
"""

from __future__ import annotations

import json
import statistics
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks._bench_sync import BACKENDS, MissingFigure, on_each_backend
from benchmarks._common import progress
from benchmarks._harness import Figure
from crdt import sortable_time

__all__ = ["NAMES", "run"]

NAMES = (
    *(f"fhir.export.resources_per_s.{backend}" for backend in BACKENDS),
    *(f"fhir.everything.p50_ms.{backend}" for backend in BACKENDS),
)
ASSESSMENTS = 10
REQUESTS = 20
_BATCH = 2_000


def patients_for(scale: int) -> int:
    """Patients of the benchmark clinic at `scale`."""
    return max(10, min(1_000, scale // 10))


def run(*, scale: int, repeat: int, root: Path) -> list[Figure | MissingFigure]:
    """Measure every figure (the PostgreSQL ones missing without it)."""
    return on_each_backend(
        "fhir-server",
        NAMES,
        root,
        lambda work, url, label, backend: _measure(work, url, label, backend, scale, repeat),
    )


def _measure(
    work: Path, database_url: str | None, label: str, backend: str, scale: int, repeat: int
) -> list[Figure | MissingFigure]:
    from benchmarks._bench_bookings import _staff_client
    from sync_server import Settings, ThreadedServer, create_app, export_fhir, migrate

    settings = Settings(data_dir=work / "server", database_url=database_url)
    migrate(settings)
    patients = patients_for(scale)
    progress(f"fhir-server ({backend}): seeding {patients:,} patients, "
             f"{patients * ASSESSMENTS:,} assessments")  # fmt: skip
    clinic_id, patient_ids = _seed(settings, patients)
    rates: list[float] = []
    resources = 0
    for _ in range(min(repeat, 3)):
        start = time.perf_counter()
        done = export_fhir(settings, clinic=clinic_id, kind="collection")
        elapsed = time.perf_counter() - start
        if done.patients != patients:
            raise RuntimeError(f"exported {done.patients} patients of {patients}")
        resources = done.resources
        rates.append(resources / elapsed)
        progress(f"fhir-server ({backend}): {resources:,} resources in {elapsed:.2f} s")
    latencies: list[float] = []
    baseline: list[float] = []  # GET /v1/patients/{id}: an audited staff read of one row
    server = ThreadedServer(create_app(settings))
    server.start()
    try:
        http = _staff_client(settings, server.url)
        try:
            for r in range(repeat):
                for patient_id in patient_ids[r * REQUESTS % len(patient_ids) :][:REQUESTS]:
                    start = time.perf_counter()
                    response = http.get(f"/fhir/R4/Patient/{patient_id}/$everything")
                    elapsed = time.perf_counter() - start
                    if response.status_code != 200 or not response.json().get("entry"):
                        raise RuntimeError(f"$everything: {response.status_code}")
                    latencies.append(elapsed * 1000)
                    start = time.perf_counter()
                    plain = http.get(f"/v1/patients/{patient_id}")
                    baseline.append((time.perf_counter() - start) * 1000)
                    if plain.status_code != 200:
                        raise RuntimeError(f"staff read: {plain.status_code}")
        finally:
            http.close()
    finally:
        server.stop()
    extra = {"patients": patients, "assessments": patients * ASSESSMENTS, "database": label}
    return [
        Figure(
            "fhir-server", f"fhir.export.resources_per_s.{backend}",
            f"FHIR clinic export (gather, map, validate, audit) of {patients:,} patients with "
            f"{ASSESSMENTS} assessments each, {label}", "resources/s", rates,
            extra={**extra, "resources": resources},
        ),
        Figure(
            "fhir-server", f"fhir.everything.p50_ms.{backend}",
            f"GET Patient/$everything median latency over HTTP, {label}", "ms",
            [statistics.median(latencies)],
            extra={**extra, "requests": len(latencies),
                   "staff_read_p50_ms": round(statistics.median(baseline), 2)},
        ),
    ]  # fmt: skip


_COLUMNS = {
    "patients": ("given_name", "family_name", "birth_date", "sex", "mrn"),
    "wounds": ("patient_id", "body_site", "etiology", "status", "onset"),
    "assessments": ("wound_id", "patient_id", "captured_at", "device_id", "clinician",
                    "area_cm2", "perimeter_cm", "length_cm", "width_cm", "max_depth_mm",
                    "mean_depth_mm", "volume_cm3", "model_id"),
}  # fmt: skip
"""Each projection table's own columns (beside id, clinic, state and the record JSON)."""


def _projection(collection: str, record: Any) -> dict[str, Any]:
    """The projection row a sync leaves for `record` (as `sync_server`'s projection code
    writes it: the record's JSON and its searchable columns)."""
    dumped = record.model_dump(mode="json")
    flat = {**dumped, **(dumped.get("measurements") or {})}
    if collection == "assessments":
        flat["model_id"] = (dumped.get("model_output") or {}).get("model_id")
        flat["captured_at"] = sortable_time(dumped["captured_at"])
    return {
        "id": dumped["id"], "clinic_id": dumped["clinic_id"], "updated_at": dumped["updated_at"],
        "record": json.dumps(dumped, separators=(",", ":")),
        **{name: flat.get(name) for name in _COLUMNS[collection]},
    }  # fmt: skip


def _seed(settings: Any, patients: int) -> tuple[str, list[str]]:
    """A clinic of `patients` patients, each with a wound and `ASSESSMENTS` scanned
    assessments, inserted as the projection rows a sync leaves."""
    from sqlalchemy import create_engine, text

    from crdt import Patient, Wound, WoundAssessment
    from sync_server import issue_enrolment_token

    clinic_id = issue_enrolment_token(settings, clinic="fhir-bench").clinic_id
    at = datetime(2026, 1, 1, tzinfo=UTC)
    meta: dict[str, Any] = {"clinic_id": clinic_id, "created_at": at, "created_by": "bench",
                            "updated_at": at, "updated_by": "bench"}  # fmt: skip
    device = str(uuid.uuid4())
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in _COLUMNS}
    ids = []
    for n in range(patients):
        patient = Patient.model_validate({
            "id": str(uuid.uuid4()), "given_name": "Bench", "family_name": f"Patient {n}",
            "birth_date": date(1950, 1, 1) + timedelta(days=n), "sex": "female",
            "mrn": f"B{n:06d}", **meta,
        })  # fmt: skip
        wound = Wound.model_validate({
            "id": str(uuid.uuid4()), "patient_id": patient.id, "body_site": "left heel",
            "etiology": "diabetic", "onset": date(2025, 12, 1), **meta,
        })  # fmt: skip
        ids.append(patient.id)
        rows["patients"].append(_projection("patients", patient))
        rows["wounds"].append(_projection("wounds", wound))
        for k in range(ASSESSMENTS):
            assessment = WoundAssessment.model_validate({
                "id": str(uuid.uuid4()), "wound_id": wound.id, "patient_id": patient.id,
                "captured_at": at + timedelta(days=7 * k), "device_id": device,
                "clinician": "RN Bench",
                "measurements": {"area_cm2": 4.2, "length_cm": 3.0, "width_cm": 1.8,
                                 "max_depth_mm": 4.0, "volume_cm3": 1.1,
                                 "area_method": "measured"},
                "model_output": {"model_id": "wound-seg", "model_version": "1.0",
                                 "tissue_composition": {"granulation": 70.0, "slough": 30.0},
                                 "confidence": 0.9},
                "blobs": [{"sha256": f"{k:064x}", "size": 1_000_000, "kind": "scan",
                           "media_type": "application/octet-stream"}],
                **meta,
            })  # fmt: skip
            rows["assessments"].append(_projection("assessments", assessment))
    engine = create_engine(settings.resolved_database_url)
    try:
        for table, values in rows.items():
            columns = ("id", "clinic_id", "updated_at", "record", *_COLUMNS[table])
            insert = text(
                f"INSERT INTO {table} (deleted, conflicted, {', '.join(columns)}) "
                f"VALUES (false, false, {', '.join(':' + c for c in columns)})"
            )
            for start in range(0, len(values), _BATCH):
                with engine.begin() as connection:
                    connection.execute(insert, values[start : start + _BATCH])
    finally:
        engine.dispose()
    return clinic_id, ids
