"""Load: many simulated devices against two server instances behind nginx.

`devices` simulated devices (200 in a full run) of 10 clinics enrol through nginx into
a deployment of two ``coherency server run`` instances on one PostgreSQL database,
blobs on S3 (moto), as `benchmarks._deployment` starts it. Then, for `seconds`, each
device in a thread of its own loops: write a record, sync (push, then pull), then a
long-polling sync (woken by its clinic's other devices, else it times out after a few
seconds). At the end every device syncs twice more and must hold every record its
clinic wrote.

Figures (measured once; ``--repeat`` does not apply):

- ``load.requests_per_s``: HTTP requests answered per second over the run (every
  device's requests through nginx, retries included);
- ``load.push_p50_ms`` / ``load.push_p99_ms`` and ``load.pull_p50_ms`` /
  ``load.pull_p99_ms``: latency of one push request and of one pull request that did
  not long-poll, as the device sees it (through nginx);
- ``load.errors_5xx`` (target 0) and ``load.errors_other`` (4xx answers, connection
  failures, syncs that gave up);
- ``load.rss_peak_mb``: the peak resident memory of the biggest instance (each
  instance's peak is in the figure's extras);
- ``load.converged``: 1 when every device was checked and holds exactly its clinic's
  records (same records, same document heads as its clinic), else 0.

Devices are cheap: fast Argon2 costs, one thread each, the stores' own small caches.
Everything listens on loopback. Without PostgreSQL or nginx every figure is reported
missing, with the reason.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from benchmarks import _data
from benchmarks._bench_sync import MissingFigure, _database, percentile
from benchmarks._common import new_client, progress
from benchmarks._deployment import Deployment, nginx_unavailable
from benchmarks._harness import Figure
from edge_sdk import EdgeClient, HttpTransport, RetryPolicy

__all__ = ["CLINICS", "NAMES", "load_size", "run"]

CLINICS = 10
FULL_DEVICES = 200
FULL_SECONDS = 180.0
LONG_POLL_SECONDS = 5.0  # the longest wait a device asks for in its long polls
SAMPLE_SECONDS = 0.25  # how often the instances' memory is read
RETRY = RetryPolicy(attempts=8, base_seconds=0.1, cap_seconds=2.0, timeout_seconds=60)
NAMES = [
    "load.requests_per_s",
    "load.push_p50_ms",
    "load.push_p99_ms",
    "load.pull_p50_ms",
    "load.pull_p99_ms",
    "load.errors_5xx",
    "load.errors_other",
    "load.rss_peak_mb",
    "load.converged",
]


def load_size(scale: int, devices: int | None, seconds: float | None) -> tuple[int, float]:
    """(devices, seconds): 200 devices for 3 minutes at the default scale (10,000),
    at least 20 devices for 10 seconds in small runs; either may be given instead."""
    if devices is None:
        devices = min(FULL_DEVICES, max(2 * CLINICS, scale // 50))
    if seconds is None:
        seconds = min(FULL_SECONDS, max(10.0, FULL_SECONDS * scale / 10_000))
    if devices < 1 or seconds <= 0:
        raise ValueError("the load run needs at least one device and a positive duration")
    return devices, seconds


def run(
    *,
    scale: int,
    repeat: int,
    root: Path,
    devices: int | None = None,
    seconds: float | None = None,
) -> list[Figure | MissingFigure]:
    """The load figures, or why they are missing (no PostgreSQL, no nginx)."""
    del repeat  # one long run, measured once
    count, duration = load_size(scale, devices, seconds)
    if reason := nginx_unavailable():
        return [MissingFigure("load", name, reason) for name in NAMES]
    with _database("postgresql", root) as (url, label, unavailable):
        if unavailable is not None or url is None:
            reason = unavailable or "PostgreSQL unavailable"
            return [MissingFigure("load", name, reason) for name in NAMES]
        folder = root / "load"
        with Deployment.running(
            folder / "deployment",
            url,
            instances=2,
            long_poll_seconds=LONG_POLL_SECONDS,
            cpus=every_cpu(),
        ) as deployment:
            progress(
                f"load: 2 instances behind nginx at {deployment.url} on {label}; "
                f"{count} devices of {CLINICS} clinics for {duration:.0f} s"
            )
            return _measure(deployment, folder / "devices", count, duration, label)


# ------------------------------------------------------------------ the devices
@dataclass
class Tally:
    """What every device's requests came to (shared, under a lock)."""

    push_s: list[float] = field(default_factory=list)
    pull_s: list[float] = field(default_factory=list)
    requests: int = 0
    errors_5xx: int = 0
    errors_4xx: int = 0
    connection_errors: int = 0
    failed_syncs: int = 0
    syncs: int = 0
    counting: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def request(self, path: str, seconds: float, status: int | None, long_poll: bool) -> None:
        with self.lock:
            if not self.counting:
                return
            if status is None:
                self.connection_errors += 1
                return
            self.requests += 1
            if status >= 500:
                self.errors_5xx += 1
            elif status >= 400:
                self.errors_4xx += 1
            elif path.endswith("/v1/sync/push"):
                self.push_s.append(seconds)
            elif path.endswith("/v1/sync/pull") and not long_poll:
                self.pull_s.append(seconds)


