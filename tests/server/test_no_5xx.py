"""No route answers 5xx to anything a client sends.

Every route of the OpenAPI document is called with garbage: path parameters that are
not ids, bodies of the wrong type or shape, binary where JSON is expected, odd query
values and headers, each as an anonymous caller, a device and an admin. The answer
must be a 2xx or a 4xx with the error shape, never a 5xx, and its status one the
operation declares (unless a path value made it another route: an escaped one).
"""

from __future__ import annotations

import random
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pyotp
import pytest

from sync_server.identity.users import create_user

PATH_VALUES = ["x", "0", "-1", "%00", "a" * 300, str(uuid.uuid4()), "e" * 64, "..%2F..%2Fetc"]
BODIES: list[dict[str, Any]] = [
    {"content": b""},
    {"content": b"\x00\xff" * 50, "headers": {"content-type": "application/octet-stream"}},
    {"content": b"{not json", "headers": {"content-type": "application/json"}},
    {"json": None},
    {"json": []},
    {"json": "string"},
    {"json": 12},
    {"json": {"token": 5, "device_id": [], "public_key": {}, "signature": None}},
    {"json": {"sha256": "z" * 64, "size": -5}},
    {"json": {"sha256": "a" * 64, "size": 10**30}},
    {"json": {"refresh_token": "x" * 10_000}},
    {"json": {"username": "", "password": "", "totp": "abc"}},
    {"json": {"device_id": "d", "issued_at": "soon", "nonce": "n", "signature": "!!"}},
    {"json": {"name": "\u0000" * 10, "clinic_id": "no", "ttl_seconds": -1}},
]
HEADERS = [{}, {"upload-offset": "-3"}, {"upload-offset": "abc"}, {"range": "bytes=9-1"}]
QUERIES = [{}, {"cursor": "-1", "wait": "nan"}, {"limit": "1e9", "offset": "-2", "q": "%_"}]


def _admin_token(server: Any) -> str:
    username = f"fuzz-admin-{uuid.uuid4().hex[:8]}"
    with server.db.write() as session:
        _, secret = create_user(
            session=session,
            username=username,
            password="a long admin password",
            role="admin",
            organisation_id=server.organisation_id,
            secret_box=server.app.state.secret_box,
        )
    assert secret is not None
    with server.http() as http:
        response = http.post(
            "/v1/auth/login",
            json={
                "username": username,
                "password": "a long admin password",
                "totp": pyotp.TOTP(secret).now(),
            },
        )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


@pytest.mark.slow
def test_garbage_never_gets_a_5xx(server: Any) -> None:
    rng = random.Random(7)
    clinic = server.new_clinic()
    _, device_token = server.device_token(clinic, ttl=timedelta(minutes=30))
    callers = {"anonymous": None, "device": device_token, "admin": _admin_token(server)}
    spec = httpx.get(server.url + "/openapi.json").json()
    failures: list[str] = []
    calls = 0
    for path, operations in spec["paths"].items():
        for method in operations:
            for caller, token in callers.items():
                with server.http(token) as http:
                    for _ in range(6):
                        concrete = path
                        escaped = False
                        while "{" in concrete:
                            start, end = concrete.index("{"), concrete.index("}")
                            value = rng.choice(PATH_VALUES)
                            escaped = escaped or "%" in value
                            concrete = concrete[:start] + value + concrete[end + 1 :]
                        body = rng.choice(BODIES) if method in ("post", "patch", "put") else {}
                        headers = {**rng.choice(HEADERS), **body.get("headers", {})}
                        kwargs = {k: v for k, v in body.items() if k != "headers"}
                        response = http.request(
                            method.upper(),
                            concrete,
                            params=rng.choice(QUERIES),
                            headers=headers,
                            **kwargs,
                        )
                        calls += 1
                        if response.status_code >= 500:
                            failures.append(
                                f"{caller} {method.upper()} {concrete}: "
                                f"{response.status_code} {response.text[:200]}"
                            )
                        elif response.status_code >= 400 and path.startswith("/fhir/"):
                            outcome = response.json()  # FHIR's refusal: an OperationOutcome
                            assert outcome["resourceType"] == "OperationOutcome", path
                        elif response.status_code >= 400 and method != "head":
                            assert "error" in response.json(), (path, response.text[:200])
                        declared = operations[method]["responses"]
                        if str(response.status_code) not in declared and not escaped:
                            failures.append(
                                f"{caller} {method.upper()} {concrete}: undeclared "
                                f"{response.status_code} {response.text[:200]}"
                            )
    assert calls > 200
    assert not failures, "\n".join(failures[:40])
