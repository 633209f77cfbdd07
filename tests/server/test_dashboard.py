"""The staff dashboard over HTTP: sign-in with password and TOTP, the session cookie,
CSRF, security headers, idle expiry, clinic scope and the audit of page views (the
pages in a real browser: tests/server/test_dashboard_browser.py)."""

from __future__ import annotations

import re
import uuid
from contextlib import closing
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from sync_server.db import utcnow
from sync_server.identity.tables import RefreshToken
from tests.server.dashboard_world import (
    audited_reads,
    form_token,
    new_staff,
    seed_patient,
    sign_in,
)


def test_sign_in_needs_the_totp_code_and_sets_a_strict_cookie(server: Any) -> None:
    clinic = server.new_clinic()
    account = new_staff(server, clinic)
    with httpx.Client(base_url=server.url, timeout=30) as browser:
        form = browser.get("/dashboard/sign-in")
        assert form.status_code == 200
        refused = browser.post(
            "/dashboard/sign-in",
            data={
                "csrf_token": form_token(form.text),
                "username": account.username,
                "password": account.password,
                "totp": "000000",
            },
        )
        assert refused.status_code == 401
        assert "not right" in refused.text
        assert "coherency_dashboard" not in browser.cookies
        form = browser.get("/dashboard/sign-in")
        answer = browser.post(
            "/dashboard/sign-in",
            data={
                "csrf_token": form_token(form.text),
                "username": account.username,
                "password": account.password,
                "totp": account.next_code(),
            },
        )
        assert answer.status_code == 303
        cookie = answer.headers["set-cookie"]
        assert "coherency_dashboard=" in cookie
        for attribute in ("HttpOnly", "SameSite=strict", "Path=/dashboard"):
            assert attribute.lower() in cookie.lower()


def test_a_sign_in_form_without_its_token_is_refused(server: Any) -> None:
    account = new_staff(server, server.new_clinic())
    answer = httpx.post(
        f"{server.url}/dashboard/sign-in",
        data={"username": account.username, "password": account.password, "totp": "1"},
    )
    assert answer.status_code == 403
    assert "coherency_dashboard" not in answer.headers.get("set-cookie", "")


def test_pages_carry_a_strict_csp_and_no_store(server: Any) -> None:
    client, _ = sign_in(server, new_staff(server, server.new_clinic()))
    with closing(client):
        answer = client.get("/dashboard/patients")
    assert answer.status_code == 200
    csp = answer.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert answer.headers["cache-control"] == "no-store"
    assert answer.headers["x-frame-options"] == "DENY"
    assert "<script>" not in answer.text and " style=" not in answer.text


def test_without_a_session_pages_send_the_browser_to_sign_in(server: Any) -> None:
    answer = httpx.get(f"{server.url}/dashboard/patients")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/dashboard/sign-in"
    forged = httpx.get(
        f"{server.url}/dashboard/patients", cookies={"coherency_dashboard": "x" * 40}
    )
    assert forged.status_code == 303


def test_search_and_patient_page_are_scoped_and_audited(server: Any) -> None:
    clinic, other = server.new_clinic(), server.new_clinic()
    family = f"Lovelace{uuid.uuid4().hex[:6]}"
    mine = seed_patient(server, clinic, family, mrn=f"MRN-{uuid.uuid4().hex[:8]}")
    theirs = seed_patient(server, other, family)
    account = new_staff(server, clinic)
    client, csrf = sign_in(server, account)
    with closing(client):
        found = client.post("/dashboard/patients/search", data={"q": family, "csrf_token": csrf})
        assert found.status_code == 200
        assert f"/dashboard/patients/{mine}" in found.text
        assert theirs not in found.text
        assert family not in str(found.url)
        page = client.get(f"/dashboard/patients/{mine}")
        assert page.status_code == 200 and family in page.text
        refused = client.get(f"/dashboard/patients/{theirs}")
        assert refused.status_code == 404
        assert family not in refused.text and "text/html" in refused.headers["content-type"]
    assert audited_reads(server, account.user_id) == [
        ("ok", {"patients": [mine]}),  # the search found one
        ("ok", {"patients": [mine]}),  # the patient page: the patient,
        ("ok", {"wounds": []}),  # their wounds
        ("ok", {"notes": []}),  # and their notes
        ("not_found", {"patients": [theirs]}),
    ]


