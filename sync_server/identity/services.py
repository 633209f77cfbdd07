"""Identity services: organisations, clinics, staff users, device enrolment and tokens.

Every function takes a SQLAlchemy `Session` inside a write transaction the caller opened
(``with db.write() as session``); routes and the ``coherency server`` commands both call
them. Refusals are `sync_server._errors` classes with stable codes:

- staff login (`authenticate_user`): Unauthorized ``invalid_credentials``,
  ``totp_required``, ``account_locked``;
- enrolment (`enrol_device`): Unauthorized ``enrolment_token_invalid`` or
  ``enrolment_proof_invalid``, Conflict ``clinic_mismatch`` or ``device_exists``;
- refresh (`rotate_refresh_token`): Unauthorized ``refresh_token_invalid`` or
  ``refresh_token_reused``, Forbidden ``device_revoked`` or ``user_inactive``;
- device assertion login (`device_login`): Unauthorized ``device_assertion_invalid``,
  ``device_assertion_stale``, ``nonce_reused``, Forbidden ``device_revoked``.

Some refusals must outlive the failed request: a failed login counts towards lockout,
a reused refresh token revokes its whole family, and failures are audited. Those
functions commit the caller's session before raising (the caller's rollback then has
nothing left to undo), so call them in a transaction of their own.

Secrets are stored only as hashes: Argon2id for passwords, SHA-256 for enrolment and
refresh tokens (they are 256-bit random, so a fast hash is enough). Audit events name
ids and outcomes, never secrets or names.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any, Literal, NoReturn

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import CursorResult, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from crdt import device_login_message, enrolment_message, is_uuid
from sync_server.audit.tables import AuditEvent
from sync_server.db import utcnow
from sync_server.errors import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    ServerError,
    Unauthorized,
    Unprocessable,
)
from sync_server.identity.principals import Principal
from sync_server.identity.tables import (
    Clinic,
    Device,
    EnrolmentToken,
    Organisation,
    RefreshToken,
    UsedNonce,
    User,
)
from sync_server.identity.tokens import SigningKey
from sync_server.settings import Settings

__all__ = [
    "DEVICE_LOGIN_MAX_SKEW_SECONDS",
    "LOCKOUT_AFTER_FAILURES",
    "LOCKOUT_DURATION",
    "MAX_ENROLMENT_TOKEN_LIFETIME",
    "MIN_PASSWORD_LENGTH",
    "ROLES",
    "EnrolResult",
    "TokenPair",
    "authenticate_user",
    "create_clinic",
    "create_enrolment_token",
    "create_user",
    "device_login",
    "enrol_device",
    "ensure_clinic",
    "ensure_organisation",
    "hash_token",
    "issue_tokens",
    "record_audit",
    "revoke_device",
    "revoke_refresh_family",
    "rotate_refresh_token",
    "totp_uri",
    "visible_clinic",
]

ROLES = frozenset({"clinician", "staff", "admin"})
MIN_PASSWORD_LENGTH = 12
LOCKOUT_AFTER_FAILURES = 5
LOCKOUT_DURATION = timedelta(minutes=15)
DEVICE_LOGIN_MAX_SKEW_SECONDS = 300
MAX_ENROLMENT_TOKEN_LIFETIME = timedelta(days=30)
"""The longest an enrolment token may live: it is a bearer secret until used."""
TOTP_ISSUER = "Coherency"

_NONCE_RE = re.compile(r"[A-Za-z0-9_\-]{16,64}")
_ED25519_KEY_SIZE = 32
_ED25519_SIGNATURE_SIZE = 64
_hasher = PasswordHasher()  # Argon2id with the library's current recommended parameters


# ---------------------------------------------------------------- results
@dataclass(frozen=True, slots=True)
class TokenPair:
    """An access token (JWT) and the refresh token that renews it."""

    access_token: str
    access_token_expires_at: datetime
    refresh_token: str
    refresh_token_expires_at: datetime
    token_type: str = "bearer"


@dataclass(frozen=True, slots=True)
class EnrolResult:
    """What an enrolled device needs: its scope, tokens and the server key to pin."""

    device_id: str
    clinic_id: str
    organisation_id: str
    tokens: TokenPair
    server_public_key: bytes


# ---------------------------------------------------------------- helpers
def hash_token(token: str) -> str:
    """The SHA-256 hex digest under which a random token is stored."""
    return hashlib.sha256(token.encode()).hexdigest()


def _new_id() -> str:
    return str(uuid.uuid4())


def _rowcount(result: Any) -> int:
    assert isinstance(result, CursorResult)
    return int(result.rowcount)


def record_audit(
    session: Session,
    *,
    actor_kind: str,
    actor_id: str | None,
    clinic_id: str | None,
    action: str,
    outcome: str,
    target: str | None = None,
    request_id: str | None = None,
) -> None:
    """Add an audit event to the session (ids and outcomes only: no secrets, no names)."""
    session.add(
        AuditEvent(
            at=utcnow(),
            actor_kind=actor_kind,
            actor_id=actor_id,
            clinic_id=clinic_id,
            action=action,
            target=target,
            outcome=outcome,
            request_id=request_id,
        )
    )


def _commit_and_raise(session: Session, error: ServerError) -> NoReturn:
    """Keep what was recorded about a refusal (audit, counters, revocations), then raise."""
    session.commit()
    raise error


def _verify_ed25519(public_key: bytes, message: bytes, signature: bytes) -> bool:
    if len(public_key) != _ED25519_KEY_SIZE or len(signature) != _ED25519_SIGNATURE_SIZE:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


# ---------------------------------------------------------------- tenancy
def ensure_organisation(session: Session, name: str = "default") -> Organisation:
    """The organisation called `name`, created if missing."""
    organisation = session.scalars(
        select(Organisation).where(Organisation.name == name)
    ).one_or_none()
    if organisation is None:
        organisation = Organisation(id=_new_id(), name=name, created_at=utcnow())
        session.add(organisation)
        session.flush()
    return organisation


def create_clinic(session: Session, *, name: str, organisation_id: str) -> Clinic:
    """A new clinic of an organisation.

    Raises:
        Unprocessable: ``invalid_clinic``: the name is empty or longer than 200 characters.
        NotFound: No such organisation.
        Conflict: A clinic of that name exists (names are unique server-wide).
    """
    name = name.strip()
    if not name or len(name) > 200:
        raise Unprocessable("a clinic name is 1 to 200 characters", code="invalid_clinic")
    if session.get(Organisation, organisation_id) is None:
        raise NotFound("no such organisation", code="organisation_not_found")
    if session.scalars(select(Clinic.id).where(Clinic.name == name)).first() is not None:
        raise Conflict(f"a clinic named {name!r} already exists", code="clinic_exists")
    clinic = Clinic(
        id=_new_id(), organisation_id=organisation_id, name=name, feed_seq=0, created_at=utcnow()
    )
    session.add(clinic)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(f"a clinic named {name!r} already exists", code="clinic_exists") from None
    return clinic


def ensure_clinic(session: Session, name: str, *, organisation_id: str | None = None) -> Clinic:
    """The clinic called `name`, created if missing.

    Without `organisation_id` the clinic belongs to the ``default`` organisation, created
    if missing.

    Raises:
        Conflict: A clinic of that name exists in another organisation.
    """
    if organisation_id is None:
        organisation_id = ensure_organisation(session).id
    clinic = session.scalars(select(Clinic).where(Clinic.name == name.strip())).one_or_none()
    if clinic is not None:
        if clinic.organisation_id != organisation_id:
            raise Conflict(f"clinic {name!r} belongs to another organisation", code="clinic_exists")
        return clinic
    return create_clinic(session, name=name, organisation_id=organisation_id)


def visible_clinic(session: Session, principal: Principal, clinic_id: str) -> Clinic:
    """The clinic `clinic_id` if `principal` may see it: its own clinic, or for an
    organisation-wide account, any clinic of its organisation.

    Raises:
        NotFound: No such clinic, or one the principal may not see (its existence is
            not revealed).
    """
    clinic = session.get(Clinic, clinic_id)
    if (
        clinic is None
        or clinic.organisation_id != principal.organisation_id
        or not principal.can_see_clinic(clinic.id)
    ):
        raise NotFound("no such clinic", code="clinic_not_found")
    return clinic


# ---------------------------------------------------------------- staff users
def totp_uri(secret: str, username: str) -> str:
    """The ``otpauth://`` URI an authenticator app scans (as a QR code) for `secret`."""
    return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=TOTP_ISSUER)


