"""Crash safety: a writer killed mid-stream loses nothing it acknowledged.

A child process writes in a loop and prints each record id only after the write
returned; the parent reads some of those lines and SIGKILLs it. Reopening the store
must show every acknowledged write, a consistent store, and batches whole or absent.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import crdt

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL"),
]

PASSPHRASE = "correct horse battery staple"  # the tmp_store default
REPO = Path(crdt.__file__).resolve().parents[1]

WRITER = textwrap.dedent(
    """
    import sys
    from edge_sdk import Argon2Params, EdgeClient, PassphraseKeyProvider

    store, passphrase, mode, run = sys.argv[1:5]
    client = EdgeClient.open(store, PassphraseKeyProvider(passphrase, params=Argon2Params.fast()))
    print("ready", flush=True)
    n = 0
    while True:
        n += 1
        if mode == "batches":
            ids = []
            with client.batch():
                for i in range(20):
                    ids.append(client.patients.add(
                        given_name=f"P{i}", family_name=f"Run{run}Batch{n}", birth_date="1950-03-01"
                    ).id)
            print(" ".join(["batch", f"Run{run}Batch{n}", *ids]), flush=True)
            continue
        patient = client.patients.add(
            given_name=f"P{n}", family_name="Crash", birth_date="1950-03-01"
        )
        print("add", patient.id, flush=True)
        if n % 3 == 0:
            client.patients.update(patient.id, mrn=f"MRN-{n}")
            print("mrn", patient.id, f"MRN-{n}", flush=True)
        if n % 5 == 0:
            note = client.notes.add(patient_id=patient.id, author="Dr M", text="Seen.")
            client.notes.splice(note.id, 0, 0, f"Visit {n}. ")
            print("note", note.id, f"Visit {n}. Seen.", flush=True)
    """
)


def run_writer(store: Path, mode: str, acknowledged_lines: int) -> list[list[str]]:
    """Start the writer, SIGKILL it after `acknowledged_lines` lines; every line it got out.

    Each run writes under its own tag (the kill point), so runs on one store never mix.
    """
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    with subprocess.Popen(
        [sys.executable, "-c", WRITER, str(store), PASSPHRASE, mode, str(acknowledged_lines)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as child:
        assert child.stdout is not None and child.stderr is not None
        lines: list[list[str]] = []
        first = child.stdout.readline()
        if first.strip() != "ready":
            child.kill()
            pytest.fail(f"writer did not start: {first!r} {child.stderr.read()}")
        while len(lines) < acknowledged_lines:
            line = child.stdout.readline()
            if not line:
                pytest.fail(f"writer died on its own: {child.stderr.read()}")
            lines.append(line.split())
        child.send_signal(signal.SIGKILL)
        child.wait()
        # Lines already in the pipe were printed after their write returned: acknowledged.
        lines += [line.split() for line in child.stdout.read().splitlines() if line.strip()]
        assert child.returncode == -signal.SIGKILL
    return lines


def assert_consistent(client: Any) -> None:
    store = client.replica.store
    assert store.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    for doc_id in store.document_heads():
        document = store.get_document(doc_id)
        assert document is not None
        expected = json.loads(json.dumps(document.read().model_dump(mode="json")))
        assert store.get_record(document.collection, doc_id) == expected
    assert isinstance(client.conflicts(), list)


@pytest.fixture
def crash_store(tmp_store: Any) -> Iterator[Path]:
    tmp_store("crash").close()
    yield tmp_store.path("crash")


def test_acknowledged_writes_survive_sigkill(tmp_store: Any, crash_store: Path) -> None:
    acknowledged: list[list[str]] = []
    for kill_after in (1, 17, 60, 150):
        acknowledged += run_writer(crash_store, "records", kill_after)
        with tmp_store.open(crash_store) as client:
            assert_consistent(client)
            for line in acknowledged:
                kind, record_id = line[0], line[1]
                if kind == "add":
                    assert client.patients.get(record_id).family_name == "Crash"
                elif kind == "mrn":
                    assert client.patients.get(record_id).mrn == line[2]
                else:
                    assert client.notes.get(record_id).text == " ".join(line[2:])
            # Still writable after the crash.
            client.patients.add(given_name="After", family_name="Crash", birth_date="2000-01-01")


def test_batches_are_whole_or_absent_after_sigkill(tmp_store: Any, crash_store: Path) -> None:
    acknowledged: list[list[str]] = []
    for kill_after in (1, 4, 9):
        acknowledged += run_writer(crash_store, "batches", kill_after)
        with tmp_store.open(crash_store) as client:
            assert_consistent(client)
            by_batch: dict[str, set[str]] = {}
            for patient in client.patients.list():
                by_batch.setdefault(patient.family_name, set()).add(patient.id)
            assert all(len(ids) == 20 for ids in by_batch.values()), {
                name: len(ids) for name, ids in by_batch.items()
            }
            for _, tag, *ids in acknowledged:
                assert by_batch[tag] == set(ids)
