"""Routes: administration of clinics, enrolment tokens, devices and staff accounts.

Admins only, and only within their own organisation (an admin bound to one clinic only
within that clinic). Objects outside that scope answer 404, as if they did not exist.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, status
from pydantic import BaseModel, Field
from sqlalchemy import select

from sync_server.db import Database
from sync_server.deps import get_db, get_settings, require_admin
from sync_server.errors import Forbidden, NotFound
from sync_server.identity.principals import Principal
from sync_server.identity.services import (
    MAX_ENROLMENT_TOKEN_LIFETIME,
    create_clinic,
    create_enrolment_token,
    create_user,
    revoke_device,
    totp_uri,
    visible_clinic,
)
from sync_server.identity.tables import Clinic, Device, User
from sync_server.settings import Settings

__all__ = ["router"]

router = APIRouter(prefix="/v1/admin", tags=["admin"])

AdminCaller = Annotated[Principal, Depends(require_admin)]
DbDep = Annotated[Database, Depends(get_db)]
SettingsDep = Annotated[Settings, Depends(get_settings)]

MAX_ENROLMENT_TOKEN_SECONDS = int(MAX_ENROLMENT_TOKEN_LIFETIME.total_seconds())


# ---------------------------------------------------------------- schemas
class ClinicCreate(BaseModel):
    """A clinic to create."""

    name: str = Field(min_length=1, max_length=200, description="Unique on the server.")


class ClinicPublic(BaseModel):
    """A clinic."""

    id: str
    name: str
    organisation_id: str
    created_at: datetime

    @classmethod
    def of(cls, clinic: Clinic) -> ClinicPublic:
        """The public view of a clinic row."""
        return cls(
            id=clinic.id,
            name=clinic.name,
            organisation_id=clinic.organisation_id,
            created_at=clinic.created_at,
        )


class EnrolmentTokenCreate(BaseModel):
    """A request for a one-time enrolment token."""

    clinic_id: str = Field(min_length=1, max_length=64)
    ttl_seconds: int | None = Field(
        default=None,
        gt=0,
        le=MAX_ENROLMENT_TOKEN_SECONDS,
        description="Lifetime; default the server's enrolment_token_seconds.",
    )


class EnrolmentTokenPublic(BaseModel):
    """A new enrolment token. It is shown once: the server keeps only its hash."""

    token: str
    clinic_id: str
    expires_at: datetime


class DevicePublic(BaseModel):
    """An enrolled device."""

    id: str
    clinic_id: str
    name: str
    enrolled_at: datetime
    revoked_at: datetime | None
    last_seen_at: datetime | None

    @classmethod
    def of(cls, device: Device) -> DevicePublic:
        """The public view of a device row."""
        return cls(
            id=device.id,
            clinic_id=device.clinic_id,
            name=device.name,
            enrolled_at=device.enrolled_at,
            revoked_at=device.revoked_at,
            last_seen_at=device.last_seen_at,
        )


class UserCreate(BaseModel):
    """A staff account to create."""

    username: str = Field(min_length=1, max_length=200)
    password: str = Field(min_length=1, max_length=1024, description="At least 12 characters.")
    role: Literal["clinician", "staff", "admin"]
    clinic_id: str | None = Field(
        default=None,
        max_length=64,
        description="Required for clinicians and staff; an admin without one "
        "administers the whole organisation.",
    )


class UserPublic(BaseModel):
    """A staff account (never its password hash or TOTP secret)."""

    id: str
    username: str
    role: str
    clinic_id: str | None
    organisation_id: str
    active: bool
    created_at: datetime


class UserCreated(BaseModel):
    """A new staff account and its TOTP secret, shown once."""

    user: UserPublic
    totp_secret: str
    totp_uri: str = Field(description="otpauth:// URI for an authenticator app.")


# ---------------------------------------------------------------- routes
@router.post(
    "/clinics",
    status_code=status.HTTP_201_CREATED,
    response_model=ClinicPublic,
    summary="Create a clinic",
)
def post_clinic(body: ClinicCreate, caller: AdminCaller, db: DbDep) -> ClinicPublic:
    """Create a clinic in the admin's organisation.

    Organisation-wide admins only (403 ``organisation_admins_only`` for an admin bound
    to a clinic); 409 ``clinic_exists`` if the name is taken.
    """
    if caller.clinic_id is not None:
        raise Forbidden(
            "only organisation-wide admins create clinics", code="organisation_admins_only"
        )
    with db.write() as session:
        clinic = create_clinic(session, name=body.name, organisation_id=caller.organisation_id)
    return ClinicPublic.of(clinic)


@router.get("/clinics", response_model=list[ClinicPublic], summary="List clinics")
def get_clinics(caller: AdminCaller, db: DbDep) -> list[ClinicPublic]:
    """The clinics of the admin's organisation (or the admin's own clinic), by name."""
    with db.read() as session:
        query = select(Clinic).where(Clinic.organisation_id == caller.organisation_id)
        if caller.clinic_id is not None:
            query = query.where(Clinic.id == caller.clinic_id)
        return [ClinicPublic.of(c) for c in session.scalars(query.order_by(Clinic.name))]


@router.post(
    "/enrolment-tokens",
    status_code=status.HTTP_201_CREATED,
    response_model=EnrolmentTokenPublic,
    summary="Issue a device enrolment token",
)
def post_enrolment_token(
    body: EnrolmentTokenCreate, caller: AdminCaller, db: DbDep, settings: SettingsDep
) -> EnrolmentTokenPublic:
    """Issue a one-time token that enrols one device into the clinic.

    The token is in this answer only; it expires after `ttl_seconds`.
    """
    ttl = timedelta(seconds=body.ttl_seconds or settings.enrolment_token_seconds)
    with db.write() as session:
        clinic = visible_clinic(session, caller, body.clinic_id)
        token, row = create_enrolment_token(
            session, clinic_id=clinic.id, ttl=ttl, created_by=caller.id
        )
    return EnrolmentTokenPublic(token=token, clinic_id=row.clinic_id, expires_at=row.expires_at)


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
        query = select(Device)
        if clinic_id is not None:
            query = query.where(Device.clinic_id == visible_clinic(session, caller, clinic_id).id)
        else:
            scope = select(Clinic.id).where(Clinic.organisation_id == caller.organisation_id)
            if caller.clinic_id is not None:
                scope = scope.where(Clinic.id == caller.clinic_id)
            query = query.where(Device.clinic_id.in_(scope))
        query = query.order_by(Device.enrolled_at, Device.id).limit(limit).offset(offset)
        return [DevicePublic.of(d) for d in session.scalars(query)]


@router.post("/devices/{device_id}/revoke", response_model=DevicePublic, summary="Revoke a device")
def post_revoke_device(device_id: str, caller: AdminCaller, db: DbDep) -> DevicePublic:
    """Revoke a device: its next request is refused (403 ``device_revoked``) and its
    refresh tokens stop working. Revoking twice is harmless."""
    with db.write() as session:
        device = session.get(Device, device_id)
        if device is None:
            raise NotFound("no such device", code="device_not_found")
        try:
            visible_clinic(session, caller, device.clinic_id)
        except NotFound:
            raise NotFound("no such device", code="device_not_found") from None
        device = revoke_device(session, device_id, actor_id=caller.id)
    return DevicePublic.of(device)


@router.post(
    "/users",
    status_code=status.HTTP_201_CREATED,
    response_model=UserCreated,
    summary="Create a staff account",
)
def post_user(body: UserCreate, caller: AdminCaller, db: DbDep) -> UserCreated:
    """Create a clinician, staff or admin account with a new TOTP secret.

    The TOTP secret is in this answer only. 422 ``weak_password`` for a password under
    12 characters; 409 ``username_taken``.
    """
    with db.write() as session:
        if body.clinic_id is None:
            if caller.clinic_id is not None:
                raise Forbidden(
                    "only organisation-wide admins create organisation-wide accounts",
                    code="organisation_admins_only",
                )
        else:
            visible_clinic(session, caller, body.clinic_id)
        user, secret = create_user(
            session,
            username=body.username,
            password=body.password,
            role=body.role,
            organisation_id=caller.organisation_id,
            clinic_id=body.clinic_id,
            with_totp=True,
            created_by=caller.id,
        )
        assert secret is not None
        return UserCreated(
            user=_user_public(user), totp_secret=secret, totp_uri=totp_uri(secret, user.username)
        )


def _user_public(user: User) -> UserPublic:
    return UserPublic(
        id=user.id,
        username=user.username,
        role=user.role,
        clinic_id=user.clinic_id,
        organisation_id=user.organisation_id,
        active=user.active,
        created_at=user.created_at,
    )
