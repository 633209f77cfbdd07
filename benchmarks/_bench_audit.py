"""Benchmark 10: the server's tamper-evident audit log (issue 14).

- ``audit.appends_per_s.{backend}``: audit events appended per second of wall time by
  8 writer threads, each event in a transaction of its own (`record_event`, sealed at
  commit: the head row locked for the transaction's last moments), on the embedded
  SQLite database and on PostgreSQL.
- ``audit.verify_s.{backend}``: `sync_server.verify_audit_log` (what ``coherency audit
  verify`` runs) over a log of 1,000,000 events (fewer at small scales: ``scale *
  100``, at most 1M) with a kept checkpoint. The log is built by `record_event` and
  sealed at commit as the server does it, 10,000 events to a transaction: not a
  million transactions.
- ``audit.overhead.push`` / ``audit.overhead.pull``: the time of the same push (a
  device pushing N new records) and pull (a fresh device pulling them) against a
  server with the audit log, divided by the time against a server where
  `record_event` writes nothing, alternating in one run (medians of the repeats). The
  "writes nothing" server exists only inside this benchmark's process: the function's
  code is swapped for a no-op while those runs last (`_audit_writes_nothing`) and put
  back afterwards. The server never ships a setting that turns auditing off. Both
  servers are the same app in this process (uvicorn in a thread, embedded SQLite).
  The devices keep their own audit chains in both runs; without the server's log
  their chain push is refused (``audit_log_busy``: nothing to seal it in), which a
  sync reports and survives, so the "without" runs still make that round trip.

Without PostgreSQL its figures are reported missing, with the reason.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from benchmarks._bench_sync import _RETRY, MissingFigure, _database, _device, _fill, check_moved
from benchmarks._common import progress
from benchmarks._harness import Figure, scratch_dir, timed

__all__ = ["NAMES", "run"]

BACKENDS = ("sqlite", "postgresql")
NAMES = (
    *(f"audit.appends_per_s.{b}" for b in BACKENDS),
    *(f"audit.verify_s.{b}" for b in BACKENDS),
    "audit.overhead.push",
    "audit.overhead.pull",
)
WRITERS = 8
VERIFY_TARGET = 30.0  # s for 1M events, issue 14
OVERHEAD_TARGET = 1.10  # with / without audit, issue 14


def verify_events(scale: int) -> int:
    """Events in the verified log: 1,000,000 at the default scale."""
    return max(1_000, min(1_000_000, scale * 100))


def appends_per_writer(scale: int) -> int:
    """Transactions per writer thread: 250 at the default scale, at least 5."""
    return max(5, min(250, scale // 40))


def run(*, scale: int, repeat: int, root: Path) -> list[Figure | MissingFigure]:
    """Measure every audit figure (the PostgreSQL ones missing without it)."""
    results: list[Figure | MissingFigure] = []
    for backend in BACKENDS:
        for measure in (_appends, _verify):  # each on a database of its own
            with _database(backend, root) as (database_url, label, unavailable):
                if unavailable is not None:
                    if measure is _appends:
                        progress(f"audit ({backend}): not measured: {unavailable}")
                        results += [
                            MissingFigure("audit", name, unavailable)
                            for name in NAMES
                            if name.endswith(f".{backend}")
                        ]
                    continue
                with scratch_dir(root, f"audit-{backend}") as work:
                    results.append(measure(work, database_url, label, backend, scale, repeat))
    with scratch_dir(root, "audit-overhead") as work:
        results += _overhead(work, scale, repeat)
    return results


# ---------------------------------------------------------------- helpers
def _settings(work: Path, database_url: str | None) -> Any:
    from sync_server import Settings, migrate

    settings = Settings(
        data_dir=work / "server", database_url=database_url, audit_checkpoint_seconds=3600.0
    )
    migrate(settings)
    return settings


@contextlib.contextmanager
def _opened(settings: Any) -> Iterator[Any]:
    """The server's database, as its app opens it (nothing is served)."""
    from sync_server import create_app

    database = create_app(settings).state.db
    try:
        yield database
    finally:
        database.dispose()


