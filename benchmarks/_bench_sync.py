"""Benchmark 4: sync between devices and the central server, over HTTP on loopback.

The server is the real thing: uvicorn serving `sync_server` in a separate process (the
app factory `sync_server.serving:app_from_env`, configured by ``COHERENCY_SERVER_*``
variables), on a free loopback port, migrated first, on another CPU than this process
when there are two. Every figure is measured once on the embedded SQLite database and
once on PostgreSQL (a fresh database, dropped afterwards).

- Push ingest: a device holding N new records (half patients, half wounds) pushes them
  all with ``client.sync(blobs=False)``. Each repeat uses a new clinic and a new
  device with new records, so the server really ingests N new documents.
- Initial sync: a fresh, just enrolled device pulls the N records of the first push's
  clinic with ``client.sync()`` (push of nothing, pull of everything).
- Propagation: device A writes one record and syncs; device B, long-polling in a loop,
  returns with it. Latency from just before A's write to B's sync returning.

A run that does not move every record raises instead of reporting a number.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import queue
import random
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks import _bench_peer, _data
from benchmarks._common import progress
from benchmarks._harness import Figure, scratch_dir, timed
from edge_sdk import (
    Argon2Params,
    EdgeClient,
    PassphraseKeyProvider,
    RetryPolicy,
    SyncResult,
    SyncTransport,
    VerificationStatus,
)

if TYPE_CHECKING:
    from sync_server import IssuedEnrolmentToken, Settings

__all__ = ["POWERSYNC_ANCHOR", "MissingFigure", "propagation_writes", "run"]

POWERSYNC_ANCHOR: dict[str, Any] = {
    "name": "PowerSync",
    "value": 27_600.0,
    "unit": "rows/s",
    "short": "published desktop initial sync of plain rows",
    "what": "published initial sync of plain rows, Flutter SDK on a Linux desktop "
    "(Ryzen 9 7900X), server stack on the same machine, mean of 10 runs",
    "source": "https://powersync.com/blog/how-fast-is-powersync-performance-benchmarks-for-flutter",
}
"""A published anchor for the initial-sync figure, shown beside ours (not a target)."""

# Issue 16's goals (records/s unless said), per database.
INITIAL_TARGET = {"sqlite": 25_000.0, "postgresql": 20_000.0}
PUSH_TARGET = {"sqlite": 10_000.0, "postgresql": 8_000.0}
PROPAGATION_P50_TARGET = 15.0  # ms
VERIFIED_TARGET = 2.0  # verification done within 2x the sync's time, issue 16
BACKENDS = ("sqlite", "postgresql")
PG_ADMIN_ENV = "COHERENCY_BENCH_POSTGRES"
PG_ADMIN_DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"
LONG_POLL_SECONDS = 30.0
_SERVER_START_SECONDS = 60.0
_SEEN_TIMEOUT_SECONDS = 60.0
# Retries would hide trouble in a figure: they are few, quick, and counted in the extras.
_RETRY = RetryPolicy(attempts=3, base_seconds=0.05, cap_seconds=0.5, timeout_seconds=120.0)
_ENV_PREFIX = "COHERENCY_SERVER_"


@dataclass(frozen=True, slots=True)
class MissingFigure:
    """A figure that could not be measured in this run, and why (e.g. no PostgreSQL)."""

    benchmark: str
    name: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"benchmark": self.benchmark, "name": self.name, "reason": self.reason}


def propagation_writes(scale: int) -> int:
    """Writes per propagation repeat: 200 at the default scale, fewer (at least 10) at
    small scales."""
    return max(10, min(200, scale // 50))


def run(*, scale: int, repeat: int, root: Path) -> list[Figure | MissingFigure]:
    """Run the sync benchmark on SQLite and on PostgreSQL; `scale` is N, the records
    pushed and pulled per measurement."""
    n = max(4, scale)
    writes = propagation_writes(scale)
    results: list[Figure | MissingFigure] = []
    for backend in BACKENDS:
        with _database(backend, root) as (database_url, label, unavailable):
            if unavailable is not None:
                progress(f"sync[{backend}]: not measured: {unavailable}")
                results += [MissingFigure("sync", name, unavailable) for name in _names(backend)]
                continue
            results += _measure(backend, database_url, label, n, writes, repeat, root)
    order = {name: index for index, name in enumerate(_all_names(scale))}
    return sorted(results, key=lambda figure: order[figure.name])


def _names(backend: str) -> list[str]:
    return [
        f"sync.initial.{backend}",
        f"sync.initial.verified.{backend}",
        f"sync.push.{backend}",
        f"sync.propagation.p50.{backend}",
        f"sync.propagation.p99.{backend}",
        f"sync.idle.{backend}",
    ]


def _all_names(scale: int) -> list[str]:
    # Table order: each figure on SQLite, then on PostgreSQL; automerge-repo beside us last.
    by_backend = [_names(backend) for backend in BACKENDS]
    ours = [name for group in zip(*by_backend, strict=True) for name in group]
    return ours + _bench_peer.names(scale)


# ---------------------------------------------------------------- the measurements
def _measure(
    backend: str,
    database_url: str | None,
    label: str,
    n: int,
    writes: int,
    repeat: int,
    root: Path,
) -> list[Figure | MissingFigure]:
    from sync_server import Settings, migrate

    with scratch_dir(root, f"sync-{backend}") as work:
        settings = Settings(
            data_dir=work / "server",
            database_url=database_url,
            long_poll_max_seconds=LONG_POLL_SECONDS,
            log_level="WARNING",
        )
        migrate(settings)
        with _ServerProcess.running(settings, work / "server.log") as server:
            progress(f"sync[{backend}]: server on {server.url}, {server.layout['cpu_layout']}")
            push_times: list[float] = []
            initial_times: list[float] = []
            verified_ratios: list[float] = []
            requests: dict[str, int] = {}
            retries = {"push": 0, "initial": 0, "propagation": 0}
            source: tuple[str, set[str]] | None = None
            for r in range(repeat):
                clinic, ids, seconds, pushed = _push_once(server, work, n, r)
                push_times.append(seconds)
                requests["push"] = pushed.requests
                retries["push"] += pushed.retries
                if source is None:  # the first push fills the clinic every device pulls
                    source = (clinic, ids)
                seconds, verifying, pulled = _initial_once(server, work, *source, r)
                initial_times.append(seconds)
                verified_ratios.append((seconds + verifying) / seconds)
                requests["initial"] = pulled.requests
                retries["initial"] += pulled.retries
                progress(
                    f"sync[{backend}]: repeat {r + 1}/{repeat}: push {push_times[-1]:.2f}s, "
                    f"initial sync {initial_times[-1]:.2f}s ({n:,} records)"
                )
            p50s, p99s, detail = _propagation(server, work, writes, repeat, backend)
            retries["propagation"] = detail.pop("retries")
            idle, idle_cpu = _idle(server, work, writes, repeat)
            peers: list[Figure | MissingFigure] = []
            if backend == "sqlite":  # automerge-repo beside us, against the same server
                peers = _peers(server, work, n, repeat)
    common = {"backend": backend, "database": label, **server.layout, "retries": retries}
    return [
        *peers,
        Figure(
            "sync",
            f"sync.initial.{backend}",
            f"fresh enrolled device pulls N records from the server ({label}) over HTTP on "
            "loopback: the whole client.sync() (push of nothing, pull of everything)",
            "records/s",
            [n / t for t in initial_times],
            INITIAL_TARGET[backend],
            ">=",
            {
                "records": n,
                "requests": requests["initial"],
                "seconds": initial_times,
                "anchor": POWERSYNC_ANCHOR,
                **common,
            },
        ),
        Figure(
            "sync",
            f"sync.initial.verified.{backend}",
            "the same device: from the start of its sync until the background verification "
            "of every record it stored from the server's claim has finished, as a multiple "
            "of the sync's own time",
            "x sync time",
            verified_ratios,
            VERIFIED_TARGET,
            "<=",
            {"records": n, **common},
        ),
        Figure(
            "sync",
            f"sync.push.{backend}",
            f"one device pushes N new records to the server ({label}): client.sync(blobs=False)",
            "records/s",
            [n / t for t in push_times],
            PUSH_TARGET[backend],
            ">=",
            {"records": n, "requests": requests["push"], "seconds": push_times, **common},
        ),
        Figure(
            "sync",
            f"sync.propagation.p50.{backend}",
            f"device A writes one record and syncs; long-polling device B returns with it "
            f"({label}): median latency over {writes} writes",
            "ms",
            p50s,
            PROPAGATION_P50_TARGET,
            "<=",
            {"writes": writes, **detail, **common},
        ),
        Figure(
            "sync",
            f"sync.propagation.p99.{backend}",
            f"the same: 99th percentile (nearest rank) latency over {writes} writes",
            "ms",
            p99s,
            extra={"writes": writes, **detail, **common},
        ),
        Figure(
            "sync",
            f"sync.idle.{backend}",
            f"an enrolled device with nothing to push or pull runs client.sync(blobs=False) "
            f"({label}): median latency over {writes} rounds, the fixed cost every sync "
            "and every round of the background loop pays",
            "ms",
            idle,
            extra={"rounds": writes, "server_cpu_ms": idle_cpu, **common},
        ),
    ]


def _push_once(
    server: _ServerProcess, work: Path, n: int, r: int
) -> tuple[str, set[str], float, SyncResult]:
    """A new clinic and a device with N new records, which pushes them all (timed)."""
    clinic = server.new_clinic(f"bench-push-{r + 1}")
    with scratch_dir(work, "seed") as folder:
        device = _device(folder, clinic)
        try:
            ids = _fill(device, n, seed=1000 + r)
            server.enrol(device, clinic, name=f"seed-{r + 1}")
            done: list[SyncResult] = []
            seconds = timed(lambda: done.append(device.sync(blobs=False, retry=_RETRY)))
        finally:
            device.close()
    result = done[0]
    check_moved(
        "push",
        moved=result.pushed,
        expected=ids,
        refused=[*result.refused_by_server, *result.rejected],
    )
    return clinic, ids, seconds, result


def _initial_once(
    server: _ServerProcess, work: Path, clinic: str, ids: set[str], r: int
) -> tuple[float, float, SyncResult]:
    """A fresh device of `clinic` pulls everything (timed), then waits for the
    background verification of what it stored from the server's claim (timed apart)."""
    with scratch_dir(work, "fresh") as folder:
        device = _device(folder, clinic)
        try:
            server.enrol(device, clinic, name=f"fresh-{r + 1}")
            done: list[SyncResult] = []
            seconds = timed(lambda: done.append(device.sync(retry=_RETRY)))
            status: list[VerificationStatus] = []
            verifying = timed(lambda: status.append(device.wait_verified()))
            held = len(device.replica.document_heads())
        finally:
            device.close()
    if not status[0].done or status[0].quarantined:
        raise RuntimeError(f"sync benchmark (initial sync): verification ended {status[0]}")
    result = done[0]
    check_moved(
        "initial sync",
        moved=result.pulled,
        expected=ids,
        refused=[*result.rejected, *result.refused_by_server],
    )
    if held != len(ids):
        raise RuntimeError(
            f"sync benchmark (initial sync): the device holds {held} of {len(ids)} documents"
        )
    return seconds, verifying, result


