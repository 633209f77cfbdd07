"""What admins do to staff accounts: list them, unlock one (forget its failed logins),
deactivate and reactivate it, give it a new TOTP secret, revoke its sessions.

Each action is scoped like every admin route: an admin acts only on accounts of its
organisation, and an admin bound to a clinic only on that clinic's accounts; any other
account answers 404 ``user_not_found``, as if it did not exist. An operator (`actor`
None, ``coherency server user ...``) may act on any account. Every action is audited.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from sync_server.audit.events import (
    Actor,
    TotpReset,
    UserDeactivated,
    UserReactivated,
    UserSessionsRevoked,
    UserUnlocked,
)
from sync_server.audit.services import record_event
from sync_server.errors import Conflict, NotFound
from sync_server.identity import throttling
from sync_server.identity.principals import Principal
from sync_server.identity.sealing import SecretBox
from sync_server.identity.sessions import revoke_user_tokens
from sync_server.identity.tables import User
from sync_server.identity.tenancy import clinic_ids_in_scope
from sync_server.identity.users import find_login_account, new_totp_secret

__all__ = [
    "deactivate_user",
    "find_user",
    "list_users",
    "reactivate_user",
    "reset_totp",
    "revoke_user_sessions",
    "unlock_user",
]


def _not_found() -> NotFound:
    return NotFound("no such user", code="user_not_found")


def find_user(
    *,
    session: Session,
    user_id: str | None = None,
    username: str | None = None,
    organisation: str | None = None,
    actor: Principal | None = None,
) -> User:
    """The account `user_id` (or `username`, in `organisation` when the name is not
    unique on the server) if `actor` may manage it.

    Raises:
        NotFound: ``user_not_found``: no such account, or one `actor` may not manage.
    """
    if user_id is not None:
        user = session.get(User, user_id)
    elif username is not None:
        user = find_login_account(session=session, username=username, organisation=organisation)
    else:
        user = None
    if user is None:
        raise _not_found()
    if actor is not None:
        if user.organisation_id != actor.organisation_id:
            raise _not_found()
        if not actor.organisation_wide and user.clinic_id != actor.clinic_id:
            raise _not_found()
    return user


def list_users(*, session: Session, principal: Principal, limit: int, offset: int) -> list[User]:
    """The staff accounts `principal` may manage, by username."""
    query = select(User).where(User.organisation_id == principal.organisation_id)
    if not principal.organisation_wide:
        query = query.where(User.clinic_id.in_(clinic_ids_in_scope(principal)))
    query = query.order_by(User.username, User.id).limit(limit).offset(offset)
    return list(session.scalars(query))


def _actor(actor: Principal | None) -> Actor:
    return Actor.user_or_system(None if actor is None else actor.id)


def unlock_user(*, session: Session, user: User, actor: Principal | None = None) -> int:
    """Forget the failed logins held against `user` (a client's own failures stay its
    own); how many counters were cleared."""
    cleared = throttling.clear_account(
        session=session, action="login", account=throttling.account_of_user(user.id)
    )
    record_event(
        session=session,
        event=UserUnlocked(actor=_actor(actor), clinic_id=user.clinic_id, user_id=user.id),
    )
    return cleared


def revoke_user_sessions(*, session: Session, user: User, actor: Principal | None = None) -> int:
    """Revoke every session (refresh-token family) of `user`; how many were alive.

    Access tokens already issued stay valid until they expire (minutes).
    """
    families = revoke_user_tokens(session=session, user_id=user.id)
    record_event(
        session=session,
        event=UserSessionsRevoked(
            actor=_actor(actor), clinic_id=user.clinic_id, user_id=user.id, families=families
        ),
    )
    return families


def deactivate_user(*, session: Session, user: User, actor: Principal | None = None) -> User:
    """Deactivate `user`: its next request is refused (403 ``user_inactive``), its
    logins fail and its sessions are revoked. Deactivating twice is harmless.

    Raises:
        Conflict: ``own_account``: an admin deactivating itself (the organisation must
            keep an admin who can undo it).
    """
    if actor is not None and actor.kind == "user" and actor.id == user.id:
        raise Conflict("an admin cannot deactivate its own account", code="own_account")
    user.active = False
    revoke_user_tokens(session=session, user_id=user.id)
    record_event(
        session=session,
        event=UserDeactivated(actor=_actor(actor), clinic_id=user.clinic_id, user_id=user.id),
    )
    session.flush()
    return user


def reactivate_user(*, session: Session, user: User, actor: Principal | None = None) -> User:
    """Make a deactivated account active again (it logs in with its old credentials)."""
    user.active = True
    record_event(
        session=session,
        event=UserReactivated(actor=_actor(actor), clinic_id=user.clinic_id, user_id=user.id),
    )
    session.flush()
    return user


def reset_totp(
    *, session: Session, user: User, secret_box: SecretBox, actor: Principal | None = None
) -> str:
    """Give `user` a new TOTP secret; returns it (base32), to be shown once. The old
    authenticator stops working at once; the account's sessions are left alone."""
    secret = new_totp_secret(user=user, secret_box=secret_box)
    record_event(
        session=session,
        event=TotpReset(actor=_actor(actor), clinic_id=user.clinic_id, user_id=user.id),
    )
    session.flush()
    return secret
