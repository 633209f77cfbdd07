"""Accounts against hostile clients: throttling instead of lockout, rate limits, one
answer for every login failure, the admin routes for staff accounts, enrolment proofs
that cannot be replayed, and names unique per organisation.

Every test runs on SQLite and on PostgreSQL. The session's servers relax the
per-client limits (every test speaks from 127.0.0.1); tests of throttling restore the
defaults (`strict`) and speak from addresses of their own (``X-Forwarded-For``, which
uvicorn trusts from loopback), so they neither trip nor are tripped by other tests.
"""

from __future__ import annotations

import base64
import random
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pyotp
import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from crdt import enrolment_message
from edge_sdk import DeviceIdentity
from sync_server import Settings, ThreadedServer, create_app
from sync_server.audit.tables import AuditEvent
from sync_server.db import utcnow
from sync_server.identity import throttling
from sync_server.identity.enrolment import create_enrolment_token
from sync_server.identity.tables import Organisation, RefreshToken, Throttle, User
from sync_server.identity.tenancy import ensure_clinic, ensure_organisation
from sync_server.identity.users import INVALID_CREDENTIALS, create_user

PASSWORD = "correct horse battery staple"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def new_client() -> str:
    """A client address of this test's own (10.0.0.0/8: never another test's)."""
    return f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"


