"""The staff dashboard's HTTP layer: its session cookie, CSRF tokens, security headers,
templates, static files and error pages.

A signed-in browser holds its staff session's refresh token in an HttpOnly,
``SameSite=Strict`` cookie (`SESSION_COOKIE`, ``Secure`` over HTTPS); every page resolves
it with `sync_server.identity.sessions.browser_session`, which notes the activity, so a
dashboard session ends when idle exactly like an API one (`Settings.staff_idle_seconds`).
Pages never rotate the token, so several tabs and htmx requests share one session.

Every form that changes something carries a CSRF token (`csrf_token`: an HMAC of the
session's token, so it is the same on every instance and worthless without the cookie)
in a hidden ``csrf_token`` field, or htmx's ``X-CSRF-Token`` header; `CsrfChecked`
refuses a request without the right one. The sign-in form, before any session exists,
uses a double-submit cookie (`SIGN_IN_COOKIE`).

Every dashboard response carries a strict Content-Security-Policy (scripts and styles
from the server only: no inline script, style attribute or event handler), and pages
are ``Cache-Control: no-store``. Patient data never appears in a URL: searches are
POSTed, and URLs hold record ids only.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from crdt import format_money
from sync_server.deps import DbDep, SettingsDep
from sync_server.errors import Forbidden, Unauthorized
from sync_server.identity.principals import STAFF_ROLES, Principal
from sync_server.identity.sessions import browser_session

__all__ = [
    "CSP",
    "DASHBOARD_PREFIX",
    "SESSION_COOKIE",
    "SIGN_IN_COOKIE",
    "CsrfChecked",
    "Page",
    "PageDep",
    "SignInNeeded",
    "csrf_token",
    "error_page",
    "install_dashboard",
    "new_sign_in_nonce",
    "render",
]

DASHBOARD_PREFIX = "/dashboard"
SESSION_COOKIE = "coherency_dashboard"
SIGN_IN_COOKIE = "coherency_sign_in"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)
"""The dashboard's Content-Security-Policy: everything from the server itself."""

_HERE = Path(__file__).parent
templates = Jinja2Templates(directory=_HERE / "templates")
templates.env.filters["money"] = format_money  # minor units, by the currency's digits


class SignInNeeded(Exception):
    """The request has no live dashboard session: the browser is sent to sign in."""

    def __init__(self, reason: str = "") -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Page:
    """A signed-in page request: who is asking, their session, its CSRF token, and how
    long the session lasts without a request (the page clears itself then)."""

    caller: Principal
    session_id: str
    csrf: str
    idle_seconds: int


def csrf_token(session_token: str) -> str:
    """The CSRF token of the session whose cookie holds `session_token`."""
    return hmac.new(session_token.encode(), b"coherency-dashboard-csrf", hashlib.sha256).hexdigest()


def _page(request: Request, db: DbDep, settings: SettingsDep) -> Page:
    token = request.cookies.get(SESSION_COOKIE, "")
    if not token or len(token) > 200:
        raise SignInNeeded()
    try:
        with db.write() as session:
            principal, family = browser_session(
                session=session, refresh_token=token, settings=settings
            )
    except Unauthorized as refused:
        raise SignInNeeded(refused.code) from None
    except Forbidden as refused:
        raise SignInNeeded(refused.code) from None
    if principal.role not in STAFF_ROLES:
        raise SignInNeeded("staff_only")
    request.state.principal = principal  # for the access log
    return Page(principal, family, csrf_token(token), settings.staff_idle_seconds)


PageDep = Annotated[Page, Depends(_page)]
"""A signed-in staff page: redirects to the sign-in page without a live session."""


async def _csrf_checked(request: Request, page: PageDep) -> Page:
    sent = request.headers.get(CSRF_HEADER)
    if sent is None:
        form = await request.form()
        value = form.get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    if not sent or not hmac.compare_digest(sent, page.csrf):
        raise Forbidden(
            "this form has expired or did not come from the dashboard; reload the page",
            code="csrf_failed",
        )
    return page


CsrfChecked = Annotated[Page, Depends(_csrf_checked)]
"""A signed-in staff request that changes something, with the session's CSRF token."""


def render(
    request: Request,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    page: Page | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    """`template` rendered with `context`, the caller and the CSRF token of `page`."""
    values = {"page": page, "caller": page.caller if page else None, **(context or {})}
    values["csrf"] = page.csrf if page else values.get("csrf", "")
    return templates.TemplateResponse(request, template, values, status_code=status_code)


def error_page(request: Request, status: int, code: str, message: str) -> HTMLResponse:
    """An error as a dashboard page (its code and message, never a stack trace)."""
    return render(
        request,
        "error.html",
        {"status": status, "code": code, "message": message},
        status_code=status,
    )


def new_sign_in_nonce() -> str:
    """A fresh value for the sign-in form's double-submit cookie."""
    return secrets.token_urlsafe(24)


def _sign_in_redirect(request: Request, exc: Exception) -> Response:
    reason = exc.reason if isinstance(exc, SignInNeeded) else ""
    target = f"{DASHBOARD_PREFIX}/sign-in" + ("?ended=" + reason if reason else "")
    if request.headers.get("hx-request"):
        # htmx follows a redirect itself; make the whole page move instead.
        return Response(status_code=204, headers={"HX-Redirect": target})
    response = RedirectResponse(target, status_code=303)
    response.delete_cookie(SESSION_COOKIE, path=DASHBOARD_PREFIX)
    return response


class _SecurityHeaders:
    """ASGI middleware: the security headers on every dashboard response (other paths
    pass through untouched, streaming included)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not path.startswith(DASHBOARD_PREFIX):
            await self.app(scope, receive, send)
            return
        extra = [
            (b"content-security-policy", CSP.encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"),
            (b"referrer-policy", b"no-referrer"),
        ]
        if not path.startswith(f"{DASHBOARD_PREFIX}/static/"):
            extra.append((b"cache-control", b"no-store"))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in extra}
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message = {**message, "headers": kept + extra}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install_dashboard(app: FastAPI) -> None:
    """Serve the dashboard's static files and send its security headers and sign-in
    redirects (its routers are included by `create_app` like every other)."""
    app.mount(
        f"{DASHBOARD_PREFIX}/static",
        StaticFiles(directory=_HERE / "static"),
        name="dashboard-static",
    )
    app.add_exception_handler(SignInNeeded, _sign_in_redirect)
    app.add_middleware(_SecurityHeaders)
