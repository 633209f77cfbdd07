"""The app's Prometheus metrics, in a registry of its own per app (several apps in one
process never collide). `GET /metrics` exposes them.

Several workers (``coherency server run --workers N``) share their metrics through
prometheus_client's multiprocess mode: `serve` makes a private folder and names it in
``PROMETHEUS_MULTIPROC_DIR`` (`MULTIPROC_ENV`) before any worker starts; each worker
then writes its values to files there, and a scrape of any worker sums every worker's
files (`Metrics.exposition`), dead workers' counters included. Gauges of live values
(requests in flight, long polls waiting) count only the workers still alive.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

__all__ = [
    "DIRECTIONS",
    "LONG_POLL_OUTCOMES",
    "MULTIPROC_ENV",
    "OUTCOMES",
    "Metrics",
    "multiprocess_dir",
    "prepare_multiprocess_dir",
]

DIRECTIONS: Final = ("push", "pull")
OUTCOMES: Final = ("accepted", "unchanged", "rejected")
LONG_POLL_OUTCOMES: Final = ("woke", "timeout")
MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
"""The variable naming the folder where several workers' metrics meet."""
# HTTP latency buckets (seconds), up to the longest long poll.
DURATION_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
# Long-poll buckets (seconds): woken at once, within the poll, or at its end (<= 300).
LONG_POLL_BUCKETS: Final = (
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip

_LIVE_GAUGE_FILE = re.compile(r"gauge_live\w+_(\d+)\.db")


def multiprocess_dir() -> Path | None:
    """The folder this process's metrics are written to, if it runs in multiprocess mode.

    Only when ``PROMETHEUS_MULTIPROC_DIR`` was set before prometheus_client was first
    imported (as `serve` does for its workers): that is when values go to files.
    """
    folder = os.environ.get(MULTIPROC_ENV)
    if not folder or values.ValueClass is values.MutexValue:
        return None
    return Path(folder)


def prepare_multiprocess_dir(folder: Path) -> Path:
    """Make `folder` an empty, private (0700) folder for several workers' metrics.

    Whatever an earlier run left there (files of workers long gone) is removed first:
    their counters would otherwise be added to this run's.
    """
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, mode=0o700)
    folder.chmod(0o700)  # mkdir's mode is filtered by the umask
    return folder


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _mark_dead_workers(folder: Path) -> None:
    """Drop the live gauges of workers that are gone (killed, or restarted by uvicorn)."""
    for path in folder.glob("gauge_live*_*.db"):
        match = _LIVE_GAUGE_FILE.fullmatch(path.name)
        if match and not _pid_alive(int(match.group(1))):
            with contextlib.suppress(FileNotFoundError):  # another worker got there first
                multiprocess.mark_process_dead(int(match.group(1)), str(folder))  # type: ignore[no-untyped-call]


class Metrics:
    """The app's Prometheus metrics, in a registry of its own.

    Routes take it as a `sync_server.deps.MetricsDep` (it is ``app.state.metrics``)::

        metrics.count_documents("push", "accepted", 10)
        with metrics.long_poll():
            await wait_for_changes()
        metrics.observe_long_poll(seconds_waited, woke=True)

    In multiprocess mode (`multiprocess_dir`), `exposition` sums every worker's values.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.multiprocess_dir = multiprocess_dir()
        self.http_requests = Counter(
            "coherency_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.http_request_duration = Histogram(
            "coherency_http_request_duration_seconds",
            "Time to answer an HTTP request, by method and route template.",
            ["method", "route"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.http_requests_in_flight = Gauge(
            "coherency_http_requests_in_flight",
            "HTTP requests being handled now (long polls included).",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.sync_documents = Counter(
            "coherency_sync_documents",
            "Documents pushed to or pulled from the server, by outcome.",
            ["direction", "outcome"],
            registry=self.registry,
        )
        self.sync_long_polls_waiting = Gauge(
            "coherency_sync_long_polls_waiting",
            "Pulls waiting in a long poll now.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.long_poll_duration = Histogram(
            "coherency_long_poll_duration_seconds",
            "Time pulls spent waiting in a long poll, by outcome: woke (a change arrived) "
            "or timeout (the wait ended with nothing new). Long-polling pulls are left out "
            "of the HTTP latency histogram.",
            ["outcome"],
            buckets=LONG_POLL_BUCKETS,
            registry=self.registry,
        )
        for poll_outcome in LONG_POLL_OUTCOMES:
            self.long_poll_duration.labels(outcome=poll_outcome)
        for direction in DIRECTIONS:  # every series exists from the start, at 0
            for outcome in OUTCOMES:
                self.sync_documents.labels(direction=direction, outcome=outcome)

    def count_documents(self, direction: str, outcome: str, n: int = 1) -> None:
        """Count `n` documents of a push or pull with their outcome.

        Args:
            direction: ``"push"`` or ``"pull"``.
            outcome: ``"accepted"``, ``"unchanged"`` or ``"rejected"``.
            n: How many documents (0 counts nothing).

        Raises:
            ValueError: An unknown direction or outcome, or a negative `n`.
        """
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, not {direction!r}")
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, not {outcome!r}")
        if n < 0:
            raise ValueError(f"cannot count a negative number of documents ({n})")
        if n:
            self.sync_documents.labels(direction=direction, outcome=outcome).inc(n)

    @contextmanager
    def long_poll(self) -> Iterator[None]:
        """Count a pull as waiting in a long poll while the block runs."""
        self.sync_long_polls_waiting.inc()
        try:
            yield
        finally:
            self.sync_long_polls_waiting.dec()

    def observe_long_poll(self, seconds: float, *, woke: bool) -> None:
        """Record a long poll that waited `seconds` and was woken by a change or not."""
        outcome = "woke" if woke else "timeout"
        self.long_poll_duration.labels(outcome=outcome).observe(seconds)

    def exposition(self) -> bytes:
        """The metrics in Prometheus's text format: this app's, or every worker's."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        _mark_dead_workers(self.multiprocess_dir)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, str(self.multiprocess_dir))  # type: ignore[no-untyped-call]
        return generate_latest(registry)
