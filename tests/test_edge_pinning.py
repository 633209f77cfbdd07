"""A device trusts an edge box only by the certificate central pinned for it.

A real uvicorn HTTPS server on 127.0.0.1, with a certificate from the box's
`make_certificate`, serves a minimal device login and directory (a small FastAPI app:
this tests the SDK's side, not the box's server). A transport with the right pin logs
in with the device key and syncs the directory, and never touches the refresh token
the device holds from central; a server with another certificate (a rogue box) is
refused with `UntrustedEdgeBoxError` before it sees a single request; plain http is
refused; a pin whose certificate does not hash to its fingerprint is dropped.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")
fastapi = pytest.importorskip("fastapi")

from edge_box import make_certificate  # noqa: E402
from edge_sdk import (  # noqa: E402
    Argon2Params,
    DiscoveredBox,
    EdgeBoxPin,
    EdgeBoxRoute,
    EdgeClient,
    Enrollment,
    HttpTransport,
    InsecureServerError,
    PassphraseKeyProvider,
    RetryPolicy,
    SyncError,
    UntrustedEdgeBoxError,
    certificate_fingerprint,
)
from edge_sdk._edge_boxes import pins_from_answer, routes_to_pinned  # noqa: E402

CLINIC = "clinic-1"
CENTRAL_REFRESH = "central-refresh-token"


@dataclass
class Box:
    """A TLS server on loopback that logs every request it receives."""

    url: str
    pin: EdgeBoxPin
    seen: list[str] = field(default_factory=list)


def _app(seen: list[str], vouched: list[dict[str, str]] | None, refresh: str | None) -> Any:
    app = fastapi.FastAPI()

    @app.middleware("http")
    async def log(request: Any, call_next: Any) -> Any:
        seen.append(f"{request.method} {request.url.path}")
        return await call_next(request)

    @app.post("/v1/auth/device")
    async def login(body: dict[str, Any]) -> dict[str, Any]:
        expires = datetime.now(UTC) + timedelta(minutes=10)
        return {
            "access_token": f"box-token-{body['device_id']}",
            "access_token_expires_at": expires.isoformat(),
            "refresh_token": refresh,
        }

    @app.get("/v1/sync/directory")
    async def directory(request: fastapi.Request) -> dict[str, Any]:
        assert request.headers["authorization"].startswith("Bearer box-token-")
        return {"devices": []} if vouched is None else {"devices": [], "edge_boxes": vouched}

    return app


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    servers: list[tuple[Any, threading.Thread]] = []

    def start(
        box_id: str,
        *,
        vouched: list[dict[str, str]] | None = None,
        tls: bool = True,
        refresh: str | None = None,
    ) -> Box:
        certificate, key = make_certificate(box_id, hosts=["127.0.0.1"])
        folder = tmp_path / f"tls-{len(servers)}"
        folder.mkdir()
        (folder / "cert.pem").write_text(certificate)
        (folder / "key.pem").write_text(key)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        seen: list[str] = []
        config = uvicorn.Config(
            _app(seen, vouched, refresh),
            log_level="warning",
            log_config=None,
            ssl_certfile=str(folder / "cert.pem") if tls else None,
            ssl_keyfile=str(folder / "key.pem") if tls else None,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        servers.append((server, thread))
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline, "the test server did not start"
            time.sleep(0.02)
        pin = EdgeBoxPin(box_id, f"Box {box_id}", certificate_fingerprint(certificate), certificate)
        scheme = "https" if tls else "http"
        return Box(f"{scheme}://127.0.0.1:{sock.getsockname()[1]}", pin, seen)

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[EdgeClient]:
    provider = PassphraseKeyProvider("pass", params=Argon2Params.fast())
    with EdgeClient.init(tmp_path / "device", provider, clinic_id=CLINIC) as device:
        device.replica.enrol(
            Enrollment(
                server_url="https://central.invalid",
                device_id=device.device_id,
                clinic_id=CLINIC,
                organisation_id="org-1",
                server_public_key=bytes(32),
            ),
            refresh_token=CENTRAL_REFRESH,
        )
        yield device


def _refresh_token(client: EdgeClient) -> str | None:
    return client.replica.store.get_meta("sync.refresh_token")


FAST = RetryPolicy(attempts=2, base_seconds=0.01, cap_seconds=0.02, timeout_seconds=10)


def test_the_pinned_box_is_reached_with_a_box_login(serve: Any, client: EdgeClient) -> None:
    other = make_certificate("box-elsewhere")[0]
    vouched = [{"box_id": "b", "name": "", "fingerprint": certificate_fingerprint(other),
                "certificate": other}]  # fmt: skip
    box = serve("box-1", vouched=vouched)
    client.replica.set_edge_boxes([box.pin])
    with HttpTransport.for_edge_box(client.replica, box.pin, box.url, retry=FAST) as transport:
        assert transport.peer_id == "edge:box-1"
        assert transport.directory() == {}
    assert box.seen == ["POST /v1/auth/device", "GET /v1/sync/directory"]
    # Login only: central's refresh token was neither sent to the box nor replaced.
    assert _refresh_token(client) == CENTRAL_REFRESH
    # A box cannot vouch for boxes: its directory's list changed nothing.
    assert client.replica.edge_boxes == [box.pin]


def test_a_rogue_box_gets_no_request(serve: Any, client: EdgeClient) -> None:
    real = serve("box-1")
    rogue = serve("box-1")  # same box id (same TXT), another certificate
    client.replica.set_edge_boxes([real.pin])
    with (
        HttpTransport.for_edge_box(client.replica, real.pin, rogue.url, retry=FAST) as transport,
        pytest.raises(UntrustedEdgeBoxError) as refused,
    ):
        transport.directory()
    assert refused.value.box_id == "box-1"
    assert "box-1" in str(refused.value)
    assert rogue.seen == []
    assert transport.retries == 0  # a wrong certificate is not tried again
    assert _refresh_token(client) == CENTRAL_REFRESH


def test_edge_transport_tries_a_routes_urls_until_the_pinned_box(
    serve: Any, client: EdgeClient
) -> None:
    real = serve("box-1")
    rogue = serve("box-1")
    client.replica.set_edge_boxes([real.pin])
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))  # bound, never listening: connection refused
    try:
        route = EdgeBoxRoute(
            real.pin, (f"https://127.0.0.1:{dead.getsockname()[1]}", rogue.url, real.url)
        )
        with client.edge_transport(route) as transport:
            assert transport.server_url == real.url
            transport.directory()
    finally:
        dead.close()
    assert rogue.seen == []
    assert real.seen == ["POST /v1/auth/device", "GET /v1/sync/directory"]
    with pytest.raises(UntrustedEdgeBoxError):
        client.edge_transport(EdgeBoxRoute(real.pin, (rogue.url,)))
    with pytest.raises(UntrustedEdgeBoxError):
        client.edge_transport(real.url, box_id="never-pinned")
    with client.edge_transport(real.url) as transport:  # the one pinned box
        assert transport.edge_box == real.pin


def test_plain_http_to_a_box_is_refused(serve: Any, client: EdgeClient) -> None:
    box = serve("box-1")
    with pytest.raises(InsecureServerError):
        HttpTransport.for_edge_box(client.replica, box.pin, box.url.replace("https", "http"))
    assert issubclass(UntrustedEdgeBoxError, SyncError)
    assert box.seen == []


def test_a_pin_whose_certificate_does_not_match_is_dropped(client: EdgeClient) -> None:
    good, _ = make_certificate("box-1")
    other, _ = make_certificate("box-2")
    answer = [
        {"box_id": "box-1", "name": "Front desk", "fingerprint": certificate_fingerprint(good),
         "certificate": good},
        {"box_id": "box-2", "name": "Forged", "fingerprint": certificate_fingerprint(good),
         "certificate": other},
        {"box_id": "box-3", "name": "Garbled", "fingerprint": "00" * 32, "certificate": "junk"},
        {"name": "no id"},
    ]  # fmt: skip
    pins = pins_from_answer(answer)
    assert [p.box_id for p in pins] == ["box-1"]
    forged = EdgeBoxPin("box-2", "Forged", certificate_fingerprint(good), other)
    kept = client.replica.set_edge_boxes([*pins, forged])
    assert kept == pins
    assert client.replica.edge_boxes == pins
    with pytest.raises(UntrustedEdgeBoxError):
        HttpTransport.for_edge_box(client.replica, forged, "https://127.0.0.1:1")


def test_only_pinned_boxes_of_the_clinic_are_offered() -> None:
    certificate, _ = make_certificate("box-1")
    pin = EdgeBoxPin("box-1", "Front desk", certificate_fingerprint(certificate), certificate)
    fp = pin.fingerprint

    def seen(box: str, clinic: str, fingerprint: str, *addresses: str) -> DiscoveredBox:
        return DiscoveredBox(box, clinic, fingerprint, 1, addresses, 8443)

    routes = routes_to_pinned(
        [
            seen("box-1", CLINIC, fp, "10.0.0.5"),
            seen("box-1", CLINIC, "ab" * 32, "10.0.0.66"),  # a rogue: same TXT, other fp
            seen("box-1", "clinic-2", fp, "10.0.0.7"),  # another clinic's advertisement
            seen("box-1", CLINIC, fp, "192.168.1.5", "fd00::5"),  # a second interface
        ],
        [pin],
        clinic_id=CLINIC,
    )
    assert routes == [
        EdgeBoxRoute(
            pin,
            ("https://10.0.0.5:8443", "https://192.168.1.5:8443", "https://[fd00::5]:8443"),
        )
    ]


def test_central_sets_the_pins_and_an_old_central_leaves_them(
    serve: Any, client: EdgeClient
) -> None:
    good, _ = make_certificate("box-1")
    forged, _ = make_certificate("box-2")
    vouched = [
        {"box_id": "box-1", "name": "Front desk", "fingerprint": certificate_fingerprint(good),
         "certificate": good},
        {"box_id": "box-2", "name": "Forged", "fingerprint": certificate_fingerprint(good),
         "certificate": forged},
    ]  # fmt: skip
    central = serve("central", vouched=vouched, tls=False, refresh="central-2")
    old = serve("old-central", vouched=None, tls=False, refresh="central-3")
    for server in (central, old):
        client.replica.enrol(
            Enrollment(
                server_url=server.url,
                device_id=client.device_id,
                clinic_id=CLINIC,
                organisation_id="org-1",
                server_public_key=bytes(32),
            ),
            refresh_token=CENTRAL_REFRESH,
        )
        with HttpTransport(client.replica, retry=FAST) as transport:
            transport.directory()
        # Central's list, less the pin whose certificate does not match.
        assert [(p.box_id, p.name) for p in client.replica.edge_boxes] == [("box-1", "Front desk")]