def _propagation(
    server: _ServerProcess, work: Path, writes: int, repeat: int, backend: str
) -> tuple[list[float], list[float], dict[str, Any]]:
    """Per repeat: p50 and p99 (ms) of `writes` A-write-to-B-seen latencies."""
    clinic = server.new_clinic("bench-propagation")
    rng = random.Random(7)
    p50s: list[float] = []
    p99s: list[float] = []
    push_p50s: list[float] = []
    written: set[str] = set()
    seen: set[str] = set()
    with scratch_dir(work, "device-a") as a_dir, scratch_dir(work, "device-b") as b_dir:
        a, b = _device(a_dir, clinic), _device(b_dir, clinic)
        listener: _Listener | None = None
        retries = 0
        try:
            server.enrol(a, clinic, name="writer")
            server.enrol(b, clinic, name="listener")
            listener = _Listener(b)
            listener.start()
            time.sleep(0.2)  # B's first long poll reaches the server
            for r in range(repeat):
                latencies: list[float] = []
                push_latencies: list[float] = []
                for _ in range(writes):
                    # Writes come at random moments, as a clinician's would, while B
                    # waits in its long poll.
                    time.sleep(rng.uniform(0.03, 0.07))
                    start = time.perf_counter()
                    record_id = a.patients.add(**_data.patient_values(rng)).id
                    pushed = a.sync(blobs=False, retry=_RETRY)
                    pushed_at = time.perf_counter()
                    retries += pushed.retries
                    check_moved(
                        "propagation push",
                        moved=pushed.pushed,
                        expected={record_id},
                        refused=pushed.refused_by_server,
                    )
                    written.add(record_id)
                    seen_at, pulled = listener.wait_for(record_id)
                    seen.update(pulled)
                    latencies.append((seen_at - start) * 1000)
                    push_latencies.append((pushed_at - start) * 1000)
                p50s.append(percentile(latencies, 0.50))
                p99s.append(percentile(latencies, 0.99))
                push_p50s.append(percentile(push_latencies, 0.50))
                progress(
                    f"sync[{backend}]: propagation repeat {r + 1}/{repeat}: "
                    f"p50 {p50s[-1]:.1f} ms, p99 {p99s[-1]:.1f} ms over {writes} writes"
                )
        finally:
            if listener is not None:
                listener.stop(a)
                retries += listener.retries
            a.close()
            b.close()
    check_moved("propagation", moved=sorted(seen & written), expected=written, refused=[])
    return p50s, p99s, {"writer_push_p50_ms": push_p50s, "retries": retries}


