"""A client cannot hold the server with slow or oversized requests: request headers
have a deadline, each piece of a body has one, and a JSON route takes at most
`max_json_body` bytes (routes that stream bodies keep their own caps)."""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import time
import uuid as uuid_module
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from sync_server import Settings, ThreadedServer, create_app, migrate
from sync_server.blobs.tables import Blob
from sync_server.identity.tables import Clinic, Device, Organisation


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def test_a_login_body_over_the_json_cap_is_refused_before_it_is_read(server: Any) -> None:
    huge = b'{"username": "' + b"a" * (server.settings.max_json_body + 1) + b'"}'
    with server.http() as http:
        answer = http.post(
            "/v1/auth/login", content=huge, headers={"content-type": "application/json"}
        )
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "payload_too_large"


def test_a_chunked_body_growing_past_the_cap_is_refused_as_it_streams(server: Any) -> None:
    def pieces() -> Any:
        for _ in range(200):
            yield b"a" * 4096  # 800 KiB, no Content-Length

    with server.http() as http:
        answer = http.post(
            "/v1/auth/login", content=pieces(), headers={"content-type": "application/json"}
        )
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "payload_too_large"


def test_streaming_routes_keep_their_own_caps_and_codes(server: Any) -> None:
    # A sync push far bigger than a JSON body is fine up to the message cap.
    _, token = server.device_token(server.new_clinic())
    with server.http(token) as http:
        answer = http.post(
            "/v1/sync/push",
            content=b"x" * (server.settings.max_json_body * 4),
            headers={"content-type": "application/vnd.coherency.sync"},
        )
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "malformed_message"


@pytest.fixture
def strict_server(tmp_path: Any) -> Any:
    settings = Settings(
        data_dir=tmp_path, header_timeout_seconds=0.5, body_chunk_timeout_seconds=0.5
    )
    migrate(settings)
    with ThreadedServer(create_app(settings)) as live:
        yield live


def test_a_connection_that_never_sends_its_headers_is_closed(strict_server: Any) -> None:
    with socket.create_connection(_address(strict_server.url), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and then nothing
        started = time.monotonic()
        assert sock.recv(1024) == b""  # closed by the server, no answer
        assert time.monotonic() - started < 4


def test_a_body_that_stops_arriving_gets_408(strict_server: Any) -> None:
    with socket.create_connection(_address(strict_server.url), timeout=5) as sock:
        sock.sendall(
            b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"user'
        )
        answer = b""
        while piece := sock.recv(4096):  # the answer, then the server closes
            answer += piece
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"body_timeout" in answer


def test_a_kept_alive_connection_still_works_within_the_deadlines(strict_server: Any) -> None:
    host, port = _address(strict_server.url)
    connection = http.client.HTTPConnection(host, port, timeout=5)
    try:
        for _ in range(3):  # one connection, three requests, pauses under the deadline
            connection.request("GET", "/healthz")
            answer = connection.getresponse()
            assert answer.status == 200 and answer.read() == b'{"status":"ok"}'
            time.sleep(0.2)
    finally:
        connection.close()


def test_a_download_longer_than_the_body_deadline_is_not_cut(
    strict_server: Any, tmp_path: Any
) -> None:
    """Past the request body, the server only listens for the client going away (as a
    streaming answer does for as long as it runs): that wait has no deadline."""
    app = strict_server.app
    data = os.urandom(3 * 1024 * 1024)
    sha = hashlib.sha256(data).hexdigest()
    clinic = str(uuid_module.uuid4())
    with app.state.db.write() as session:
        organisation = str(uuid_module.uuid4())
        session.add(Organisation(id=organisation, name=f"org-{organisation[:8]}"))
        session.flush()
        session.add(Clinic(id=clinic, organisation_id=organisation, name=f"c-{clinic[:8]}"))
        session.flush()
        device = str(uuid_module.uuid4())
        session.add(Device(id=device, clinic_id=clinic, public_key=b"k" * 32))
        session.add(Blob(clinic_id=clinic, sha256=sha, size=len(data)))
    backend = app.state.blobs
    upload = uuid_module.uuid4().hex
    handle = backend.start(upload)
    backend.write_part(upload, handle, 1, 0, data)
    backend.complete(upload, handle, [None], clinic, sha, len(data))
    token, _ = app.state.signing_key.issue_access_token(
        subject=device,
        kind="device",
        clinic_id=clinic,
        organisation_id=organisation,
        role="device",
        ttl=timedelta(minutes=5),
    )
    received = 0
    with (
        httpx.Client(base_url=strict_server.url, timeout=30) as http,
        http.stream(
            "GET", f"/v1/blobs/{sha}", headers={"authorization": f"Bearer {token}"}
        ) as answer,
    ):
        assert answer.status_code == 200
        for piece in answer.iter_bytes(64 * 1024):
            received += len(piece)
            time.sleep(0.02)  # a slow reader: about 1 s in all, twice the deadline
    assert received == len(data)
