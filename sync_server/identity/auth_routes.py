"""Routes: device enrolment, token refresh, device and staff login, logout.

Binary values (keys, signatures) travel as standard or URL-safe base64; a value that is
not base64 gets 400 ``invalid_base64``.
"""

from __future__ import annotations

import base64
import binascii

from fastapi import APIRouter, Response, status

from sync_server.deps import DbDep, DeviceCaller, SettingsDep, SigningKeyDep
from sync_server.errors import Invalid
from sync_server.identity.devices import device_login, device_profile
from sync_server.identity.enrolment import enrol_device
from sync_server.identity.schemas import (
    DeviceLoginRequest,
    DeviceMe,
    EnrolRequest,
    EnrolResponse,
    LoginRequest,
    LoginResponse,
    RefreshRequest,
    TokenResponse,
)
from sync_server.identity.sessions import log_in, revoke_refresh_family, rotate_refresh_token

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["auth"])


def _decode_base64(value: str, field: str) -> bytes:
    """Decode standard or URL-safe base64 (padding required).

    Raises:
        Invalid: ``invalid_base64`` naming `field`.
    """
    normalised = value.strip().replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(normalised, validate=True)
    except (binascii.Error, ValueError):
        raise Invalid(f"{field} is not valid base64", code="invalid_base64") from None


@router.post(
    "/devices/enroll",
    status_code=status.HTTP_201_CREATED,
    response_model=EnrolResponse,
    summary="Enrol a device",
)
def enroll(
    body: EnrolRequest, db: DbDep, settings: SettingsDep, key: SigningKeyDep
) -> EnrolResponse:
    """Enrol a device into a clinic with a one-time token, binding its Ed25519 public key.

    The device proves it holds the private key by signing the token and its id. Returns
    the device's clinic, a token pair and the server's public key (to pin). A token is
    spent only by a successful enrolment.
    """
    public_key = _decode_base64(body.public_key, "public_key")
    signature = _decode_base64(body.signature, "signature")
    with db.write() as session:
        result = enrol_device(
            session=session,
            token=body.token,
            device_id=body.device_id,
            public_key=public_key,
            name=body.name,
            expected_clinic_id=body.expected_clinic_id,
            signature=signature,
            signing_key=key,
            settings=settings,
        )
    return EnrolResponse.model_validate(result)


@router.post("/auth/refresh", response_model=TokenResponse, summary="Rotate a refresh token")
def refresh(
    body: RefreshRequest, db: DbDep, settings: SettingsDep, key: SigningKeyDep
) -> TokenResponse:
    """Spend a refresh token for a new token pair.

    Each refresh token works once. Presenting a spent one again is treated as theft:
    its whole chain is revoked (401 ``refresh_token_reused``), so the device or user
    must enrol or log in again (a device can use `/v1/auth/device`).
    """
    with db.write() as session:
        pair = rotate_refresh_token(
            session=session, refresh_token=body.refresh_token, signing_key=key, settings=settings
        )
    return TokenResponse.model_validate(pair)


@router.post("/auth/device", response_model=TokenResponse, summary="Log a device in with its key")
def device_assertion(
    body: DeviceLoginRequest, db: DbDep, settings: SettingsDep, key: SigningKeyDep
) -> TokenResponse:
    """Start a new token chain for an enrolled device that signs a fresh assertion.

    For a device that lost its refresh token. The signed time must be within 5 minutes
    of the server's clock and each nonce works once.
    """
    signature = _decode_base64(body.signature, "signature")
    with db.write() as session:
        pair = device_login(
            session=session,
            device_id=body.device_id,
            issued_at=body.issued_at,
            nonce=body.nonce,
            signature=signature,
            signing_key=key,
            settings=settings,
        )
    return TokenResponse.model_validate(pair)


@router.post("/auth/login", response_model=LoginResponse, summary="Staff login")
def login(
    body: LoginRequest, db: DbDep, settings: SettingsDep, key: SigningKeyDep
) -> LoginResponse:
    """Log a staff user in with username, password and TOTP code.

    Five consecutive failures lock the account for 15 minutes (401 ``account_locked``).
    """
    with db.write() as session:
        result = log_in(
            session=session,
            username=body.username,
            password=body.password,
            totp_code=body.totp,
            signing_key=key,
            settings=settings,
        )
    return LoginResponse.model_validate(result)


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
        revoke_refresh_family(session=session, refresh_token=body.refresh_token)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/devices/me", response_model=DeviceMe, summary="The calling device")
def device_me(caller: DeviceCaller, db: DbDep) -> DeviceMe:
    """The calling device's id, clinic and enrolment time (devices only)."""
    with db.read() as session:
        return DeviceMe.model_validate(device_profile(session=session, principal=caller))
