"""Identity over HTTP: enrolment, access tokens, refresh rotation, device and staff login,
revocation and admin scoping. Every test runs on SQLite and on PostgreSQL.

Throttling, the admin routes for accounts, enrolment replay and names per organisation
are in test_accounts.py."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import httpx
import jwt
import pyotp
import pytest
from argon2 import PasswordHasher
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nacl.bindings import crypto_scalarmult_ed25519_base_noclamp
from sqlalchemy import select

from crdt import device_login_message, enrolment_message
from edge_sdk import DeviceIdentity
from sync_server.audit.tables import AuditEvent
from sync_server.db import utcnow
from sync_server.errors import Unauthorized
from sync_server.identity import tokens
from sync_server.identity.tables import Device, EnrolmentToken, RefreshToken, Throttle, User
from sync_server.identity.tenancy import ensure_organisation
from sync_server.identity.tokens import SigningKey
from sync_server.identity.users import create_user


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


PASSWORD = "correct horse battery staple"


@dataclass
class Kit:
    """Helpers bound to one live server."""

    server: Any

    def user(
        self,
        role: str = "admin",
        *,
        clinic_id: str | None = None,
        organisation_id: str | None = None,
        with_totp: bool = False,
    ) -> tuple[User, str | None]:
        with self.server.db.write() as session:
            return create_user(
                session=session,
                username=unique(role),
                password=PASSWORD,
                role=role,
                organisation_id=organisation_id or self.server.organisation_id,
                clinic_id=clinic_id,
                with_totp=with_totp,
                secret_box=self.server.app.state.secret_box,
            )

    def user_token(self, user: User) -> str:
        token, _ = self.server.app.state.signing_key.issue_access_token(
            subject=user.id,
            kind="user",
            clinic_id=user.clinic_id,
            organisation_id=user.organisation_id,
            role=user.role,
            ttl=timedelta(minutes=5),
        )
        return str(token)

    def admin_client(self) -> httpx.Client:
        admin, _ = self.user("admin")
        return self.server.http(self.user_token(admin))

    def enrolment_token(self, admin: httpx.Client, clinic_id: str, **extra: Any) -> str:
        r = admin.post("/v1/admin/enrolment-tokens", json={"clinic_id": clinic_id, **extra})
        assert r.status_code == 201, r.text
        assert r.json()["clinic_id"] == clinic_id
        return str(r.json()["token"])

    def enrol_body(
        self,
        token: str,
        device: DeviceIdentity,
        *,
        signer: DeviceIdentity | None = None,
        issued_at: int | None = None,
        nonce: str | None = None,
    ) -> dict[str, Any]:
        """A request body with a fresh proof (the time and a new nonce, signed)."""
        issued_at = int(time.time()) if issued_at is None else issued_at
        nonce = nonce or secrets.token_urlsafe(24)
        message = enrolment_message(token, device.device_id, issued_at, nonce)
        return {
            "token": token,
            "device_id": device.device_id,
            "public_key": b64(device.public_key),
            "issued_at": issued_at,
            "nonce": nonce,
            "signature": b64((signer or device).sign(message)),
            "name": "tablet",
        }

    def enrol(self, token: str, device: DeviceIdentity, **extra: Any) -> httpx.Response:
        with self.server.http() as c:
            return c.post("/v1/devices/enroll", json={**self.enrol_body(token, device), **extra})

    def enrolled_device(
        self, clinic_id: str | None = None
    ) -> tuple[DeviceIdentity, dict[str, Any]]:
        clinic_id = clinic_id or self.server.new_clinic()
        with self.admin_client() as admin:
            token = self.enrolment_token(admin, clinic_id)
        device = DeviceIdentity.generate()
        r = self.enrol(token, device)
        assert r.status_code == 201, r.text
        return device, r.json()

    def me(self, access_token: str) -> httpx.Response:
        with self.server.http(access_token) as c:
            return c.get("/v1/devices/me")

    def post(self, path: str, body: dict[str, Any], *, client: str | None = None) -> httpx.Response:
        """POST from `client` (an address uvicorn takes from ``X-Forwarded-For``)."""
        headers = {"x-forwarded-for": client} if client else {}
        with self.server.http() as c:
            return c.post(path, json=body, headers=headers)

    def device_login(
        self,
        device: DeviceIdentity,
        *,
        issued_at: int | None = None,
        nonce: str | None = None,
        signer: DeviceIdentity | None = None,
        client: str | None = None,
    ) -> httpx.Response:
        issued_at = int(time.time()) if issued_at is None else issued_at
        nonce = nonce or secrets.token_urlsafe(24)
        signature = (signer or device).sign(
            device_login_message(device.device_id, issued_at, nonce)
        )
        return self.post(
            "/v1/auth/device",
            {
                "device_id": device.device_id,
                "issued_at": issued_at,
                "nonce": nonce,
                "signature": b64(signature),
            },
            client=client,
        )

    def login(
        self,
        username: str,
        password: str,
        totp: str | None,
        *,
        organisation: str | None = None,
        client: str | None = None,
    ) -> httpx.Response:
        body = {"username": username, "password": password, "totp": totp}
        if organisation is not None:
            body["organisation"] = organisation
        return self.post("/v1/auth/login", body, client=client)


@pytest.fixture
def kit(server: Any) -> Kit:
    return Kit(server)


def error_code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


def wrong_totp(secret: str) -> str:
    """A six-digit code valid in none of the steps the server accepts now."""
    totp = pyotp.TOTP(secret)
    now = time.time()
    valid = {totp.at(now + delta) for delta in (-60, -30, 0, 30, 60)}
    return next(c for c in (f"{i:06d}" for i in range(1_000_000)) if c not in valid)


# ---------------------------------------------------------------- enrolment
def test_enrolment_binds_the_key_and_the_tokens_work(kit: Kit, server: Any) -> None:
    clinic_id = server.new_clinic()
    with kit.admin_client() as admin:
        token = kit.enrolment_token(admin, clinic_id, ttl_seconds=600)
        device = DeviceIdentity.generate()
        r = kit.enrol(token, device, expected_clinic_id=clinic_id)
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["device_id"] == device.device_id
        assert body["clinic_id"] == clinic_id
        assert body["organisation_id"] == server.organisation_id
        assert body["token_type"] == "bearer"
        assert base64.b64decode(body["server_public_key"]) == (
            server.app.state.signing_key.public_key_bytes
        )
        me = kit.me(body["access_token"])
        assert me.status_code == 200, me.text
        assert me.json()["device_id"] == device.device_id
        assert me.json()["clinic_id"] == clinic_id
        listed = admin.get("/v1/admin/devices", params={"clinic_id": clinic_id})
        assert listed.status_code == 200
        assert [d["id"] for d in listed.json()] == [device.device_id]
        assert listed.json()[0]["revoked_at"] is None
    with server.db.read() as session:
        row = session.get(Device, device.device_id)
        assert row is not None and row.public_key == device.public_key
        stored = session.scalars(
            select(EnrolmentToken).where(EnrolmentToken.clinic_id == clinic_id)
        ).one()
        assert stored.token_hash == hashlib.sha256(token.encode()).hexdigest()
        assert stored.used_at is not None and stored.device_id == device.device_id
        events = session.scalars(
            select(AuditEvent).where(
                AuditEvent.actor_id == device.device_id, AuditEvent.action == "enrol"
            )
        ).all()
        assert [e.outcome for e in events] == ["ok"]
        assert all(token not in (e.target or "") for e in events)


def test_enrolment_token_is_single_use(kit: Kit, server: Any) -> None:
    clinic_id = server.new_clinic()
    with kit.admin_client() as admin:
        token = kit.enrolment_token(admin, clinic_id)
    assert kit.enrol(token, DeviceIdentity.generate()).status_code == 201
    second = kit.enrol(token, DeviceIdentity.generate())
    assert second.status_code == 401
    assert error_code(second) == "enrolment_token_invalid"


def test_enrolment_token_is_single_use_under_concurrency(kit: Kit, server: Any) -> None:
    clinic_id = server.new_clinic()
    with kit.admin_client() as admin:
        token = kit.enrolment_token(admin, clinic_id)
    devices = [DeviceIdentity.generate() for _ in range(6)]
    statuses: list[int] = []
    barrier = threading.Barrier(len(devices))

    def attempt(device: DeviceIdentity) -> None:
        body = kit.enrol_body(token, device)
        with server.http() as c:
            barrier.wait()
            statuses.append(c.post("/v1/devices/enroll", json=body).status_code)

    threads = [threading.Thread(target=attempt, args=(d,)) for d in devices]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [201] + [401] * (len(devices) - 1)
    with server.db.read() as session:
        assert len(session.scalars(select(Device).where(Device.clinic_id == clinic_id)).all()) == 1


def test_unknown_and_expired_enrolment_tokens_are_refused(kit: Kit, server: Any) -> None:
    unknown = kit.enrol(secrets.token_urlsafe(32), DeviceIdentity.generate())
    assert unknown.status_code == 401
    assert error_code(unknown) == "enrolment_token_invalid"

    clinic_id = server.new_clinic()
    with kit.admin_client() as admin:
        token = kit.enrolment_token(admin, clinic_id, ttl_seconds=60)
    with server.db.write() as session:
        row = session.scalars(
            select(EnrolmentToken).where(EnrolmentToken.clinic_id == clinic_id)
        ).one()
        row.expires_at = utcnow() - timedelta(seconds=1)
    expired = kit.enrol(token, DeviceIdentity.generate())
    assert expired.status_code == 401
    assert error_code(expired) == "enrolment_token_invalid"


def test_clinic_mismatch_does_not_spend_the_token(kit: Kit, server: Any) -> None:
    clinic_id, other_clinic = server.new_clinic(), server.new_clinic()
    with kit.admin_client() as admin:
        token = kit.enrolment_token(admin, clinic_id)
    device = DeviceIdentity.generate()
    mismatch = kit.enrol(token, device, expected_clinic_id=other_clinic)
    assert mismatch.status_code == 409
    assert error_code(mismatch) == "clinic_mismatch"
    with server.db.read() as session:
        assert session.get(Device, device.device_id) is None
    ok = kit.enrol(token, device, expected_clinic_id=clinic_id)
    assert ok.status_code == 201, ok.text
    assert ok.json()["clinic_id"] == clinic_id


def test_bad_proof_of_possession_is_refused(kit: Kit, server: Any) -> None:
    clinic_id = server.new_clinic()
    with kit.admin_client() as admin:
        token = kit.enrolment_token(admin, clinic_id)
    device, impostor = DeviceIdentity.generate(), DeviceIdentity.generate()
    with server.http() as c:
        forged = c.post("/v1/devices/enroll", json=kit.enrol_body(token, device, signer=impostor))
        assert forged.status_code == 401
        assert error_code(forged) == "enrolment_proof_invalid"
        # A signature over another token does not prove anything either.
        body = kit.enrol_body(token, device)
        other = enrolment_message("other", device.device_id, body["issued_at"], body["nonce"])
        body["signature"] = b64(device.sign(other))
        assert c.post("/v1/devices/enroll", json=body).status_code == 401
        # Nor does one over another time than the one sent.
        body = kit.enrol_body(token, device)
        body["issued_at"] -= 1
        assert c.post("/v1/devices/enroll", json=body).status_code == 401
    with server.db.read() as session:
        assert session.get(Device, device.device_id) is None
    assert kit.enrol(token, device).status_code == 201  # the token was not spent


def test_a_small_order_key_with_a_forged_proof_cannot_enrol(kit: Kit, server: Any) -> None:
    # Under the identity point as a key, R = [S]B "signs" anything for OpenSSL's check
    # alone: the shared rule (crdt.verify_ed25519) refuses the key before that.
    clinic_id = server.new_clinic()
    with kit.admin_client() as admin:
        token = kit.enrolment_token(admin, clinic_id)
    device = DeviceIdentity.generate()
    s = 7
    forged = crypto_scalarmult_ed25519_base_noclamp(s.to_bytes(32, "little")) + s.to_bytes(
        32, "little"
    )
    body = kit.enrol_body(token, device)
    body["public_key"] = b64((1).to_bytes(32, "little"))
    body["signature"] = b64(forged)
    with server.http() as c:
        refused = c.post("/v1/devices/enroll", json=body)
    assert refused.status_code == 401
    assert error_code(refused) == "enrolment_proof_invalid"
    with server.db.read() as session:
        assert session.get(Device, device.device_id) is None


def test_malformed_enrolment_requests_get_4xx(kit: Kit, server: Any) -> None:
    clinic_id = server.new_clinic()
    with kit.admin_client() as admin:
        token = kit.enrolment_token(admin, clinic_id)
    device = DeviceIdentity.generate()
    good = kit.enrol_body(token, device)
    cases = [
        ({"public_key": "not base64!!"}, 400, "invalid_base64"),
        ({"signature": "%%%"}, 400, "invalid_base64"),
        ({"public_key": b64(b"short")}, 400, "invalid_public_key"),
        ({"device_id": "not-a-uuid"}, 400, "invalid_device_id"),
        ({"signature": b64(b"x" * 10)}, 401, "enrolment_proof_invalid"),
        ({"token": ""}, 422, "invalid_request"),
        ({"nonce": "short"}, 422, "invalid_request"),
        ({"nonce": "not url-safe at all!"}, 400, "invalid_nonce"),
        ({"issued_at": "soon"}, 422, "invalid_request"),
    ]
    with server.http() as c:
        for change, status, code in cases:
            r = c.post("/v1/devices/enroll", json={**good, **change})
            assert (r.status_code, error_code(r)) == (status, code), change
        missing = c.post("/v1/devices/enroll", json={"token": token})
        assert missing.status_code == 422
        garbage = c.post("/v1/devices/enroll", content=b"\xff\x00garbage")
        assert garbage.status_code == 422
    assert kit.enrol(token, device).status_code == 201  # none of that spent the token


def test_an_enrolled_device_id_cannot_enrol_again(kit: Kit, server: Any) -> None:
    device, _ = kit.enrolled_device()
    clinic_id = server.new_clinic()
    with kit.admin_client() as admin:
        token = kit.enrolment_token(admin, clinic_id)
    again = kit.enrol(token, device)
    assert again.status_code == 409
    assert error_code(again) == "device_exists"
    assert kit.enrol(token, DeviceIdentity.generate()).status_code == 201


# ---------------------------------------------------------------- access tokens
def _claims(server: Any, device_id: str, clinic_id: str, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": server.settings.jwt_issuer,
        "aud": server.settings.jwt_audience,
        "sub": device_id,
        "iat": now,
        "nbf": now - 5,
        "exp": now + 600,
        "jti": secrets.token_hex(8),
        "kind": "device",
        "clinic": clinic_id,
        "org": server.organisation_id,
        "role": "device",
    }
    claims.update(overrides)
    return claims


def _unsigned_jwt(header: dict[str, Any], claims: dict[str, Any], key: bytes | None) -> str:
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    if key is None:
        return signing_input + "."
    mac = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64url(mac)


def test_bad_access_tokens_are_refused(kit: Kit, server: Any) -> None:
    clinic_id = server.new_clinic()
    device_id, good = server.device_token(clinic_id)
    assert kit.me(good).status_code == 200
    claims = _claims(server, device_id, clinic_id)
    key_file = server.settings.resolved_signing_key_file
    other_issuer = SigningKey.load_or_create(
        key_file, issuer="someone-else", audience=server.settings.jwt_audience
    )
    other_audience = SigningKey.load_or_create(
        key_file, issuer=server.settings.jwt_issuer, audience="another-service"
    )
    _, expired = server.device_token(clinic_id, device_id=device_id, ttl=timedelta(minutes=-5))
    cases = {
        "expired": expired,
        "alg none": _unsigned_jwt({"alg": "none", "typ": "JWT"}, claims, None),
        "HS256 with the public key as secret": _unsigned_jwt(
            {"alg": "HS256", "typ": "JWT"}, claims, server.app.state.signing_key.public_key_bytes
        ),
        "another Ed25519 key": jwt.encode(claims, Ed25519PrivateKey.generate(), algorithm="EdDSA"),
        "wrong issuer": other_issuer.issue_access_token(
            subject=device_id,
            kind="device",
            clinic_id=clinic_id,
            organisation_id=server.organisation_id,
            role="device",
            ttl=timedelta(minutes=5),
        )[0],
        "wrong audience": other_audience.issue_access_token(
            subject=device_id,
            kind="device",
            clinic_id=clinic_id,
            organisation_id=server.organisation_id,
            role="device",
            ttl=timedelta(minutes=5),
        )[0],
        "garbage": "not.a.jwt",
    }
    for name, token in cases.items():
        r = kit.me(token)
        assert r.status_code == 401, name
        expected = "token_expired" if name == "expired" else "invalid_token"
        assert error_code(r) == expected, name
    with server.http() as c:
        missing = c.get("/v1/devices/me")
        assert missing.status_code == 401
        assert error_code(missing) == "missing_token"


def test_staff_token_on_device_route_and_device_token_on_admin_route(kit: Kit, server: Any) -> None:
    clinic_id = server.new_clinic()
    _, device_token = server.device_token(clinic_id)
    clinician, _ = kit.user("clinician", clinic_id=clinic_id)
    r = kit.me(kit.user_token(clinician))
    assert r.status_code == 403
    assert error_code(r) == "devices_only"
    for token in (device_token, kit.user_token(clinician)):
        with server.http(token) as c:
            refused = c.get("/v1/admin/devices")
            assert refused.status_code == 403
            assert error_code(refused) == "admins_only"


# ---------------------------------------------------------------- revocation, refresh
def test_revoked_device_is_refused_at_once(kit: Kit, server: Any) -> None:
    device, enrolled = kit.enrolled_device()
    assert kit.me(enrolled["access_token"]).status_code == 200
    with kit.admin_client() as admin:
        r = admin.post(f"/v1/admin/devices/{device.device_id}/revoke")
        assert r.status_code == 200, r.text
        assert r.json()["revoked_at"] is not None
        assert admin.post(f"/v1/admin/devices/{device.device_id}/revoke").status_code == 200
    refused = kit.me(enrolled["access_token"])
    assert refused.status_code == 403
    assert error_code(refused) == "device_revoked"
    refresh = kit.post("/v1/auth/refresh", {"refresh_token": enrolled["refresh_token"]})
    assert refresh.status_code == 401
    assert error_code(refresh) == "refresh_token_invalid"
    login = kit.device_login(device)
    assert login.status_code == 403
    assert error_code(login) == "device_revoked"


def test_refresh_rotates_and_reuse_revokes_the_family(kit: Kit, server: Any) -> None:
    _, enrolled = kit.enrolled_device()
    first = enrolled["refresh_token"]
    second = kit.post("/v1/auth/refresh", {"refresh_token": first})
    assert second.status_code == 200, second.text
    assert second.json()["refresh_token"] != first
    assert kit.me(second.json()["access_token"]).status_code == 200
    third = kit.post("/v1/auth/refresh", {"refresh_token": second.json()["refresh_token"]})
    assert third.status_code == 200, third.text
    newest = third.json()["refresh_token"]

    reuse = kit.post("/v1/auth/refresh", {"refresh_token": first})
    assert reuse.status_code == 401
    assert error_code(reuse) == "refresh_token_reused"
    # The revocation outlived the failed request: the newest token of the chain is dead.
    after = kit.post("/v1/auth/refresh", {"refresh_token": newest})
    assert after.status_code == 401
    assert error_code(after) == "refresh_token_invalid"
    with server.db.read() as session:
        family = session.scalars(
            select(RefreshToken).where(
                RefreshToken.token_hash == hashlib.sha256(newest.encode()).hexdigest()
            )
        ).one()
        rows = session.scalars(
            select(RefreshToken).where(RefreshToken.family_id == family.family_id)
        ).all()
        assert len(rows) == 3
        assert all(row.revoked_at is not None for row in rows)
    unknown = kit.post("/v1/auth/refresh", {"refresh_token": secrets.token_urlsafe(32)})
    assert unknown.status_code == 401
    assert error_code(unknown) == "refresh_token_invalid"


def test_logout_revokes_the_family(kit: Kit, server: Any) -> None:
    _, enrolled = kit.enrolled_device()
    rotated = kit.post("/v1/auth/refresh", {"refresh_token": enrolled["refresh_token"]})
    assert rotated.status_code == 200
    out = kit.post("/v1/auth/logout", {"refresh_token": rotated.json()["refresh_token"]})
    assert out.status_code == 204
    again = kit.post("/v1/auth/refresh", {"refresh_token": rotated.json()["refresh_token"]})
    assert again.status_code == 401
    assert error_code(again) == "refresh_token_invalid"
    unknown = kit.post("/v1/auth/logout", {"refresh_token": secrets.token_urlsafe(32)})
    assert unknown.status_code == 204


# ---------------------------------------------------------------- device login
def test_device_login_with_a_signed_assertion(kit: Kit, server: Any) -> None:
    device, enrolled = kit.enrolled_device()
    nonce = secrets.token_urlsafe(24)
    ok = kit.device_login(device, nonce=nonce)
    assert ok.status_code == 200, ok.text
    me = kit.me(ok.json()["access_token"])
    assert me.status_code == 200
    assert me.json()["device_id"] == device.device_id
    # A new family: its refresh token rotates independently of the enrolment one.
    assert kit.post("/v1/auth/refresh", {"refresh_token": ok.json()["refresh_token"]}).is_success
    assert kit.post("/v1/auth/refresh", {"refresh_token": enrolled["refresh_token"]}).is_success

    replay = kit.device_login(device, nonce=nonce)
    assert replay.status_code == 401
    assert error_code(replay) == "nonce_reused"
    stale = kit.device_login(device, issued_at=int(time.time()) - 3600)
    assert stale.status_code == 401
    assert error_code(stale) == "device_assertion_stale"
    future = kit.device_login(device, issued_at=int(time.time()) + 3600)
    assert error_code(future) == "device_assertion_stale"
    forged = kit.device_login(device, signer=DeviceIdentity.generate())
    assert forged.status_code == 401
    assert error_code(forged) == "device_assertion_invalid"
    stranger = kit.device_login(DeviceIdentity.generate())
    assert stranger.status_code == 401
    assert error_code(stranger) == "device_assertion_invalid"
    short_nonce = kit.device_login(device, nonce="short")
    assert short_nonce.status_code == 422
    huge = kit.device_login(device, issued_at=10**30)
    assert huge.status_code in (401, 422)


# ---------------------------------------------------------------- staff login
def test_staff_login_with_password_and_totp(kit: Kit, server: Any) -> None:
    clinic_id = server.new_clinic()
    user, secret = kit.user("clinician", clinic_id=clinic_id, with_totp=True)
    assert secret is not None
    no_code = kit.login(user.username, PASSWORD, None)
    assert no_code.status_code == 401
    assert error_code(no_code) == "invalid_credentials"  # a right password is not revealed
    r = kit.login(user.username, PASSWORD, pyotp.TOTP(secret).now())
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["user_id"], body["role"], body["clinic_id"]) == (user.id, "clinician", clinic_id)
    with server.http(body["access_token"]) as c:
        assert c.get("/v1/patients").status_code == 200
    rotated = kit.post("/v1/auth/refresh", {"refresh_token": body["refresh_token"]})
    assert rotated.status_code == 200
    with server.db.read() as session:
        actions = session.scalars(
            select(AuditEvent.action).where(AuditEvent.actor_id == user.id)
        ).all()
        assert "login" in actions


def test_wrong_password_wrong_totp_and_unknown_user(kit: Kit, server: Any) -> None:
    user, secret = kit.user("clinician", clinic_id=server.new_clinic(), with_totp=True)
    assert secret is not None
    cases = [
        (user.username, "wrong password!!", pyotp.TOTP(secret).now()),
        (user.username, PASSWORD, wrong_totp(secret)),
        (unique("nobody"), PASSWORD, "123456"),
    ]
    for username, password, code in cases:
        r = kit.login(username, password, code)
        assert r.status_code == 401
        assert error_code(r) == "invalid_credentials"
    with server.db.read() as session:
        counter = session.get(Throttle, f"login:fail:account:user:{user.id}")
        assert counter is not None and counter.hits == 2


def test_a_totp_code_works_once(kit: Kit, server: Any) -> None:
    user, secret = kit.user("staff", clinic_id=server.new_clinic(), with_totp=True)
    assert secret is not None
    code = pyotp.TOTP(secret).now()
    assert kit.login(user.username, PASSWORD, code).status_code == 200
    replay = kit.login(user.username, PASSWORD, code)
    assert replay.status_code == 401
    assert error_code(replay) == "invalid_credentials"


# ---------------------------------------------------------------- admin
def test_admin_creates_clinics_and_users_in_its_organisation(kit: Kit, server: Any) -> None:
    with kit.admin_client() as admin:
        name = unique("clinic")
        created = admin.post("/v1/admin/clinics", json={"name": name})
        assert created.status_code == 201, created.text
        clinic_id = created.json()["id"]
        assert created.json()["organisation_id"] == server.organisation_id
        assert admin.post("/v1/admin/clinics", json={"name": name}).status_code == 409
        assert clinic_id in [c["id"] for c in admin.get("/v1/admin/clinics").json()]

        username = unique("nurse")
        weak = admin.post(
            "/v1/admin/users",
            json={
                "username": username,
                "password": "short",
                "role": "clinician",
                "clinic_id": clinic_id,
            },
        )
        assert weak.status_code == 422
        assert error_code(weak) == "weak_password"
        made = admin.post(
            "/v1/admin/users",
            json={
                "username": username,
                "password": PASSWORD,
                "role": "clinician",
                "clinic_id": clinic_id,
            },
        )
        assert made.status_code == 201, made.text
        secret = made.json()["totp_secret"]
        assert made.json()["totp_uri"].startswith("otpauth://totp/")
        assert "password" not in json.dumps(made.json()["user"])
        taken = admin.post(
            "/v1/admin/users",
            json={
                "username": username,
                "password": PASSWORD,
                "role": "clinician",
                "clinic_id": clinic_id,
            },
        )
        assert taken.status_code == 409
        no_clinic = admin.post(
            "/v1/admin/users",
            json={"username": unique("x"), "password": PASSWORD, "role": "staff"},
        )
        assert no_clinic.status_code == 422
    login = kit.login(username, PASSWORD, pyotp.TOTP(secret).now())
    assert login.status_code == 200
    assert login.json()["clinic_id"] == clinic_id


def test_admin_cannot_touch_another_organisation(kit: Kit, server: Any) -> None:
    with server.db.write() as session:
        other_org = ensure_organisation(session=session, name=unique("org")).id
    outsider, _ = kit.user("admin", organisation_id=other_org)
    clinic_id = server.new_clinic()
    device, _ = kit.enrolled_device(clinic_id)
    with server.http(kit.user_token(outsider)) as c:
        token = c.post("/v1/admin/enrolment-tokens", json={"clinic_id": clinic_id})
        assert token.status_code == 404
        assert c.get("/v1/admin/devices", params={"clinic_id": clinic_id}).status_code == 404
        assert c.get("/v1/admin/devices").json() == []
        assert c.post(f"/v1/admin/devices/{device.device_id}/revoke").status_code == 404
        assert c.get("/v1/admin/clinics").json() == []
        user = c.post(
            "/v1/admin/users",
            json={
                "username": unique("x"),
                "password": PASSWORD,
                "role": "clinician",
                "clinic_id": clinic_id,
            },
        )
        assert user.status_code == 404
    assert kit.me(server.device_token(clinic_id, device_id=device.device_id)[1]).status_code == 200


def test_login_rehashes_outdated_password_hashes(kit: Kit, server: Any) -> None:
    user, _ = kit.user("staff", clinic_id=server.new_clinic())
    old_hash = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
    with server.db.write() as session:
        row = session.get(User, user.id)
        assert row is not None
        row.password_hash = old_hash
    assert kit.login(user.username, PASSWORD, None).status_code == 200
    with server.db.read() as session:
        new_hash = session.get(User, user.id).password_hash  # type: ignore[union-attr]
    assert new_hash != old_hash
    assert not PasswordHasher().check_needs_rehash(new_hash)
    assert kit.login(user.username, PASSWORD, None).status_code == 200


def test_deactivated_user_cannot_refresh(kit: Kit, server: Any) -> None:
    user, _ = kit.user("clinician", clinic_id=server.new_clinic())
    r = kit.login(user.username, PASSWORD, None)
    assert r.status_code == 200
    with server.db.write() as session:
        row = session.get(User, user.id)
        assert row is not None
        row.active = False
    refused = kit.post("/v1/auth/refresh", {"refresh_token": r.json()["refresh_token"]})
    assert refused.status_code == 403
    assert error_code(refused) == "user_inactive"
    login = kit.login(user.username, PASSWORD, None)
    assert login.status_code == 401
    assert error_code(login) == "invalid_credentials"


def test_clinic_bound_admin_is_confined_to_its_clinic(kit: Kit, server: Any) -> None:
    own, other = server.new_clinic(), server.new_clinic()
    admin, _ = kit.user("admin", clinic_id=own)
    with server.http(kit.user_token(admin)) as c:
        assert [x["id"] for x in c.get("/v1/admin/clinics").json()] == [own]
        assert c.post("/v1/admin/enrolment-tokens", json={"clinic_id": own}).status_code == 201
        assert c.post("/v1/admin/enrolment-tokens", json={"clinic_id": other}).status_code == 404
        made = c.post("/v1/admin/clinics", json={"name": unique("clinic")})
        assert made.status_code == 403
        org_wide = c.post(
            "/v1/admin/users",
            json={"username": unique("x"), "password": PASSWORD, "role": "admin"},
        )
        assert org_wide.status_code == 403


def test_a_token_verified_once_still_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    """Verified access tokens are remembered, so a repeat costs no signature check;
    the memory never outlives the token: at expiry (plus the leeway) it is refused."""
    key = SigningKey(Ed25519PrivateKey.generate(), issuer="coherency", audience="sync")
    token, expires = key.issue_access_token(
        subject="d-1",
        kind="device",
        clinic_id="c-1",
        organisation_id="o-1",
        role="device",
        ttl=timedelta(minutes=5),
    )
    assert key.verify_access_token(token).subject == "d-1"
    hits = tokens._verified_claims.cache_info().hits
    assert key.verify_access_token(token).subject == "d-1"
    assert tokens._verified_claims.cache_info().hits == hits + 1  # remembered
    later = expires.timestamp() + tokens.LEEWAY_SECONDS
    monkeypatch.setattr(tokens, "time", SimpleNamespace(time=lambda: later))
    with pytest.raises(Unauthorized) as refused:
        key.verify_access_token(token)
    assert refused.value.code == "token_expired"
    monkeypatch.setattr(tokens, "time", SimpleNamespace(time=lambda: later - 1))
    assert key.verify_access_token(token).subject == "d-1"