def _idle(
    server: _ServerProcess, work: Path, rounds: int, repeat: int
) -> tuple[list[float], list[float | None]]:
    """Per repeat: the median ms of `rounds` syncs with nothing to move, and the
    server's CPU time per such sync (ms; None where /proc cannot say)."""
    clinic = server.new_clinic("bench-idle")
    medians: list[float] = []
    cpu: list[float | None] = []
    with scratch_dir(work, "idle") as folder:
        device = _device(folder, clinic)
        try:
            server.enrol(device, clinic, name="idle")
            device.sync(blobs=False, retry=_RETRY)  # its first sync: the token, the feed
            for _ in range(repeat):
                latencies: list[float] = []
                before = server.cpu_seconds()
                for _ in range(rounds):
                    start = time.perf_counter()
                    result = device.sync(blobs=False, retry=_RETRY)
                    latencies.append((time.perf_counter() - start) * 1000)
                    check_moved("idle", moved=result.pulled, expected=set(), refused=[])
                after = server.cpu_seconds()
                medians.append(percentile(latencies, 0.50))
                spent = None if before is None or after is None else after - before
                cpu.append(None if spent is None else spent * 1000 / rounds)
        finally:
            device.close()
    return medians, cpu


# ---------------------------------------------------------------- automerge-repo beside us
def _peers(
    server: _ServerProcess, work: Path, scale: int, repeat: int
) -> list[Figure | MissingFigure]:
    """automerge-repo beside our initial sync, at each size of `peer_sizes(scale)`,
    against the running (SQLite) `server` (`benchmarks._bench_peer`)."""
    reason = _bench_peer.node_unavailable()
    if reason is not None:
        progress(f"sync[peer]: automerge-repo not measured: {reason}")
        return [MissingFigure("sync", name, reason) for name in _bench_peer.names(scale)]
    figures: list[Figure | MissingFigure] = []
    for n in _bench_peer.peer_sizes(scale):
        try:
            figures += _peer_size(server, work, n, repeat)
        except _bench_peer.PeerFailed as exc:
            # The peer's failure (e.g. its client giving up on a document on a loaded
            # machine) costs its own figures of this size, not the whole run's.
            reason = str(exc).splitlines()[0]
            progress(f"sync[peer]: {n:,} documents not measured: {reason}")
            figures += [
                MissingFigure("sync", name, f"automerge-repo failed: {reason}")
                for name in _bench_peer.size_names(n)
            ]
    return figures