# ---------------------------------------------------------------- appends
def _appends(
    work: Path, database_url: str | None, label: str, backend: str, scale: int, repeat: int
) -> Figure:
    from sync_server import verify_audit_log

    per = appends_per_writer(scale)
    settings = _settings(work, database_url)
    samples: list[float] = []
    with _opened(settings) as database:
        for r in range(repeat):
            samples.append(WRITERS * per / _append_race(database, per))
            progress(f"audit appends ({backend}) {r + 1}/{repeat}: {samples[-1]:,.0f}/s")
        report = verify_audit_log(settings)
        if not report.ok or report.events != WRITERS * per * repeat:
            raise RuntimeError(f"audit benchmark: the appended log does not verify: {report}")
    return Figure(
        "audit",
        f"audit.appends_per_s.{backend}",
        f"audit events appended per second, {WRITERS} concurrent writers, one event "
        "per transaction (sealed at commit)",
        "events/s",
        samples,
        extra={"writers": WRITERS, "events": WRITERS * per, "database": label},
    )


def _append_race(database: Any, per: int) -> float:
    """Seconds for `WRITERS` threads, released together, to append `per` events each."""
    from sync_server import Actor, RecordsRead, record_event

    barrier = threading.Barrier(WRITERS + 1)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            barrier.wait()
            for i in range(per):
                with database.write() as session:
                    record_event(
                        session=session,
                        event=RecordsRead(
                            actor=Actor("device", f"bench-device-{n}", "device"),
                            clinic_id="bench-clinic",
                            patient_ids=(f"patient-{n}-{i}",),
                            collection="patients",
                            record_ids=(f"patient-{n}-{i}",),
                        ),
                    )
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(WRITERS)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"audit benchmark: a writer failed: {errors[0]!r}")
    return seconds


# ---------------------------------------------------------------- verify
def _verify(
    work: Path, database_url: str | None, label: str, backend: str, scale: int, repeat: int
) -> Figure:
    from sync_server import audit_checkpoint, verify_audit_log

    events = verify_events(scale)
    settings = _settings(work, database_url)
    samples: list[float] = []
    with _opened(settings) as database:
        built = timed(lambda: _build_log(database, events))
    progress(f"audit verify ({backend}): built a log of {events:,} events in {built:.1f} s")
    audit_checkpoint(settings)
    for r in range(min(repeat, 3)):
        started = time.perf_counter()
        report = verify_audit_log(settings)
        samples.append(time.perf_counter() - started)
        if not report.ok or report.events != events:
            raise RuntimeError(f"audit benchmark: the built log does not verify: {report}")
        progress(f"audit verify ({backend}) {r + 1}: {samples[-1]:.2f} s")
    return Figure(
        "audit",
        f"audit.verify_s.{backend}",
        f"coherency audit verify (verify_log) over {events:,} events and a kept checkpoint"
        + (" (1M: the issue's goal)" if events == 1_000_000 else ""),
        "s",
        samples,
        target=VERIFY_TARGET if events == 1_000_000 else None,
        target_op="<=" if events == 1_000_000 else None,
        extra={"events": events, "database": label, "build_s": round(built, 1)},
    )


def _build_log(database: Any, events: int) -> None:
    """Append `events` events as the server does (`record_event`, sealed at commit:
    seq, leaf hash, kept subtree hashes and head row), 10,000 to a transaction rather
    than one each (a million take 5 to 7 minutes here; one each would take half an
    hour and more)."""
    from sync_server import Actor, RecordsRead, record_event

    rng = random.Random(14)
    devices = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(50)]
    clinics = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(5)]
    done = 0
    while done < events:
        batch = min(10_000, events - done)
        with database.write() as session:
            for _ in range(batch):
                patient = str(uuid.UUID(int=rng.getrandbits(128)))
                record_event(
                    session=session,
                    event=RecordsRead(
                        actor=Actor("device", rng.choice(devices), "device"),
                        clinic_id=rng.choice(clinics),
                        patient_ids=(patient,),
                        purpose="treatment",
                        collection="patients",
                        record_ids=(patient,),
                    ),
                    request_id=f"req-{done:08d}",
                )
                done += 1


