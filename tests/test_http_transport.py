"""The HTTP transport's auth flow and retry wrapper, against an `httpx.MockTransport`.

What a real server does is tested in tests/server/test_sync_client.py; here the
server is a function, so the exact requests (how often a refresh token is sent, a
nonce per login attempt, the body of a cut answer read again) can be checked.
"""

from __future__ import annotations

import base64
import json
import re
import ssl
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from crdt import SyncMessage, encode_message, enrolment_message
from edge_sdk import (
    AuthenticationError,
    DeviceRevokedError,
    EdgeClient,
    Enrollment,
    HttpTransport,
    InsecureServerError,
    RetryPolicy,
    ServerAddressError,
    ServerCertificateError,
    ServerUnreachableError,
    SyncCancelledError,
    SyncError,
    verify_signature,
)
from edge_sdk._http_transport import check_server_url

FAST = RetryPolicy(attempts=4, base_seconds=0.001, cap_seconds=0.01, timeout_seconds=5)
SERVER = "https://server.test"


Answer = Callable[[httpx.Request], "httpx.Response | None"]


class FakeServer:
    """Answers the token and sync routes; `override(path, fn)` changes one route (`fn`
    answering None lets the route answer as usual)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.issued = 0
        self.overrides: dict[str, Answer] = {}

    def override(self, path: str, answer: Answer) -> None:
        self.overrides[path] = answer

    def count(self, path: str) -> int:
        return sum(1 for called, _ in self.calls if called == path)

    def bodies(self, path: str) -> list[dict[str, Any]]:
        return [body for called, body in self.calls if called == path]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        body = (
            json.loads(request.content)
            if request.headers.get("content-type") == ("application/json")
            else {}
        )
        self.calls.append((path, body))
        if path in self.overrides:
            answer = self.overrides[path](request)
            if answer is not None:
                return answer
        if path in ("/v1/auth/refresh", "/v1/auth/device"):
            return self.tokens()
        if request.headers.get("authorization") != f"Bearer access-{self.issued}":
            return error(401, "unauthorized")
        if path == "/v1/sync/pull":
            page = SyncMessage({"cursor": 0, "more": False, "feed": 0}, ())
            return httpx.Response(200, content=encode_message(page))
        if path == "/v1/sync/push":
            return httpx.Response(200, json={"accepted": [], "unchanged": [], "rejected": []})
        if path == "/v1/sync/directory":
            return httpx.Response(200, json={"devices": []})
        return error(404, "not_found")

    def tokens(self) -> httpx.Response:
        self.issued += 1
        expires = datetime.now(UTC) + timedelta(minutes=15)
        return httpx.Response(
            200,
            json={
                "access_token": f"access-{self.issued}",
                "access_token_expires_at": expires.isoformat(),
                "refresh_token": f"refresh-{self.issued}",
            },
        )


def error(status: int, code: str, **headers: str) -> httpx.Response:
    body = {"error": {"code": code, "message": code.replace("_", " ")}}
    return httpx.Response(status, json=body, headers=headers)


@pytest.fixture
def client(tmp_store: Any) -> EdgeClient:
    """A store enrolled (as far as it knows) with `SERVER`, holding refresh token r0."""
    made: EdgeClient = tmp_store()
    enrollment = Enrollment(
        server_url=SERVER,
        device_id=made.device_id,
        clinic_id=made.clinic_id,
        organisation_id="org",
        server_public_key=bytes(32),
    )
    made.replica.enrol(enrollment, refresh_token="r0")
    return made


@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


@pytest.fixture
def http(client: EdgeClient, server: FakeServer) -> Iterator[HttpTransport]:
    with HttpTransport(client.replica, retry=FAST, transport=httpx.MockTransport(server)) as made:
        yield made


def test_the_refresh_token_is_sent_once_and_replaced_before_use(
    client: EdgeClient, server: FakeServer, http: HttpTransport
) -> None:
    result = client.sync(transport=http)
    assert server.bodies("/v1/auth/refresh") == [{"refresh_token": "r0"}]
    assert server.count("/v1/auth/device") == 0
    assert result.requests == 3  # nothing to push: the refresh, the device directory, a pull
    # The new refresh token was stored: the next transport refreshes with it.
    with HttpTransport(client.replica, retry=FAST, transport=httpx.MockTransport(server)) as again:
        client.sync(transport=again)
    assert server.bodies("/v1/auth/refresh")[-1] == {"refresh_token": "refresh-1"}


def test_a_refresh_whose_answer_is_lost_is_never_resent(
    client: EdgeClient, server: FakeServer, http: HttpTransport
) -> None:
    def lost(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadError("the answer was lost", request=request)

    server.override("/v1/auth/refresh", lost)
    client.sync(transport=http)
    assert server.count("/v1/auth/refresh") == 1  # not retried by the retry wrapper
    assert server.count("/v1/auth/device") == 1  # the device key logged in instead
    # The lost refresh token was taken out of the store: never sent again.
    server.overrides.clear()
    with HttpTransport(client.replica, retry=FAST, transport=httpx.MockTransport(server)) as again:
        client.sync(transport=again)
    assert [b["refresh_token"] for b in server.bodies("/v1/auth/refresh")] == ["r0", "refresh-1"]


def test_each_device_login_attempt_signs_a_fresh_nonce(
    client: EdgeClient, server: FakeServer, http: HttpTransport
) -> None:
    answers = iter([error(503, "unavailable"), error(503, "unavailable")])
    server.override("/v1/auth/refresh", lambda request: error(401, "refresh_reused"))
    server.override("/v1/auth/device", lambda request: next(answers, None))
    result = client.sync(transport=http)
    logins = server.bodies("/v1/auth/device")
    assert len(logins) == 3
    assert len({login["nonce"] for login in logins}) == 3
    assert result.retries == 2


def test_a_device_login_that_keeps_failing_is_reported_with_its_count(
    client: EdgeClient, server: FakeServer, http: HttpTransport
) -> None:
    server.override("/v1/auth/refresh", lambda request: error(401, "refresh_reused"))
    server.override("/v1/auth/device", lambda request: error(503, "unavailable"))
    with pytest.raises(ServerUnreachableError, match="device login failed 4 times"):
        client.sync(transport=http)


def test_a_refused_device_key_is_an_authentication_error(
    client: EdgeClient, server: FakeServer, http: HttpTransport
) -> None:
    server.override("/v1/auth/refresh", lambda request: error(401, "refresh_reused"))
    server.override("/v1/auth/device", lambda request: error(401, "bad_signature"))
    with pytest.raises(AuthenticationError, match="refused the device"):
        client.sync(transport=http)


def test_a_401_renews_the_token_and_sends_the_request_once_more(
    client: EdgeClient, server: FakeServer, http: HttpTransport
) -> None:
    client.sync(transport=http)
    server.issued += 1  # the server forgets the token it gave (e.g. a key rotation)
    result = client.sync(transport=http)
    assert result.cursor == 0
    assert [path for path, _ in server.calls[-4:]] == [
        "/v1/sync/directory",  # 401
        "/v1/auth/refresh",
        "/v1/sync/directory",
        "/v1/sync/pull",
    ]


def test_a_revoked_device_is_told_so(
    client: EdgeClient, server: FakeServer, http: HttpTransport
) -> None:
    server.override("/v1/sync/pull", lambda request: error(403, "device_revoked"))
    with pytest.raises(DeviceRevokedError):
        client.sync(transport=http)
    server.override("/v1/auth/refresh", lambda request: error(403, "device_revoked"))
    with (
        HttpTransport(client.replica, retry=FAST, transport=httpx.MockTransport(server)) as again,
        pytest.raises(DeviceRevokedError),
    ):
        client.sync(transport=again)


def test_retryable_answers_are_retried_and_counted(
    client: EdgeClient, server: FakeServer, http: HttpTransport
) -> None:
    statuses = iter([503, 429, 502])

    def flaky(request: httpx.Request) -> httpx.Response | None:
        status = next(statuses, None)
        return None if status is None else error(status, "busy", **{"Retry-After": "0.001"})

    server.override("/v1/sync/pull", flaky)
    result = client.sync(transport=http)
    assert result.retries == 3
    assert server.count("/v1/sync/pull") == 4


def test_an_answer_cut_mid_body_is_asked_for_again(
    client: EdgeClient, server: FakeServer, http: HttpTransport
) -> None:
    class BreaksOff(httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            yield b"CHSY"
            raise httpx.ReadError("connection reset mid-body")

    cuts = [httpx.Response(200, stream=BreaksOff())]
    server.override("/v1/sync/pull", lambda request: cuts.pop() if cuts else None)
    result = client.sync(transport=http)
    assert result.retries == 1
    assert server.count("/v1/sync/pull") == 2


def test_a_server_that_stays_down_fails_after_the_policy_attempts(
    client: EdgeClient, server: FakeServer, http: HttpTransport
) -> None:
    client.sync(transport=http)  # a token is in hand

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    server.override("/v1/sync/pull", down)
    with pytest.raises(ServerUnreachableError, match="GET /v1/sync/pull failed 4 times"):
        client.sync(transport=http)


# ---------------------------------------------------------------- enrolment
def enrolled_answer(device_id: str, issued: int) -> httpx.Response:
    expires = (datetime.now(UTC) + timedelta(minutes=15)).isoformat()
    return httpx.Response(
        201,
        json={
            "access_token": f"access-{issued}",
            "access_token_expires_at": expires,
            "refresh_token": f"refresh-{issued}",
            "refresh_token_expires_at": expires,
            "device_id": device_id,
            "clinic_id": "clinic",
            "organisation_id": "org",
            "server_public_key": base64.b64encode(b"s" * 32).decode(),
            "artifact_public_key": base64.b64encode(b"a" * 32).decode(),
        },
    )


def test_each_enrolment_attempt_signs_a_fresh_proof(tmp_store: Any) -> None:
    """An enrolment whose answer is lost is sent again signed anew: the server accepts a
    proof once, so a resent one would be refused as a replay."""
    device: EdgeClient = tmp_store()
    bodies: list[dict[str, Any]] = []

    def server(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        if len(bodies) == 1:
            raise httpx.ReadError("the answer was lost", request=request)
        return enrolled_answer(device.device_id, len(bodies))

    enrollment = HttpTransport.enroll(
        device.replica, SERVER, "one-time-token", retry=FAST, transport=httpx.MockTransport(server)
    )
    assert len(bodies) == 2
    assert bodies[0]["nonce"] != bodies[1]["nonce"]
    for body in bodies:
        message = enrolment_message(
            "one-time-token", device.device_id, body["issued_at"], body["nonce"]
        )
        signature = base64.b64decode(body["signature"])
        assert verify_signature(device.identity.public_key, message, signature)
        assert abs(body["issued_at"] - time.time()) < 60
    # Both keys the server answered are pinned.
    assert enrollment.server_public_key == b"s" * 32
    assert enrollment.artifact_public_key == b"a" * 32
    assert device.replica.enrollment == enrollment


@pytest.mark.parametrize(
    "url",
    ["http://192.0.2.10:8700", "http://clinic.example"],
)
def test_plain_http_to_another_host_is_refused_before_anything_is_sent(
    tmp_store: Any, url: str
) -> None:
    device: EdgeClient = tmp_store()
    sent: list[httpx.Request] = []

    def server(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return enrolled_answer(device.device_id, 1)

    with pytest.raises(InsecureServerError):
        HttpTransport.enroll(
            device.replica, url, "token", retry=FAST, transport=httpx.MockTransport(server)
        )
    with pytest.raises(InsecureServerError):
        device.enroll(url, "token")
    assert sent == [] and device.replica.enrollment is None


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8700", "http://localhost:8700/", "http://[::1]:8700", SERVER]
)
def test_https_and_this_machine_need_no_opt_in(url: str) -> None:
    assert check_server_url(url) == url.rstrip("/")


def test_an_app_that_opts_in_to_plain_http_keeps_that_choice(tmp_store: Any) -> None:
    device: EdgeClient = tmp_store()
    url = "http://192.0.2.10:8700"

    def server(request: httpx.Request) -> httpx.Response:
        return enrolled_answer(device.device_id, 1)

    enrollment = HttpTransport.enroll(
        device.replica,
        url,
        "token",
        retry=FAST,
        transport=httpx.MockTransport(server),
        allow_insecure_http=True,
    )
    assert enrollment.insecure_http
    with HttpTransport(device.replica, transport=httpx.MockTransport(server)) as http:
        assert http.server_url == url  # the enrolment's opt-in carries over

    # A store enrolled over plain http before the opt-in existed must opt in again.
    device.replica.enrol(
        Enrollment(
            server_url=url,
            device_id=device.device_id,
            clinic_id=device.clinic_id,
            organisation_id="org",
            server_public_key=bytes(32),
        ),
        refresh_token="r0",
    )
    with pytest.raises(InsecureServerError, match="allow_insecure_http"):
        HttpTransport(device.replica)
    HttpTransport(device.replica, allow_insecure_http=True).close()


def test_device_enroll_refuses_plain_http_unless_told(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from cli.main import cli

    monkeypatch.setenv("COHERENCY_KDF", "fast")
    monkeypatch.setenv("COHERENCY_PASSPHRASE", "a long test passphrase")
    store = ["--store", str(tmp_path / "store")]
    assert CliRunner().invoke(cli, [*store, "init", "--clinic", "c1"]).exit_code == 0
    args = [*store, "device", "enroll", "--server", "http://192.0.2.10:8700", "--token", "t"]
    refused = CliRunner().invoke(cli, args)
    assert refused.exit_code != 0
    assert refused.stderr.count("\n") == 1 and "--allow-insecure-http" in refused.stderr
    helped = CliRunner().invoke(cli, [*store, "device", "enroll", "--help"])
    assert "--allow-insecure-http" in helped.stdout


# ---------------------------------------------------------------- fail fast
# Each of these fails on its first try: a policy that would wait an hour between
# attempts shows that no attempt is repeated (the test would hang otherwise).
PATIENT = RetryPolicy(attempts=50, base_seconds=3600, cap_seconds=3600, timeout_seconds=5)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("sync.example.org", "has no scheme: write https://sync.example.org"),
        ("sync.example.org:8700", "has no scheme"),
        ("ftp://server.test", "not ftp://"),
        ("https://:8700", "names no host"),
        ("https://[::1", "malformed"),
        ("https://server.test:99999", "malformed"),
        ("https://user:secret@server.test", "user name or password"),
        ("https://sync.clinic.invalid", "never resolves"),
    ],
)
def test_a_server_url_that_cannot_work_fails_at_once_with_its_reason(
    tmp_store: Any, url: str, says: str
) -> None:
    device: EdgeClient = tmp_store()
    sent: list[httpx.Request] = []

    def server(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return enrolled_answer(device.device_id, 1)

    with pytest.raises(ServerAddressError, match=re.escape(says)):
        HttpTransport.enroll(
            device.replica, url, "token", retry=PATIENT, transport=httpx.MockTransport(server)
        )
    with pytest.raises(ServerAddressError, match=re.escape(says)):
        device.enroll(url, "token")
    assert issubclass(ServerAddressError, SyncError)
    assert sent == [] and device.replica.enrollment is None


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 410, 413, 422, 425])
def test_a_4xx_answer_is_not_retried(client: EdgeClient, server: FakeServer, status: int) -> None:
    server.override("/v1/sync/directory", lambda _: error(status, "no"))
    with (
        HttpTransport(client.replica, retry=PATIENT, transport=httpx.MockTransport(server)) as http,
        pytest.raises(SyncError),
    ):
        http.directory()
    # 401 renews the token and asks once more (as a client must); no other repeat.
    assert server.count("/v1/sync/directory") == (2 if status == 401 else 1)


def test_a_tls_certificate_that_does_not_verify_fails_at_once(client: EdgeClient) -> None:
    attempts = []

    def refuse(request: httpx.Request) -> httpx.Response:
        attempts.append(request)
        try:
            raise ssl.SSLCertVerificationError(1, "certificate has expired")
        except ssl.SSLCertVerificationError as exc:
            raise httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED]") from exc

    with (
        HttpTransport(client.replica, retry=PATIENT, transport=httpx.MockTransport(refuse)) as http,
        pytest.raises(ServerCertificateError, match="did not verify"),
    ):
        http.pull(cursor=0, limit=10, wait=0)
    assert len(attempts) == 1


def test_an_interrupted_transport_refuses_requests_until_resumed(
    http: HttpTransport, server: FakeServer
) -> None:
    http.interrupt()
    with pytest.raises(SyncCancelledError):
        http.pull(cursor=0, limit=10, wait=0)
    assert server.calls == []
    http.resume()
    http.pull(cursor=0, limit=10, wait=0)
    assert server.count("/v1/sync/pull") == 1