def test_a_form_without_the_csrf_token_changes_nothing(server: Any) -> None:
    client, csrf = sign_in(server, new_staff(server, server.new_clinic()))
    with closing(client):
        forged = client.post("/dashboard/sign-out", data={})
        assert forged.status_code == 403
        assert client.get("/dashboard/patients").status_code == 200
        wrong = client.post("/dashboard/sign-out", headers={"x-csrf-token": "0" * 64})
        assert wrong.status_code == 403
        out = client.post("/dashboard/sign-out", data={"csrf_token": csrf})
        assert str(out.url).endswith("/dashboard/sign-in")
        client.follow_redirects = False
        assert client.get("/dashboard/patients").status_code == 303


def test_an_idle_session_ends_and_says_why(server: Any) -> None:
    account = new_staff(server, server.new_clinic())
    client, _ = sign_in(server, account)
    with closing(client):
        long_ago = utcnow() - timedelta(seconds=server.settings.staff_idle_seconds + 5)
        with server.db.write() as session:
            session.execute(
                update(RefreshToken)
                .where(RefreshToken.subject_id == account.user_id)
                .values(last_used_at=long_ago, issued_at=long_ago)
            )
        client.follow_redirects = False
        answer = client.get("/dashboard/patients")
        assert answer.status_code == 303
        assert answer.headers["location"].endswith("ended=session_idle_expired")
        page = client.get(answer.headers["location"])
        assert "inactivity" in page.text


@pytest.mark.parametrize("path", ["/dashboard/patients/not-a-uuid", "/dashboard/nowhere"])
def test_unknown_pages_answer_an_html_404(server: Any, path: str) -> None:
    client, _ = sign_in(server, new_staff(server, server.new_clinic()))
    with closing(client):
        answer = client.get(path)
    assert answer.status_code == 404
    assert "text/html" in answer.headers["content-type"]


def _dashboard_routes() -> list[tuple[str, str]]:
    """(method, path) of every dashboard route, the page modules' included ones too."""
    from fastapi.routing import APIRoute

    from sync_server.dashboard.routes import router

    found = []
    for route in router.routes:
        included = getattr(route, "original_router", None)  # FastAPI's included router
        routes = [(router.prefix, r) for r in included.routes] if included else [("", route)]
        found.extend(
            (method, prefix + r.path)
            for prefix, r in routes
            if isinstance(r, APIRoute)
            for method in r.methods
        )
    return sorted(found)


_HOSTILE_IDS = [str(uuid.uuid4()), "x" * 300, "%00", "..%2F..%2Fetc", "%E2%80%AE", "'; DROP"]
_HOSTILE_BODIES: list[dict[str, Any]] = [
    {},
    {"content": b"\xff\xfe\x00garbage", "headers": {"content-type": "text/plain"}},
    {"data": {"q": "a" * 5000, "csrf_token": "b" * 5000, "totp": "9" * 50}},
    {"content": b"q=%ZZ&&&==", "headers": {"content-type": "application/x-www-form-urlencoded"}},
    {"content": b"--x\r\n", "headers": {"content-type": "multipart/form-data; boundary=x"}},
]


def test_no_dashboard_route_answers_5xx_to_hostile_input(server: Any) -> None:
    """Every dashboard route (new ones are picked up automatically), signed in and
    not, with hostile ids and bodies: a clear 3xx/4xx, never a server error."""
    routes = _dashboard_routes()
    assert ("GET", "/dashboard/patients/{patient_id}") in routes, routes
    client, csrf = sign_in(server, new_staff(server, server.new_clinic()))
    anonymous = httpx.Client(base_url=server.url, timeout=30)
    failures = []
    with closing(client), closing(anonymous):
        client.follow_redirects = False
        for method, path in routes:
            if path.endswith("/sign-out"):
                continue  # would end the session the rest of the run uses
            for wanted in _HOSTILE_IDS:
                url = re.sub(r"\{[^}]+\}", wanted, path)
                for body in _HOSTILE_BODIES if method == "POST" else [{}]:
                    for who in (client, anonymous):
                        answer = who.request(method, url, **body)
                        if answer.status_code >= 500:
                            failures.append((method, url[:80], answer.status_code))
        # The session still works, and a valid CSRF token still signs out.
        assert client.get("/dashboard/patients").status_code == 200
        assert client.post("/dashboard/sign-out", data={"csrf_token": csrf}).status_code == 303
    assert failures == []
