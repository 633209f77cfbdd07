"""Staff users: accounts (clinician, staff, admin), their Argon2id passwords and TOTP
second factor, and the check of a login.

Usernames are unique within an organisation (two organisations may each have an
``admin``). A login names the organisation when its username is not unique on the
server; without one, the username must name exactly one account.

Passwords are stored as Argon2id hashes; TOTP secrets sealed with the server's secret
key (`sync_server.identity.sealing`). A TOTP code is accepted in the previous, current
or next 30-second step, and each step only once. Every failed login gets the same
answer (401 ``invalid_credentials``, one message, one password hash's time), whether
the account is unknown, the password or the code wrong or missing, or the account
deactivated. Failures are throttled, never locked out (`sync_server.identity.throttling`):
they are audited and counted even though the login is refused, since
`authenticate_user` commits before it raises, so call it in a transaction of its own.
"""

from __future__ import annotations

import hmac
import secrets
from functools import cache
from typing import NoReturn

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from sync_server.audit.events import Actor, LoggedIn, LoginFailed, UserCreated
from sync_server.audit.services import record_event
from sync_server.db import commit_then_raise, insert_unless_taken, new_id, rowcount, utcnow
from sync_server.errors import Conflict, NotFound, Unauthorized, Unprocessable
from sync_server.identity import throttling
from sync_server.identity.principals import Principal
from sync_server.identity.sealing import SecretBox
from sync_server.identity.tables import Clinic, Organisation, User
from sync_server.identity.tenancy import (
    MAX_NAME_LENGTH,
    require_organisation_wide,
    visible_clinic,
)
from sync_server.settings import Settings

__all__ = [
    "INVALID_CREDENTIALS",
    "MAX_PASSWORD_LENGTH",
    "MIN_PASSWORD_LENGTH",
    "ROLES",
    "authenticate_user",
    "create_user",
    "find_login_account",
    "login_account",
    "new_totp_secret",
    "totp_uri",
]

ROLES = frozenset({"clinician", "staff", "admin"})
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024
"""Longer passwords are refused: hashing megabytes with Argon2 is a denial of service."""
TOTP_ISSUER = "Coherency"
INVALID_CREDENTIALS = (
    "invalid credentials (if your username may exist in another organisation, "
    "give your organisation too)"
)
"""The one message of every failed login."""

_hasher = PasswordHasher()  # Argon2id with the library's current recommended parameters


def totp_uri(secret: str, username: str) -> str:
    """The ``otpauth://`` URI an authenticator app scans (as a QR code) for `secret`."""
    return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=TOTP_ISSUER)


def new_totp_secret(*, user: User, secret_box: SecretBox) -> str:
    """Give `user` a new TOTP secret (sealed in the row, every earlier code void);
    returns it in base32, to be shown once."""
    secret = pyotp.random_base32()
    user.totp_secret = secret_box.seal(secret, bound_to=user.id)
    user.totp_last_step = None
    return secret


