"""The app's Prometheus metrics, in a registry of its own per app (several apps in one
process never collide). `GET /metrics` exposes them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["DIRECTIONS", "OUTCOMES", "Metrics"]

DIRECTIONS: Final = ("push", "pull")
OUTCOMES: Final = ("accepted", "unchanged", "rejected")
# HTTP latency buckets (seconds), up to the longest long poll.
DURATION_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip


class Metrics:
    """The app's Prometheus metrics, in a registry of its own.

    Routes take it as a `sync_server.deps.MetricsDep` (it is ``app.state.metrics``)::

        metrics.count_documents("push", "accepted", 10)
        with metrics.long_poll():
            await wait_for_changes()
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
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
        )
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
