"""A tablet finds the clinic's box with mDNS across real network namespaces and syncs.

The box (`coherency edge run`, advertising) runs in one namespace, the tablets in
another, joined by a veth pair the test makes and removes (`tests/test_edge_discovery.py`).
The box and the tablets were enrolled with the live central server beforehand, on
loopback; in the namespaces there is no central at all: the clinic's LAN only.
Skipped, with the reason, where the kernel refuses namespaces.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from edge_box import EdgeBox, Relay
from tests.test_edge_discovery import Namespaces
from tests.test_edge_discovery import namespaces as namespaces  # a fixture

from .edge_world import tablet, token, until

PYTHON = sys.executable
COHERENCY = str(Path(PYTHON).with_name("coherency"))

SYNC = """
import json, sys
from edge_sdk import Argon2Params, EdgeClient, PassphraseKeyProvider
provider = PassphraseKeyProvider("pass phrase", params=Argon2Params.fast())
with EdgeClient.open(sys.argv[1], provider) as client:
    routes = client.find_edge_boxes(timeout=5.0)
    assert routes, "no pinned box found on the LAN"
    with client.edge_transport(routes[0]) as box:
        result = client.sync(transport=box, blobs=False)
    print(json.dumps({"box": routes[0].pin.box_id, "urls": list(routes[0].urls),
                      "pushed": result.pushed, "pulled": result.pulled}))
"""


def _in(ns: str, *args: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *args]


def _sync_in(ns: str, store: Path) -> dict[str, Any]:
    done = subprocess.run(
        _in(ns, PYTHON, "-c", SYNC, str(store)),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_a_tablet_finds_the_box_in_another_namespace_and_syncs_through_it(
    server: Any, tmp_path: Path, namespaces: Namespaces
) -> None:
    clinic_id = server.new_clinic()
    box = EdgeBox.init(tmp_path / "box", tmp_path / "box.key")
    box.enroll(server.url, token(server, clinic_id, kind="edge"), name="front desk")
    a = tablet(server, clinic_id, tmp_path, "ward-a")
    b = tablet(server, clinic_id, tmp_path, "ward-b")
    patient = a.patients.add(given_name="Ada", family_name="Ames", birth_date="1950-01-01").id
    with Relay(box) as relay:  # the box learns the clinic's tablets, then leaves for the LAN
        relay.sync_once()
    box_id = box.box_id
    for client in (box, a, b):
        client.close()

    env = {**os.environ, "COHERENCY_EDGE_DIR": str(tmp_path / "box")}
    env["COHERENCY_EDGE_KEY_FILE"] = str(tmp_path / "box.key")
    with open(tmp_path / "box.log", "ab") as log:
        process = subprocess.Popen(
            _in(namespaces.box, COHERENCY, "edge", "run", "--listen", "0.0.0.0:8765", "--no-relay"),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        url = f"https://{namespaces.subnet}.1:8765/v1/health"

        def serving() -> bool:
            assert process.poll() is None, (tmp_path / "box.log").read_text()
            probe = subprocess.run(
                _in(
                    namespaces.device,
                    PYTHON,
                    "-c",
                    f"import httpx; httpx.get({url!r}, verify=False)",
                ),
                capture_output=True,
                timeout=30,
                check=False,
            )
            return probe.returncode == 0

        until(serving, what="the box to serve in its namespace")
        first = _sync_in(namespaces.device, tmp_path / "ward-a")
        assert first["box"] == box_id
        assert any(u.startswith(f"https://{namespaces.subnet}.1:") for u in first["urls"])
        assert patient in first["pushed"]
        second = _sync_in(namespaces.device, tmp_path / "ward-b")
        assert patient in second["pulled"]
    finally:
        process.terminate()
        process.wait(timeout=30)
