"""The server deployed as operators run it (`benchmarks._deployment`, shared with the
load benchmark).

- ``coherency server run --workers 2`` on PostgreSQL: both workers answer, every log
  line names its worker, and a scrape of either worker gives the totals of both; a
  killed worker's counts stay in the totals, and the worker uvicorn starts in its
  place takes its number.
- Two ``coherency server run`` instances on one PostgreSQL database, blobs on S3
  (moto), behind Debian's nginx: devices enrol and sync through nginx, a long poll
  waiting on one instance wakes when another device pushes through the other, and when
  one instance is killed (SIGKILL) mid-sync the devices carry on through the other and
  converge.
- The nginx example in docs/server.md is a configuration nginx accepts.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge_sdk import Argon2Params, EdgeClient, PassphraseKeyProvider, RetryPolicy
from tests.conftest import add_scanned_assessment

# Server processes, nginx and moto per module.
pytestmark = pytest.mark.slow

RETRY = RetryPolicy(attempts=10, base_seconds=0.05, cap_seconds=0.5, timeout_seconds=30)


def access_lines(lines: list[str], route: str) -> list[dict[str, Any]]:
    parsed = [json.loads(line) for line in lines if line.startswith("{")]
    return [line for line in parsed if line.get("route") == route and "status" in line]


def device(root: Path, name: str, deployment: Any, clinic: str) -> EdgeClient:
    """A device enrolled through nginx into `clinic`."""
    client = EdgeClient.init(
        root / name,
        PassphraseKeyProvider("pass phrase", params=Argon2Params.fast()),
        clinic_id="unset",
    )
    client.enroll(deployment.url, deployment.enrolment_token(clinic), name=name)
    return client


# ------------------------------------------------------------ one instance, 2 workers
@pytest.fixture(scope="module")
def two_workers(
    tmp_path_factory: pytest.TempPathFactory, postgres_url: str | None, harness: Any
) -> Iterator[Any]:
    if postgres_url is None:
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    root = tmp_path_factory.mktemp("two-workers")
    with (
        harness.fresh_database(postgres_url) as database_url,
        harness.Deployment.running(
            root, database_url, instances=1, workers=2, proxy=False
        ) as running,
    ):
        yield running


def test_every_worker_scrape_gives_the_totals_of_both_workers(
    two_workers: Any, harness: Any
) -> None:
    instance = two_workers.instances[0]
    route = "/v1/patients/{patient_id}"
    sent = 0
    workers: set[int] = set()
    for _ in range(20):  # until both workers have answered (new connections spread)
        for _ in range(10):
            with httpx.Client(base_url=instance.url, timeout=10) as client:
                assert client.get(f"/v1/patients/{secrets.token_hex(8)}").status_code == 401
            sent += 1
        time.sleep(0.2)  # access lines are written just after the response
        lines = access_lines(instance.log_lines(), route)
        workers = {line["worker"] for line in lines}
        if len(workers) == 2:
            break
    assert len(workers) == 2, "one worker answered every request"
    lines = access_lines(instance.log_lines(), route)
    assert len(lines) == sent
    assert {line["worker_index"] for line in lines} == {0, 1}
    assert all(line["worker"] != instance.pid for line in lines)  # workers, not the parent

    for _ in range(12):
        with httpx.Client(base_url=instance.url, timeout=10) as client:
            text = client.get("/metrics").text
        counted = harness.metric(text, "coherency_http_requests_total", route=route, status="401")
        assert counted == sent
        assert harness.metric(text, "coherency_http_requests_in_flight") >= 1  # the scrape itself
    scrapes = access_lines(instance.log_lines(), "/metrics")
    scraped_by = {line["worker"] for line in scrapes}
    assert scraped_by <= workers


def test_a_dead_workers_counts_stay_and_its_replacement_takes_its_number(
    two_workers: Any,
) -> None:
    instance = two_workers.instances[0]
    route = "/v1/patients/{patient_id}"
    counted = "coherency_http_requests_total"
    before = two_workers.metric(0, counted, route=route, status="401")
    for _ in range(10):
        with httpx.Client(base_url=instance.url, timeout=10) as client:
            assert client.get(f"/v1/patients/{secrets.token_hex(8)}").status_code == 401
    lines = [json.loads(line) for line in instance.log_lines() if line.startswith("{")]
    slots = {line["worker"]: line["worker_index"] for line in lines if "worker_index" in line}
    assert sorted(slots.values()) == [0, 1]  # two workers, numbered
    victim = next(pid for pid, index in slots.items() if index == 1)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while True:  # uvicorn starts a worker in its place
        lines = [json.loads(line) for line in instance.log_lines() if line.startswith("{")]
        new = {line["worker"] for line in lines} - slots.keys() - {instance.pid}
        ready = [
            line for line in lines
            if line["worker"] in new and line["message"] == "Application startup complete."
        ]  # fmt: skip
        if ready:
            break
        assert time.monotonic() < deadline, "no worker replaced the dead one"
        time.sleep(0.2)
    replacement = ready[0]
    assert replacement["worker_index"] == slots[victim]  # the freed number
    # The dead worker's requests are still in the totals; its live gauges are gone.
    assert two_workers.metric(0, counted, route=route, status="401") == before + 10
    folder = instance.data_dir / "metrics"
    assert not list(folder.glob(f"gauge_live*_{victim}.db"))
    assert list(folder.glob(f"counter_{victim}.db"))


# ------------------------------------------------------- two instances behind nginx
@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, postgres_url: str | None, harness: Any
) -> Iterator[Any]:
    if postgres_url is None:
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    if reason := harness.nginx_unavailable():
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("deployment")
    with (
        harness.fresh_database(postgres_url) as database_url,
        harness.Deployment.running(
            root, database_url, instances=2, long_poll_seconds=20
        ) as running,
    ):
        yield running


def test_devices_enrol_and_sync_through_nginx_with_blobs_on_s3(
    deployment: Any, tmp_path: Path
) -> None:
    a = device(tmp_path, "a", deployment, "deploy-sync")
    b = device(tmp_path, "b", deployment, "deploy-sync")
    try:
        scanned = add_scanned_assessment(a, "Proxy")
        assert a.sync(retry=RETRY).blobs_uploaded == [scanned.sha256]
        pulled = b.sync(retry=RETRY)
        assert scanned.patient.id in pulled.pulled
        # Uploaded to S3, downloaded from it.
        assert b.blobs.read_bytes(scanned.sha256) == scanned.scan
        assert a.replica.document_heads() == b.replica.document_heads()
    finally:
        a.close()
        b.close()
    # Both instances answered some of it (nginx balanced the requests).
    for instance in deployment.instances:
        assert access_lines(instance.log_lines(), "/v1/sync/pull"), instance.index


def test_a_long_poll_on_one_instance_wakes_on_a_push_through_the_other(
    deployment: Any, tmp_path: Path, harness: Any
) -> None:
    writer = device(tmp_path, "writer", deployment, "deploy-wake")
    reader = device(tmp_path, "reader", deployment, "deploy-wake")
    woke = "coherency_long_poll_duration_seconds_count"
    push = {"route": "/v1/sync/push", "status": "200"}
    crossed = 0
    try:
        reader.sync(retry=RETRY)  # up to date: its next pull waits
        for attempt in range(6):  # nginx picks the instances; count the crossings
            before = [deployment.scrape(i) for i in (0, 1)]
            outcome: dict[str, Any] = {}

            def long_poll(outcome: dict[str, Any] = outcome) -> None:
                outcome["result"] = reader.sync(wait=15, retry=RETRY)

            waiter = threading.Thread(target=long_poll)
            waiter.start()
            waiting_on = _instance_waiting(deployment)
            patient = writer.patients.add(
                given_name="Wake", family_name=f"Up{attempt}", birth_date=date(1960, 2, 3)
            )
            writer.sync(retry=RETRY)
            waiter.join(timeout=60)
            assert outcome["result"].pulled == [patient.id]
            after = [deployment.scrape(i) for i in (0, 1)]
            pushed_to = [
                i for i in (0, 1)
                if harness.metric(after[i], "coherency_http_requests_total", **push)
                > harness.metric(before[i], "coherency_http_requests_total", **push)
            ]  # fmt: skip
            assert len(pushed_to) == 1
            # The waiting pull was woken by the change, not by its timeout.
            assert harness.metric(after[waiting_on], woke, outcome="woke") == (
                harness.metric(before[waiting_on], woke, outcome="woke") + 1
            )
            assert harness.metric(after[waiting_on], woke, outcome="timeout") == (
                harness.metric(before[waiting_on], woke, outcome="timeout")
            )
            crossed += pushed_to[0] != waiting_on
            if crossed >= 2:
                break
    finally:
        writer.close()
        reader.close()
    assert crossed >= 1, "every push went to the instance the long poll waited on"


def _instance_waiting(deployment: Any) -> int:
    """The instance with a pull waiting in a long poll (waits for there to be one)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for i in (0, 1):
            if deployment.metric(i, "coherency_sync_long_polls_waiting") >= 1:
                return i
        time.sleep(0.05)
    raise AssertionError("no long poll started")


