"""Routes: the staff dashboard's sign-in and sign-out, and the router every dashboard
page module joins (`router`; pages are HTML, so they stay out of the API's OpenAPI
document).

Sign-in takes the same credentials as ``POST /v1/auth/login`` (username, password,
TOTP code, and the organisation when the username exists in several), throttled the
same way, and starts a staff session whose refresh token the browser keeps in an
HttpOnly cookie (`sync_server.dashboard.web`). Sign-out revokes that session.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from sync_server.dashboard import (
    audit_routes,
    patient_routes,
    queue_routes,
    report_routes,
    scan_routes,
    wound_routes,
)
from sync_server.dashboard.web import (
    DASHBOARD_PREFIX,
    SESSION_COOKIE,
    SIGN_IN_COOKIE,
    CsrfChecked,
    PageDep,
    new_sign_in_nonce,
    render,
)
from sync_server.deps import ClientDep, DbDep, SecretBoxDep, SettingsDep, SigningKeyDep
from sync_server.errors import Forbidden, TooManyRequests, Unauthorized
from sync_server.identity import throttling
from sync_server.identity.sessions import log_in, revoke_refresh_family

__all__ = ["router"]

router = APIRouter(prefix=DASHBOARD_PREFIX, include_in_schema=False)

_ENDED = {
    "session_idle_expired": "You were signed out after a period of inactivity.",
    "session_ended": "Your session has ended. Please sign in again.",
    "user_inactive": "This account is deactivated.",
    "staff_only": "The dashboard is for staff accounts.",
}


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def _sign_in_form(
    request: Request, *, error: str = "", ended: str = "", status_code: int = 200
) -> HTMLResponse:
    nonce = new_sign_in_nonce()
    response = render(
        request,
        "sign_in.html",
        {"csrf": nonce, "error": error, "notice": _ENDED.get(ended, "")},
        status_code=status_code,
    )
    response.set_cookie(
        SIGN_IN_COOKIE,
        nonce,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
        path=f"{DASHBOARD_PREFIX}/sign-in",
        max_age=3600,
    )
    return response


@router.get("/sign-in", response_class=HTMLResponse)
def sign_in_page(request: Request, ended: str = "") -> HTMLResponse:
    """The sign-in form (with why the last session ended, if it did)."""
    return _sign_in_form(request, ended=ended[:40])


@router.post("/sign-in", response_model=None)
def sign_in(
    request: Request,
    db: DbDep,
    settings: SettingsDep,
    key: SigningKeyDep,
    secret_box: SecretBoxDep,
    client: ClientDep,
    username: Annotated[str, Form(max_length=200)] = "",
    password: Annotated[str, Form(max_length=1000)] = "",
    totp: Annotated[str, Form(max_length=10)] = "",
    organisation: Annotated[str, Form(max_length=200)] = "",
    csrf_token: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    """Check the credentials and start a session (303 to the patients page), or show
    the form again with one message whatever was wrong (401), or 429 when throttled."""
    expected = request.cookies.get(SIGN_IN_COOKIE, "")
    if not expected or not hmac.compare_digest(expected, csrf_token):
        return _sign_in_form(request, error="The form expired. Please try again.", status_code=403)
    try:
        with db.write() as session:
            throttling.admit(session=session, action="login", client=client, settings=settings)
        with db.write() as session:
            login = log_in(
                session=session,
                username=username,
                password=password,
                totp_code=totp.strip() or None,
                organisation=organisation.strip() or None,
                signing_key=key,
                secret_box=secret_box,
                settings=settings,
                client=client,
            )
    except TooManyRequests as refused:
        throttled = _sign_in_form(
            request,
            error="Too many attempts. Please wait a few minutes and try again.",
            status_code=429,
        )
        throttled.headers.update(refused.headers or {})
        return throttled
    except (Unauthorized, Forbidden):
        return _sign_in_form(
            request,
            error="The username, password or code is not right.",
            status_code=401,
        )
    response = RedirectResponse(f"{DASHBOARD_PREFIX}/patients", status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        login.refresh_token,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
        path=DASHBOARD_PREFIX,
    )
    response.delete_cookie(SIGN_IN_COOKIE, path=f"{DASHBOARD_PREFIX}/sign-in")
    return response


@router.post("/sign-out", response_model=None)
def sign_out(request: Request, page: CsrfChecked, db: DbDep) -> Response:
    """End the session (every token of it revoked) and go back to the sign-in page."""
    with db.write() as session:
        revoke_refresh_family(
            session=session, refresh_token=request.cookies.get(SESSION_COOKIE, "")
        )
    response = RedirectResponse(f"{DASHBOARD_PREFIX}/sign-in", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path=DASHBOARD_PREFIX)
    return response


@router.get("", response_model=None)
def home(page: PageDep) -> Response:
    """The dashboard's front page: the patients search."""
    return RedirectResponse(f"{DASHBOARD_PREFIX}/patients", status_code=303)


for _pages in (
    patient_routes,
    wound_routes,
    scan_routes,
    queue_routes,
    report_routes,
    audit_routes,
):
    router.include_router(_pages.router)
