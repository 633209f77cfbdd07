"""A client cannot hold the server with slow or oversized requests: request headers
have a deadline, each piece of a body has one, and a JSON route takes at most
`max_json_body` bytes (routes that stream bodies keep their own caps)."""

from __future__ import annotations

import http.client
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import pytest

from sync_server import Settings, ThreadedServer, create_app, migrate


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
