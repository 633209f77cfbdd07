"""Sessions: the token pairs devices and staff hold, and how they renew and end.

A session is an access token (a short-lived JWT, `sync_server.identity.tokens`) and a
refresh token that renews it. Refresh tokens rotate: using one marks it spent and
issues its successor in the same family. Presenting a spent token again is reuse (a
stolen copy, or a replay): every token of its family is revoked, and that revocation
is committed before the refusal is raised, so call `rotate_refresh_token` in a
transaction of its own.

A staff session also ends when idle (automatic logoff): its family's live token keeps
the time of its last activity (`RefreshToken.last_used_at`: a refresh, or any request
with one of its access tokens, which name the family in their ``sid`` claim, noted at
most every few seconds), and once `Settings.staff_idle_seconds` pass without any, both
its access tokens and its refresh token are refused (401 ``session_idle_expired``) and
the family is revoked. Devices lock themselves when idle (the SDK); their sessions do
not expire here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, NoReturn

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from sync_server.audit.events import Actor, LoggedOut, RefreshTokenReused, SessionIdleExpired
from sync_server.audit.services import record_event
from sync_server.db import commit_then_raise, new_id, rowcount, utcnow
from sync_server.errors import Forbidden, Unauthorized
from sync_server.identity import throttling
from sync_server.identity.keyring import TokenKeyring
from sync_server.identity.principals import Principal
from sync_server.identity.sealing import SecretBox
from sync_server.identity.tables import Clinic, Device, RefreshToken, User
from sync_server.identity.tokens import hash_token, new_bearer_token
from sync_server.identity.users import authenticate_user
from sync_server.settings import Settings

__all__ = [
    "SessionState",
    "StaffLogin",
    "TokenPair",
    "browser_session",
    "issue_tokens",
    "keep_session_alive",
    "log_in",
    "revoke_device_tokens",
    "revoke_refresh_family",
    "revoke_user_tokens",
    "rotate_refresh_token",
    "session_state",
]

SessionState = Literal["active", "stale", "idle", "ended"]
"""A staff session as a request finds it: active (activity noted recently), stale (its
activity should be noted now), idle (over: `keep_session_alive` refuses it) or ended
(logged out, revoked or expired)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenPair:
    """An access token (JWT) and the refresh token that renews it."""

    access_token: str
    access_token_expires_at: datetime
    refresh_token: str
    refresh_token_expires_at: datetime
    token_type: str = "bearer"


@dataclass(frozen=True, slots=True, kw_only=True)
class StaffLogin(TokenPair):
    """A staff user's new session and who they are."""

    user_id: str
    role: str
    clinic_id: str | None
    organisation_id: str


def _subject(kind: str) -> Literal["device", "user"]:
    return "device" if kind == "device" else "user"


def issue_tokens(
    *,
    session: Session,
    subject_kind: Literal["device", "user"],
    subject_id: str,
    clinic_id: str | None,
    organisation_id: str,
    role: str,
    signing_key: TokenKeyring,
    settings: Settings,
    family_id: str | None = None,
) -> TokenPair:
    """A new access token and refresh token for a device or user.

    The refresh token joins `family_id` (a rotation chain), or starts a new family.
    """
    now = utcnow()
    family_id = family_id or new_id()
    access, access_expires = signing_key.issue_access_token(
        subject=subject_id,
        kind=subject_kind,
        clinic_id=clinic_id,
        organisation_id=organisation_id,
        role=role,
        ttl=timedelta(seconds=settings.access_token_seconds),
        now=now,
        session_id=family_id if subject_kind == "user" else None,
    )
    refresh, refresh_hash = new_bearer_token()
    refresh_expires = now + timedelta(seconds=settings.refresh_token_seconds)
    session.add(
        RefreshToken(
            id=new_id(),
            token_hash=refresh_hash,
            family_id=family_id,
            subject_kind=subject_kind,
            subject_id=subject_id,
            issued_at=now,
            expires_at=refresh_expires,
            last_used_at=now,
        )
    )
    session.flush()
    return TokenPair(
        access_token=access,
        access_token_expires_at=access_expires,
        refresh_token=refresh,
        refresh_token_expires_at=refresh_expires,
    )


