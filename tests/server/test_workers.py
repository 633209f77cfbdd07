"""Two server workers (separate processes) on one PostgreSQL database.

Nothing a request needs lives in a worker's memory: devices enrolled on one worker
sync through the other, converge, and a long poll waiting on one worker wakes when a
device pushes to the other (PostgreSQL LISTEN/NOTIFY).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from edge_sdk import Argon2Params, EdgeClient, PassphraseKeyProvider, RetryPolicy

# Two server processes on PostgreSQL per test.
pytestmark = pytest.mark.slow

FAST = RetryPolicy(attempts=6, base_seconds=0.01, cap_seconds=0.05, timeout_seconds=30)
LONG_POLLS = "coherency_long_poll_duration_seconds_count"


@pytest.fixture(scope="module")
def workers(
    tmp_path_factory: pytest.TempPathFactory, postgres_url: str | None, harness: Any
) -> Iterator[tuple[list[str], Any]]:
    """Two `coherency server run` processes on one database, reached directly (no
    proxy: each test chooses the process a device talks to)."""
    if postgres_url is None:
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    root = tmp_path_factory.mktemp("workers")
    with (
        harness.fresh_database(postgres_url) as database_url,
        harness.Deployment.running(root, database_url, instances=2, proxy=False) as deployment,
    ):
        yield [instance.url for instance in deployment.instances], deployment


def _device(root: Path, name: str, url: str, deployment: Any, clinic: str) -> EdgeClient:
    client = EdgeClient.init(
        root / name,
        PassphraseKeyProvider("pass phrase", params=Argon2Params.fast()),
        clinic_id="unset",
    )
    client.enroll(url, deployment.enrolment_token(clinic))
    return client


def _use_worker(client: EdgeClient, url: str) -> None:
    with client.replica.store.transaction():
        client.replica.store.set_meta("sync.server_url", url)


def test_devices_syncing_through_different_workers_converge(
    workers: tuple[list[str], Any], tmp_path: Path
) -> None:
    (one, two), deployment = workers
    a = _device(tmp_path, "a", one, deployment, "workers-converge")
    b = _device(tmp_path, "b", two, deployment, "workers-converge")
    try:
        ids = set()
        for round_ in range(3):
            ids.add(
                a.patients.add(
                    given_name="A", family_name=f"R{round_}", birth_date=date(1970, 1, 1)
                ).id
            )
            ids.add(
                b.patients.add(
                    given_name="B", family_name=f"R{round_}", birth_date=date(1971, 1, 1)
                ).id
            )
            # Each device alternates between the workers.
            _use_worker(a, (one, two)[round_ % 2])
            _use_worker(b, (two, one)[round_ % 2])
            a.sync(retry=FAST)
            b.sync(retry=FAST)
        a.sync(retry=FAST)
        assert {p.id for p in a.patients.list()} == ids == {p.id for p in b.patients.list()}
        assert a.replica.document_heads() == b.replica.document_heads()
    finally:
        a.close()
        b.close()


def test_a_long_poll_on_one_worker_wakes_on_a_push_to_the_other(
    workers: tuple[list[str], Any], tmp_path: Path
) -> None:
    (one, two), deployment = workers
    writer = _device(tmp_path, "writer", one, deployment, "workers-wake")
    reader = _device(tmp_path, "reader", two, deployment, "workers-wake")
    try:
        reader.sync(retry=FAST)  # up to date: the next pull has nothing to return at once
        outcome: dict[str, Any] = {}

        def long_poll() -> None:
            outcome["result"] = reader.sync(wait=15, retry=FAST)

        woke = {"outcome": "woke"}
        before = deployment.metric(1, LONG_POLLS, **woke)
        waiter = threading.Thread(target=long_poll)
        waiter.start()
        deadline = time.monotonic() + 30
        while not deployment.metric(1, "coherency_sync_long_polls_waiting"):
            assert time.monotonic() < deadline, "the reader never waited"
            time.sleep(0.05)  # until the reader waits on worker two
        patient = writer.patients.add(
            given_name="Wake", family_name="Up", birth_date=date(1960, 2, 3)
        )
        writer.sync(retry=FAST)  # pushed to worker one
        waiter.join(timeout=30)
        assert outcome["result"].pulled == [patient.id]
        # Woken by NOTIFY, not by the 15 s timeout.
        assert deployment.metric(1, LONG_POLLS, **woke) == before + 1
        assert not deployment.metric(1, LONG_POLLS, outcome="timeout")
    finally:
        writer.close()
        reader.close()