def _peer_size(server: _ServerProcess, work: Path, n: int, repeat: int) -> list[Figure]:
    clinic = server.new_clinic(f"bench-peer-{n}")
    ids, records = _peer_seed(server, work, clinic, n)
    ours: list[float] = []
    theirs: list[float] = []
    node_wall: list[float] = []
    with scratch_dir(work, f"automerge-repo-{n}") as folder:
        records_path = folder / "records.json"
        records_path.write_text(json.dumps(records), encoding="utf-8")
        with _bench_peer.NodePeer.running(records_path, folder / "server", _place) as peer:
            for r in range(repeat):
                # Alternate the order so that drift does not always favour one side.
                for side in ("ours", "theirs") if r % 2 == 0 else ("theirs", "ours"):
                    if side == "ours":
                        seconds, _, _ = _initial_once(server, work, clinic, ids, r)
                        ours.append(seconds)
                    else:
                        seconds, wall = peer.fetch_all(folder / f"client-{r}", n)
                        theirs.append(seconds)
                        node_wall.append(wall)
                progress(
                    f"sync[peer]: {n:,} documents, repeat {r + 1}/{repeat}: ours "
                    f"{ours[-1]:.2f}s, automerge-repo {theirs[-1]:.2f}s"
                )
    layout = {**peer.layout, "coherency_server": server.layout}
    versions = _bench_peer.versions()
    peer_name, ratio_name = _bench_peer.size_names(n)
    return [
        Figure(
            "sync",
            peer_name,
            f"automerge-repo {versions.get('@automerge/automerge-repo', '?')} (Node): a fresh "
            f"client repo fetches {n:,} documents by URL from a server repo over a loopback "
            "WebSocket, both with disk storage",
            "documents/s",
            [n / t for t in theirs],
            extra={
                "records": n,
                "seconds": theirs,
                "process_seconds": node_wall,
                "versions": versions,
                **layout,
            },
        ),
        Figure(
            "sync",
            ratio_name,
            f"our initial sync of the same {n:,} records (SQLite server) over automerge-repo's: "
            "records/s divided, per repeat",
            "x",
            [t_theirs / t_ours for t_ours, t_theirs in zip(ours, theirs, strict=True)],
            extra={
                "records": n,
                "coherency_records_per_s": [n / t for t in ours],
                "coherency_seconds": ours,
                "automerge_repo_seconds": theirs,
            },
        ),
    ]


