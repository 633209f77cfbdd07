"""Benchmark 2: merge throughput of a sync session into a replica that has nothing,
and what one record with a long history costs.

Long history: a patient record with a chain of 2,000 and of 8,000 writes plus one
concurrent branch is loaded, merged, read (what a projection stores), and its conflicts
and history listed. Timed together; the 8,000/2,000 ratio shows how the cost grows
(about 4 when linear).

Replica A holds N records (half patients, half wounds). In every repeat a new replica
B, which has never seen them, receives all of them through one in-memory sync session
(`crdt.run_in_memory`). Timed: the whole session, from creating both sessions to the
last message, including B's SQLCipher writes. B stores the documents new to it from
A's record hints and verifies them in the background (as a first sync does), so the
time from the session's start until that verification finished is timed too, as a
multiple of the session's. The same exchange between two `crdt.MemoryDocumentStore`
replicas (no hints: every document validated as it arrives) shows the CRDT +
validation cost with no SQL at all.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from benchmarks import _data
from benchmarks._common import CLINIC_ID, new_client, progress
from benchmarks._harness import Figure, scratch_dir, timed
from crdt import (
    MemoryDocumentStore,
    Patient,
    RecordDocument,
    SyncReport,
    SyncSession,
    run_in_memory,
)
from edge_sdk import EdgeClient, VerificationStatus

__all__ = ["run"]

VERIFIED_TARGET = 2.0
"""Verification of what a session stored from claims done within 2x the session's
time: the bar issue 16 sets for the initial sync's."""


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
                        # What it stored from A's claims, verified after the session.
                        status: list[VerificationStatus] = []
                        verifying = timed(lambda: status.append(target.wait_verified()))
                        if not status[0].done or status[0].quarantined:
                            raise RuntimeError(f"merge benchmark: verification ended {status[0]}")
                        verified.append((seconds + verifying) / seconds)
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
            verified: list[float] = []  # edge: (session + verification) / session
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
    short, long = _long_history(2000, repeat), _long_history(8000, repeat)
    return [
        Figure(
            "merge",
            "merge.long_history",
            "one record, 8,000 changes + a concurrent branch: load, merge, read, "
            "conflicts, history",
            "s",
            long,
            1.0,
            "<=",
            {"changes": 8000},
        ),
        Figure(
            "merge",
            "merge.long_history_growth",
            "the same at 8,000 changes over 2,000 (4 = linear growth)",
            "ratio",
            [b / a for a, b in zip(short, long, strict=True)],
            6.0,
            "<=",
        ),
        Figure(
            "merge",
            "merge.edge",
            "fresh EdgeClient replica receiving N records in one sync session",
            "records/s",
            [n / t for t in times["edge"]],
            20_000.0,  # issue 16 (was 5,000)
            ">=",
            {"records": n, **wire["edge"]},
        ),
        Figure(
            "merge",
            "merge.edge.verified",
            "the same replica: from the start of the session until the background "
            "verification of every record it stored from A's claim has finished, as a "
            "multiple of the session's own time",
            "x session time",
            verified,
            VERIFIED_TARGET,
            "<=",
            {"records": n},
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


def _long_history(changes: int, repeat: int) -> list[float]:
    """Seconds to load, merge, read, and list conflicts and history of one record."""
    writer, other = str(uuid.UUID(int=1)), str(uuid.UUID(int=2))
    t0 = datetime(2024, 5, 1, tzinfo=UTC)
    doc = RecordDocument.create(
        Patient,
        {"given_name": "Ada", "family_name": "Okafor", "birth_date": "1950-03-01"},
        device_id=writer,
        clinic_id=CLINIC_ID,
        now=t0,
    )
    branch = doc.fork(device_id=other)
    for n in range(changes):
        doc.update({"given_name": f"Ada {n}"}, device_id=writer, now=t0 + timedelta(seconds=n))
    branch.update({"family_name": "Mensah"}, device_id=other, now=t0 + timedelta(hours=9))
    chain, side = doc.save(), branch.save()

    def work() -> None:
        merged = RecordDocument.load(chain)
        merged.merge(RecordDocument.load(side))
        merged.read()
        merged.conflicts()
        if len(merged.history()) != changes + 2:
            raise RuntimeError("long-history benchmark: history is missing changes")

    progress(f"merge: long history of {changes} changes")
    return [timed(work) for _ in range(max(1, repeat))]