# ---------------------------------------------------------------- overhead
@contextlib.contextmanager
def _audit_writes_nothing() -> Iterator[None]:
    """BENCHMARK ONLY: make `record_event` a no-op in this process while the block
    runs (its code object swapped, since every caller imported the function itself),
    then put it back. Production has no such switch."""
    import sync_server

    def nothing(*, session: Any, event: Any, request_id: str | None = None) -> None:
        return None

    original = sync_server.record_event.__code__
    sync_server.record_event.__code__ = nothing.__code__
    try:
        yield
    finally:
        sync_server.record_event.__code__ = original


def _overhead(work: Path, scale: int, repeat: int) -> list[Figure]:
    from sync_server import ThreadedServer, create_app

    records = max(20, min(1_000, scale // 10))
    settings = _settings(work, None)
    push: dict[bool, list[float]] = {True: [], False: []}
    pull: dict[bool, list[float]] = {True: [], False: []}
    server = ThreadedServer(create_app(settings))
    server.start()
    try:
        for r in range(max(repeat, 3)):
            for audited in (True, False) if r % 2 == 0 else (False, True):
                switch = contextlib.nullcontext() if audited else _audit_writes_nothing()
                with switch, scratch_dir(work, "devices") as folder:
                    pushed, pulled = _push_and_pull(settings, server.url, folder, records, r)
                push[audited].append(pushed)
                pull[audited].append(pulled)
            progress(
                f"audit overhead {r + 1}: push {push[True][-1]:.3f}/{push[False][-1]:.3f} s, "
                f"pull {pull[True][-1]:.3f}/{pull[False][-1]:.3f} s (with/without)"
            )
    finally:
        server.stop()
    return [_ratio(what, times, records) for what, times in (("push", push), ("pull", pull))]


def _push_and_pull(
    settings: Any, url: str, folder: Path, records: int, r: int
) -> tuple[float, float]:
    """A device of a new clinic pushes `records` new records, then a fresh device of
    the clinic pulls them: the two times."""
    from sync_server import issue_enrolment_token

    clinic = f"bench-{uuid.uuid4().hex[:8]}"
    tokens = [
        issue_enrolment_token(settings, clinic=clinic, ttl=timedelta(minutes=30)) for _ in range(2)
    ]
    (folder / "a").mkdir()
    (folder / "b").mkdir()
    seed = _device(folder / "a", tokens[0].clinic_id)
    fresh = _device(folder / "b", tokens[0].clinic_id)
    try:
        ids = _fill(seed, records, seed=r)
        seed.enroll(url, tokens[0].token, name="seed")
        fresh.enroll(url, tokens[1].token, name="fresh")
        started = time.perf_counter()
        pushed = seed.sync(blobs=False, retry=_RETRY)
        push_s = time.perf_counter() - started
        started = time.perf_counter()
        pulled = fresh.sync(retry=_RETRY)
        pull_s = time.perf_counter() - started
    finally:
        seed.close()
        fresh.close()
    check_moved("push", moved=pushed.pushed, expected=ids, refused=[])
    check_moved("pull", moved=pulled.pulled, expected=ids, refused=[])
    return push_s, pull_s


def _ratio(what: str, times: dict[bool, list[float]], records: int) -> Figure:
    import statistics

    with_audit, without = statistics.median(times[True]), statistics.median(times[False])
    return Figure(
        "audit",
        f"audit.overhead.{what}",
        f"{what} of {records} records: median time with the audit log / median time "
        "with record_event patched to write nothing (same run, benchmark-only switch)",
        "ratio",
        [with_audit / without],
        target=OVERHEAD_TARGET,
        target_op="<=",
        extra={
            "records": records,
            "with_audit_s": times[True],
            "without_audit_s": times[False],
            "database": "SQLite (embedded), server in this process",
        },
    )
