"""The staff dashboard's test world: staff accounts with TOTP, and signed-in browsers
as plain HTTP clients (the Playwright tests drive a real chromium on top of these).

A TOTP code is accepted once per 30-second step per account (replay protection), in
the previous, current or next step: `StaffAccount.next_code` hands out each step once,
waiting for a fresh one when the current and next steps are spent.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import pyotp

from sync_server.identity.users import create_user

PASSWORD = "correct horse battery staple"

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class StaffAccount:
    """A staff account of the test organisation, with its TOTP secret."""

    username: str
    password: str
    totp_secret: str
    user_id: str
    clinic_id: str | None
    role: str
    _last_step: int = field(default=-1)

    def next_code(self) -> str:
        """A TOTP code the server has not seen for this account yet."""
        totp = pyotp.TOTP(self.totp_secret)
        while True:
            now = time.time()
            current = totp.timecode(now)
            # Never the previous step first: if the server's clock crosses into the
            # next step before the code arrives, that code is no longer accepted.
            step = max(self._last_step + 1, current)
            if step <= current + 1:
                self._last_step = step
                return totp.generate_otp(step)
            time.sleep(totp.interval - now % totp.interval + 0.05)


def new_staff(server: Any, clinic_id: str | None, *, role: str = "clinician") -> StaffAccount:
    """A fresh staff account with TOTP in `clinic_id` (None: an organisation admin)."""
    username = f"{role}-{uuid.uuid4().hex[:10]}"
    with server.db.write() as session:
        user, secret = create_user(
            session=session,
            username=username,
            password=PASSWORD,
            role=role,
            organisation_id=server.organisation_id,
            clinic_id=clinic_id,
            secret_box=server.app.state.secret_box,
        )
        user_id = user.id
    assert secret is not None
    return StaffAccount(username, PASSWORD, secret, user_id, clinic_id, role)


def form_token(html: str) -> str:
    """The CSRF token of the first form of a page."""
    found = _CSRF.search(html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


def sign_in(server: Any, account: StaffAccount) -> tuple[httpx.Client, str]:
    """A client signed in to the dashboard as `account`, and its session's CSRF token."""
    client = httpx.Client(base_url=server.url, timeout=60, follow_redirects=True)
    form = client.get("/dashboard/sign-in")
    answer = client.post(
        "/dashboard/sign-in",
        data={
            "csrf_token": form_token(form.text),
            "username": account.username,
            "password": account.password,
            "totp": account.next_code(),
        },
    )
    assert answer.status_code == 200, answer.text
    assert str(answer.url).endswith("/dashboard/patients"), answer.url
    return client, form_token(answer.text)