def create_user(
    *,
    session: Session,
    username: str,
    password: str,
    role: str,
    organisation_id: str,
    clinic_id: str | None = None,
    with_totp: bool = True,
    secret_box: SecretBox | None = None,
    actor: Principal | None = None,
) -> tuple[User, str | None]:
    """A new staff account; returns it and its base32 TOTP secret (None without TOTP).

    Clinicians and staff work in one clinic; an admin without a clinic administers the
    whole organisation.

    Args:
        session: The transaction.
        username: 1 to 200 characters, unique in the organisation.
        password: 12 to 1024 characters.
        role: ``clinician``, ``staff`` or ``admin``.
        organisation_id: The organisation the account belongs to.
        clinic_id: The clinic it works in (required but for admins).
        with_totp: Give the account a TOTP secret (sealed with `secret_box`).
        secret_box: The server's `SecretBox` (required with `with_totp`).
        actor: The admin creating it (None: an operator). An admin bound to a clinic
            creates accounts only in that clinic. Recorded in the audit log.

    Raises:
        Forbidden: ``organisation_admins_only``: a clinic-bound `actor` creating an
            organisation-wide account.
        Unprocessable: ``weak_password`` (shorter than 12 characters) or
            ``invalid_user`` (an unknown role, a bad username or password length, or a
            clinician or staff account without a clinic).
        NotFound: No such organisation, or the clinic is not one of its clinics (or not
            one `actor` may see).
        Conflict: ``username_taken`` (in this organisation).
        ValueError: `with_totp` without a `secret_box` (a programming error).
    """
    if with_totp and secret_box is None:
        raise ValueError("a TOTP secret is sealed at rest: pass the server's secret_box")
    if actor is not None:
        if clinic_id is None:
            require_organisation_wide(
                actor, "only organisation-wide admins create organisation-wide accounts"
            )
        else:
            visible_clinic(session=session, principal=actor, clinic_id=clinic_id)
    username = username.strip()
    if not username or len(username) > MAX_NAME_LENGTH:
        raise Unprocessable(f"a username is 1 to {MAX_NAME_LENGTH} characters", code="invalid_user")
    if role not in ROLES:
        raise Unprocessable(
            f"role must be one of {sorted(ROLES)}, not {role!r}", code="invalid_user"
        )
    if len(password) < MIN_PASSWORD_LENGTH:
        raise Unprocessable(
            f"a password must have at least {MIN_PASSWORD_LENGTH} characters",
            code="weak_password",
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise Unprocessable(
            f"a password has at most {MAX_PASSWORD_LENGTH} characters", code="invalid_user"
        )
    if role != "admin" and clinic_id is None:
        raise Unprocessable(f"a {role} account needs a clinic", code="invalid_user")
    if session.get(Organisation, organisation_id) is None:
        raise NotFound("no such organisation", code="organisation_not_found")
    if clinic_id is not None:
        clinic = session.get(Clinic, clinic_id)
        if clinic is None or clinic.organisation_id != organisation_id:
            raise NotFound("no such clinic", code="clinic_not_found")
    taken = select(User.id).where(
        User.organisation_id == organisation_id, User.username == username
    )
    if session.scalars(taken).first() is not None:
        raise Conflict(f"username {username!r} is taken", code="username_taken")
    user = User(
        id=new_id(),
        organisation_id=organisation_id,
        clinic_id=clinic_id,
        username=username,
        password_hash=_hasher.hash(password),
        role=role,
        totp_secret=None,
        totp_last_step=None,
        active=True,
        created_at=utcnow(),
    )
    secret = None
    if secret_box is not None and with_totp:
        secret = new_totp_secret(user=user, secret_box=secret_box)
    if not insert_unless_taken(session, user):
        raise Conflict(f"username {username!r} is taken", code="username_taken")
    record_event(
        session=session,
        event=UserCreated(
            actor=Actor.user_or_system(None if actor is None else actor.id),
            clinic_id=clinic_id,
            user_id=user.id,
        ),
    )
    return user, secret


def find_login_account(*, session: Session, username: str, organisation: str | None) -> User | None:
    """The one account a login names: `username` in `organisation` (its name or id), or
    without an organisation the only account of that username on the server. None when
    there is no such account, or several."""
    query = select(User).where(User.username == username.strip())
    if organisation is not None:
        in_organisation = select(Organisation.id).where(
            or_(Organisation.id == organisation, Organisation.name == organisation)
        )
        query = query.where(User.organisation_id.in_(in_organisation))
    found = session.scalars(query.limit(2)).all()
    return found[0] if len(found) == 1 else None


def login_account(user: User | None, *, username: str, organisation: str | None) -> str:
    """The throttling account of a login: the user's own, or (no single account) one
    derived from the name asked for, so unknown names are throttled like known ones."""
    if user is not None:
        return throttling.account_of_user(user.id)
    return throttling.account_of_name(username.strip(), scope=f"login\n{organisation or ''}")


@cache
def _dummy_hash() -> str:
    return _hasher.hash(secrets.token_urlsafe(16))


def _password_matches(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def _matching_totp_step(secret: str, code: str, now: float) -> int | None:
    """The time step (previous, current or next) whose code is `code`, if any."""
    totp = pyotp.TOTP(secret)
    current = totp.timecode(now)
    code = code.strip()
    for step in (current - 1, current, current + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def authenticate_user(
    *,
    session: Session,
    username: str,
    password: str,
    totp_code: str | None,
    organisation: str | None = None,
    secret_box: SecretBox,
    settings: Settings,
    client: str,
) -> User:
    """The staff user whose password (and TOTP code, if enrolled in TOTP) match.

    Every failure is the same refusal at the same cost (one Argon2 hash, a dummy one
    for an unknown account), audited and counted towards the throttling of `client` and
    of the account, and committed before raising.

    Args:
        session: The transaction (the login's own).
        username: The username.
        password: The password.
        totp_code: The current TOTP code (required for accounts with TOTP).
        organisation: The organisation's name or id; needed when the username exists in
            several organisations.
        secret_box: Opens the sealed TOTP secret.
        settings: The throttling limits.
        client: The client address (`throttling.client_of`).

    Raises:
        TooManyRequests: This client has failed on this account too often while the
            account is held back; nothing was checked.
        Unauthorized: ``invalid_credentials``, for every failure.
    """
    now = utcnow()
    user = find_login_account(session=session, username=username, organisation=organisation)
    account = login_account(user, username=username, organisation=organisation)
    throttling.check_account(
        session=session, action="login", account=account, client=client, settings=settings
    )

    def refuse() -> NoReturn:
        record_event(
            session=session,
            event=LoginFailed(
                actor=Actor.user(None if user is None else user.id),
                clinic_id=None if user is None else user.clinic_id,
            ),
        )
        throttling.record_failure(
            session=session, action="login", account=account, client=client, settings=settings
        )
        commit_then_raise(session, Unauthorized(INVALID_CREDENTIALS, code="invalid_credentials"))

    # One hash either way: an unknown or deactivated account costs what a known one does.
    password_ok = _password_matches(
        user.password_hash if user is not None else _dummy_hash(), password
    )
    if user is None or not user.active or not password_ok:
        refuse()
    if user.totp_secret is not None:
        secret = secret_box.open(user.totp_secret, bound_to=user.id)
        step = _matching_totp_step(secret, totp_code or "", now.timestamp())
        if step is None:
            refuse()
        # Conditional, so two requests racing with one code cannot both pass.
        claimed = session.execute(
            update(User)
            .where(User.id == user.id)
            .where((User.totp_last_step.is_(None)) | (User.totp_last_step < step))
            .values(totp_last_step=step)
            .execution_options(synchronize_session=False)
        )
        if rowcount(claimed) != 1:
            refuse()  # this code was already used
        user.totp_last_step = step
    throttling.record_success(session=session, action="login", account=account, client=client)
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    record_event(
        session=session, event=LoggedIn(actor=Actor.user(user.id), clinic_id=user.clinic_id)
    )
    session.flush()
    return user
