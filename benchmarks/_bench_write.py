"""Benchmark 1: local write throughput of `EdgeClient` against plain SQLite.

N patients and N wounds (each wound refers to one of the patients) are written three
or four ways in every repeat, each into a fresh directory, in an order that rotates
from repeat to repeat so that drift on a shared machine does not favour one side:

* acknowledged: one ``client.<collection>.add`` per record, each its own durable
  transaction, against plain `sqlite3` inserting the same rows one commit per row;
* batched: the same adds inside ``with client.batch():`` against plain `sqlite3` with
  all rows in one transaction, and against SQLCipher alone (same key pragma, same
  rows, no CRDT) to show how much of the cost is encryption.

Ratios are EdgeClient time / baseline time, taken per repeat (side by side) and
reported as the median over repeats.
"""

from __future__ import annotations

import json
import random
import secrets
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlcipher3

from benchmarks import _data
from benchmarks._common import CLINIC_ID, SQLITE_PRAGMAS, new_client, progress
from benchmarks._harness import Figure, scratch_dir, timed
from crdt import Patient, Record, Wound, new_record_id

__all__ = ["run"]

# The same tables, columns and indexes as edge_sdk's projection tables for patients
# and wounds (id, clinic, projected fields, deleted, conflicted, updated_at, JSON).
_TABLES = {
    "patients": ("given_name", "family_name", "birth_date", "sex", "mrn"),
    "wounds": ("patient_id", "body_site", "etiology", "status", "onset"),
}
_INDEXES = (
    "CREATE INDEX idx_patients_name ON patients(family_name, given_name)",
    "CREATE INDEX idx_patients_mrn ON patients(mrn)",
    "CREATE INDEX idx_wounds_patient ON wounds(patient_id)",
)

Row = tuple[Any, ...]


class _Workload:
    """The same N patients and N wounds, as `add` arguments and as plain table rows."""

    def __init__(self, n: int, seed: int = 1) -> None:
        rng = random.Random(seed)
        self.patients = [_data.patient_values(rng) for _ in range(n)]
        # Wounds refer to patients by index: the ids are only known once written.
        self.wound_patient = [rng.randrange(n) for _ in range(n)]
        self.wounds = [_data.wound_values(rng, "") for _ in range(n)]
        self.count = 2 * n
        device = _data.device_uuid(rng)
        at = datetime.now(UTC)
        patient_ids = [new_record_id() for _ in range(n)]
        self.patient_rows = [
            _row(Patient, {**values, "id": pid}, device, at)
            for values, pid in zip(self.patients, patient_ids, strict=True)
        ]
        self.wound_rows = [
            _row(Wound, {**values, "id": new_record_id(), "patient_id": patient_ids[p]}, device, at)
            for values, p in zip(self.wounds, self.wound_patient, strict=True)
        ]


def _row(schema: type[Record], values: dict[str, Any], device: str, at: datetime) -> Row:
    """The projection row edge_sdk would write for this record, built outside timing."""
    stamp = at.isoformat()
    record = schema.model_validate(
        {
            **values,
            "clinic_id": CLINIC_ID,
            "created_at": stamp,
            "created_by": device,
            "updated_at": stamp,
            "updated_by": device,
        }
    ).model_dump(mode="json")
    columns = _TABLES[schema.collection]
    return (
        record["id"],
        record["clinic_id"],
        *(record[c] for c in columns),
        0,
        0,
        record["updated_at"],
        json.dumps(record, separators=(",", ":"), ensure_ascii=False),
    )


def _insert_sql(table: str) -> str:
    columns = ["id", "clinic_id", *_TABLES[table], "deleted", "conflicted", "updated_at", "record"]
    return f"INSERT INTO {table}({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


def _prepare(conn: Any) -> None:
    for pragma in SQLITE_PRAGMAS:
        conn.execute(pragma)
    for table, columns in _TABLES.items():
        cols = ", ".join(f"{c} TEXT" for c in columns)
        conn.execute(
            f"CREATE TABLE {table}(id TEXT PRIMARY KEY, clinic_id TEXT, {cols}, deleted INTEGER,"
            " conflicted INTEGER, updated_at TEXT, record TEXT)"
        )
    for sql in _INDEXES:
        conn.execute(sql)


def _open_sqlite(path: Path) -> Any:
    conn = sqlite3.connect(path, isolation_level=None)
    _prepare(conn)
    return conn


