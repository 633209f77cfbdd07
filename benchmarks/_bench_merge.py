"""Benchmark 2: merge throughput of a sync session into a replica that has nothing.

Replica A holds N records (half patients, half wounds). In every repeat a new replica
B, which has never seen them, receives all of them through one in-memory sync session
(`crdt.run_in_memory`). Timed: the whole session, from creating both sessions to the
last message, including validation and B's SQLCipher writes. The same exchange
between two `crdt.MemoryDocumentStore` replicas shows the CRDT + validation cost with
no SQL at all.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

from benchmarks import _data
from benchmarks._common import CLINIC_ID, new_client, progress
from benchmarks._harness import Figure, scratch_dir, timed
from crdt import MemoryDocumentStore, RecordDocument, SyncReport, SyncSession, run_in_memory
from edge_sdk import EdgeClient

__all__ = ["run"]


def _same_clinic(document: RecordDocument) -> str | None:
    # The check EdgeClient's sessions make, so both variants validate the same way.
    clinic = document.read().clinic_id
    return None if clinic == CLINIC_ID else f"record belongs to clinic {clinic}"


def _fill(client: EdgeClient, n: int, seed: int = 2) -> None:
    rng = random.Random(seed)
    with client.batch():
        patients = [client.patients.add(**_data.patient_values(rng)).id for _ in range(n // 2)]
        for _ in range(n - len(patients)):
            client.wounds.add(**_data.wound_values(rng, rng.choice(patients)))


def _check(report: SyncReport, n: int, where: str) -> None:
    """A run that did not move every record must not be reported as fast."""
    if len(report.received) != n or report.rejected:
        raise RuntimeError(
            f"merge benchmark ({where}): received {len(report.received)} of {n} records, "
            f"rejected {report.rejected[:3]}"
        )


def run(*, scale: int, repeat: int, root: Path) -> list[Figure]:
    """Run the merge benchmark; `scale` is the number of records A holds."""
    n = max(2, scale)
    rng = random.Random(3)
    with scratch_dir(root, "merge-a") as a_dir:
        source = new_client(a_dir / "store")
        try:
            _fill(source, n)
            # A's documents, through the public sync path, for the SQL-free variant.
            memory_a = MemoryDocumentStore()
            fill = SyncSession(memory_a, device_id=_data.device_uuid(rng), policy=_same_clinic)
            run_in_memory(source.sync_session(), fill)
            _check(fill.report, n, "loading the in-memory source")

            def edge_session() -> tuple[float, dict[str, int]]:
                with scratch_dir(root, "merge-b") as b_dir:
                    target = new_client(b_dir / "store")
                    try:
                        received: list[SyncSession] = []

                        def session() -> None:
                            sink = target.sync_session()
                            received.append(sink)
                            run_in_memory(source.sync_session(), sink)

                        seconds = timed(session)
                        _check(received[0].report, n, "EdgeClient")
                        return seconds, _wire(received[0].report)
                    finally:
                        target.close()

            def memory_session() -> tuple[float, dict[str, int]]:
                memory_b = MemoryDocumentStore()
                sink = SyncSession(memory_b, device_id=_data.device_uuid(rng), policy=_same_clinic)
                sender = SyncSession(memory_a, device_id=_data.device_uuid(rng))
                seconds = timed(lambda: run_in_memory(sender, sink))
                _check(sink.report, n, "MemoryDocumentStore")
                return seconds, _wire(sink.report)

            variants: dict[str, Callable[[], tuple[float, dict[str, int]]]] = {
                "edge": edge_session,
                "memory": memory_session,
            }
            times: dict[str, list[float]] = {name: [] for name in variants}
            wire: dict[str, dict[str, int]] = {}
            names = list(variants)
            for r in range(repeat):
                for name in names[r % 2 :] + names[: r % 2]:
                    seconds, wire[name] = variants[name]()
                    times[name].append(seconds)
                progress(
                    f"merge: repeat {r + 1}/{repeat}: "
                    + ", ".join(f"{k} {times[k][-1]:.2f}s" for k in names)
                )
        finally:
            source.close()
    return [
        Figure(
            "merge",
            "merge.edge",
            "fresh EdgeClient replica receiving N records in one sync session",
            "records/s",
            [n / t for t in times["edge"]],
            5000.0,
            ">=",
            {"records": n, **wire["edge"]},
        ),
        Figure(
            "merge",
            "merge.memory",
            "the same between two MemoryDocumentStores (CRDT + validation, no SQL)",
            "records/s",
            [n / t for t in times["memory"]],
            extra={"records": n, **wire["memory"]},
        ),
    ]


def _wire(report: SyncReport) -> dict[str, int]:
    return {"messages_received": report.messages_received, "bytes_received": report.bytes_received}