def log_in(
    *,
    session: Session,
    username: str,
    password: str,
    totp_code: str | None,
    organisation: str | None = None,
    signing_key: TokenKeyring,
    secret_box: SecretBox,
    settings: Settings,
    client: str,
) -> StaffLogin:
    """A new session for a staff user whose credentials check out (`authenticate_user`,
    which commits its failures before raising: call this in a transaction of its own).

    Raises:
        TooManyRequests: `client` is held back on this account.
        Unauthorized: ``invalid_credentials``, whatever was wrong.
    """
    user = authenticate_user(
        session=session,
        username=username,
        password=password,
        totp_code=totp_code,
        organisation=organisation,
        secret_box=secret_box,
        settings=settings,
        client=client,
    )
    pair = issue_tokens(
        session=session,
        subject_kind="user",
        subject_id=user.id,
        clinic_id=user.clinic_id,
        organisation_id=user.organisation_id,
        role=user.role,
        signing_key=signing_key,
        settings=settings,
    )
    return StaffLogin(
        access_token=pair.access_token,
        access_token_expires_at=pair.access_token_expires_at,
        refresh_token=pair.refresh_token,
        refresh_token_expires_at=pair.refresh_token_expires_at,
        user_id=user.id,
        role=user.role,
        clinic_id=user.clinic_id,
        organisation_id=user.organisation_id,
    )


def revoke_device_tokens(*, session: Session, device_id: str, at: datetime) -> None:
    """Revoke (as of `at`) every refresh token a device holds: it is being revoked."""
    session.execute(
        update(RefreshToken)
        .where(
            RefreshToken.subject_kind == "device",
            RefreshToken.subject_id == device_id,
            RefreshToken.revoked_at.is_(None),
        )
        .values(revoked_at=at)
        .execution_options(synchronize_session=False)
    )


