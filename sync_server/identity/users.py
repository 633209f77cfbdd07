"""Staff users: accounts (clinician, staff, admin), their Argon2id passwords and TOTP
second factor, and the check of a login.

Passwords are stored as Argon2id hashes; a TOTP code is accepted in the previous,
current or next 30-second step, and each step only once. Five consecutive failures lock
an account for 15 minutes. Failed logins count towards the lockout and are audited even
though the login is refused: `authenticate_user` commits before it raises, so call it
in a transaction of its own.
"""

from __future__ import annotations

import hmac
import secrets
from datetime import timedelta
from functools import cache
from typing import NoReturn

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from sync_server.audit.events import Actor, LoggedIn, LoginFailed, UserCreated
from sync_server.audit.services import record_event
from sync_server.db import commit_then_raise, new_id, rowcount, utcnow
from sync_server.errors import Conflict, NotFound, Unauthorized, Unprocessable
from sync_server.identity.principals import Principal
from sync_server.identity.tables import Clinic, Organisation, User
from sync_server.identity.tenancy import (
    MAX_NAME_LENGTH,
    require_organisation_wide,
    visible_clinic,
)

__all__ = [
    "LOCKOUT_AFTER_FAILURES",
    "LOCKOUT_DURATION",
    "MAX_PASSWORD_LENGTH",
    "MIN_PASSWORD_LENGTH",
    "ROLES",
    "authenticate_user",
    "create_user",
    "totp_uri",
]

ROLES = frozenset({"clinician", "staff", "admin"})
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024
"""Longer passwords are refused: hashing megabytes with Argon2 is a denial of service."""
LOCKOUT_AFTER_FAILURES = 5
LOCKOUT_DURATION = timedelta(minutes=15)
TOTP_ISSUER = "Coherency"

_hasher = PasswordHasher()  # Argon2id with the library's current recommended parameters


def totp_uri(secret: str, username: str) -> str:
    """The ``otpauth://`` URI an authenticator app scans (as a QR code) for `secret`."""
    return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=TOTP_ISSUER)


def create_user(
    *,
    session: Session,
    username: str,
    password: str,
    role: str,
    organisation_id: str,
    clinic_id: str | None = None,
    with_totp: bool = True,
    actor: Principal | None = None,
) -> tuple[User, str | None]:
    """A new staff account; returns it and its base32 TOTP secret (None without TOTP).

    Clinicians and staff work in one clinic; an admin without a clinic administers the
    whole organisation.

    Args:
        session: The transaction.
        username: 1 to 200 characters, unique on the server.
        password: 12 to 1024 characters.
        role: ``clinician``, ``staff`` or ``admin``.
        organisation_id: The organisation the account belongs to.
        clinic_id: The clinic it works in (required but for admins).
        with_totp: Give the account a TOTP secret.
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
        Conflict: ``username_taken``.
    """
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
    if session.scalars(select(User.id).where(User.username == username)).first() is not None:
        raise Conflict(f"username {username!r} is taken", code="username_taken")
    secret = pyotp.random_base32() if with_totp else None
    user = User(
        id=new_id(),
        organisation_id=organisation_id,
        clinic_id=clinic_id,
        username=username,
        password_hash=_hasher.hash(password),
        role=role,
        totp_secret=secret,
        totp_last_step=None,
        active=True,
        failed_logins=0,
        locked_until=None,
        created_at=utcnow(),
    )
    session.add(user)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(f"username {username!r} is taken", code="username_taken") from None
    record_event(
        session=session,
        event=UserCreated(
            actor=Actor.user_or_system(None if actor is None else actor.id),
            clinic_id=clinic_id,
            user_id=user.id,
        ),
    )
    return user, secret


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


def _login_failed(session: Session, user: User, error: Unauthorized) -> NoReturn:
    """Count a failed attempt (locking the account at the limit), audit it, commit, raise."""
    failures = session.execute(
        update(User)
        .where(User.id == user.id)
        .values(failed_logins=User.failed_logins + 1)
        .returning(User.failed_logins)
        .execution_options(synchronize_session=False)
    ).scalar_one()
    locked = failures >= LOCKOUT_AFTER_FAILURES
    if locked:
        session.execute(
            update(User)
            .where(User.id == user.id)
            .values(failed_logins=0, locked_until=utcnow() + LOCKOUT_DURATION)
            .execution_options(synchronize_session=False)
        )
    record_event(
        session=session,
        event=LoginFailed(actor=Actor.user(user.id), clinic_id=user.clinic_id, locked=locked),
    )
    commit_then_raise(session, error)


def authenticate_user(
    *, session: Session, username: str, password: str, totp_code: str | None
) -> User:
    """The staff user whose password (and TOTP code, if enrolled in TOTP) match.

    Unknown usernames cost the same password hash as known ones. Failures are
    committed before raising.

    Raises:
        Unauthorized: ``invalid_credentials`` (unknown user, wrong password or code),
            ``totp_required`` (right password, no code) or ``account_locked``.
    """
    now = utcnow()
    user = session.scalars(select(User).where(User.username == username.strip())).one_or_none()
    if user is None or not user.active:
        _password_matches(_dummy_hash(), password)
        record_event(
            session=session,
            event=LoginFailed(actor=Actor.user(None if user is None else user.id)),
        )
        commit_then_raise(session, Unauthorized("invalid credentials", code="invalid_credentials"))
    if user.locked_until is not None and user.locked_until > now:
        _password_matches(_dummy_hash(), password)
        record_event(
            session=session,
            event=LoginFailed(actor=Actor.user(user.id), clinic_id=user.clinic_id, locked=True),
        )
        commit_then_raise(
            session,
            Unauthorized(
                "this account is locked after repeated failed logins; try again later",
                code="account_locked",
            ),
        )
    if not _password_matches(user.password_hash, password):
        _login_failed(
            session, user, Unauthorized("invalid credentials", code="invalid_credentials")
        )
    if user.totp_secret is not None:
        if not totp_code:
            raise Unauthorized("a TOTP code is required", code="totp_required")
        step = _matching_totp_step(user.totp_secret, totp_code, now.timestamp())
        if step is None:
            _login_failed(
                session, user, Unauthorized("invalid credentials", code="invalid_credentials")
            )
        # Conditional, so two requests racing with one code cannot both pass.
        claimed = session.execute(
            update(User)
            .where(User.id == user.id)
            .where((User.totp_last_step.is_(None)) | (User.totp_last_step < step))
            .values(totp_last_step=step)
            .execution_options(synchronize_session=False)
        )
        if rowcount(claimed) != 1:
            _login_failed(
                session,
                user,
                Unauthorized("this TOTP code was already used", code="invalid_credentials"),
            )
        user.totp_last_step = step
    user.failed_logins = 0
    user.locked_until = None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    record_event(
        session=session, event=LoggedIn(actor=Actor.user(user.id), clinic_id=user.clinic_id)
    )
    session.flush()
    return user
