"""`coherency device enroll`, `coherency sync` and `sync --watch` against a live server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from cli.main import cli
from sync_server.identity.enrolment import create_enrolment_token

PASSPHRASE = "a long test passphrase"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def cli_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("COHERENCY_") and name != "COHERENCY_REQUIRE_POSTGRES":
            monkeypatch.delenv(name)
    monkeypatch.setenv("COHERENCY_KDF", "fast")
    monkeypatch.setenv("COHERENCY_PASSPHRASE", PASSPHRASE)


def run(store: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--store", str(store), *args])


def ok(store: Path, *args: str) -> Any:
    result = run(store, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def token(server: Any, clinic: str) -> str:
    with server.db.write() as session:
        value, _ = create_enrolment_token(
            session=session, clinic_id=clinic, ttl=timedelta(minutes=5)
        )
    return value


def enrolled_store(tmp_path: Path, server: Any, clinic: str, name: str) -> Path:
    store = tmp_path / name
    ok(store, "init", "--clinic", clinic)
    answer = ok(store, "device", "enroll", "--server", server.url, "--token", token(server, clinic))
    assert answer["clinic_id"] == clinic and answer["server_url"] == server.url
    return store


def test_enroll_and_sync_from_the_command_line(tmp_path: Path, server: Any) -> None:
    clinic = server.new_clinic()
    a = enrolled_store(tmp_path, server, clinic, "a")
    b = enrolled_store(tmp_path, server, clinic, "b")
    patient = ok(
        a, "patients", "add", "--given", "Ada", "--family", "Okafor", "--birth-date", "1950-01-02"
    )
    pushed = ok(a, "sync")
    assert pushed["pushed"] == [patient["id"]]
    pulled = ok(b, "sync")
    assert pulled["pulled"] == [patient["id"]]
    assert ok(b, "patients", "show", patient["id"])["family_name"] == "Okafor"
    human = run(a, "sync")
    assert human.exit_code == 0
    assert "pushed 0 records" in human.stdout
    info = ok(a, "device", "info")
    assert info["server_url"] == server.url and info["clinic_id"] == clinic


def test_command_line_refusals_are_one_line(tmp_path: Path, server: Any) -> None:
    clinic = server.new_clinic()
    lonely = tmp_path / "lonely"
    ok(lonely, "init", "--clinic", clinic)
    result = run(lonely, "sync")
    assert result.exit_code == 4
    assert "not enrolled" in result.stderr and "Traceback" not in result.stderr
    spent = token(server, clinic)
    ok(tmp_path / "first", "init", "--clinic", clinic)
    ok(tmp_path / "first", "device", "enroll", "--server", server.url, "--token", spent)
    second = tmp_path / "second"
    ok(second, "init", "--clinic", clinic)
    result = run(second, "device", "enroll", "--server", server.url, "--token", spent)
    assert result.exit_code == 5
    assert len(result.stderr.strip().splitlines()) == 1
    assert "enrolment_token_invalid" in result.stderr


@pytest.mark.slow
def test_sync_watch_reports_what_arrives_until_interrupted(tmp_path: Path, server: Any) -> None:
    clinic = server.new_clinic()
    writer = enrolled_store(tmp_path, server, clinic, "writer")
    watcher = enrolled_store(tmp_path, server, clinic, "watcher")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("COHERENCY_")},
        "COHERENCY_KDF": "fast",
        "COHERENCY_PASSPHRASE": PASSPHRASE,
        "PYTHONPATH": str(ROOT),
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cli.main",
            "--store",
            str(watcher),
            "sync",
            "--watch",
            "--wait",
            "10",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        time.sleep(2)  # the watcher is long-polling
        patient = ok(
            writer,
            "patients",
            "add",
            "--given",
            "Bo",
            "--family",
            "Watch",
            "--birth-date",
            "1960-03-04",
        )
        ok(writer, "sync")
        assert process.stdout is not None
        answer = json.loads(process.stdout.readline())
        while "status" in answer:  # the status lines of the same loop
            answer = json.loads(process.stdout.readline())
        assert answer["pulled"] == [patient["id"]]
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "Traceback" not in err


@pytest.mark.slow
def test_sync_watch_interrupted_mid_long_poll_exits_at_once(tmp_path: Path, server: Any) -> None:
    """Ctrl-C while `sync --watch` waits in a 5-minute long poll ends it promptly, with
    a clean message: the poll is abandoned, not waited out."""
    clinic = server.new_clinic()
    watcher = enrolled_store(tmp_path, server, clinic, "watcher")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("COHERENCY_")},
        "COHERENCY_KDF": "fast",
        "COHERENCY_PASSPHRASE": PASSPHRASE,
        "PYTHONPATH": str(ROOT),
    }
    command = ["-m", "cli.main", "--store", str(watcher), "sync", "--watch", "--wait", "300"]
    process = subprocess.Popen(
        [sys.executable, *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert process.stderr is not None
        # The first status lines: the loop started, then its first round reached the
        # server (the round then waits in its long poll).
        for line in process.stderr:
            if line.startswith("connected to"):
                break
        time.sleep(0.5)  # well inside the long poll
    finally:
        process.send_signal(signal.SIGINT)
        try:
            _, err = process.communicate(timeout=10)  # the poll lasts 300 s
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise AssertionError("sync --watch did not stop on SIGINT") from None
    assert process.returncode == 0, err
    assert "stopped" in err and "Traceback" not in err