def _open_sqlcipher(path: Path) -> Any:
    conn = sqlcipher3.connect(str(path), isolation_level=None)
    # As edge_sdk's store keys its database: a raw 256-bit key, no passphrase KDF.
    conn.execute(f"PRAGMA key = \"x'{secrets.token_hex(32)}'\"")
    conn.execute("PRAGMA cipher_memory_security = OFF")
    _prepare(conn)
    return conn


def _plain_acknowledged(conn: Any, work: _Workload) -> None:
    for table, rows in (("patients", work.patient_rows), ("wounds", work.wound_rows)):
        sql = _insert_sql(table)
        for row in rows:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(sql, row)
            conn.execute("COMMIT")


def _plain_batched(conn: Any, work: _Workload) -> None:
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(_insert_sql("patients"), work.patient_rows)
    conn.executemany(_insert_sql("wounds"), work.wound_rows)
    conn.execute("COMMIT")


def _edge_writes(client: Any, work: _Workload) -> None:
    ids = [client.patients.add(**values).id for values in work.patients]
    for values, p in zip(work.wounds, work.wound_patient, strict=True):
        client.wounds.add(**{**values, "patient_id": ids[p]})


def _edge_batched(client: Any, work: _Workload) -> None:
    with client.batch():
        _edge_writes(client, work)


def _time_connection(
    root: Path, opener: Callable[[Path], Any], body: Callable[..., None], work: _Workload
) -> float:
    with scratch_dir(root, "baseline") as path:
        conn = opener(path / "plain.db")
        try:
            return timed(lambda: body(conn, work))
        finally:
            conn.close()


def _time_client(root: Path, body: Callable[..., None], work: _Workload) -> float:
    with scratch_dir(root, "edge") as path:
        client = new_client(path / "store")
        try:
            return timed(lambda: body(client, work))
        finally:
            client.close()


def run(*, scale: int, repeat: int, root: Path) -> list[Figure]:
    """Run the write benchmark; `scale` is the number of patients (and of wounds)."""
    work = _Workload(scale)
    variants: dict[str, Callable[[], float]] = {
        "acked.sqlite": lambda: _time_connection(root, _open_sqlite, _plain_acknowledged, work),
        "acked.edge": lambda: _time_client(root, _edge_writes, work),
        "batched.sqlite": lambda: _time_connection(root, _open_sqlite, _plain_batched, work),
        "batched.sqlcipher": lambda: _time_connection(root, _open_sqlcipher, _plain_batched, work),
        "batched.edge": lambda: _time_client(root, _edge_batched, work),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(repeat):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            times[name].append(variants[name]())
        progress(
            f"write: repeat {r + 1}/{repeat}: "
            + ", ".join(f"{n} {times[n][-1]:.2f}s" for n in names)
        )
    n = work.count

    def rate(key: str) -> list[float]:
        return [n / t for t in times[key]]

    def ratio(a: str, b: str) -> list[float]:
        # Per repeat: both sides ran in the same rotation, so slow machine drift cancels.
        return [x / y for x, y in zip(times[a], times[b], strict=True)]

    extra = {"records": n}
    return [
        Figure("write", "write.acked.edge", "EdgeClient, one durable transaction per add",
               "records/s", rate("acked.edge"), extra=extra),
        Figure("write", "write.acked.sqlite", "plain sqlite3, one commit per row",
               "records/s", rate("acked.sqlite"), extra=extra),
        Figure("write", "write.acked.ratio", "time EdgeClient / plain sqlite3 (acknowledged)",
               "x", ratio("acked.edge", "acked.sqlite"), 3.0, "<=", extra),
        Figure("write", "write.batched.edge", "EdgeClient, all adds in client.batch()",
               "records/s", rate("batched.edge"), extra=extra),
        Figure("write", "write.batched.sqlcipher", "SQLCipher alone, one transaction",
               "records/s", rate("batched.sqlcipher"), extra=extra),
        Figure("write", "write.batched.sqlite", "plain sqlite3, one transaction",
               "records/s", rate("batched.sqlite"), extra=extra),
        Figure("write", "write.batched.ratio", "time EdgeClient / plain sqlite3 (batched)",
               "x", ratio("batched.edge", "batched.sqlite"), 8.0, "<=", extra),
        Figure("write", "write.batched.sqlcipher_ratio",
               "time SQLCipher alone / plain sqlite3 (batched): the encryption share",
               "x", ratio("batched.sqlcipher", "batched.sqlite"), extra=extra),
        Figure("write", "write.batched.edge_vs_sqlcipher",
               "time EdgeClient / SQLCipher alone (batched): the CRDT + validation share",
               "x", ratio("batched.edge", "batched.sqlcipher"), extra=extra),
    ]  # fmt: skip