class TimedTransport(httpx.BaseTransport):
    """An httpx transport that tells a `Tally` each request's path, time and status."""

    def __init__(self, tally: Tally) -> None:
        self._inner = httpx.HTTPTransport()
        self._tally = tally

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        started = time.perf_counter()
        long_poll = float(request.url.params.get("wait", "0") or 0) > 0
        try:
            response = self._inner.handle_request(request)
        except httpx.TransportError:
            self._tally.request(request.url.path, time.perf_counter() - started, None, long_poll)
            raise
        # The time to the response's headers: the body of a long page still streams.
        elapsed = time.perf_counter() - started
        self._tally.request(request.url.path, elapsed, response.status_code, long_poll)
        return response

    def close(self) -> None:
        self._inner.close()


@dataclass
class Device:
    client: EdgeClient
    clinic: int
    transport: HttpTransport
    written: set[str] = field(default_factory=set)


def _clinic_name(clinic: int) -> str:
    return f"load-clinic-{clinic}"


def _enrol(deployment: Deployment, folder: Path, index: int, tally: Tally) -> Device:
    clinic = index % CLINICS
    client = new_client(folder / f"device-{index}")
    client.enroll(deployment.url, deployment.enrolment_token(_clinic_name(clinic)))
    transport = HttpTransport(client.replica, retry=RETRY, transport=TimedTransport(tally))
    return Device(client, clinic, transport)


def _live(device: Device, tally: Tally, stop: threading.Event, seed: int) -> None:
    """One device until `stop`: write, sync, long-poll; again."""
    rng = random.Random(seed)
    while not stop.is_set():
        try:
            device.written.add(device.client.patients.add(**_data.patient_values(rng)).id)
            device.client.sync(retry=RETRY, transport=device.transport)
            if stop.is_set():
                break
            wait = rng.uniform(1.0, LONG_POLL_SECONDS)
            device.client.sync(wait=wait, retry=RETRY, transport=device.transport)
        except Exception:  # a sync that gave up: counted; the device carries on
            with tally.lock:
                if tally.counting:
                    tally.failed_syncs += 1
            stop.wait(1.0)
        else:
            with tally.lock:
                tally.syncs += 2


class _MemorySampler(threading.Thread):
    """Reads every instance's resident memory every `SAMPLE_SECONDS`; keeps the peaks."""

    def __init__(self, deployment: Deployment) -> None:
        super().__init__(name="load-rss-sampler", daemon=True)
        self.deployment = deployment
        self.peaks_mb = [0.0 for _ in deployment.instances]
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            for i, instance in enumerate(self.deployment.instances):
                self.peaks_mb[i] = max(self.peaks_mb[i], instance.rss_mb())
            self._halt.wait(SAMPLE_SECONDS)

    def stop(self) -> list[float]:
        self._halt.set()
        self.join()
        return self.peaks_mb


def _measure(
    deployment: Deployment, folder: Path, count: int, duration: float, label: str
) -> list[Figure | MissingFigure]:
    folder.mkdir(parents=True, exist_ok=True)
    tally = Tally()
    sampler = _MemorySampler(deployment)
    sampler.start()
    started = time.perf_counter()
    for clinic in range(CLINICS):  # made one at a time: two tools making one race
        deployment.enrolment_token(_clinic_name(clinic))
    with ThreadPoolExecutor(max_workers=8) as pool:
        devices = list(pool.map(lambda i: _enrol(deployment, folder, i, tally), range(count)))
    enrol_s = time.perf_counter() - started
    progress(f"load: {count} devices enrolled in {enrol_s:.1f} s")
    try:
        stop = threading.Event()
        threads = [
            threading.Thread(target=_live, args=(d, tally, stop, i), name=f"device-{i}")
            for i, d in enumerate(devices)
        ]
        with tally.lock:
            tally.counting = True
        began = time.perf_counter()
        for thread in threads:
            thread.start()
        stop.wait(duration)
        stop.set()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - began
        with tally.lock:
            tally.counting = False
        progress(f"load: {tally.requests} requests in {elapsed:.1f} s; checking convergence")
        converged, diverged = _converge(devices)
    finally:
        peaks = sampler.stop()
        for device in devices:
            device.transport.close()
            device.client.close()
    extra = {
        "devices": count,
        "clinics": CLINICS,
        "instances": 2,
        "seconds": round(elapsed, 1),
        "planned_seconds": duration,
        "database": label,
        "requests": tally.requests,
        "syncs": tally.syncs,
        "enrol_s": round(enrol_s, 1),
        **_server_side(deployment),
    }
    return _figures(tally, elapsed, peaks, converged, diverged, extra)


