"""Finding a clinic edge box with mDNS across real network namespaces.

The test joins two namespaces with a veth pair (made and removed here), runs the box's
`Advertiser` in one and `discover_edge_boxes` in the other, each in its own process
(`ip netns exec`), and checks what was found: the box's id, clinic, fingerprint and
an address in the box's subnet; a second address added while advertising shows up in
a later browse. Skipped, with the reason, where the kernel refuses namespaces (not
root, no `ip`, a container without CAP_SYS_ADMIN).

`find_edge_boxes` keeps only boxes whose advertised fingerprint central pinned: a
rogue advertising the same clinic and box id with another fingerprint is seen by the
browse and not offered (the filter alone is tests/test_edge_pinning.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_box import make_certificate
from edge_sdk import certificate_fingerprint

pytest.importorskip("zeroconf")

PYTHON = sys.executable
CLINIC = "clinic-1"


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=False)


def _must(*args: str) -> None:
    done = _ip(*args)
    assert done.returncode == 0, f"ip {' '.join(args)}: {done.stderr}"


class Namespaces:
    """Two namespaces, ``box`` (10.77.x.1/24 on its veth) and ``device`` (.2)."""

    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.box, self.device = f"cohbox{tag}", f"cohdev{tag}"
        self.box_if, self.device_if = f"vb{tag}", f"vd{tag}"
        self.subnet = f"10.77.{int(tag[:2], 16) % 250}"

    def make(self) -> None:
        for ns in (self.box, self.device):
            _must("netns", "add", ns)
        _must("link", "add", self.box_if, "type", "veth", "peer", "name", self.device_if)
        for ns, dev, host in ((self.box, self.box_if, 1), (self.device, self.device_if, 2)):
            _must("link", "set", dev, "netns", ns)
            _must("-n", ns, "addr", "add", f"{self.subnet}.{host}/24", "dev", dev)
            _must("-n", ns, "link", "set", dev, "up", "multicast", "on")
            _must("-n", ns, "link", "set", "lo", "up")
            # No default route in a fresh namespace: say where multicast goes.
            _must("-n", ns, "route", "add", "224.0.0.0/4", "dev", dev)

    def remove(self) -> None:
        for ns in (self.box, self.device):
            _ip("netns", "delete", ns)


def _refusal() -> str | None:
    """Why this machine cannot make namespaces, or None if it can."""
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2)"
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"cohprobe{secrets.token_hex(3)}"
    done = _ip("netns", "add", probe)
    _ip("netns", "delete", probe)
    if done.returncode != 0:
        return f"the kernel refused a network namespace: {done.stderr.strip()}"
    return None


@pytest.fixture
def namespaces() -> Iterator[Namespaces]:
    reason = _refusal()
    if reason:
        pytest.skip(reason)
    spaces = Namespaces()
    try:
        spaces.make()
        yield spaces
    finally:
        spaces.remove()


ADVERTISE = """
import sys, time
from edge_box import Advertiser
with Advertiser(port=8443, clinic_id=sys.argv[1], box_id=sys.argv[2], fingerprint=sys.argv[3],
                poll_seconds=0.5) as advertiser:
    print("advertising", advertiser.addresses, flush=True)
    sys.stdin.read()  # until the test closes stdin
"""

BROWSE = """
import json, sys
from edge_sdk import discover_edge_boxes
found = discover_edge_boxes(timeout=float(sys.argv[1]))
print(json.dumps([{"box_id": b.box_id, "clinic_id": b.clinic_id, "fingerprint": b.fingerprint,
                   "protocol": b.protocol, "addresses": list(b.addresses), "port": b.port,
                   "urls": list(b.urls)} for b in found]))
