"""Benchmark 13: staff exports stream (issue 18).

A clinic's assessments (figures, model output with a tissue mix, a quality flag, a
scan reference) are seeded straight into the server's projection table (SQL inserts,
as a push would leave them), ``scale`` of them in one clinic and ``10 * scale`` in
another: 10,000 and 100,000 at the default scale. Each is exported with
`sync_server.export_records` (what ``coherency server export`` runs: keyset batches of
1,000 rows, each in its own read transaction, audited at start and end) into a sink
that counts and drops the bytes, as CSV and as NDJSON, on embedded SQLite and on
PostgreSQL.

- ``export.rows_per_s.{format}.{size}.{backend}``: rows exported per second of wall
  time (size ``small``: ``scale`` rows, ``large``: ``10 * scale``).
- ``export.peak_mib.{format}.{size}.{backend}``: the Python heap's peak during the
  export, above what was allocated before it (tracemalloc; a separate run from the
  timed one, as tracing slows it). Memory the database driver holds in C is not in it.
- ``export.peak_ratio.{format}.{backend}``: large peak over small peak. About 1 means
  the export streams: ten times the rows, the same memory (what grows is only the set
  of the patients' ids the closing audit event names, one per 100 rows here).

Without PostgreSQL its figures are reported missing, with the reason.
"""

from __future__ import annotations

import json
import random
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

from benchmarks._bench_sync import BACKENDS, MissingFigure, on_each_backend
from benchmarks._common import progress
from benchmarks._harness import Figure

__all__ = ["NAMES", "run"]

FORMATS = ("csv", "ndjson")
SIZES = ("small", "large")
NAMES = (
    *(f"export.{what}.{fmt}.{size}.{backend}" for what in ("rows_per_s", "peak_mib")
      for fmt in FORMATS for size in SIZES for backend in BACKENDS),
    *(f"export.peak_ratio.{fmt}.{backend}" for fmt in FORMATS for backend in BACKENDS),
)  # fmt: skip
RATIO_TARGET = 1.5  # large/small peak: streaming means about 1
_INSERT_BATCH = 5_000


def run(*, scale: int, repeat: int, root: Path) -> list[Figure | MissingFigure]:
    """Measure every export figure (the PostgreSQL ones missing without it)."""
    sizes = {"small": scale, "large": 10 * scale}
    return on_each_backend(
        "export",
        NAMES,
        root,
        lambda work, url, label, backend: _measure(work, url, label, backend, sizes, repeat),
    )


def _measure(
    work: Path,
    database_url: str | None,
    label: str,
    backend: str,
    sizes: dict[str, int],
    repeat: int,
) -> list[Figure | MissingFigure]:
    from sync_server import Settings, issue_enrolment_token, migrate

    settings = Settings(data_dir=work / "server", database_url=database_url)
    migrate(settings)
    clinics = {}
    for size, rows in sizes.items():
        clinic_id = issue_enrolment_token(settings, clinic=f"export-{size}").clinic_id
        progress(f"export ({backend}): seeding {rows:,} assessments")
        _seed(settings.resolved_database_url, clinic_id, rows)
        clinics[size] = clinic_id
    figures: list[Figure | MissingFigure] = []
    for fmt in FORMATS:
        peaks: dict[str, float] = {}
        for size, rows in sizes.items():
            progress(f"export ({backend}): {fmt}, {rows:,} rows")
            seconds = [_export(settings, clinics[size], fmt, rows) for _ in range(min(repeat, 3))]
            peaks[size] = _peak_mib(settings, clinics[size], fmt, rows)
            extra = {"rows": rows, "database": label}
            figures.append(Figure(
                "export", f"export.rows_per_s.{fmt}.{size}.{backend}",
                f"{fmt.upper()} export of {rows:,} assessments, {label}", "rows/s",
                [rows / s for s in seconds], extra=extra,
            ))  # fmt: skip
            figures.append(Figure(
                "export", f"export.peak_mib.{fmt}.{size}.{backend}",
                f"Python heap peak exporting {rows:,} assessments as {fmt.upper()}, {label}",
                "MiB", [peaks[size]], extra=extra,
            ))  # fmt: skip
        figures.append(Figure(
            "export", f"export.peak_ratio.{fmt}.{backend}",
            f"{fmt.upper()} export peak memory, {sizes['large']:,} rows over "
            f"{sizes['small']:,}, {label} (about 1: streamed)",
            "x", [peaks["large"] / peaks["small"]], target=RATIO_TARGET, target_op="<=",
            extra={"database": label},
        ))  # fmt: skip
    return figures


