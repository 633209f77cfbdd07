"""Benchmark: notifications (issue 21's figures), one function per figure family.

- ``notifications.inapp.p50_ms`` / ``notifications.inapp.p99_ms`` (`_inapp_latency`):
  from `notify` committed (a booking-decided event for one patient, in-app and push) to
  the in-app notice readable on a device: the real server (uvicorn, a child process, on
  SQLite) runs its own notification worker every ``INTERVAL_SECONDS`` (the
  ``notification_interval_seconds`` setting; the default is 5 s, which alone would add
  2.5 s on average), its in-app channel writes the `crdt.Notice` and wakes the
  clinic's long polls, and the device keeps a long poll open with the SDK's background
  sync (`EdgeClient.start_sync`). The clock stops when the device's store commits
  the notice (a commit listener), i.e. when `client.notices.inbox` returns it. N
  events (``--scale`` / 20, between 20 and 200), one at a time.

`run` calls each figure function in turn and returns what they measured; a figure
function takes the run's options and returns its `Figure` objects.
"""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks._bench_sync import _device, _ServerProcess, percentile
from benchmarks._common import progress
from benchmarks._harness import Figure, scratch_dir

__all__ = ["INTERVAL_SECONDS", "run"]

INTERVAL_SECONDS = 0.05
"""The server's notification worker interval in this benchmark."""
_SEEN_TIMEOUT_SECONDS = 30.0
_LONG_POLL_SECONDS = 25.0


def _events(scale: int) -> int:
    return min(200, max(20, scale // 20))


def _inapp_latency(*, scale: int, repeat: int, root: Path) -> list[Figure]:
    """p50 and p99 from `notify` committed to the notice on a long-polling device."""
    from sync_server import Settings, migrate, notify_event

    n = _events(scale)
    p50s: list[float] = []
    p99s: list[float] = []
    with scratch_dir(root, "notifications") as work:
        settings = Settings(
            data_dir=work / "server",
            long_poll_max_seconds=_LONG_POLL_SECONDS + 5,
            notification_interval_seconds=INTERVAL_SECONDS,
            log_level="WARNING",
        )
        migrate(settings)
        with _ServerProcess.running(settings, work / "server.log") as server:
            clinic = server.new_clinic("notifications")
            device = _device(work / "device", clinic)
            try:
                server.enrol(device, clinic, name="patient phone")
                patient = device.patients.add(
                    given_name="Ada", family_name="Okafor", birth_date="1950-03-01"
                ).id
                device.sync(blobs=False)
                arrived: list[tuple[float, str]] = []
                changed = threading.Condition()

                def committed(written: Any) -> None:  # a `Written`
                    now = time.perf_counter()
                    ids = written.ids.get("notices", ())
                    with changed:
                        arrived.extend((now, record_id) for record_id in sorted(ids))
                        changed.notify_all()

                listener = device.replica.store.add_commit_listener(committed)
                loop = device.start_sync(wait=_LONG_POLL_SECONDS, blobs=False)
                try:
                    time.sleep(0.5)  # the first long poll is open
                    for r in range(repeat):
                        latencies: list[float] = []
                        for k in range(n):
                            event = notify_event(
                                settings,
                                clinic_id=clinic,
                                kind="booking.decided",
                                dedupe_key=f"bench:{uuid.uuid4()}",
                                recipients={f"patient:{patient}": ("in_app", "push")},
                                detail={"booking_id": f"b-{r}-{k}"},
                            )
                            start = time.perf_counter()  # the event is committed
                            at, record_id = _wait(changed, arrived)
                            latencies.append(at - start)
                            notice = device.notices.get(record_id)
                            newest = device.notices.inbox(f"patient:{patient}", limit=1)
                            if notice.event_id != event or newest[0].notice.id != record_id:
                                raise RuntimeError(f"notice {record_id} is not event {event}'s")
                        p50s.append(statistics.median(latencies) * 1000)
                        p99s.append(percentile(latencies, 0.99) * 1000)
                        progress(
                            f"notifications: repeat {r + 1}/{repeat}: {n} events, in-app "
                            f"p50 {p50s[-1]:.0f} ms, p99 {p99s[-1]:.0f} ms"
                        )
                finally:
                    loop.stop()
                    listener.cancel()
            finally:
                device.close()
    extra = {
        "events": n,
        "backend": "sqlite",
        "notification_interval_seconds": INTERVAL_SECONDS,
        "transport": "HTTP on loopback, background sync with a long poll",
    }
    described = (
        f"notify committed to the in-app notice in a long-polling device's store, server "
        f"on SQLite, worker every {INTERVAL_SECONDS * 1000:.0f} ms, {n} events"
    )
    return [
        Figure("notifications", "notifications.inapp.p50_ms", described, "ms", p50s, None, None,
               extra),
        Figure("notifications", "notifications.inapp.p99_ms", described, "ms", p99s, None, None,
               extra),
    ]  # fmt: skip


def _wait(changed: threading.Condition, arrived: list[tuple[float, str]]) -> tuple[float, str]:
    """The next notice the device stored (one event is in flight at a time)."""
    deadline = time.monotonic() + _SEEN_TIMEOUT_SECONDS
    with changed:
        while not arrived:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(
                    "notifications benchmark: a notice did not reach the device "
                    f"within {_SEEN_TIMEOUT_SECONDS:.0f} s"
                )
            changed.wait(remaining)
        return arrived.pop(0)


# Each figure function of this benchmark, in the order they run.
FIGURES: list[Callable[..., list[Figure]]] = [_inapp_latency]


def run(*, scale: int, repeat: int, root: Path) -> list[Figure]:
    """Run every figure function of the notifications benchmark."""
    figures: list[Figure] = []
    for measure in FIGURES:
        figures += measure(scale=scale, repeat=repeat, root=root)
    return figures