def test_devices_carry_on_when_an_instance_is_killed_mid_sync(
    deployment: Any, tmp_path: Path
) -> None:
    # Last in this module: it kills an instance of the shared deployment.
    devices = [device(tmp_path, f"d{i}", deployment, "deploy-kill") for i in range(4)]
    written: list[set[str]] = [set() for _ in devices]
    errors: list[BaseException] = []
    syncs = threading.Semaphore(0)
    rounds = 8

    def work(i: int) -> None:
        try:
            for round_ in range(rounds):
                written[i].add(
                    devices[i]
                    .patients.add(
                        given_name=f"D{i}", family_name=f"R{round_}", birth_date=date(1970, 1, 1)
                    )
                    .id
                )
                devices[i].sync(retry=RETRY)
                syncs.release()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(devices))]
    try:
        for thread in threads:
            thread.start()
        for _ in range(6):  # a few syncs are done, the others are under way
            assert syncs.acquire(timeout=60)
        deployment.kill(1)
        for thread in threads:
            thread.join(timeout=300)
        assert not errors, errors
        assert not deployment.instances[1].alive and deployment.instances[0].alive
        for client in devices:
            client.sync(retry=RETRY)
        for client in devices:
            client.sync(retry=RETRY)
        everything = set().union(*written)
        assert len(everything) == rounds * len(devices)
        for client in devices:
            assert {p.id for p in client.patients.list()} == everything
        heads = devices[0].replica.document_heads()
        assert all(client.replica.document_heads() == heads for client in devices)
    finally:
        for client in devices:
            client.close()


def test_the_nginx_example_in_the_docs_is_valid(tmp_path: Path, harness: Any) -> None:
    if reason := harness.nginx_unavailable():
        pytest.skip(reason)
    docs = (Path(__file__).resolve().parents[2] / "docs" / "server.md").read_text()
    example = docs.split("```nginx\n", 1)[1].split("```", 1)[0]
    example = example.replace(
        "listen 443 ssl;", f"listen 127.0.0.1:{harness.free_port()};"
    )  # no cert
    temp = " ".join(
        f"{kind}_temp_path {tmp_path / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        f"pid {tmp_path}/nginx.pid;\nevents {{}}\nhttp {{\naccess_log off; {temp}\n{example}}}\n"
    )
    done = subprocess.run(
        [
            str(harness.NGINX),
            "-t",
            "-p",
            str(tmp_path),
            "-c",
            str(conf),
            "-e",
            str(tmp_path / "err.log"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