def revoke_user_tokens(*, session: Session, user_id: str) -> int:
    """Revoke every refresh token a staff user holds (every session it has); how many
    families were still alive."""
    families = session.scalars(
        select(RefreshToken.family_id)
        .where(
            RefreshToken.subject_kind == "user",
            RefreshToken.subject_id == user_id,
            RefreshToken.revoked_at.is_(None),
        )
        .distinct()
    ).all()
    session.execute(
        update(RefreshToken)
        .where(
            RefreshToken.subject_kind == "user",
            RefreshToken.subject_id == user_id,
            RefreshToken.revoked_at.is_(None),
        )
        .values(revoked_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return len(families)


def _revoke_family(session: Session, family_id: str) -> int:
    result = session.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return rowcount(result)


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
        return device.clinic_id, clinic.organisation_id, device.kind
    user = session.get(User, row.subject_id)
    if user is None:
        raise Unauthorized("refresh token is not valid", code="refresh_token_invalid")
    if not user.active:
        raise Forbidden("this account is deactivated", code="user_inactive")
    return user.clinic_id, user.organisation_id, user.role


def rotate_refresh_token(
    *, session: Session, refresh_token: str, signing_key: TokenKeyring, settings: Settings
) -> TokenPair:
    """Spend a refresh token for a new token pair of the same family.

    A device or user refreshes at most ``rate_refresh_per_subject`` times per window;
    beyond that the token is refused unspent (429), so it still works after the wait.

    Raises:
        Unauthorized: ``refresh_token_invalid`` (unknown, expired or revoked) or
            ``refresh_token_reused`` (committed: the family is revoked).
        TooManyRequests: Too many refreshes of this device or user.
        Forbidden: ``device_revoked`` or ``user_inactive``.
    """
    now = utcnow()
    row = session.scalars(
        select(RefreshToken).where(RefreshToken.token_hash == hash_token(refresh_token))
    ).one_or_none()
    if row is None or row.revoked_at is not None or row.expires_at <= now:
        raise Unauthorized("refresh token is not valid", code="refresh_token_invalid")
    throttling.count_subject_request(
        session=session, subject=f"{row.subject_kind}:{row.subject_id}", settings=settings, now=now
    )
    if row.subject_kind == "user" and row.used_at is None and _idle(row, settings, now):
        _expire_idle(session, row)
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
        reused = rowcount(spent) != 1  # another request spent it first
    if reused:
        _revoke_family(session, row.family_id)
        record_event(
            session=session,
            event=RefreshTokenReused(
                actor=Actor(_subject(row.subject_kind), row.subject_id), family_id=row.family_id
            ),
        )
        commit_then_raise(
            session,
            Unauthorized(
                "this refresh token was already used; its whole chain is now revoked",
                code="refresh_token_reused",
            ),
        )
    clinic_id, organisation_id, role = _subject_scope(session, row)
    return issue_tokens(
        session=session,
        subject_kind=_subject(row.subject_kind),
        subject_id=row.subject_id,
        clinic_id=clinic_id,
        organisation_id=organisation_id,
        role=role,
        signing_key=signing_key,
        settings=settings,
        family_id=row.family_id,
    )


def _idle(row: RefreshToken, settings: Settings, now: datetime) -> bool:
    last = row.last_used_at or row.issued_at
    return last <= now - timedelta(seconds=settings.staff_idle_seconds)


def _expire_idle(session: Session, row: RefreshToken) -> NoReturn:
    _revoke_family(session, row.family_id)
    record_event(
        session=session,
        event=SessionIdleExpired(actor=Actor.user(row.subject_id), family_id=row.family_id),
    )
    commit_then_raise(
        session,
        Unauthorized(
            "this session was idle for too long (automatic logoff); log in again",
            code="session_idle_expired",
        ),
    )


def _live_token(session: Session, family_id: str, now: datetime) -> RefreshToken | None:
    return session.scalars(
        select(RefreshToken).where(
            RefreshToken.family_id == family_id,
            RefreshToken.used_at.is_(None),
            RefreshToken.revoked_at.is_(None),
            RefreshToken.expires_at > now,
        )
    ).first()


def session_state(
    *, session: Session, family_id: str, settings: Settings, now: datetime | None = None
) -> SessionState:
    """How the staff session `family_id` stands (read only)."""
    at = now or utcnow()
    row = _live_token(session, family_id, at)
    if row is None:
        return "ended"
    if _idle(row, settings, at):
        return "idle"
    last = row.last_used_at or row.issued_at
    # Noting activity at most every few seconds keeps writes off most requests.
    every = min(30.0, settings.staff_idle_seconds / 4)
    return "stale" if last <= at - timedelta(seconds=every) else "active"


def keep_session_alive(
    *, session: Session, family_id: str, settings: Settings, now: datetime | None = None
) -> None:
    """Note activity on the staff session `family_id` now, unless it is over.

    Commits its refusal before raising (the family revoked, the expiry audited): call
    it in a transaction of its own.

    Raises:
        Unauthorized: ``session_idle_expired`` (idle for `Settings.staff_idle_seconds`)
            or ``session_ended`` (logged out, revoked or expired).
    """
    at = now or utcnow()
    row = _live_token(session, family_id, at)
    if row is None:
        raise Unauthorized("this session has ended; log in again", code="session_ended")
    if _idle(row, settings, at):
        _expire_idle(session, row)
    session.execute(
        update(RefreshToken)
        .where(RefreshToken.id == row.id)
        .values(last_used_at=at)
        .execution_options(synchronize_session=False)
    )


def browser_session(
    *, session: Session, refresh_token: str, settings: Settings, now: datetime | None = None
) -> tuple[Principal, str]:
    """The staff user, and their session's family id, that a browser's session cookie
    names (the staff dashboard keeps a staff session's refresh token in an HttpOnly
    cookie and never rotates it); notes the activity, like any staff request.

    Commits its refusal before raising (an idle session is revoked and its expiry
    audited): call it in a transaction of its own.

    Raises:
        Unauthorized: ``session_ended`` (unknown, logged out, revoked or expired, or not
            a staff session) or ``session_idle_expired``.
        Forbidden: ``user_inactive``: the account was deactivated.
    """
    at = now or utcnow()
    row = session.scalars(
        select(RefreshToken).where(RefreshToken.token_hash == hash_token(refresh_token))
    ).one_or_none()
    # Only the family's live token opens it: a token spent by a refresh is a copy.
    if row is None or row.subject_kind != "user" or _live_token(session, row.family_id, at) != row:
        raise Unauthorized("this session has ended; log in again", code="session_ended")
    keep_session_alive(session=session, family_id=row.family_id, settings=settings, now=at)
    user = session.get(User, row.subject_id)
    if user is None or not user.active:
        raise Forbidden("this account is deactivated", code="user_inactive")
    principal = Principal("user", user.id, user.clinic_id, user.organisation_id, user.role)
    return principal, row.family_id


def revoke_refresh_family(*, session: Session, refresh_token: str) -> bool:
    """Revoke every token of `refresh_token`'s family (logout); False if it is unknown."""
    row = session.scalars(
        select(RefreshToken).where(RefreshToken.token_hash == hash_token(refresh_token))
    ).one_or_none()
    if row is None:
        return False
    _revoke_family(session, row.family_id)
    record_event(
        session=session,
        event=LoggedOut(
            actor=Actor(_subject(row.subject_kind), row.subject_id), family_id=row.family_id
        ),
    )
    return True
