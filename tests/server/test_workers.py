"""Two server workers (separate processes) on one PostgreSQL database.

Nothing a request needs lives in a worker's memory: devices enrolled on one worker
sync through the other, converge, and a long poll waiting on one worker wakes when a
device pushes to the other (PostgreSQL LISTEN/NOTIFY).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge_sdk import Argon2Params, EdgeClient, PassphraseKeyProvider, RetryPolicy
from sync_server import Settings, migrate
from sync_server.db import Database
from sync_server.identity.enrolment import create_enrolment_token
from sync_server.identity.tenancy import ensure_clinic

# Two server processes on PostgreSQL per test.
pytestmark = pytest.mark.slow

FAST = RetryPolicy(attempts=6, base_seconds=0.01, cap_seconds=0.05, timeout_seconds=30)
_WORKER = """
import sys, uvicorn
from sync_server import Settings, create_app
settings = Settings(data_dir=sys.argv[1], database_url=sys.argv[2], long_poll_max_seconds=20)
uvicorn.run(create_app(settings), host="127.0.0.1", port=int(sys.argv[3]), log_level="warning")
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def workers(
    tmp_path_factory: pytest.TempPathFactory, postgres_url: str | None
) -> Iterator[tuple[list[str], Settings]]:
    if postgres_url is None:
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    data_dir = tmp_path_factory.mktemp("workers")
    settings = Settings(data_dir=data_dir, database_url=postgres_url)
    migrate(settings)
    processes: list[subprocess.Popen[bytes]] = []
    urls: list[str] = []
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    try:
        for _ in range(2):
            port = _free_port()
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-c", _WORKER, str(data_dir), postgres_url, str(port)],
                    env=env,
                )
            )
            urls.append(f"http://127.0.0.1:{port}")
        for url, process in zip(urls, processes, strict=True):
            deadline = time.monotonic() + 60
            while True:
                assert process.poll() is None, "a worker died at start"
                try:
                    if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "a worker never became ready"
                time.sleep(0.1)
        yield urls, settings
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)


def _device(root: Path, name: str, url: str, settings: Settings, clinic: str) -> EdgeClient:
    client = EdgeClient.init(
        root / name,
        PassphraseKeyProvider("pass phrase", params=Argon2Params.fast()),
        clinic_id="unset",
    )
    database = Database(settings.resolved_database_url)
    try:
        with database.write() as session:
            clinic_id = ensure_clinic(session=session, name=clinic).id
            token, _ = create_enrolment_token(
                session=session, clinic_id=clinic_id, ttl=timedelta(minutes=5)
            )
    finally:
        database.dispose()
    client.enroll(url, token)
    return client


def _use_worker(client: EdgeClient, url: str) -> None:
    with client.replica.store.transaction():
        client.replica.store.set_meta("sync.server_url", url)


def test_devices_syncing_through_different_workers_converge(
    workers: tuple[list[str], Settings], tmp_path: Path
) -> None:
    (one, two), settings = workers
    a = _device(tmp_path, "a", one, settings, "workers-converge")
    b = _device(tmp_path, "b", two, settings, "workers-converge")
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
    workers: tuple[list[str], Settings], tmp_path: Path
) -> None:
    (one, two), settings = workers
    writer = _device(tmp_path, "writer", one, settings, "workers-wake")
    reader = _device(tmp_path, "reader", two, settings, "workers-wake")
    try:
        reader.sync(retry=FAST)  # up to date: the next pull has nothing to return at once
        outcome: dict[str, Any] = {}

        def long_poll() -> None:
            started = time.monotonic()
            outcome["result"] = reader.sync(wait=15, retry=FAST)
            outcome["seconds"] = time.monotonic() - started

        waiter = threading.Thread(target=long_poll)
        waiter.start()
        time.sleep(1.0)  # the reader is now waiting on worker two
        patient = writer.patients.add(
            given_name="Wake", family_name="Up", birth_date=date(1960, 2, 3)
        )
        writer.sync(retry=FAST)  # pushed to worker one
        waiter.join(timeout=30)
        assert outcome["result"].pulled == [patient.id]
        assert outcome["seconds"] < 8, outcome  # woken by NOTIFY, not by the 15 s timeout
    finally:
        writer.close()
        reader.close()
