"""Benchmark: live queries (issue 17's figures).

Device A holds N patients (`--scale`, default 10,000) each with an MRN ``MRN-<i>``;
device B, of the same clinic, shares an in-memory hub (`MemoryHub`) with it. Each
sample: B changes one of A's patients and pushes it; A pulls one sync page bringing that
one changed record (`client.sync` through `MemoryTransport`).

- ``sdk.live_query.latency_p50_ms`` / ``_p99_ms``: from the commit of that merged page
  (a commit listener registered before the live queries) to the live query's callback;
  100 live queries registered (each: 50 patients from one MRN on, in MRN order),
  the changed patient in one of them.
- ``sdk.live_query.cost_100_on_10k_ms``: the median time of A's whole sync of such a
  page with those 100 live queries registered minus the same with none, measured
  alternately in one run (both medians and their ratio are reported with it).
"""

from __future__ import annotations

import random
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks import _data
from benchmarks._common import new_client, progress
from benchmarks._harness import Figure, scratch_dir
from edge_sdk import EdgeClient, MemoryHub, MemoryTransport, Subscription

__all__ = ["run"]

QUERIES = 100
SAMPLES = 40  # per mode and repeat


def _transport(hub: MemoryHub, client: EdgeClient) -> MemoryTransport:
    return MemoryTransport(
        hub,
        device_id=client.device_id,
        clinic_id=client.clinic_id,
        public_key=client.identity.public_key,
    )


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def run(*, scale: int, repeat: int, root: Path) -> list[Figure]:
    """Run the live-query benchmark; `scale` is the number of patients A holds."""
    n = max(QUERIES, scale)
    rng = random.Random(17)
    with scratch_dir(root, "live") as folder:
        hub = MemoryHub(name="live")
        a, b = new_client(folder / "a"), new_client(folder / "b")
        try:
            progress(f"live: filling a store with {n:,} patients")
            with a.batch():
                ids = [
                    a.patients.add(**{**_data.patient_values(rng), "mrn": f"MRN-{i:05d}"}).id
                    for i in range(n)
                ]
            a.sync(transport=_transport(hub, a))
            b.sync(transport=_transport(hub, b))
            b.wait_verified()
            latencies: list[float] = []
            with_queries: list[float] = []
            without: list[float] = []
            committed: list[float] = []
            stamp = a.replica.commits.add(lambda _: committed.append(time.perf_counter()))
            per_query = max(1, n // QUERIES)

            def one_page(live: bool, k: int) -> None:
                # a patient inside one query's 50 (the MRNs are numbered in order)
                target = ids[((k * 37) % QUERIES) * per_query + k % min(50, per_query)]
                b.patients.update(target, given_name=f"Changed {k}")
                b.sync(transport=_transport(hub, b))
                heard: list[float] = []
                subs: list[Subscription] = []
                if live:
                    for q in range(QUERIES):
                        prefix = f"MRN-{q * per_query:05d}"[: 4 + len(str(n))]
                        query = a.patients.query().where("mrn", ">=", prefix)
                        query = query.order_by("mrn").limit(50)
                        subs.append(
                            a.patients.live(query, lambda _r: heard.append(time.perf_counter()))
                        )
                    heard.clear()  # the first results
                committed.clear()
                start = time.perf_counter()
                a.sync(transport=_transport(hub, a))
                took = time.perf_counter() - start
                for sub in subs:
                    sub.cancel()
                (with_queries if live else without).append(took * 1000)
                if live and heard and committed:
                    latencies.append((heard[0] - committed[0]) * 1000)

            progress(f"live: {repeat} x {SAMPLES} sync pages with and without {QUERIES} queries")
            for k in range(repeat * SAMPLES):
                one_page(live=k % 2 == 0, k=k)
            stamp.cancel()
        finally:
            a.close()
            b.close()
    cost = statistics.median(with_queries) - statistics.median(without)
    extra: dict[str, Any] = {
        "records": n,
        "queries": QUERIES,
        "sync_page_ms_with_queries": round(statistics.median(with_queries), 3),
        "sync_page_ms_without": round(statistics.median(without), 3),
        "ratio": round(statistics.median(with_queries) / statistics.median(without), 3),
    }
    return [
        Figure(
            "live",
            "sdk.live_query.latency_p50_ms",
            "merged sync page committed → live-query callback, p50 (100 live queries)",
            "ms",
            [statistics.median(latencies)],
            extra={"records": n, "samples_taken": len(latencies)},
        ),
        Figure(
            "live",
            "sdk.live_query.latency_p99_ms",
            "merged sync page committed → live-query callback, p99",
            "ms",
            [_percentile(latencies, 0.99)],
            extra={"records": n, "samples_taken": len(latencies)},
        ),
        Figure(
            "live",
            f"sdk.live_query.cost_{QUERIES}_on_10k_ms",
            f"extra ms per one-record sync page with {QUERIES} live queries vs none",
            "ms",
            [max(cost, 0.001)],
            extra=extra,
        ),
    ]
