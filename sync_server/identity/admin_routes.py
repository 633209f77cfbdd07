"""Routes: administration of clinics, enrolment tokens, devices and staff accounts.

Admins only, and only within their own organisation (an admin bound to one clinic only
within that clinic). Objects outside that scope answer 404, as if they did not exist.
Staff accounts: create, list, unlock (forget failed logins), deactivate and reactivate,
reset TOTP, revoke sessions (`sync_server.identity.accounts`); each action audited.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, status

from sync_server.deps import AdminCaller, DbDep, SecretBoxDep, SettingsDep
from sync_server.identity.accounts import (
    deactivate_user,
    find_user,
    list_users,
    reactivate_user,
    reset_totp,
    revoke_user_sessions,
    unlock_user,
)
from sync_server.identity.devices import list_devices, revoke_device
from sync_server.identity.enrolment import create_enrolment_token
from sync_server.identity.schemas import (
    ClinicCreate,
    ClinicPublic,
    DevicePublic,
    EnrolmentTokenCreate,
    EnrolmentTokenPublic,
    SessionsRevoked,
    Unlocked,
    UserCreate,
    UserCreated,
    UserPublic,
)
from sync_server.identity.tenancy import create_clinic, list_clinics
from sync_server.identity.users import create_user, totp_uri

__all__ = ["router"]

router = APIRouter(prefix="/v1/admin", tags=["admin"])


@router.post(
    "/clinics",
    status_code=status.HTTP_201_CREATED,
    response_model=ClinicPublic,
    summary="Create a clinic",
    responses={409: {"description": "`clinic_exists`: a clinic of that name in the organisation."}},
)
def post_clinic(body: ClinicCreate, caller: AdminCaller, db: DbDep) -> ClinicPublic:
    """Create a clinic in the admin's organisation.

    Organisation-wide admins only (403 ``organisation_admins_only`` for an admin bound
    to a clinic); 409 ``clinic_exists`` if the name is taken.
    """
    with db.write() as session:
        clinic = create_clinic(
            session=session, name=body.name, organisation_id=caller.organisation_id, actor=caller
        )
        return ClinicPublic.model_validate(clinic)


@router.get("/clinics", response_model=list[ClinicPublic], summary="List clinics")
def get_clinics(caller: AdminCaller, db: DbDep) -> list[ClinicPublic]:
    """The clinics of the admin's organisation (or the admin's own clinic), by name."""
    with db.read() as session:
        return [
            ClinicPublic.model_validate(c) for c in list_clinics(session=session, principal=caller)
        ]


@router.post(
    "/enrolment-tokens",
    status_code=status.HTTP_201_CREATED,
    response_model=EnrolmentTokenPublic,
    summary="Issue a device enrolment token",
)
def post_enrolment_token(
    body: EnrolmentTokenCreate, caller: AdminCaller, db: DbDep, settings: SettingsDep
) -> EnrolmentTokenPublic:
    """Issue a one-time token that enrols one device into the clinic (``"kind": "edge"``:
    one edge box, which enrols with its TLS certificate).

    The token is in this answer only; it expires after `ttl_seconds` (at most 30 days).
    """
    ttl = timedelta(seconds=body.ttl_seconds or settings.enrolment_token_seconds)
    with db.write() as session:
        token, row = create_enrolment_token(
            session=session, clinic_id=body.clinic_id, ttl=ttl, actor=caller, kind=body.kind
        )
    return EnrolmentTokenPublic(
        token=token, clinic_id=row.clinic_id, expires_at=row.expires_at, kind=row.kind
    )


@router.get("/devices", response_model=list[DevicePublic], summary="List devices")
def get_devices(
    caller: AdminCaller,
    db: DbDep,
    clinic_id: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
) -> list[DevicePublic]:
    """Enrolled devices (revoked ones too), of one clinic or of every clinic in scope."""
    with db.read() as session:
        devices = list_devices(
            session=session, principal=caller, clinic_id=clinic_id, limit=limit, offset=offset
        )
        return [DevicePublic.model_validate(d) for d in devices]


@router.post("/devices/{device_id}/revoke", response_model=DevicePublic, summary="Revoke a device")
def post_revoke_device(device_id: str, caller: AdminCaller, db: DbDep) -> DevicePublic:
    """Revoke a device: its next request is refused (403 ``device_revoked``) and its
    refresh tokens stop working. Revoking twice is harmless."""
    with db.write() as session:
        device = revoke_device(session=session, device_id=device_id, actor=caller)
        return DevicePublic.model_validate(device)


@router.post(
    "/users",
    status_code=status.HTTP_201_CREATED,
    response_model=UserCreated,
    summary="Create a staff account",
    responses={409: {"description": "`username_taken` in the organisation."}},
)
def post_user(
    body: UserCreate, caller: AdminCaller, db: DbDep, secret_box: SecretBoxDep
) -> UserCreated:
    """Create a clinician, staff or admin account with a new TOTP secret.

    The TOTP secret is in this answer only. 422 ``weak_password`` for a password under
    12 characters; 409 ``username_taken`` (usernames are unique in the organisation).
    """
    with db.write() as session:
        user, secret = create_user(
            session=session,
            username=body.username,
            password=body.password,
            role=body.role,
            organisation_id=caller.organisation_id,
            clinic_id=body.clinic_id,
            with_totp=True,
            secret_box=secret_box,
            actor=caller,
        )
        assert secret is not None
        return UserCreated(
            user=UserPublic.model_validate(user),
            totp_secret=secret,
            totp_uri=totp_uri(secret, user.username),
        )


@router.get("/users", response_model=list[UserPublic], summary="List staff accounts")
def get_users(
    caller: AdminCaller,
    db: DbDep,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
) -> list[UserPublic]:
    """The staff accounts the admin manages (its organisation's, or its clinic's), by
    username."""
    with db.read() as session:
        users = list_users(session=session, principal=caller, limit=limit, offset=offset)
        return [UserPublic.model_validate(u) for u in users]


UserIdPath = Annotated[str, Path(max_length=64)]
_NO_SUCH_USER: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such account in the admin's scope."}
}


@router.post(
    "/users/{user_id}/unlock",
    response_model=Unlocked,
    summary="Forget an account's failed logins",
    responses=_NO_SUCH_USER,
)
def post_unlock_user(user_id: UserIdPath, caller: AdminCaller, db: DbDep) -> Unlocked:
    """Forget the failed logins held against the account, so no client is held back on
    it any more (a client's own failures elsewhere stay its own). Accounts are never
    locked; this ends the wait an attack imposed on clients that were failing."""
    with db.write() as session:
        user = find_user(session=session, user_id=user_id, actor=caller)
        cleared = unlock_user(session=session, user=user, actor=caller)
        return Unlocked(user=UserPublic.model_validate(user), cleared=cleared)


@router.post(
    "/users/{user_id}/deactivate",
    response_model=UserPublic,
    summary="Deactivate an account",
    responses={**_NO_SUCH_USER, 409: {"description": "An admin's own account."}},
)
def post_deactivate_user(user_id: UserIdPath, caller: AdminCaller, db: DbDep) -> UserPublic:
    """Deactivate the account: its sessions are revoked, its next request is refused
    (403 ``user_inactive``) and its logins fail. 409 ``own_account`` for the admin's own
    account. Deactivating twice is harmless."""
    with db.write() as session:
        user = find_user(session=session, user_id=user_id, actor=caller)
        return UserPublic.model_validate(deactivate_user(session=session, user=user, actor=caller))


@router.post(
    "/users/{user_id}/reactivate",
    response_model=UserPublic,
    summary="Reactivate an account",
    responses=_NO_SUCH_USER,
)
def post_reactivate_user(user_id: UserIdPath, caller: AdminCaller, db: DbDep) -> UserPublic:
    """Make a deactivated account active again; it logs in with its old credentials."""
    with db.write() as session:
        user = find_user(session=session, user_id=user_id, actor=caller)
        return UserPublic.model_validate(reactivate_user(session=session, user=user, actor=caller))


@router.post(
    "/users/{user_id}/reset-totp",
    response_model=UserCreated,
    summary="Give an account a new TOTP secret",
    responses=_NO_SUCH_USER,
)
def post_reset_totp(
    user_id: UserIdPath, caller: AdminCaller, db: DbDep, secret_box: SecretBoxDep
) -> UserCreated:
    """A new TOTP secret for the account (a lost phone): the old authenticator stops
    working at once. The secret is in this answer only."""
    with db.write() as session:
        user = find_user(session=session, user_id=user_id, actor=caller)
        secret = reset_totp(session=session, user=user, secret_box=secret_box, actor=caller)
        return UserCreated(
            user=UserPublic.model_validate(user),
            totp_secret=secret,
            totp_uri=totp_uri(secret, user.username),
        )


@router.post(
    "/users/{user_id}/revoke-sessions",
    response_model=SessionsRevoked,
    summary="Revoke an account's sessions",
    responses=_NO_SUCH_USER,
)
def post_revoke_user_sessions(
    user_id: UserIdPath, caller: AdminCaller, db: DbDep
) -> SessionsRevoked:
    """Revoke every refresh-token family of the account: it must log in again once its
    current access token expires (minutes)."""
    with db.write() as session:
        user = find_user(session=session, user_id=user_id, actor=caller)
        families = revoke_user_sessions(session=session, user=user, actor=caller)
        return SessionsRevoked(user=UserPublic.model_validate(user), families=families)