def _server_side(deployment: Deployment) -> dict[str, float]:
    """Push and pull (not long-polling) p50/p99 as the instances timed them (their
    access lines): the rest of a device's latency is nginx, the network and the
    device's own process."""
    timings: dict[str, list[float]] = {"push": [], "pull": []}
    for instance in deployment.instances:
        for line in instance.log_lines():
            if '"sync_server.access"' not in line:
                continue
            entry = json.loads(line)
            what = {"/v1/sync/push": "push", "/v1/sync/pull": "pull"}.get(entry.get("route"))
            if what is not None and entry.get("status") == 200 and not entry.get("long_poll"):
                timings[what].append(float(entry["duration_ms"]))
    out: dict[str, float] = {}
    for what, values in timings.items():
        if values:
            out[f"server_{what}_p50_ms"] = round(percentile(values, 0.50), 1)
            out[f"server_{what}_p99_ms"] = round(percentile(values, 0.99), 1)
    return out


def _converge(devices: Sequence[Device]) -> tuple[bool, int]:
    """Two more syncs each (everyone's last writes out, then in); then check that
    every device holds exactly its clinic's records, with its clinic's heads.
    Returns (converged, devices that did not)."""
    for _ in range(2):
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda d: d.client.sync(retry=RETRY, transport=d.transport), devices))
    diverged = 0
    for clinic in range(CLINICS):
        members = [d for d in devices if d.clinic == clinic]
        if not members:
            continue
        expected = set().union(*(d.written for d in members))
        heads = members[0].client.replica.document_heads()
        for device in members:
            ids = {p.id for p in device.client.patients.list()}
            if ids != expected or device.client.replica.document_heads() != heads:
                diverged += 1
    return diverged == 0, diverged


def _figures(
    tally: Tally,
    elapsed: float,
    peaks: list[float],
    converged: bool,
    diverged: int,
    extra: dict[str, Any],
) -> list[Figure | MissingFigure]:
    count = extra["devices"]

    def figure(name: str, description: str, unit: str, value: float, **more: Any) -> Figure:
        return Figure("load", name, description, unit, [value], extra={**extra, **more})

    def ms(values: list[float], q: float) -> float:
        return percentile(values, q) * 1000 if values else 0.0

    return [
        figure(
            "load.requests_per_s",
            f"HTTP requests per second, {count} devices, 2 instances behind nginx",
            "req/s",
            tally.requests / elapsed,
        ),
        figure(
            "load.push_p50_ms",
            "push request latency p50",
            "ms",
            ms(tally.push_s, 0.50),
            pushes=len(tally.push_s),
        ),
        figure(
            "load.push_p99_ms",
            "push request latency p99",
            "ms",
            ms(tally.push_s, 0.99),
            pushes=len(tally.push_s),
        ),
        figure(
            "load.pull_p50_ms",
            "pull request latency p50 (not long-polling)",
            "ms",
            ms(tally.pull_s, 0.50),
            pulls=len(tally.pull_s),
        ),
        figure(
            "load.pull_p99_ms",
            "pull request latency p99 (not long-polling)",
            "ms",
            ms(tally.pull_s, 0.99),
            pulls=len(tally.pull_s),
        ),
        Figure(
            "load",
            "load.errors_5xx",
            "5xx answers",
            "count",
            [float(tally.errors_5xx)],
            target=0,
            target_op="<=",
            extra=extra,
        ),
        figure(
            "load.errors_other",
            "4xx answers, connection failures and syncs that gave up",
            "count",
            float(tally.errors_4xx + tally.connection_errors + tally.failed_syncs),
            answers_4xx=tally.errors_4xx,
            connection_errors=tally.connection_errors,
            failed_syncs=tally.failed_syncs,
        ),
        figure(
            "load.rss_peak_mb",
            "peak resident memory of the biggest instance",
            "MB",
            max(peaks),
            per_instance_mb=[round(p, 1) for p in peaks],
        ),
        Figure(
            "load",
            "load.converged",
            "every device holds its clinic's records (1 = yes)",
            "bool",
            [1.0 if converged else 0.0],
            target=1,
            target_op=">=",
            extra={**extra, "diverged_devices": diverged},
        ),
    ]


def every_cpu() -> set[int] | None:
    """Every CPU of the machine: the runner pins this process (the devices) to one, and
    children would inherit it; the servers get them all, as separate machines would."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    return set(range(os.cpu_count() or 1))