def create_user(
    session: Session,
    *,
    username: str,
    password: str,
    role: str,
    organisation_id: str,
    clinic_id: str | None = None,
    with_totp: bool = True,
    created_by: str | None = None,
) -> tuple[User, str | None]:
    """A new staff account; returns it and its base32 TOTP secret (None without TOTP).

    Clinicians and staff work in one clinic; an admin without a clinic administers the
    whole organisation. `created_by` (a user id) is recorded in the audit log.

    Raises:
        Unprocessable: ``weak_password`` (shorter than 12 characters) or
            ``invalid_user`` (an unknown role, a bad username, or a clinician or staff
            account without a clinic).
        NotFound: No such organisation, or the clinic is not one of its clinics.
        Conflict: The username is taken.
    """
    username = username.strip()
    if not username or len(username) > 200:
        raise Unprocessable("a username is 1 to 200 characters", code="invalid_user")
    if role not in ROLES:
        raise Unprocessable(
            f"role must be one of {sorted(ROLES)}, not {role!r}", code="invalid_user"
        )
    if len(password) < MIN_PASSWORD_LENGTH:
        raise Unprocessable(
            f"a password must have at least {MIN_PASSWORD_LENGTH} characters",
            code="weak_password",
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
        id=_new_id(),
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
    record_audit(
        session,
        actor_kind="user" if created_by else "system",
        actor_id=created_by,
        clinic_id=clinic_id,
        action="user-create",
        target=user.id,
        outcome="ok",
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


def _login_failed(session: Session, user: User, error: ServerError) -> NoReturn:
    """Count a failed attempt (locking the account at the limit) and raise `error`."""
    failures = session.execute(
        update(User)
        .where(User.id == user.id)
        .values(failed_logins=User.failed_logins + 1)
        .returning(User.failed_logins)
        .execution_options(synchronize_session=False)
    ).scalar_one()
    outcome = "denied"
    if failures >= LOCKOUT_AFTER_FAILURES:
        session.execute(
            update(User)
            .where(User.id == user.id)
            .values(failed_logins=0, locked_until=utcnow() + LOCKOUT_DURATION)
            .execution_options(synchronize_session=False)
        )
        outcome = "locked"
    record_audit(
        session,
        actor_kind="user",
        actor_id=user.id,
        clinic_id=user.clinic_id,
        action="login-failed",
        outcome=outcome,
    )
    _commit_and_raise(session, error)


def authenticate_user(
    session: Session, username: str, password: str, totp_code: str | None
) -> User:
    """The staff user whose password (and TOTP code, if enrolled in TOTP) match.

    Unknown usernames cost the same password hash as known ones. A TOTP code is accepted
    in the previous, current or next 30-second step, and each step only once. After 5
    consecutive failures the account is locked for 15 minutes. Failures are committed
    before raising.

    Raises:
        Unauthorized: ``invalid_credentials`` (unknown user, wrong password or code),
            ``totp_required`` (right password, no code) or ``account_locked``.
    """
    now = utcnow()
    user = session.scalars(select(User).where(User.username == username.strip())).one_or_none()
    if user is None or not user.active:
        _password_matches(_dummy_hash(), password)
        record_audit(
            session,
            actor_kind="user",
            actor_id=None if user is None else user.id,
            clinic_id=None,
            action="login-failed",
            outcome="denied",
        )
        _commit_and_raise(session, Unauthorized("invalid credentials", code="invalid_credentials"))
    if user.locked_until is not None and user.locked_until > now:
        _password_matches(_dummy_hash(), password)
        record_audit(
            session,
            actor_kind="user",
            actor_id=user.id,
            clinic_id=user.clinic_id,
            action="login-failed",
            outcome="locked",
        )
        _commit_and_raise(
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
        if _rowcount(claimed) != 1:
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
    record_audit(
        session,
        actor_kind="user",
        actor_id=user.id,
        clinic_id=user.clinic_id,
        action="login",
        outcome="ok",
    )
    session.flush()
    return user


# ---------------------------------------------------------------- tokens
def issue_tokens(
    session: Session,
    *,
    subject_kind: Literal["device", "user"],
    subject_id: str,
    clinic_id: str | None,
    organisation_id: str,
    role: str,
    signing_key: SigningKey,
    settings: Settings,
    family_id: str | None = None,
) -> TokenPair:
    """A new access token and refresh token for a device or user.

    The refresh token joins `family_id` (a rotation chain), or starts a new family.
    """
    now = utcnow()
    access, access_expires = signing_key.issue_access_token(
        subject=subject_id,
        kind=subject_kind,
        clinic_id=clinic_id,
        organisation_id=organisation_id,
        role=role,
        ttl=timedelta(seconds=settings.access_token_seconds),
        now=now,
    )
    refresh = secrets.token_urlsafe(32)
    refresh_expires = now + timedelta(seconds=settings.refresh_token_seconds)
    session.add(
        RefreshToken(
            id=_new_id(),
            token_hash=hash_token(refresh),
            family_id=family_id or _new_id(),
            subject_kind=subject_kind,
            subject_id=subject_id,
            issued_at=now,
            expires_at=refresh_expires,
        )
    )
    session.flush()
    return TokenPair(access, access_expires, refresh, refresh_expires)


def _revoke_family(session: Session, family_id: str) -> int:
    result = session.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result)


def _subject_scope(session: Session, row: RefreshToken) -> tuple[str | None, str, str]:
    """(clinic id, organisation id, role) of a refresh token's subject, if still allowed.

    Raises:
        Forbidden: The device is revoked or the user deactivated.
        Unauthorized: The subject no longer exists.
    """
    if row.subject_kind == "device":
        device = session.get(Device, row.subject_id)
        clinic = None if device is None else session.get(Clinic, device.clinic_id)
        if device is None or clinic is None:
            raise Unauthorized("refresh token is not valid", code="refresh_token_invalid")
        if device.revoked_at is not None:
            raise Forbidden("this device has been revoked", code="device_revoked")
        device.last_seen_at = utcnow()
        return device.clinic_id, clinic.organisation_id, "device"
    user = session.get(User, row.subject_id)
    if user is None:
        raise Unauthorized("refresh token is not valid", code="refresh_token_invalid")
    if not user.active:
        raise Forbidden("this account is deactivated", code="user_inactive")
    return user.clinic_id, user.organisation_id, user.role


def rotate_refresh_token(
    session: Session, refresh_token: str, *, signing_key: SigningKey, settings: Settings
) -> TokenPair:
    """Spend a refresh token for a new token pair of the same family.

    Presenting a token that was already spent is reuse (a stolen copy, or a replay):
    every token of its family is revoked, and that revocation is committed before the
    error is raised.

    Raises:
        Unauthorized: ``refresh_token_invalid`` (unknown, expired or revoked) or
            ``refresh_token_reused``.
        Forbidden: ``device_revoked`` or ``user_inactive``.
    """
    now = utcnow()
    row = session.scalars(
        select(RefreshToken).where(RefreshToken.token_hash == hash_token(refresh_token))
    ).one_or_none()
    if row is None or row.revoked_at is not None or row.expires_at <= now:
        raise Unauthorized("refresh token is not valid", code="refresh_token_invalid")
    reused = row.used_at is not None
    if not reused:
        spent = session.execute(
            update(RefreshToken)
            .where(
                RefreshToken.id == row.id,
                RefreshToken.used_at.is_(None),
                RefreshToken.revoked_at.is_(None),
            )
            .values(used_at=now)
            .execution_options(synchronize_session=False)
        )
        reused = _rowcount(spent) != 1  # another request spent it first
    if reused:
        _revoke_family(session, row.family_id)
        record_audit(
            session,
            actor_kind=row.subject_kind,
            actor_id=row.subject_id,
            clinic_id=None,
            action="refresh-reuse",
            target=row.family_id,
            outcome="family-revoked",
        )
        _commit_and_raise(
            session,
            Unauthorized(
                "this refresh token was already used; its whole chain is now revoked",
                code="refresh_token_reused",
            ),
        )
    clinic_id, organisation_id, role = _subject_scope(session, row)
    subject_kind: Literal["device", "user"] = "device" if row.subject_kind == "device" else "user"
    return issue_tokens(
        session,
        subject_kind=subject_kind,
        subject_id=row.subject_id,
        clinic_id=clinic_id,
        organisation_id=organisation_id,
        role=role,
        signing_key=signing_key,
        settings=settings,
        family_id=row.family_id,
    )


def revoke_refresh_family(session: Session, refresh_token: str) -> bool:
    """Revoke every token of `refresh_token`'s family (logout); False if it is unknown."""
    row = session.scalars(
        select(RefreshToken).where(RefreshToken.token_hash == hash_token(refresh_token))
    ).one_or_none()
    if row is None:
        return False
    _revoke_family(session, row.family_id)
    record_audit(
        session,
        actor_kind=row.subject_kind,
        actor_id=row.subject_id,
        clinic_id=None,
        action="logout",
        target=row.family_id,
        outcome="ok",
    )
    return True


# ---------------------------------------------------------------- devices
def create_enrolment_token(
    session: Session, *, clinic_id: str, ttl: timedelta, created_by: str | None = None
) -> tuple[str, EnrolmentToken]:
    """A one-time token that enrols one device into `clinic_id`; only its hash is kept.

    Raises:
        Invalid: ``invalid_lifetime``: `ttl` is not more than 0 and at most 30 days.
        NotFound: No such clinic.
    """
    if ttl <= timedelta(0) or ttl > MAX_ENROLMENT_TOKEN_LIFETIME:
        raise Invalid(
            "an enrolment token lives more than 0 and at most "
            f"{MAX_ENROLMENT_TOKEN_LIFETIME.days} days",
            code="invalid_lifetime",
        )
    if session.get(Clinic, clinic_id) is None:
        raise NotFound("no such clinic", code="clinic_not_found")
    token = secrets.token_urlsafe(32)
    now = utcnow()
    row = EnrolmentToken(
        id=_new_id(),
        token_hash=hash_token(token),
        clinic_id=clinic_id,
        created_by=created_by,
        created_at=now,
        expires_at=now + ttl,
    )
    session.add(row)
    session.flush()
    record_audit(
        session,
        actor_kind="user" if created_by else "system",
        actor_id=created_by,
        clinic_id=clinic_id,
        action="enrolment-token-create",
        target=row.id,
        outcome="ok",
    )
    return token, row


# How long after its token expires a device may still repeat its own enrolment.
_ENROL_REPLAY_GRACE = timedelta(hours=1)


def enrol_device(
    session: Session,
    *,
    token: str,
    device_id: str,
    public_key: bytes,
    name: str,
    expected_clinic_id: str | None,
    signature: bytes,
    signing_key: SigningKey,
    settings: Settings,
) -> EnrolResult:
    """Enrol a device with a one-time token, binding its Ed25519 public key.

    `signature` is the device key's signature of `enrolment_message(token, device_id)`,
    proving the caller holds the private key. A refused enrolment never spends the
    token, except that a spent token stays spent.

    Raises:
        Invalid: The device id is not a UUID or the key is not 32 bytes.
        Unauthorized: ``enrolment_token_invalid`` (unknown, expired or used) or
            ``enrolment_proof_invalid`` (bad signature).
        Conflict: ``clinic_mismatch`` (the token is for another clinic than expected) or
            ``device_exists`` (the device id is already enrolled).
    """
    if not is_uuid(device_id):
        raise Invalid("device_id must be a lowercase hyphenated UUID", code="invalid_device_id")
    if len(public_key) != _ED25519_KEY_SIZE:
        raise Invalid("public_key must be a raw 32-byte Ed25519 key", code="invalid_public_key")
    name = name.strip()
    if len(name) > 200:
        raise Invalid("a device name is at most 200 characters", code="invalid_name")
    now = utcnow()
    row = session.scalars(
        select(EnrolmentToken).where(EnrolmentToken.token_hash == hash_token(token))
    ).one_or_none()

    def refuse(error: ServerError, outcome: str) -> NoReturn:
        record_audit(
            session,
            actor_kind="device",
            actor_id=device_id,
            clinic_id=None if row is None else row.clinic_id,
            action="enrol",
            target=None if row is None else row.id,
            outcome=outcome,
        )
        _commit_and_raise(session, error)

    if (
        row is not None
        and row.used_at is not None
        and row.device_id == device_id
        and row.expires_at > now - _ENROL_REPLAY_GRACE
    ):
        # The same device repeating its own enrolment (its answer was lost on the way):
        # with the same key and a valid proof, it gets the answer again, new tokens.
        device = session.get(Device, device_id)
        if (
            device is not None
            and device.revoked_at is None
            and device.public_key == public_key
            and _verify_ed25519(public_key, enrolment_message(token, device_id), signature)
        ):
            clinic = session.get(Clinic, device.clinic_id)
            assert clinic is not None  # foreign key
            return _enrolled(session, device_id, clinic, row.id, "repeated", signing_key, settings)
    if row is None or row.used_at is not None or row.expires_at <= now:
        refuse(
            Unauthorized(
                "enrolment token is unknown, expired or already used",
                code="enrolment_token_invalid",
            ),
            "token-invalid",
        )
    if not _verify_ed25519(public_key, enrolment_message(token, device_id), signature):
        refuse(
            Unauthorized(
                "the enrolment signature does not verify with the device's public key",
                code="enrolment_proof_invalid",
            ),
            "proof-invalid",
        )
    if expected_clinic_id is not None and expected_clinic_id != row.clinic_id:
        refuse(
            Conflict(
                "this enrolment token is for another clinic than expected",
                code="clinic_mismatch",
            ),
            "clinic-mismatch",
        )
    if session.get(Device, device_id) is not None:
        refuse(Conflict("this device id is already enrolled", code="device_exists"), "exists")
    clinic = session.get(Clinic, row.clinic_id)
    assert clinic is not None  # foreign key
    # Conditional, so two requests racing with one token cannot both enrol.
    spent = session.execute(
        update(EnrolmentToken)
        .where(
            EnrolmentToken.id == row.id,
            EnrolmentToken.used_at.is_(None),
            EnrolmentToken.expires_at > now,
        )
        .values(used_at=now, device_id=device_id)
        .execution_options(synchronize_session=False)
    )
    if _rowcount(spent) != 1:
        refuse(
            Unauthorized(
                "enrolment token is unknown, expired or already used",
                code="enrolment_token_invalid",
            ),
            "token-invalid",
        )
    session.add(
        Device(
            id=device_id,
            clinic_id=clinic.id,
            public_key=public_key,
            name=name,
            enrolled_at=now,
            enrolled_with=row.id,
            last_seen_at=now,
        )
    )
    try:
        session.flush()
    except IntegrityError:
        # A concurrent enrolment of the same device id won; this transaction (and its
        # spending of the token) is rolled back by the caller.
        raise Conflict("this device id is already enrolled", code="device_exists") from None
    return _enrolled(session, device_id, clinic, row.id, "ok", signing_key, settings)


def _enrolled(
    session: Session,
    device_id: str,
    clinic: Clinic,
    token_id: str,
    outcome: str,
    signing_key: SigningKey,
    settings: Settings,
) -> EnrolResult:
    """An enrolment's answer: a new token family for the device, audited."""
    tokens = issue_tokens(
        session,
        subject_kind="device",
        subject_id=device_id,
        clinic_id=clinic.id,
        organisation_id=clinic.organisation_id,
        role="device",
        signing_key=signing_key,
        settings=settings,
    )
    record_audit(
        session,
        actor_kind="device",
        actor_id=device_id,
        clinic_id=clinic.id,
        action="enrol",
        target=token_id,
        outcome=outcome,
    )
    return EnrolResult(
        device_id=device_id,
        clinic_id=clinic.id,
        organisation_id=clinic.organisation_id,
        tokens=tokens,
        server_public_key=signing_key.public_key_bytes,
    )


def device_login(
    session: Session,
    *,
    device_id: str,
    issued_at: int,
    nonce: str,
    signature: bytes,
    signing_key: SigningKey,
    settings: Settings,
) -> TokenPair:
    """A new token family for an enrolled device that proves possession of its key.

    For a device that lost its refresh token (for example, the connection dropped after
    the server rotated it). `signature` signs `device_login_message(device_id,
    issued_at, nonce)`; `issued_at` (unix seconds) must be within 5 minutes of the
    server's clock and each nonce is accepted once.

    Raises:
        Invalid: The nonce is not 16 to 64 URL-safe characters.
        Unauthorized: ``device_assertion_invalid`` (unknown device or bad signature),
            ``device_assertion_stale`` or ``nonce_reused``.
        Forbidden: ``device_revoked``.
    """
    if not _NONCE_RE.fullmatch(nonce):
        raise Invalid("nonce must be 16 to 64 URL-safe characters", code="invalid_nonce")
    now_ts = time.time()
    if abs(now_ts - issued_at) > DEVICE_LOGIN_MAX_SKEW_SECONDS:
        raise Unauthorized(
            "issued_at is more than 5 minutes from the server's clock",
            code="device_assertion_stale",
        )
    now = utcnow()
    device = session.get(Device, device_id)
    if device is None or not _verify_ed25519(
        device.public_key, device_login_message(device_id, issued_at, nonce), signature
    ):
        record_audit(
            session,
            actor_kind="device",
            actor_id=device_id if device is not None else None,
            clinic_id=None if device is None else device.clinic_id,
            action="device-login",
            outcome="denied",
        )
        _commit_and_raise(
            session,
            Unauthorized("device assertion does not verify", code="device_assertion_invalid"),
        )
    if device.revoked_at is not None:
        raise Forbidden("this device has been revoked", code="device_revoked")
    session.execute(
        delete(UsedNonce)
        .where(UsedNonce.expires_at < now)
        .execution_options(synchronize_session=False)
    )
    if session.get(UsedNonce, nonce) is not None:
        raise Unauthorized("this nonce was already used", code="nonce_reused")
    session.add(
        UsedNonce(
            nonce=nonce,
            device_id=device_id,
            # Kept as long as the assertion could still be accepted.
            expires_at=datetime.fromtimestamp(issued_at, UTC)
            + timedelta(seconds=DEVICE_LOGIN_MAX_SKEW_SECONDS + 1),
        )
    )
    try:
        session.flush()
    except IntegrityError:
        raise Unauthorized("this nonce was already used", code="nonce_reused") from None
    clinic = session.get(Clinic, device.clinic_id)
    assert clinic is not None  # foreign key
    device.last_seen_at = now
    tokens = issue_tokens(
        session,
        subject_kind="device",
        subject_id=device.id,
        clinic_id=device.clinic_id,
        organisation_id=clinic.organisation_id,
        role="device",
        signing_key=signing_key,
        settings=settings,
    )
    record_audit(
        session,
        actor_kind="device",
        actor_id=device.id,
        clinic_id=device.clinic_id,
        action="device-login",
        outcome="ok",
    )
    return tokens


def revoke_device(session: Session, device_id: str, *, actor_id: str | None = None) -> Device:
    """Revoke a device and every refresh token it holds; it is refused from its next request.

    Revoking a revoked device changes nothing.

    Raises:
        NotFound: No such device.
    """
    device = session.get(Device, device_id)
    if device is None:
        raise NotFound("no such device", code="device_not_found")
    now = utcnow()
    if device.revoked_at is None:
        device.revoked_at = now
    session.execute(
        update(RefreshToken)
        .where(
            RefreshToken.subject_kind == "device",
            RefreshToken.subject_id == device_id,
            RefreshToken.revoked_at.is_(None),
        )
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )
    record_audit(
        session,
        actor_kind="user" if actor_id else "system",
        actor_id=actor_id,
        clinic_id=device.clinic_id,
        action="device-revoke",
        target=device_id,
        outcome="ok",
    )
    session.flush()
    return device