def _export(settings: Any, clinic_id: str, fmt: str, rows: int) -> float:
    """Seconds to export the clinic's assessments into a sink that drops them."""
    from sync_server import export_records

    written = 0

    def sink(chunk: bytes) -> None:
        nonlocal written
        written += len(chunk)

    start = time.perf_counter()
    done = export_records(settings, clinic=clinic_id, kind="assessments", format=fmt, write=sink)
    elapsed = time.perf_counter() - start
    if done.rows != rows or written == 0:
        raise RuntimeError(f"exported {done.rows} rows of {rows}")
    return elapsed


def _peak_mib(settings: Any, clinic_id: str, fmt: str, rows: int) -> float:
    """The Python heap's peak during one export, above its size before (MiB)."""
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        _export(settings, clinic_id, fmt, rows)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return (peak - before) / 2**20


def _seed(url: str, clinic_id: str, rows: int) -> None:
    """`rows` assessments of one clinic, inserted as the projection's rows."""
    from sqlalchemy import create_engine, text

    rng = random.Random(rows)
    insert = text(
        "INSERT INTO assessments (id, clinic_id, deleted, conflicted, updated_at, record, "
        "wound_id, patient_id, captured_at, device_id, clinician, area_cm2, perimeter_cm, "
        "length_cm, width_cm, max_depth_mm, mean_depth_mm, volume_cm3, model_id) VALUES "
        "(:id, :clinic_id, false, false, :updated_at, :record, :wound_id, :patient_id, "
        ":captured_at, :device_id, :clinician, :area_cm2, :perimeter_cm, :length_cm, "
        ":width_cm, :max_depth_mm, :mean_depth_mm, :volume_cm3, :model_id)"
    )
    device = str(uuid.uuid4())
    patients = [str(uuid.uuid4()) for _ in range(max(1, rows // 100))]
    engine = create_engine(url)
    try:
        for start in range(0, rows, _INSERT_BATCH):
            batch = [_row(rng, clinic_id, device, patients, i)
                     for i in range(start, min(rows, start + _INSERT_BATCH))]  # fmt: skip
            with engine.begin() as connection:
                connection.execute(insert, batch)
    finally:
        engine.dispose()


def _row(
    rng: random.Random, clinic_id: str, device: str, patients: list[str], i: int
) -> dict[str, Any]:
    patient = patients[i % len(patients)]
    wound = str(uuid.uuid5(uuid.NAMESPACE_OID, patient))
    day, minute = divmod(i, 1440)
    captured = (
        f"2024-{1 + day // 28 % 12:02d}-{1 + day % 28:02d}T{minute // 60:02d}:{minute % 60:02d}:00"
    )
    granulation = round(rng.uniform(40, 90), 1)
    figures = {
        "area_cm2": round(rng.uniform(0.5, 40), 2), "perimeter_cm": round(rng.uniform(3, 30), 2),
        "length_cm": round(rng.uniform(1, 10), 2), "width_cm": round(rng.uniform(0.5, 6), 2),
        "max_depth_mm": round(rng.uniform(0.5, 15), 2),
        "mean_depth_mm": round(rng.uniform(0.2, 8), 2),
        "volume_cm3": round(rng.uniform(0.1, 20), 2),
    }  # fmt: skip
    aid = str(uuid.uuid4())
    record = {
        "id": aid, "clinic_id": clinic_id, "wound_id": wound, "patient_id": patient,
        "captured_at": captured + "+00:00", "device_id": device, "clinician": "RN Bench",
        "measurements": {**figures, "area_method": "measured"},
        "model_output": {"model_id": "wound-seg-int8", "model_version": "1.0",
                         "tissue_composition": {"granulation": granulation,
                                                "slough": round(100 - granulation, 1)},
                         "confidence": 0.87},
        "blobs": [{"sha256": "0" * 64, "size": 1_000_000, "kind": "scan"}],
        "quality_flags": ["low_light"] if i % 7 == 0 else [],
    }  # fmt: skip
    return {
        "id": aid, "clinic_id": clinic_id, "updated_at": captured + "Z",
        "record": json.dumps(record, separators=(",", ":")), "wound_id": wound,
        "patient_id": patient, "captured_at": captured + ".000000Z", "device_id": device,
        "clinician": "RN Bench", "model_id": "wound-seg-int8", **figures,
    }  # fmt: skip