def code_of(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


def wrong_totp(secret: str) -> str:
    totp = pyotp.TOTP(secret)
    valid = {totp.at(time.time() + delta) for delta in (-60, -30, 0, 30, 60)}
    return next(c for c in (f"{i:06d}" for i in range(1_000_000)) if c not in valid)


@dataclass
class Accounts:
    """Helpers bound to one live server."""

    server: Any

    def organisation(self) -> str:
        with self.server.db.write() as session:
            return ensure_organisation(session=session, name=unique("org")).id

    def clinic(self, organisation_id: str | None = None) -> str:
        with self.server.db.write() as session:
            return ensure_clinic(
                session=session,
                name=unique("clinic"),
                organisation_id=organisation_id or self.server.organisation_id,
            ).id

    def user(
        self,
        role: str = "clinician",
        *,
        clinic_id: str | None = None,
        organisation_id: str | None = None,
        username: str | None = None,
        totp: bool = True,
    ) -> tuple[User, str]:
        organisation_id = organisation_id or self.server.organisation_id
        if role != "admin" and clinic_id is None:
            clinic_id = self.clinic(organisation_id)
        with self.server.db.write() as session:
            user, secret = create_user(
                session=session,
                username=username or unique(role),
                password=PASSWORD,
                role=role,
                organisation_id=organisation_id,
                clinic_id=clinic_id,
                with_totp=totp,
                secret_box=self.server.app.state.secret_box,
            )
        return user, secret or ""

    def token(self, user: User) -> str:
        token, _ = self.server.app.state.signing_key.issue_access_token(
            subject=user.id,
            kind="user",
            clinic_id=user.clinic_id,
            organisation_id=user.organisation_id,
            role=user.role,
            ttl=timedelta(minutes=10),
        )
        return str(token)

    def admin(self, **kwargs: Any) -> tuple[User, httpx.Client]:
        admin, _ = self.user("admin", totp=False, **kwargs)
        return admin, self.server.http(self.token(admin))

    def post(self, path: str, body: dict[str, Any], *, client: str) -> httpx.Response:
        with self.server.http() as http:
            return http.post(path, json=body, headers={"x-forwarded-for": client})

    def login(
        self,
        username: str,
        password: str,
        code: str | None,
        *,
        client: str,
        organisation: str | None = None,
    ) -> httpx.Response:
        body: dict[str, Any] = {"username": username, "password": password, "totp": code}
        if organisation is not None:
            body["organisation"] = organisation
        return self.post("/v1/auth/login", body, client=client)

    def enrolment_token(self, clinic_id: str | None = None) -> str:
        clinic_id = clinic_id or self.clinic()
        with self.server.db.write() as session:
            token, _ = create_enrolment_token(
                session=session,
                clinic_id=clinic_id,
                ttl=timedelta(minutes=10),
            )
        return token

    def enrol_body(
        self, token: str, device: DeviceIdentity, *, issued_at: int | None = None
    ) -> dict[str, Any]:
        issued_at = int(time.time()) if issued_at is None else issued_at
        nonce = secrets.token_urlsafe(24)
        message = enrolment_message(token, device.device_id, issued_at, nonce)
        return {
            "token": token,
            "device_id": device.device_id,
            "public_key": base64.b64encode(device.public_key).decode(),
            "issued_at": issued_at,
            "nonce": nonce,
            "signature": base64.b64encode(device.sign(message)).decode(),
        }

    def counters(self, like: str) -> list[Throttle]:
        with self.server.db.read() as session:
            return list(session.scalars(select(Throttle).where(Throttle.key.like(like))))

    def audit(self, session: Session, target: str) -> list[tuple[str, str | None]]:
        rows = session.scalars(
            select(AuditEvent).where(AuditEvent.target == target).order_by(AuditEvent.id)
        )
        return [(row.action, row.actor_id) for row in rows]


@pytest.fixture
def accounts(server: Any) -> Accounts:
    return Accounts(server)


@pytest.fixture
def strict(server: Any, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The server with every throttling limit at its default."""
    settings: Settings = server.settings
    for name, field in Settings.model_fields.items():
        if name.startswith(("rate_", "failures_", "failure_")):
            monkeypatch.setattr(settings, name, field.default)
    return settings


def assert_throttled(response: httpx.Response) -> int:
    assert response.status_code == 429, response.text
    assert code_of(response) == "too_many_requests"
    retry_after = int(response.headers["retry-after"])
    assert retry_after >= 1
    assert response.json()["retry_after"] == retry_after
    return retry_after


# ---------------------------------------------------------------- throttling, not lockout
def test_an_attack_slows_the_attacker_and_never_locks_the_real_user_out(
    accounts: Accounts, strict: Settings
) -> None:
    user, secret = accounts.user()
    attacker, real_user = new_client(), new_client()
    answers = [
        accounts.login(user.username, f"guess number {i}", "000000", client=attacker)
        for i in range(50)
    ]
    statuses = [a.status_code for a in answers]
    free = strict.failures_free_per_account
    assert statuses[: free + 1] == [401] * (free + 1)
    assert set(statuses) == {401, 429}
    assert statuses.count(429) >= 30
    for answer in answers:
        if answer.status_code == 429:
            assert assert_throttled(answer) <= strict.failure_backoff_max_seconds
        else:
            assert code_of(answer) == "invalid_credentials"
    # While throttled the attacker cannot tell right credentials from wrong ones.
    right = accounts.login(user.username, PASSWORD, pyotp.TOTP(secret).now(), client=attacker)
    assert_throttled(right)
    # The real user, from a client that has not been failing, gets in at once.
    ok = accounts.login(user.username, PASSWORD, pyotp.TOTP(secret).now(), client=real_user)
    assert ok.status_code == 200, ok.text
    assert ok.json()["user_id"] == user.id
    # Nothing is kept in a worker's memory: the counters are rows, no account is locked.
    account = throttling.account_of_user(user.id)
    held = accounts.counters(f"login:fail:account:{account}")
    assert len(held) == 1 and held[0].blocked_until is not None


def test_a_client_that_keeps_failing_is_held_back_on_every_account(
    accounts: Accounts, strict: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(strict, "failures_free_per_client", 3)
    user, secret = accounts.user()
    sprayer, other = new_client(), new_client()
    for _ in range(4):  # four unknown accounts: only the client is counted against
        refused = accounts.login(unique("nobody"), PASSWORD, "123456", client=sprayer)
        assert code_of(refused) == "invalid_credentials"
    held = accounts.login(user.username, PASSWORD, pyotp.TOTP(secret).now(), client=sprayer)
    assert_throttled(held)
    assert accounts.login(
        user.username, PASSWORD, pyotp.TOTP(secret).now(), client=other
    ).is_success


def test_throttling_is_shared_by_every_worker(
    accounts: Accounts, strict: Settings, server: Any
) -> None:
    user, _ = accounts.user()
    attacker = new_client()
    for i in range(strict.failures_free_per_account + 1):
        accounts.login(user.username, f"guess {i}", "000000", client=attacker)
    assert_throttled(accounts.login(user.username, "again", "000000", client=attacker))
    second = ThreadedServer(create_app(strict))  # another worker on the same database
    second.start()
    try:
        with httpx.Client(base_url=second.url, timeout=30) as http:
            answer = http.post(
                "/v1/auth/login",
                json={"username": user.username, "password": "and again", "totp": "000000"},
                headers={"x-forwarded-for": attacker},
            )
        assert_throttled(answer)
    finally:
        second.stop()


def test_concurrent_failures_are_all_counted(
    accounts: Accounts, strict: Settings, server: Any
) -> None:
    """The counters are conditional upserts: workers racing on one account lose none."""
    user, _ = accounts.user()
    attempts = 8
    barrier = threading.Barrier(attempts)
    statuses: list[int] = []

    def fail() -> None:
        client = new_client()
        barrier.wait()
        statuses.append(accounts.login(user.username, "wrong", "000000", client=client).status_code)

    threads = [threading.Thread(target=fail) for _ in range(attempts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [401] * attempts  # clients that had not failed are let through
    account = throttling.account_of_user(user.id)
    (counter,) = accounts.counters(f"login:fail:account:{account}")
    assert counter.hits == attempts
    assert counter.blocked_until is not None  # past the free failures: held back


@pytest.mark.parametrize("route", ["login", "enrol", "device-login", "refresh"])
def test_rate_limits_per_client(
    accounts: Accounts, strict: Settings, monkeypatch: pytest.MonkeyPatch, route: str
) -> None:
    setting = f"rate_{route.replace('-', '_')}_per_client"
    monkeypatch.setattr(strict, setting, 3)
    path, body = {
        "login": ("/v1/auth/login", {"username": unique("x"), "password": "p" * 12}),
        "enrol": (
            "/v1/devices/enroll",
            accounts.enrol_body(secrets.token_urlsafe(32), DeviceIdentity.generate()),
        ),
        "device-login": (
            "/v1/auth/device",
            {
                "device_id": str(uuid.uuid4()),
                "issued_at": int(time.time()),
                "nonce": secrets.token_urlsafe(24),
                "signature": base64.b64encode(b"x" * 64).decode(),
            },
        ),
        "refresh": ("/v1/auth/refresh", {"refresh_token": secrets.token_urlsafe(32)}),
    }[route]
    busy, calm = new_client(), new_client()
    for _ in range(3):
        assert accounts.post(path, body, client=busy).status_code == 401
    retry_after = assert_throttled(accounts.post(path, body, client=busy))
    assert retry_after <= strict.rate_window_seconds
    assert accounts.post(path, body, client=calm).status_code == 401


def test_refreshes_are_limited_per_device_and_a_throttled_token_stays_unspent(
    accounts: Accounts, strict: Settings, monkeypatch: pytest.MonkeyPatch, server: Any
) -> None:
    monkeypatch.setattr(strict, "rate_refresh_per_subject", 2)
    device = DeviceIdentity.generate()
    client = new_client()
    enrolled = accounts.post(
        "/v1/devices/enroll", accounts.enrol_body(accounts.enrolment_token(), device), client=client
    )
    assert enrolled.status_code == 201, enrolled.text
    token = enrolled.json()["refresh_token"]
    for _ in range(2):
        rotated = accounts.post("/v1/auth/refresh", {"refresh_token": token}, client=client)
        assert rotated.status_code == 200, rotated.text
        token = rotated.json()["refresh_token"]
    assert_throttled(accounts.post("/v1/auth/refresh", {"refresh_token": token}, client=client))
    with server.db.write() as session:  # the window ends
        session.execute(delete(Throttle).where(Throttle.key.like("refresh:rate:device:%")))
    again = accounts.post("/v1/auth/refresh", {"refresh_token": token}, client=client)
    assert again.status_code == 200, again.text  # not reuse: the throttled token was unspent


def test_expired_counters_are_pruned(accounts: Accounts, server: Any) -> None:
    key = f"login:fail:client:{new_client()}"
    with server.db.write() as session:
        session.add(Throttle(key=key + "-old", hits=9, expires_at=utcnow()))
        session.add(Throttle(key=key, hits=1, expires_at=utcnow() + timedelta(days=1)))
    with server.db.write() as session:
        assert throttling.prune(session=session) >= 1
    assert [c.key for c in accounts.counters(key + "%")] == [key]


def test_ipv6_clients_count_by_their_64_prefix() -> None:
    assert throttling.client_of("2001:db8:1:2:aaaa::1") == throttling.client_of("2001:db8:1:2::9")
    assert throttling.client_of("2001:db8:1:3::1") != throttling.client_of("2001:db8:1:2::1")
    assert throttling.client_of("::ffff:192.0.2.1") == "192.0.2.1"
    assert throttling.client_of(None) == "unknown"


# ---------------------------------------------------------------- one answer
def test_every_login_failure_is_one_answer_at_the_cost_of_one_hash(
    accounts: Accounts, server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from argon2 import PasswordHasher

    hashes: list[int] = []
    real_verify = PasswordHasher.verify

    def counted(self: PasswordHasher, hash: str | bytes, password: str | bytes) -> bool:
        hashes.append(1)
        return real_verify(self, hash, password)

    monkeypatch.setattr(PasswordHasher, "verify", counted)
    user, secret = accounts.user()
    deactivated, deactivated_secret = accounts.user()
    with server.db.write() as session:
        session.get(User, deactivated.id).active = False  # type: ignore[union-attr]
    shared = unique("shared")
    accounts.user(username=shared)
    accounts.user(username=shared, organisation_id=accounts.organisation())
    client = new_client()
    used = pyotp.TOTP(secret).now()
    assert accounts.login(user.username, PASSWORD, used, client=client).status_code == 200
    cases = {
        "unknown account": (unique("nobody"), PASSWORD, "123456"),
        "wrong password": (user.username, "not the password", pyotp.TOTP(secret).now()),
        "missing code": (user.username, PASSWORD, None),
        "wrong code": (user.username, PASSWORD, wrong_totp(secret)),
        "used code": (user.username, PASSWORD, used),
        "deactivated": (deactivated.username, PASSWORD, pyotp.TOTP(deactivated_secret).now()),
        "ambiguous username": (shared, PASSWORD, "123456"),
    }
    for name, (username, password, code) in cases.items():
        hashes.clear()
        answer = accounts.login(username, password, code, client=client)
        assert answer.status_code == 401, name
        assert answer.json() == {
            "error": {"code": "invalid_credentials", "message": INVALID_CREDENTIALS}
        }, name
        assert len(hashes) == 1, name


# ---------------------------------------------------------------- admin routes
def test_an_admin_unlocks_an_account_under_attack(
    accounts: Accounts, strict: Settings, server: Any
) -> None:
    user, _ = accounts.user()
    admin, http = accounts.admin()
    attacker = new_client()
    for i in range(strict.failures_free_per_account + 1):
        accounts.login(user.username, f"guess {i}", "000000", client=attacker)
    assert_throttled(accounts.login(user.username, "guess", "000000", client=attacker))
    with http:
        unlocked = http.post(f"/v1/admin/users/{user.id}/unlock")
    assert unlocked.status_code == 200, unlocked.text
    assert unlocked.json()["user"]["id"] == user.id
    assert unlocked.json()["cleared"] >= 2  # the account's counter and the pair's
    again = accounts.login(user.username, "guess", "000000", client=attacker)
    assert again.status_code == 401  # checked again, not held back
    with server.db.read() as session:
        assert ("user-unlock", admin.id) in accounts.audit(session, user.id)


def test_deactivate_reactivate_reset_totp_and_revoke_sessions(
    accounts: Accounts, server: Any
) -> None:
    user, secret = accounts.user()
    admin, http = accounts.admin()
    client = new_client()
    first = accounts.login(user.username, PASSWORD, pyotp.TOTP(secret).now(), client=client)
    assert first.status_code == 200, first.text
    with http:
        # Revoke sessions: every refresh-token family of the account.
        revoked = http.post(f"/v1/admin/users/{user.id}/revoke-sessions")
        assert revoked.status_code == 200, revoked.text
        assert revoked.json()["families"] == 1
        refresh = {"refresh_token": first.json()["refresh_token"]}
        assert code_of(accounts.post("/v1/auth/refresh", refresh, client=client)) == (
            "refresh_token_invalid"
        )

        # Reset TOTP: a new secret, once; the old authenticator stops working.
        reset = http.post(f"/v1/admin/users/{user.id}/reset-totp")
        assert reset.status_code == 200, reset.text
        new_secret = reset.json()["totp_secret"]
        assert new_secret != secret and reset.json()["totp_uri"].startswith("otpauth://")
        old = accounts.login(user.username, PASSWORD, pyotp.TOTP(secret).now(), client=client)
        assert code_of(old) == "invalid_credentials"
        session_one = accounts.login(
            user.username, PASSWORD, pyotp.TOTP(new_secret).now(), client=client
        )
        assert session_one.status_code == 200, session_one.text

        # Deactivate: the token is refused at once, the session revoked, logins fail.
        deactivated = http.post(f"/v1/admin/users/{user.id}/deactivate")
        assert deactivated.status_code == 200 and deactivated.json()["active"] is False
        with server.http(session_one.json()["access_token"]) as staff:
            assert code_of(staff.get("/v1/patients")) == "user_inactive"
        refresh = {"refresh_token": session_one.json()["refresh_token"]}
        assert accounts.post("/v1/auth/refresh", refresh, client=client).status_code == 401
        code = pyotp.TOTP(new_secret).at(time.time() + 30)  # unused: each step works once
        refused = accounts.login(user.username, PASSWORD, code, client=client)
        assert code_of(refused) == "invalid_credentials"

        # Reactivate: the same credentials work again.
        reactivated = http.post(f"/v1/admin/users/{user.id}/reactivate")
        assert reactivated.status_code == 200 and reactivated.json()["active"] is True
        assert accounts.login(user.username, PASSWORD, code, client=client).status_code == 200

        # An admin cannot deactivate itself: the organisation keeps an admin.
        own = http.post(f"/v1/admin/users/{admin.id}/deactivate")
        assert own.status_code == 409 and code_of(own) == "own_account"
    with server.db.read() as session:
        assert [
            action for action, actor in accounts.audit(session, user.id) if actor == admin.id
        ] == [
            "user-sessions-revoke",
            "user-totp-reset",
            "user-deactivate",
            "user-reactivate",
        ]


def test_account_routes_are_scoped_like_every_admin_route(accounts: Accounts, server: Any) -> None:
    clinic, other_clinic = accounts.clinic(), accounts.clinic()
    nurse, _ = accounts.user(clinic_id=clinic)
    elsewhere, _ = accounts.user(clinic_id=other_clinic)
    org_admin, _ = accounts.user("admin", totp=False)
    _, clinic_admin = accounts.admin(clinic_id=clinic)
    _, outsider = accounts.admin(organisation_id=accounts.organisation())
    clinician, _ = accounts.user(clinic_id=clinic)
    actions = ["unlock", "deactivate", "reactivate", "reset-totp", "revoke-sessions"]
    with clinic_admin, outsider, server.http(accounts.token(clinician)) as staff:
        for action in actions:
            for target in (nurse, elsewhere, org_admin):
                answer = outsider.post(f"/v1/admin/users/{target.id}/{action}")
                assert (answer.status_code, code_of(answer)) == (404, "user_not_found")
            for target in (elsewhere, org_admin):  # not its clinic's accounts
                answer = clinic_admin.post(f"/v1/admin/users/{target.id}/{action}")
                assert answer.status_code == 404, (action, answer.text)
            assert code_of(staff.post(f"/v1/admin/users/{nurse.id}/{action}")) == "admins_only"
        assert clinic_admin.post(f"/v1/admin/users/{nurse.id}/unlock").status_code == 200
        assert clinic_admin.post(f"/v1/admin/users/{uuid.uuid4()}/unlock").status_code == 404
        listed = {u["id"] for u in clinic_admin.get("/v1/admin/users").json()}
        assert nurse.id in listed and elsewhere.id not in listed and org_admin.id not in listed
        assert outsider.get("/v1/admin/users").json() != []  # its own admin only
        assert nurse.id not in {u["id"] for u in outsider.get("/v1/admin/users").json()}


# ---------------------------------------------------------------- enrolment replay
def test_a_captured_enrolment_cannot_be_replayed_for_a_session(
    accounts: Accounts, server: Any
) -> None:
    device = DeviceIdentity.generate()
    client = new_client()
    captured = accounts.enrol_body(accounts.enrolment_token(), device)
    first = accounts.post("/v1/devices/enroll", captured, client=client)
    assert first.status_code == 201, first.text
    replay = accounts.post("/v1/devices/enroll", captured, client=new_client())
    assert (replay.status_code, code_of(replay)) == (401, "nonce_reused")
    with server.db.read() as session:
        rows = session.scalars(
            select(RefreshToken).where(RefreshToken.subject_id == device.device_id)
        ).all()
        assert len(rows) == 1 and rows[0].revoked_at is None  # no second family
    refresh = {"refresh_token": first.json()["refresh_token"]}
    assert accounts.post("/v1/auth/refresh", refresh, client=client).status_code == 200


def test_a_stale_enrolment_proof_is_refused_and_spends_nothing(
    accounts: Accounts, server: Any
) -> None:
    device = DeviceIdentity.generate()
    token = accounts.enrolment_token()
    for skew in (-600, 600):
        stale = accounts.enrol_body(token, device, issued_at=int(time.time()) + skew)
        refused = accounts.post("/v1/devices/enroll", stale, client=new_client())
        assert (refused.status_code, code_of(refused)) == (401, "enrolment_proof_stale")
    fresh = accounts.post(
        "/v1/devices/enroll", accounts.enrol_body(token, device), client="10.9.9.9"
    )
    assert fresh.status_code == 201, fresh.text


def test_a_lost_answer_is_retried_with_a_fresh_proof_and_one_family_survives(
    accounts: Accounts, server: Any
) -> None:
    device = DeviceIdentity.generate()
    token = accounts.enrolment_token()
    client = new_client()
    lost = accounts.post("/v1/devices/enroll", accounts.enrol_body(token, device), client=client)
    assert lost.status_code == 201  # ... and the device never saw this answer
    retried = accounts.post("/v1/devices/enroll", accounts.enrol_body(token, device), client=client)
    assert retried.status_code == 201, retried.text
    with server.db.read() as session:
        live = session.scalars(
            select(RefreshToken).where(
                RefreshToken.subject_id == device.device_id, RefreshToken.revoked_at.is_(None)
            )
        ).all()
        assert len(live) == 1  # never a parallel family
        outcomes = session.scalars(
            select(AuditEvent.outcome)
            .where(AuditEvent.actor_id == device.device_id, AuditEvent.action == "enrol")
            .order_by(AuditEvent.id)
        ).all()
        assert list(outcomes) == ["ok", "repeated"]
    old = {"refresh_token": lost.json()["refresh_token"]}
    assert code_of(accounts.post("/v1/auth/refresh", old, client=client)) == (
        "refresh_token_invalid"
    )
    new = {"refresh_token": retried.json()["refresh_token"]}
    assert accounts.post("/v1/auth/refresh", new, client=client).status_code == 200


# ---------------------------------------------------------------- names per organisation
def test_clinic_names_and_usernames_are_unique_per_organisation(
    accounts: Accounts, server: Any
) -> None:
    org_a, org_b = accounts.organisation(), accounts.organisation()
    _, admin_a = accounts.admin(organisation_id=org_a)
    _, admin_b = accounts.admin(organisation_id=org_b)
    clinic, username = unique("Riverside Ward"), unique("nurse")
    with admin_a, admin_b:
        made_a = admin_a.post("/v1/admin/clinics", json={"name": clinic})
        made_b = admin_b.post("/v1/admin/clinics", json={"name": clinic})
        assert (made_a.status_code, made_b.status_code) == (201, 201)
        again = admin_a.post("/v1/admin/clinics", json={"name": clinic})
        assert (again.status_code, code_of(again)) == (409, "clinic_exists")
        secrets_of = {}
        for org, admin, made in ((org_a, admin_a, made_a), (org_b, admin_b, made_b)):
            user = {
                "username": username,
                "password": PASSWORD,
                "role": "clinician",
                "clinic_id": made.json()["id"],
            }
            created = admin.post("/v1/admin/users", json=user)
            assert created.status_code == 201, created.text
            secrets_of[org] = (created.json()["user"]["id"], created.json()["totp_secret"])
        taken = admin_a.post("/v1/admin/users", json={**user, "clinic_id": made_a.json()["id"]})
        assert (taken.status_code, code_of(taken)) == (409, "username_taken")
    client = new_client()
    # The username is no longer unique on the server: the login names its organisation.
    user_a, secret_a = secrets_of[org_a]
    ambiguous = accounts.login(username, PASSWORD, pyotp.TOTP(secret_a).now(), client=client)
    assert code_of(ambiguous) == "invalid_credentials"
    with server.db.read() as session:
        org_a_name = session.get(Organisation, org_a).name  # type: ignore[union-attr]
    by_name = accounts.login(
        username, PASSWORD, pyotp.TOTP(secret_a).now(), client=client, organisation=org_a_name
    )
    assert by_name.status_code == 200 and by_name.json()["user_id"] == user_a
    user_b, secret_b = secrets_of[org_b]
    by_id = accounts.login(
        username, PASSWORD, pyotp.TOTP(secret_b).now(), client=client, organisation=org_b
    )
    assert by_id.status_code == 200 and by_id.json()["user_id"] == user_b
    # A username unique on the server logs in without one, as before.
    solo, solo_secret = accounts.user()
    assert accounts.login(
        solo.username, PASSWORD, pyotp.TOTP(solo_secret).now(), client=client
    ).is_success


def test_unauthenticated_requests_cannot_grow_the_audit_log_without_bound(
    accounts: Accounts, strict: Settings, server: Any
) -> None:
    """Each refused login is audited, but a client past its rate limit is refused
    before anything is checked or written: its rows stop at the limit."""
    client = new_client()
    username = unique("nobody")
    with server.db.read() as session:
        before = session.scalar(select(func.count()).select_from(AuditEvent)) or 0
    answers = [
        accounts.login(username, "a wrong password", None, client=client).status_code
        for _ in range(strict.rate_login_per_client + 40)
    ]
    assert answers.count(429) >= 40
    with server.db.read() as session:
        after = session.scalar(select(func.count()).select_from(AuditEvent)) or 0
    assert after - before <= strict.rate_login_per_client


def test_organisations_and_clinics_created_at_once_are_one(server: Any) -> None:
    """Operators issuing enrolment tokens for the same new clinic at once (each creating
    the organisation and the clinic if missing) all get the one organisation and clinic,
    never a raw unique-key error."""
    organisation, clinic = unique("org-race"), unique("clinic-race")
    callers = 8
    start = threading.Barrier(callers)
    got: list[tuple[str, str]] = []
    failed: list[BaseException] = []

    # PostgreSQL: every transaction has looked before any creates (the race); SQLite
    # serialises writers at BEGIN, so there they start together instead.
    racing = server.backend == "postgresql"

    def create() -> None:
        try:
            if not racing:
                start.wait(timeout=30)
            with server.db.write() as session:
                if racing:
                    session.execute(select(Organisation.id).limit(1))
                    start.wait(timeout=30)
                org = ensure_organisation(session=session, name=organisation)
                found = ensure_clinic(session=session, name=clinic, organisation_id=org.id)
                got.append((org.id, found.id))
        except BaseException as exc:
            failed.append(exc)

    threads = [threading.Thread(target=create) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failed, failed
    assert len(got) == callers and len(set(got)) == 1
    with server.db.read() as session:
        assert (
            session.scalar(
                select(func.count())
                .select_from(Organisation)
                .where(Organisation.name == organisation)
            )
            == 1
        )
