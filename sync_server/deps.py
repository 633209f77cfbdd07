"""Request dependencies shared by every router: the app's services and who is asking.

Every route that touches data takes a `Principal` from `current_principal` (or one of
the role-narrowing dependencies) and scopes every query by its clinic: object-level
authorization happens in the route, with the principal in hand.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from sync_server.blobs.backends import BlobBackend
from sync_server.db import Database
from sync_server.errors import Forbidden, Unauthorized
from sync_server.identity.principals import STAFF_ROLES, Principal
from sync_server.identity.tables import Device, User
from sync_server.identity.tokens import SigningKey
from sync_server.settings import Settings

__all__ = [
    "AnyPrincipal",
    "DeviceCaller",
    "Principal",
    "StaffCaller",
    "blob_backend",
    "current_principal",
    "get_db",
    "get_settings",
    "get_signing_key",
    "request_id_of",
    "require_admin",
    "require_device",
    "require_staff",
]


def get_settings(request: Request) -> Settings:
    """The app's settings."""
    settings: Settings = request.app.state.settings
    return settings


def get_db(request: Request) -> Database:
    """The app's database."""
    db: Database = request.app.state.db
    return db


def get_signing_key(request: Request) -> SigningKey:
    """The server's signing key."""
    key: SigningKey = request.app.state.signing_key
    return key


def current_principal(request: Request) -> Principal:
    """The caller, from its bearer access token, checked against the database.

    A revoked device or a deactivated user is refused on the very next request,
    whatever its token says.

    Raises:
        Unauthorized: No token, or a token that does not verify.
        Forbidden: The device is revoked or the user deactivated.
    """
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("missing bearer access token", code="missing_token")
    claims = get_signing_key(request).verify_access_token(token.strip())
    db = get_db(request)
    with db.read() as session:
        if claims.kind == "device":
            device = session.get(Device, claims.subject)
            if device is None:
                raise Unauthorized("unknown device", code="invalid_token")
            if device.revoked_at is not None:
                raise Forbidden("this device has been revoked", code="device_revoked")
            principal = Principal(
                "device", device.id, device.clinic_id, claims.organisation_id, "device"
            )
        elif claims.kind == "user":
            user = session.get(User, claims.subject)
            if user is None or not user.active:
                raise Forbidden("this account is deactivated", code="user_inactive")
            principal = Principal("user", user.id, user.clinic_id, user.organisation_id, user.role)
        else:
            raise Unauthorized("access token of an unknown kind", code="invalid_token")
    request.state.principal = principal
    return principal


def require_device(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
    """The caller, who must be an enrolled device."""
    if principal.kind != "device":
        raise Forbidden("this route is for enrolled devices", code="devices_only")
    return principal


def require_staff(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
    """The caller, who must be a staff user (clinician, staff or admin)."""
    if principal.kind != "user" or principal.role not in STAFF_ROLES:
        raise Forbidden("this route is for staff", code="staff_only")
    return principal


def require_admin(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
    """The caller, who must be an admin."""
    if principal.kind != "user" or principal.role != "admin":
        raise Forbidden("this route is for admins", code="admins_only")
    return principal


AnyPrincipal = Annotated[Principal, Depends(current_principal)]
DeviceCaller = Annotated[Principal, Depends(require_device)]
StaffCaller = Annotated[Principal, Depends(require_staff)]


def blob_backend(request: Request) -> BlobBackend:
    """The app's blob backend (scan blobs and model files)."""
    backend: BlobBackend = request.app.state.blobs
    return backend


def request_id_of(request: Request) -> str | None:
    """The request id the observability middleware gave this request, for audit rows."""
    value = getattr(request.state, "request_id", None)
    return str(value)[:64] if value else None
