"""Kill -9 the edge box mid-push and mid-relay: nothing acknowledged is lost or doubled.

The box runs as its own process (`coherency edge run`), is killed with SIGKILL while a
tablet pushes to it, or while it relays its backlog to central, and is started again
on the same store. What the box acknowledged (the tablet records what the box said it
holds) must be in its store after the restart; after the next syncs every replica,
central included, holds each record once, with equal heads.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge_box import EdgeBox
from edge_sdk import EdgeClient, HttpTransport, RetryPolicy, SyncError

from .edge_world import Uplink, tablet, token, until
from .test_edge_box import central_heads

COHERENCY = str(Path(sys.executable).with_name("coherency"))
QUICK = RetryPolicy(attempts=2, base_seconds=0.05, cap_seconds=0.2, timeout_seconds=30)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class BoxProcess:
    """`coherency edge run` over a box folder, started and killed at will."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = _free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def relayed(self) -> bool:
        """True once the running box finished a round with central (it knows the
        clinic's devices)."""
        health = httpx.get(self.url + "/v1/health", verify=False, timeout=5).json()
        return bool(health["relay_rounds"])

    def start(self) -> None:
        env = {**os.environ, "COHERENCY_EDGE_DIR": str(self.folder / "box")}
        env["COHERENCY_EDGE_KEY_FILE"] = str(self.folder / "box.key")
        with open(self.folder / "box.log", "ab") as log:  # the child keeps its own copy
            self.process = subprocess.Popen(
                [COHERENCY, "edge", "run", "--listen", f"127.0.0.1:{self.port}", "--no-advertise"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

        def up() -> bool:
            try:
                return httpx.get(self.url + "/v1/health", verify=False, timeout=2).is_success
            except httpx.HTTPError:
                assert self.process is not None and self.process.poll() is None, (
                    self.folder / "box.log"
                ).read_text()
                return False

        until(up, what="the box process to serve")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def setup(server: Any, tmp_path: Path) -> Iterator[tuple[str, Uplink, BoxProcess, EdgeBox]]:
    clinic_id = server.new_clinic()
    uplink = Uplink(server.url)
    box = EdgeBox.init(tmp_path / "box", tmp_path / "box.key")
    box.enroll(uplink.url, token(server, clinic_id, kind="edge"), name="box")
    box.close()
    process = BoxProcess(tmp_path)
    try:
        yield clinic_id, uplink, process, box
    finally:
        process.stop()
        uplink.cut()


@pytest.fixture
def tablets() -> Iterator[Any]:
    """Keeps the tablets a test makes, and closes them (their connections) after it."""
    made: list[EdgeClient] = []

    def keep(client: EdgeClient) -> EdgeClient:
        made.append(client)
        return client

    yield keep
    for client in made:
        client.close()


def _transport(client: EdgeClient, process: BoxProcess) -> HttpTransport:
    pin = client.replica.edge_boxes[0]
    return HttpTransport.for_edge_box(client.replica, pin, process.url, retry=QUICK)


def _box_holds(process: BoxProcess) -> dict[str, list[bytes]]:
    """The documents the box's store holds (read with the box stopped)."""
    process.stop()
    box = EdgeBox.open(process.folder / "box", process.folder / "box.key")
    try:
        return box.replica.document_heads()
    finally:
        box.close()


def test_kill_9_mid_push_loses_nothing_the_box_acknowledged(
    server: Any, tmp_path: Path, setup: Any, tablets: Any
) -> None:
    clinic_id, uplink, process, _ = setup
    a = tablets(tablet(server, clinic_id, tmp_path, "ward-a"))
    process.start()
    until(process.relayed, what="the box's first round with central")
    uplink.cut()  # a box alone on the LAN: everything stays in its store
    with a.batch():
        ids = [
            a.patients.add(given_name="P", family_name=f"F{n}", birth_date="1950-01-01").id
            for n in range(2500)
        ]
    peer = f"edge:{a.replica.edge_boxes[0].box_id}"
    for delay in (0.4, 0.6):  # mid-request, at two points of the push
        killer = threading.Timer(delay, process.kill)
        killer.start()
        with pytest.raises(SyncError), _transport(a, process) as transport:
            a.sync(transport=transport, blobs=False)
        killer.join()
        acknowledged = a.replica.store.peer_heads(peer)
        held = _box_holds(process)
        # Everything the box answered for is in its store, exactly as acknowledged.
        assert all(held.get(doc) == sorted(h) for doc, h in acknowledged.items())
        process.start()
    with _transport(a, process) as transport:
        a.sync(transport=transport, blobs=False)
    held = _box_holds(process)
    mine = a.replica.document_heads()
    assert {d: held[d] for d in ids} == {d: mine[d] for d in ids}


def test_kill_9_mid_relay_delivers_everything_once_after_restart(
    server: Any, tmp_path: Path, setup: Any, tablets: Any
) -> None:
    clinic_id, uplink, process, _ = setup
    a = tablets(tablet(server, clinic_id, tmp_path, "ward-a"))
    process.start()
    until(process.relayed, what="the box's first round with central")
    uplink.cut()  # a box alone on the LAN: everything stays in its store
    with a.batch():
        for n in range(3000):
            a.patients.add(given_name="P", family_name=f"F{n}", birth_date="1950-01-01")
    with _transport(a, process) as transport:
        a.sync(transport=transport, blobs=False)
    uplink.restore()  # the relay starts delivering its backlog ...

    def relaying() -> bool:
        return central_heads(server, clinic_id).get("patients", 0) > 0

    until(relaying, what="the relay to start delivering")
    process.kill()  # ... and the box dies mid-relay
    delivered = central_heads(server, clinic_id).get("patients", 0)
    assert delivered < 3000, "the relay finished before the kill: nothing was tested"
    process.start()
    until(
        lambda: central_heads(server, clinic_id).get("patients", 0) == 3000,
        timeout=180,
        what="the restarted box to finish relaying",
    )
    witness = tablets(tablet(server, clinic_id, tmp_path, "witness"))
    witness.sync(blobs=False)
    mine = a.replica.document_heads()
    theirs = witness.replica.document_heads()
    assert {d: theirs.get(d) for d in mine} == mine
