"""Routes: device enrolment, token refresh, device and staff login, logout.

Binary values (keys, signatures) travel as standard or URL-safe base64; a value that is
not base64 gets 400 ``invalid_base64``.

Every credential route is throttled (`sync_server.identity.throttling`): first the
client's request is counted against its rate limit, in a transaction of its own so the
count stays whatever becomes of the request; then the operation, which counts failed
credentials. A refusal is 429 ``too_many_requests`` with ``Retry-After``.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, TypeVar

from fastapi import APIRouter, Response, status

from sync_server.db import Database
from sync_server.deps import (
    ArtifactKeyDep,
    ClientDep,
    DbDep,
    DeviceCaller,
    SecretBoxDep,
    SettingsDep,
    SigningKeyDep,
)
from sync_server.errors import Invalid
from sync_server.identity import throttling
from sync_server.identity.devices import device_login, device_profile
from sync_server.identity.enrolment import enrol_device
from sync_server.identity.keyring import TokenKeyring
from sync_server.identity.schemas import (
    DeviceLoginRequest,
    DeviceMe,
    EnrolRequest,
    EnrolResponse,
    LoginRequest,
    LoginResponse,
    RefreshRequest,
    TokenKeyPublic,
    TokenResponse,
)
from sync_server.identity.sessions import log_in, revoke_refresh_family, rotate_refresh_token
from sync_server.settings import Settings

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["auth"])

_THROTTLED: dict[int | str, dict[str, Any]] = {
    429: {"description": "Too many attempts: retry after `Retry-After` seconds."}
}


def _admit(db: Database, action: throttling.Action, client: str, settings: Settings) -> None:
    """Count the request against the client's rate limit (429 when over it, or while the
    client is held back by its failures)."""
    with db.write() as session:
        throttling.admit(session=session, action=action, client=client, settings=settings)


_Answer = TypeVar("_Answer", bound=TokenResponse)


def _with_keys(answer: _Answer, keyring: TokenKeyring) -> _Answer:
    """`answer` with the deployment's token keys, for devices to follow a rotation."""
    answer.token_keys = [TokenKeyPublic.model_validate(info) for info in keyring.chain()]
    return answer


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
    responses=_THROTTLED,
)
def enroll(
    body: EnrolRequest,
    db: DbDep,
    settings: SettingsDep,
    key: SigningKeyDep,
    artifact_key: ArtifactKeyDep,
    client: ClientDep,
) -> EnrolResponse:
    """Enrol a device into a clinic with a one-time token, binding its Ed25519 public key.

    The device proves it holds the private key now by signing the token, its id, the
    time and a new nonce (within 5 minutes of the server's clock; each nonce once).
    Returns the device's clinic, a token pair, the server's token and artifact keys
    (to pin) and the clinic's edge boxes with their certificates (to pin). An edge box
    enrols with an edge token and its self-signed certificate (``tls_certificate``;
    400 ``certificate_required`` without it, ``certificate_refused`` with a device
    token, ``bad_certificate`` if it does not parse, is over 8 KiB or is not valid
    now). A token is spent only by a successful enrolment. A device whose answer
    was lost repeats its enrolment with a fresh proof: its earlier sessions are revoked
    and it gets one new token pair.
    """
    public_key = _decode_base64(body.public_key, "public_key")
    signature = _decode_base64(body.signature, "signature")
    _admit(db, "enrol", client, settings)
    with db.write() as session:
        result = enrol_device(
            session=session,
            token=body.token,
            device_id=body.device_id,
            public_key=public_key,
            name=body.name,
            expected_clinic_id=body.expected_clinic_id,
            issued_at=body.issued_at,
            nonce=body.nonce,
            signature=signature,
            signing_key=key,
            artifact_public_key=artifact_key.public_key_bytes,
            settings=settings,
            client=client,
            tls_certificate=body.tls_certificate,
        )
    return _with_keys(EnrolResponse.model_validate(result), key)


@router.post(
    "/auth/refresh",
    response_model=TokenResponse,
    summary="Rotate a refresh token",
    responses=_THROTTLED,
)
def refresh(
    body: RefreshRequest, db: DbDep, settings: SettingsDep, key: SigningKeyDep, client: ClientDep
) -> TokenResponse:
    """Spend a refresh token for a new token pair.

    Each refresh token works once. Presenting a spent one again is treated as theft:
    its whole chain is revoked (401 ``refresh_token_reused``), so the device or user
    must enrol or log in again (a device can use `/v1/auth/device`). A refresh refused
    with 429 leaves the token unspent.
    """
    _admit(db, "refresh", client, settings)
    with db.write() as session:
        pair = rotate_refresh_token(
            session=session, refresh_token=body.refresh_token, signing_key=key, settings=settings
        )
    return _with_keys(TokenResponse.model_validate(pair), key)


@router.post(
    "/auth/device",
    response_model=TokenResponse,
    summary="Log a device in with its key",
    responses=_THROTTLED,
)
def device_assertion(
    body: DeviceLoginRequest,
    db: DbDep,
    settings: SettingsDep,
    key: SigningKeyDep,
    client: ClientDep,
) -> TokenResponse:
    """Start a new token chain for an enrolled device that signs a fresh assertion.

    For a device that lost its refresh token. The signed time must be within 5 minutes
    of the server's clock and each nonce works once.
    """
    signature = _decode_base64(body.signature, "signature")
    _admit(db, "device-login", client, settings)
    with db.write() as session:
        pair = device_login(
            session=session,
            device_id=body.device_id,
            issued_at=body.issued_at,
            nonce=body.nonce,
            signature=signature,
            signing_key=key,
            settings=settings,
            client=client,
        )
    return _with_keys(TokenResponse.model_validate(pair), key)


@router.post(
    "/auth/login", response_model=LoginResponse, summary="Staff login", responses=_THROTTLED
)
def login(
    body: LoginRequest,
    db: DbDep,
    settings: SettingsDep,
    key: SigningKeyDep,
    secret_box: SecretBoxDep,
    client: ClientDep,
) -> LoginResponse:
    """Log a staff user in with username, password and TOTP code (and the organisation,
    when the username exists in several).

    Every failure is 401 ``invalid_credentials`` with one message, whatever was wrong.
    Failures are throttled, never locked out: after repeated failures a client, or an
    account towards the clients failing on it, is answered 429 with ``Retry-After``
    before anything is checked; the real user, from a client that has not been
    failing, still gets in.
    """
    _admit(db, "login", client, settings)
    with db.write() as session:
        result = log_in(
            session=session,
            username=body.username,
            password=body.password,
            totp_code=body.totp,
            organisation=body.organisation,
            signing_key=key,
            secret_box=secret_box,
            settings=settings,
            client=client,
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