def _peer_seed(
    server: _ServerProcess, work: Path, clinic: str, n: int
) -> tuple[set[str], list[dict[str, Any]]]:
    """A device pushes N new records (half patients, half wounds) to `clinic`
    (untimed); their ids, and the records as plain JSON for automerge-repo."""
    rng = random.Random(3000 + n)
    with scratch_dir(work, "peer-seed") as folder:
        device = _device(folder, clinic)
        try:
            with device.batch():
                patients = [device.patients.add(**_data.patient_values(rng)) for _ in range(n // 2)]
                wounds = [
                    device.wounds.add(**_data.wound_values(rng, rng.choice(patients).id))
                    for _ in range(n - len(patients))
                ]
            records = [
                {"collection": collection, **record.model_dump(mode="json")}
                for collection, group in (("patients", patients), ("wounds", wounds))
                for record in group
            ]
            ids = {str(record["id"]) for record in records}
            server.enrol(device, clinic, name=f"peer-seed-{n}")
            pushed = device.sync(blobs=False)
        finally:
            device.close()
    check_moved(
        "peer seed push",
        moved=pushed.pushed,
        expected=ids,
        refused=[*pushed.refused_by_server, *pushed.rejected],
    )
    return ids, records


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank `q` quantile of `values` (0 < q <= 1)."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def check_moved(
    where: str, *, moved: Sequence[str], expected: set[str], refused: Sequence[object]
) -> None:
    """A run that did not move exactly the expected records must not be reported.

    Raises:
        RuntimeError: A record is missing, unexpected or duplicated, or one was refused.
    """
    got = set(moved)
    missing = expected - got
    unexpected = got - expected
    if missing or unexpected or refused or len(moved) != len(got):
        raise RuntimeError(
            f"sync benchmark ({where}): moved {len(got & expected)} of {len(expected)} "
            f"records ({len(missing)} missing, {len(unexpected)} unexpected, "
            f"{len(moved) - len(got)} duplicated), refused {list(refused)[:3]}"
        )


# ---------------------------------------------------------------- devices
def _device(folder: Path, clinic_id: str) -> EdgeClient:
    provider = PassphraseKeyProvider("benchmark passphrase", params=Argon2Params.fast())
    return EdgeClient.init(folder / "store", provider, clinic_id=clinic_id)


def _fill(client: EdgeClient, n: int, seed: int) -> set[str]:
    rng = random.Random(seed)
    with client.batch():
        patients = [client.patients.add(**_data.patient_values(rng)).id for _ in range(n // 2)]
        wounds = [
            client.wounds.add(**_data.wound_values(rng, rng.choice(patients))).id
            for _ in range(n - len(patients))
        ]
    return {*patients, *wounds}


class _Listener(threading.Thread):
    """Device B: long-polls in a loop and reports when each sync returned, with what."""

    def __init__(self, client: EdgeClient, transport: SyncTransport | None = None) -> None:
        super().__init__(name="sync-bench-listener", daemon=True)
        self.client = client
        self.transport = transport  # None: the enrolled server; else e.g. an edge box
        self.returns: queue.Queue[tuple[float, list[str]]] = queue.Queue()
        self.stopping = threading.Event()
        self.error: BaseException | None = None
        self.retries = 0

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                result = self.client.sync(
                    wait=LONG_POLL_SECONDS, blobs=False, retry=_RETRY, transport=self.transport
                )
                returned = time.perf_counter()
                self.retries += result.retries
                if result.rejected or result.refused_by_server:
                    raise RuntimeError(
                        f"device B refused {[*result.rejected, *result.refused_by_server][:3]}"
                    )
                if result.pulled:
                    self.returns.put((returned, list(result.pulled)))
        except BaseException as exc:  # reported to the waiting benchmark
            self.error = exc
            self.returns.put((time.perf_counter(), []))

    def wait_for(self, record_id: str) -> tuple[float, list[str]]:
        """When B's sync returned holding `record_id`, and everything B pulled meanwhile."""
        pulled: list[str] = []
        deadline = time.monotonic() + _SEEN_TIMEOUT_SECONDS
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(
                    f"sync benchmark (propagation): device B did not see record {record_id} "
                    f"within {_SEEN_TIMEOUT_SECONDS:.0f} s"
                )
            try:
                returned, ids = self.returns.get(timeout=remaining)
            except queue.Empty:
                continue
            if self.error is not None:
                raise RuntimeError("sync benchmark (propagation): device B failed") from self.error
            pulled += ids
            if record_id in ids:
                return returned, pulled

    def stop(self, writer: EdgeClient, transport: SyncTransport | None = None) -> None:
        """End the loop: one more write (synced through `transport`, default the
        enrolled server) wakes B's long poll."""
        self.stopping.set()
        if self.is_alive():
            with contextlib.suppress(Exception):
                writer.patients.add(**_data.patient_values(random.Random(0)))
                writer.sync(blobs=False, retry=_RETRY, transport=transport)
        self.join(timeout=LONG_POLL_SECONDS + 30)


# ---------------------------------------------------------------- databases
@contextlib.contextmanager
def _database(backend: str, root: Path) -> Iterator[tuple[str | None, str, str | None]]:
    """(database URL or None for embedded SQLite, label, reason it is unavailable)."""
    if backend == "sqlite":
        yield None, f"SQLite {sqlite3.sqlite_version} (embedded)", None
        return
    import psycopg
    from sqlalchemy.engine import make_url

    admin_url = os.environ.get(PG_ADMIN_ENV, PG_ADMIN_DEFAULT)
    try:
        admin = psycopg.connect(admin_url, autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        shown = make_url(admin_url).render_as_string(hide_password=True)
        reason = f"PostgreSQL unreachable at {shown} ({' '.join(str(exc).split())})"
        yield None, "PostgreSQL", reason
        return
    name = f"coherency_bench_{secrets.token_hex(4)}"
    with admin:
        version = admin.info.server_version
        label = f"PostgreSQL {version // 10000}.{version % 10000}"
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            url = make_url(admin_url).set(drivername="postgresql+psycopg", database=name)
            yield url.render_as_string(hide_password=False), label, None
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def on_each_backend(
    benchmark: str,
    names: Sequence[str],
    root: Path,
    measure: Callable[[Path, str | None, str, str], list[Figure | MissingFigure]],
) -> list[Figure | MissingFigure]:
    """`measure(work, database_url, label, backend)` on SQLite then PostgreSQL, each in
    its own scratch folder; without PostgreSQL its figures (the `names` ending in
    ``.postgresql``) are reported missing with the reason."""
    results: list[Figure | MissingFigure] = []
    for backend in BACKENDS:
        with _database(backend, root) as (database_url, label, unavailable):
            if unavailable is not None:
                progress(f"{benchmark} ({backend}): not measured: {unavailable}")
                results += [MissingFigure(benchmark, n, unavailable) for n in names
                            if n.endswith(f".{backend}")]  # fmt: skip
                continue
            with scratch_dir(root, f"{benchmark}-{backend}") as work:
                results += measure(work, database_url, label, backend)
    return results


# ---------------------------------------------------------------- the server process
class _ServerProcess:
    """uvicorn serving the sync server in a child process, on a free loopback port."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self.url = ""
        self.layout: dict[str, Any] = {}
        self._clinic_names: dict[str, str] = {}
        self._process: subprocess.Popen[bytes] | None = None

    @classmethod
    @contextlib.contextmanager
    def running(cls, settings: Settings, log_path: Path) -> Iterator[_ServerProcess]:
        """Start the server, wait until ready, and stop it whatever happens."""
        server = cls(settings, log_path)
        try:
            server._start()
            yield server
        finally:
            server._stop()

    def new_clinic(self, name: str) -> str:
        """The clinic called `name` (created if missing, as an operator would); its id."""
        clinic_id = self._enrolment_token(name).clinic_id
        self._clinic_names[clinic_id] = name
        return clinic_id

    def enrol(self, client: EdgeClient, clinic_id: str, *, name: str) -> None:
        """Enrol `client` into a clinic `new_clinic` made, with a fresh one-time token."""
        token = self._enrolment_token(self._clinic_names[clinic_id]).token
        client.enroll(self.url, token, name=name)

    def _enrolment_token(self, clinic: str) -> IssuedEnrolmentToken:
        from sync_server import issue_enrolment_token

        return issue_enrolment_token(self.settings, clinic=clinic, ttl=timedelta(minutes=30))

    def _start(self) -> None:
        for _attempt in range(3):
            port = _free_port()
            self._spawn(port)
            if self._wait_ready():
                return
            log = self._log_tail()
            self._kill()
            if "address already in use" not in log.lower():
                break  # not a port race: trying again would fail the same way
        raise RuntimeError(f"the sync server did not become ready; its log ends:\n{log}")

    def _spawn(self, port: int) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(_ENV_PREFIX)}
        env[_ENV_PREFIX + "DATA_DIR"] = str(self.settings.data_dir)
        env[_ENV_PREFIX + "LONG_POLL_MAX_SECONDS"] = str(self.settings.long_poll_max_seconds)
        env[_ENV_PREFIX + "LOG_LEVEL"] = self.settings.log_level
        env[_ENV_PREFIX + "NOTIFICATION_INTERVAL_SECONDS"] = str(
            self.settings.notification_interval_seconds
        )
        if self.settings.database_url:
            env[_ENV_PREFIX + "DATABASE_URL"] = self.settings.database_url
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "sync_server.serving:app_from_env",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ]
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        self.url = f"http://127.0.0.1:{port}"
        self.layout = _place(self._process.pid)

    def _wait_ready(self) -> bool:
        import httpx

        assert self._process is not None
        deadline = time.monotonic() + _SERVER_START_SECONDS
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return True
            time.sleep(0.05)
        return False

    def _log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
            return "\n".join(text.splitlines()[-lines:])
        return "(no log)"

    def _kill(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)

    def _stop(self) -> None:
        self._kill()

    def cpu_seconds(self) -> float | None:
        """The server process's CPU time so far (user + system), from /proc; None
        where there is no /proc (or the process is gone)."""
        if self._process is None:
            return None
        try:
            stat = Path(f"/proc/{self._process.pid}/stat").read_text()
        except OSError:
            return None
        fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _place(pid: int) -> dict[str, Any]:
    """Put the server on another CPU than this (pinned) process, where there is one.

    Client and server would be different machines: sharing one core would charge each
    with the other's work. Returns the layout for the figures' extras.
    """
    if not hasattr(os, "sched_setaffinity"):
        return {"client_cpus": None, "server_cpus": None, "cpu_layout": "affinity unsupported"}
    mine = sorted(os.sched_getaffinity(0))
    if len(mine) > 1:  # --no-pin: the OS spreads both
        return {
            "client_cpus": mine,
            "server_cpus": mine,
            "cpu_layout": f"not pinned: device and server share CPUs {mine}",
        }
    for cpu in sorted(set(range(os.cpu_count() or 1)) - set(mine)):
        try:
            os.sched_setaffinity(pid, {cpu})
        except OSError:
            continue  # not allowed to us (cgroup cpuset): try the next
        return {
            "client_cpus": mine,
            "server_cpus": [cpu],
            "cpu_layout": f"device on CPU {mine[0]}, server process on CPU {cpu}",
        }
    return {
        "client_cpus": mine,
        "server_cpus": mine,
        "cpu_layout": f"one CPU only: device and server share CPU {mine[0]}",
    }
