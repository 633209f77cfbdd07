"""Benchmark 3: bytes per record, as Automerge documents and as a whole store on disk.

N records, a quarter each of patients, wounds, notes (~500 characters) and
assessments (measurements, model output, two blob references), are written to an
`EdgeClient` store. Compared:

* each record's saved Automerge bytes against the same record as JSON
  (``record.model_dump_json()``), mean per kind;
* the store folder on disk after close (which checkpoints the WAL), divided by the
  number of records, against a plain `sqlite3` file holding each record's JSON.

Sizes, not times: they are measured once, whatever ``--repeat`` says.
"""

from __future__ import annotations

import random
import sqlite3
import statistics
from collections import defaultdict
from pathlib import Path

from benchmarks import _data
from benchmarks._common import SQLITE_PRAGMAS, new_client, progress
from benchmarks._harness import Figure, scratch_dir
from crdt import MemoryDocumentStore, Record, SyncSession, run_in_memory
from edge_sdk import EdgeClient

__all__ = ["run"]

_KINDS = {"patients": "patient", "wounds": "wound", "notes": "note", "assessments": "assessment"}


def _fill(client: EdgeClient, per_kind: int, seed: int = 4) -> list[Record]:
    rng = random.Random(seed)
    device = client.device_id
    records: list[Record] = []
    with client.batch():
        for _ in range(per_kind):
            patient = client.patients.add(**_data.patient_values(rng))
            wound = client.wounds.add(**_data.wound_values(rng, patient.id))
            note = client.notes.add(**_data.note_values(rng, patient.id, wound.id))
            assessment = client.assessments.add(
                **_data.assessment_values(rng, patient.id, wound.id, device)
            )
            records += [patient, wound, note, assessment]
    return records


def _files_size(database: Path) -> int:
    """The database file with its WAL and shared-memory files, if any are left."""
    paths = [database, *(database.with_name(database.name + s) for s in ("-wal", "-shm"))]
    return sum(p.stat().st_size for p in paths if p.exists())


def _plain_json_file(path: Path, records: list[Record]) -> int:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for pragma in SQLITE_PRAGMAS:
            conn.execute(pragma)
        conn.execute("CREATE TABLE records(id TEXT PRIMARY KEY, collection TEXT, json TEXT)")
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO records VALUES (?, ?, ?)",
            [(r.id, r.collection, r.model_dump_json()) for r in records],
        )
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return _files_size(path)


def run(*, scale: int, repeat: int, root: Path) -> list[Figure]:
    """Run the storage benchmark; `scale` records in all (rounded down to fours)."""
    del repeat  # sizes do not vary from run to run
    per_kind = max(1, scale // 4)
    with scratch_dir(root, "storage") as path:
        client = new_client(path / "store")
        try:
            records = _fill(client, per_kind)
            memory = MemoryDocumentStore()
            sink = SyncSession(memory, device_id=client.device_id)
            run_in_memory(client.sync_session(), sink)
        finally:
            client.close()
        # Every file of the store folder: the database (its WAL is empty after close),
        # the keyring (a few hundred bytes) and the (here empty) blob folder.
        store_bytes = sum(p.stat().st_size for p in (path / "store").rglob("*") if p.is_file())
        plain_bytes = _plain_json_file(path / "plain.db", records)

    automerge_sizes: dict[str, list[int]] = defaultdict(list)
    json_sizes: dict[str, list[int]] = defaultdict(list)
    for record in records:
        document = memory.get_document(record.id)
        if document is None:
            raise RuntimeError(f"storage benchmark: record {record.id} did not sync")
        automerge_sizes[record.collection].append(len(document.save()))
        json_sizes[record.collection].append(len(record.model_dump_json().encode("utf-8")))

    figures: list[Figure] = []
    for collection, kind in _KINDS.items():
        am_mean = statistics.fmean(automerge_sizes[collection])
        json_mean = statistics.fmean(json_sizes[collection])
        extra = {"records": len(json_sizes[collection])}
        figures += [
            Figure("storage", f"storage.{kind}.automerge", f"saved Automerge bytes per {kind}",
                   "bytes", [am_mean], extra=extra),
            Figure("storage", f"storage.{kind}.json", f"model_dump_json bytes per {kind}",
                   "bytes", [json_mean], extra=extra),
            Figure("storage", f"storage.{kind}.ratio", f"Automerge / JSON, {kind}",
                   "x", [am_mean / json_mean], extra=extra),
        ]  # fmt: skip
    n = len(records)
    extra = {"records": n, "store_bytes": store_bytes, "plain_bytes": plain_bytes}
    figures += [
        Figure("storage", "storage.store.per_record",
               "EdgeClient database on disk (documents + projections) per record",
               "bytes", [store_bytes / n], extra=extra),
        Figure("storage", "storage.plain_json.per_record",
               "plain sqlite3 file of the records' JSON per record",
               "bytes", [plain_bytes / n], extra=extra),
        Figure("storage", "storage.store.ratio", "EdgeClient store / plain JSON file",
               "x", [store_bytes / plain_bytes], extra=extra),
    ]  # fmt: skip
    progress(f"storage: {n} records, store {store_bytes:,} B, plain JSON file {plain_bytes:,} B")
    return figures