"""


def _in(ns: str, *args: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *args]


def browse(spaces: Namespaces, timeout: float = 3.0) -> list[dict[str, object]]:
    done = subprocess.run(
        _in(spaces.device, PYTHON, "-c", BROWSE, str(timeout)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def browse_until(spaces: Namespaces, predicate: object, *, deadline: float = 30.0) -> list:
    """Browse again until `predicate(found)` holds or the deadline passes."""
    end = time.monotonic() + deadline
    found: list = []
    while time.monotonic() < end:
        found = browse(spaces)
        if predicate(found):  # type: ignore[operator]
            return found
    return found


@contextlib.contextmanager
def advertising(ns: str, box_id: str, fingerprint: str) -> Iterator[None]:
    """An `Advertiser` running in namespace `ns` until the block ends."""
    process = subprocess.Popen(
        _in(ns, PYTHON, "-c", ADVERTISE, CLINIC, box_id, fingerprint),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("advertising"), process.stderr.read() if process.stderr else ""
        yield
    finally:
        if process.stdin:
            process.stdin.close()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream:
                stream.close()


@pytest.fixture
def advertiser(namespaces: Namespaces) -> Iterator[tuple[Namespaces, str]]:
    certificate, _ = make_certificate("box-a")
    fingerprint = certificate_fingerprint(certificate)
    with advertising(namespaces.box, "box-a", fingerprint):
        yield namespaces, fingerprint


def test_a_device_finds_a_box_in_another_namespace(advertiser: tuple[Namespaces, str]) -> None:
    spaces, fingerprint = advertiser
    found = browse_until(spaces, lambda f: any(b["box_id"] == "box-a" for b in f))
    [box] = [b for b in found if b["box_id"] == "box-a"]
    assert box["clinic_id"] == CLINIC
    assert box["fingerprint"] == fingerprint
    assert box["protocol"] == 1
    assert box["port"] == 8443
    assert f"{spaces.subnet}.1" in box["addresses"]
    assert f"https://{spaces.subnet}.1:8443" in box["urls"]


def test_an_address_added_while_advertising_shows_up(advertiser: tuple[Namespaces, str]) -> None:
    spaces, _ = advertiser
    first = browse_until(spaces, lambda f: any(b["box_id"] == "box-a" for b in f))
    assert any(b["box_id"] == "box-a" for b in first)
    second = f"{spaces.subnet}.9"
    _must("-n", spaces.box, "addr", "add", f"{second}/24", "dev", spaces.box_if)
    found = browse_until(
        spaces, lambda f: any(second in b["addresses"] for b in f if b["box_id"] == "box-a")
    )
    [box] = [b for b in found if b["box_id"] == "box-a"]
    assert second in box["addresses"]
    assert f"{spaces.subnet}.1" in box["addresses"]


FIND = """
import json, sys
from edge_sdk import Argon2Params, EdgeClient, EdgeBoxPin, PassphraseKeyProvider
from edge_sdk import discover_edge_boxes
provider = PassphraseKeyProvider("pass", params=Argon2Params.fast())
with EdgeClient.init(sys.argv[1], provider, clinic_id=sys.argv[2]) as client:
    client.replica.set_edge_boxes([EdgeBoxPin(**json.loads(sys.argv[3]))])
    seen = sorted({b.fingerprint for b in discover_edge_boxes(timeout=3.0)})
    routes = client.find_edge_boxes(timeout=3.0)
    print(json.dumps({"seen": seen, "routes": [[r.pin.box_id, r.pin.fingerprint, list(r.urls)]
                                               for r in routes]}))
"""


def test_find_edge_boxes_offers_only_the_pinned_box(
    advertiser: tuple[Namespaces, str], tmp_path: Path
) -> None:
    spaces, _ = advertiser
    # The real box's certificate, as central pinned it, is only in this test: make a
    # second box whose fingerprint is pinned, and let box-a play the unpinned one.
    certificate, _ = make_certificate("box-p")
    pinned = certificate_fingerprint(certificate)
    pin = {"box_id": "box-p", "name": "Front desk", "fingerprint": pinned,
           "certificate": certificate}  # fmt: skip
    with advertising(spaces.box, "box-p", pinned):
        end = time.monotonic() + 30
        answer: dict = {}
        while time.monotonic() < end:
            done = subprocess.run(
                _in(spaces.device, PYTHON, "-c", FIND, str(tmp_path / "dev"), CLINIC,
                    json.dumps(pin)),
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            shutil.rmtree(tmp_path / "dev", ignore_errors=True)
            answer = json.loads(done.stdout)
            if len(answer["seen"]) == 2 and answer["routes"]:
                break
    # Both advertisements reached the device; only the pinned one is offered.
    assert len(answer["seen"]) == 2
    assert answer["routes"] == [["box-p", pinned, [f"https://{spaces.subnet}.1:8443"]]]
