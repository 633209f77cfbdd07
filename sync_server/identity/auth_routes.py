"""Routes: device enrolment, token refresh, device and staff login, logout.

Binary values (keys, signatures) travel as standard or URL-safe base64; a value that is
not base64 gets 400 ``invalid_base64``.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Response, status
from pydantic import BaseModel, Field

from sync_server.db import Database
from sync_server.deps import DeviceCaller, get_db, get_settings, get_signing_key
from sync_server.errors import Invalid, NotFound
from sync_server.identity.services import (
    TokenPair,
    authenticate_user,
    device_login,
    enrol_device,
    issue_tokens,
    revoke_refresh_family,
    rotate_refresh_token,
)
from sync_server.identity.tables import Device
from sync_server.identity.tokens import SigningKey
from sync_server.settings import Settings

__all__ = ["decode_base64", "router"]

router = APIRouter(prefix="/v1", tags=["auth"])

DbDep = Annotated[Database, Depends(get_db)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
KeyDep = Annotated[SigningKey, Depends(get_signing_key)]


def decode_base64(value: str, field: str) -> bytes:
    """Decode standard or URL-safe base64 (padding required).

    Raises:
        Invalid: ``invalid_base64`` naming `field`.
    """
    normalised = value.strip().replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(normalised, validate=True)
    except (binascii.Error, ValueError):
        raise Invalid(f"{field} is not valid base64", code="invalid_base64") from None


# ---------------------------------------------------------------- schemas
class EnrolRequest(BaseModel):
    """A device asking to enrol with a one-time token."""

    token: str = Field(min_length=1, max_length=200, description="The one-time enrolment token.")
    device_id: str = Field(min_length=1, max_length=64, description="The device's UUID.")
    public_key: str = Field(
        min_length=1, max_length=200, description="Raw 32-byte Ed25519 public key, base64."
    )
    signature: str = Field(
        min_length=1,
        max_length=200,
        description="Ed25519 signature, base64, of "
        "b'coherency-enrol\\n' + token + b'\\n' + device_id.",
    )
    name: str = Field(default="", max_length=200, description="A label for admins.")
    expected_clinic_id: str | None = Field(
        default=None,
        max_length=64,
        description="If given, enrolment is refused (and the token kept) when the token "
        "is for another clinic.",
    )


class TokenResponse(BaseModel):
    """An access token and the refresh token that renews it."""

    access_token: str
    access_token_expires_at: datetime
    refresh_token: str
    refresh_token_expires_at: datetime
    token_type: str = "bearer"

    @classmethod
    def of(cls, pair: TokenPair) -> TokenResponse:
        """The response for a token pair."""
        return cls(
            access_token=pair.access_token,
            access_token_expires_at=pair.access_token_expires_at,
            refresh_token=pair.refresh_token,
            refresh_token_expires_at=pair.refresh_token_expires_at,
            token_type=pair.token_type,
        )


class EnrolResponse(TokenResponse):
    """An enrolled device's scope, tokens and the server key to pin."""

    device_id: str
    clinic_id: str
    organisation_id: str
    server_public_key: str = Field(description="The server's raw Ed25519 public key, base64.")


class RefreshRequest(BaseModel):
    """A refresh token to spend (refresh) or revoke (logout)."""

    refresh_token: str = Field(min_length=1, max_length=200)


class DeviceLoginRequest(BaseModel):
    """A device assertion: the device signs a fresh nonce and the time with its key."""

    device_id: str = Field(min_length=1, max_length=64)
    issued_at: int = Field(
        ge=0, le=2**40, description="Unix seconds; within 5 minutes of the server clock."
    )
    nonce: str = Field(min_length=16, max_length=64, description="16-64 URL-safe characters.")
    signature: str = Field(
        min_length=1,
        max_length=200,
        description="Ed25519 signature, base64, of "
        "'coherency-device-login\\n{device_id}\\n{issued_at}\\n{nonce}'.",
    )


class LoginRequest(BaseModel):
    """Staff credentials."""

    username: str = Field(min_length=1, max_length=200)
    password: str = Field(min_length=1, max_length=1024)
    totp: str | None = Field(default=None, max_length=16, description="The current TOTP code.")


class LoginResponse(TokenResponse):
    """A staff user's tokens and who they are."""

    user_id: str
    role: str
    clinic_id: str | None
    organisation_id: str


class DeviceMe(BaseModel):
    """The calling device as the server knows it."""

    device_id: str
    clinic_id: str
    organisation_id: str
    name: str
    enrolled_at: datetime


# ---------------------------------------------------------------- routes
@router.post(
    "/devices/enroll",
    status_code=status.HTTP_201_CREATED,
    response_model=EnrolResponse,
    summary="Enrol a device",
)
def enroll(body: EnrolRequest, db: DbDep, settings: SettingsDep, key: KeyDep) -> EnrolResponse:
    """Enrol a device into a clinic with a one-time token, binding its Ed25519 public key.

    The device proves it holds the private key by signing the token and its id. Returns
    the device's clinic, a token pair and the server's public key (to pin). A token is
    spent only by a successful enrolment.
    """
    public_key = decode_base64(body.public_key, "public_key")
    signature = decode_base64(body.signature, "signature")
    with db.write() as session:
        result = enrol_device(
            session,
            token=body.token,
            device_id=body.device_id,
            public_key=public_key,
            name=body.name,
            expected_clinic_id=body.expected_clinic_id,
            signature=signature,
            signing_key=key,
            settings=settings,
        )
    pair = result.tokens
    return EnrolResponse(
        access_token=pair.access_token,
        access_token_expires_at=pair.access_token_expires_at,
        refresh_token=pair.refresh_token,
        refresh_token_expires_at=pair.refresh_token_expires_at,
        token_type=pair.token_type,
        device_id=result.device_id,
        clinic_id=result.clinic_id,
        organisation_id=result.organisation_id,
        server_public_key=base64.b64encode(result.server_public_key).decode(),
    )


@router.post("/auth/refresh", response_model=TokenResponse, summary="Rotate a refresh token")
def refresh(body: RefreshRequest, db: DbDep, settings: SettingsDep, key: KeyDep) -> TokenResponse:
    """Spend a refresh token for a new token pair.

    Each refresh token works once. Presenting a spent one again is treated as theft:
    its whole chain is revoked (401 ``refresh_token_reused``), so the device or user
    must enrol or log in again (a device can use `/v1/auth/device`).
    """
    with db.write() as session:
        pair = rotate_refresh_token(session, body.refresh_token, signing_key=key, settings=settings)
    return TokenResponse.of(pair)


@router.post("/auth/device", response_model=TokenResponse, summary="Log a device in with its key")
def device_assertion(
    body: DeviceLoginRequest, db: DbDep, settings: SettingsDep, key: KeyDep
) -> TokenResponse:
    """Start a new token chain for an enrolled device that signs a fresh assertion.

    For a device that lost its refresh token. The signed time must be within 5 minutes
    of the server's clock and each nonce works once.
    """
    signature = decode_base64(body.signature, "signature")
    with db.write() as session:
        pair = device_login(
            session,
            device_id=body.device_id,
            issued_at=body.issued_at,
            nonce=body.nonce,
            signature=signature,
            signing_key=key,
            settings=settings,
        )
    return TokenResponse.of(pair)


@router.post("/auth/login", response_model=LoginResponse, summary="Staff login")
def login(body: LoginRequest, db: DbDep, settings: SettingsDep, key: KeyDep) -> LoginResponse:
    """Log a staff user in with username, password and TOTP code.

    Five consecutive failures lock the account for 15 minutes (401 ``account_locked``).
    """
    with db.write() as session:
        user = authenticate_user(session, body.username, body.password, body.totp)
        pair = issue_tokens(
            session,
            subject_kind="user",
            subject_id=user.id,
            clinic_id=user.clinic_id,
            organisation_id=user.organisation_id,
            role=user.role,
            signing_key=key,
            settings=settings,
        )
        answer = LoginResponse(
            **TokenResponse.of(pair).model_dump(),
            user_id=user.id,
            role=user.role,
            clinic_id=user.clinic_id,
            organisation_id=user.organisation_id,
        )
    return answer


@router.post(
    "/auth/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Revoke a refresh token chain",
)
def logout(body: RefreshRequest, db: DbDep) -> Response:
    """Revoke the refresh token and every token of its chain.

    Answers 204 whether or not the token was known, so logging out twice is harmless.
    Access tokens already issued stay valid until they expire (minutes).
    """
    with db.write() as session:
        revoke_refresh_family(session, body.refresh_token)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/devices/me", response_model=DeviceMe, summary="The calling device")
def device_me(caller: DeviceCaller, db: DbDep) -> DeviceMe:
    """The calling device's id, clinic and enrolment time (devices only)."""
    with db.read() as session:
        device = session.get(Device, caller.id)
        if device is None:
            raise NotFound("no such device", code="device_not_found")
        return DeviceMe(
            device_id=device.id,
            clinic_id=device.clinic_id,
            organisation_id=caller.organisation_id,
            name=device.name,
            enrolled_at=device.enrolled_at,
        )
