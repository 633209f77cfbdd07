"""Request and response bodies of the identity routes (admin and auth).

Create schemas bound what a client may send (their limits come from the services,
which enforce them for every caller); Public schemas are built from rows and service
results with `model_validate` (``from_attributes``) and never carry a secret the
server keeps (password hashes, TOTP secrets, token hashes).
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sync_server.edge.certificates import MAX_CERTIFICATE_SIZE
from sync_server.edge.schemas import EdgeBoxPublic
from sync_server.identity.assertions import MAX_NONCE_LENGTH, MIN_NONCE_LENGTH
from sync_server.identity.enrolment import MAX_ENROLMENT_TOKEN_LIFETIME, EnrolmentKind
from sync_server.identity.tenancy import MAX_NAME_LENGTH
from sync_server.identity.users import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH

__all__ = [
    "MAX_ENROLMENT_TOKEN_SECONDS",
    "ClinicCreate",
    "ClinicPublic",
    "DeviceLoginRequest",
    "DeviceMe",
    "DevicePublic",
    "EnrolRequest",
    "EnrolResponse",
    "EnrolmentTokenCreate",
    "EnrolmentTokenPublic",
    "LoginRequest",
    "LoginResponse",
    "RefreshRequest",
    "SessionsRevoked",
    "TokenKeyPublic",
    "TokenResponse",
    "Unlocked",
    "UserCreate",
    "UserCreated",
    "UserPublic",
]

MAX_ENROLMENT_TOKEN_SECONDS = int(MAX_ENROLMENT_TOKEN_LIFETIME.total_seconds())


class _Public(BaseModel):
    """A response built from a row or a service result."""

    model_config = ConfigDict(from_attributes=True)


# ---------------------------------------------------------------- admin
class ClinicCreate(BaseModel):
    """A clinic to create."""

    name: str = Field(
        min_length=1, max_length=MAX_NAME_LENGTH, description="Unique in the organisation."
    )


class ClinicPublic(_Public):
    """A clinic."""

    id: str
    name: str
    organisation_id: str
    created_at: datetime


class EnrolmentTokenCreate(BaseModel):
    """A request for a one-time enrolment token."""

    clinic_id: str = Field(min_length=1, max_length=64)
    ttl_seconds: int | None = Field(
        default=None,
        gt=0,
        le=MAX_ENROLMENT_TOKEN_SECONDS,
        description="Lifetime, at most 30 days; default the server's enrolment_token_seconds.",
    )
    kind: EnrolmentKind = Field(
        default="device",
        description="What the token enrols: a device (default) or a clinic's edge box.",
    )


class EnrolmentTokenPublic(BaseModel):
    """A new enrolment token. It is shown once: the server keeps only its hash."""

    token: str
    clinic_id: str
    expires_at: datetime
    kind: str = "device"


class DevicePublic(_Public):
    """An enrolled device (or edge box: `kind`)."""

    id: str
    clinic_id: str
    kind: str = Field(default="device", description="device, or edge for an edge box.")
    name: str
    enrolled_at: datetime
    revoked_at: datetime | None
    last_seen_at: datetime | None


class UserCreate(BaseModel):
    """A staff account to create."""

    username: str = Field(
        min_length=1, max_length=MAX_NAME_LENGTH, description="Unique in the organisation."
    )
    password: str = Field(
        min_length=1,
        max_length=MAX_PASSWORD_LENGTH,
        description=f"At least {MIN_PASSWORD_LENGTH} characters.",
    )
    role: Literal["clinician", "staff", "admin"]
    clinic_id: str | None = Field(
        default=None,
        max_length=64,
        description="Required for clinicians and staff; an admin without one "
        "administers the whole organisation.",
    )


class UserPublic(_Public):
    """A staff account (never its password hash or TOTP secret)."""

    id: str
    username: str
    role: str
    clinic_id: str | None
    organisation_id: str
    active: bool
    created_at: datetime


class UserCreated(BaseModel):
    """A staff account and its new TOTP secret, shown once (a new account, or a reset)."""

    user: UserPublic
    totp_secret: str
    totp_uri: str = Field(description="otpauth:// URI for an authenticator app.")


class Unlocked(BaseModel):
    """An account whose failed logins were forgotten."""

    user: UserPublic
    cleared: int = Field(description="How many throttling counters were cleared.")


class SessionsRevoked(BaseModel):
    """An account whose sessions were revoked."""

    user: UserPublic
    families: int = Field(description="How many sessions (refresh-token families) were alive.")


# ---------------------------------------------------------------- auth
class EnrolRequest(BaseModel):
    """A device asking to enrol with a one-time token."""

    token: str = Field(min_length=1, max_length=200, description="The one-time enrolment token.")
    device_id: str = Field(min_length=1, max_length=64, description="The device's UUID.")
    public_key: str = Field(
        min_length=1, max_length=200, description="Raw 32-byte Ed25519 public key, base64."
    )
    issued_at: int = Field(
        ge=0, le=2**40, description="Unix seconds; within 5 minutes of the server clock."
    )
    nonce: str = Field(
        min_length=MIN_NONCE_LENGTH,
        max_length=MAX_NONCE_LENGTH,
        description=f"{MIN_NONCE_LENGTH}-{MAX_NONCE_LENGTH} URL-safe characters, new for "
        "every attempt.",
    )
    signature: str = Field(
        min_length=1,
        max_length=200,
        description="Ed25519 signature, base64, of "
        "'coherency-enrol\\n{token}\\n{device_id}\\n{issued_at}\\n{nonce}'.",
    )
    name: str = Field(default="", max_length=MAX_NAME_LENGTH, description="A label for admins.")
    expected_clinic_id: str | None = Field(
        default=None,
        max_length=64,
        description="If given, enrolment is refused (and the token kept) when the token "
        "is for another clinic.",
    )
    tls_certificate: str | None = Field(
        default=None,
        # Bounded here only against abuse; the 8 KiB limit answers 400 bad_certificate.
        max_length=16 * MAX_CERTIFICATE_SIZE,
        description="An edge box's self-signed X.509 certificate, PEM (at most 8 KiB, "
        "valid now): required with an edge enrolment token, refused with a device token.",
    )


class TokenKeyPublic(_Public):
    """One of the deployment's token keys (public parts)."""

    kid: str
    public_key: str = Field(description="Raw Ed25519 public key, base64.")
    state: str = Field(description="active, retiring (verifies until verify_until) or retired.")
    verify_until: datetime | None
    endorsement: str | None = Field(
        description="The previous key's Ed25519 signature, base64, of "
        "'coherency-token-key-rotation\\n' followed by public_key's raw bytes (None for "
        "the first key): a device pins a new key only when the key it pinned vouches "
        "for it."
    )

    @field_validator("public_key", "endorsement", mode="before")
    @classmethod
    def _base64(cls, value: object) -> object:
        return base64.b64encode(value).decode() if isinstance(value, bytes) else value


class TokenResponse(_Public):
    """An access token and the refresh token that renews it."""

    access_token: str
    access_token_expires_at: datetime
    refresh_token: str
    refresh_token_expires_at: datetime
    token_type: str = "bearer"
    token_keys: list[TokenKeyPublic] = Field(
        default_factory=list,
        description="The deployment's token keys, oldest first, each endorsed by the one "
        "before: how a device learns the key that replaced the one it pinned.",
    )


class EnrolResponse(TokenResponse):
    """An enrolled device's scope, tokens and the server keys to pin."""

    device_id: str
    clinic_id: str
    organisation_id: str
    server_public_key: str = Field(
        description="The server's token key (raw Ed25519 public key), base64."
    )
    artifact_public_key: str = Field(
        description="The server's artifact key (raw Ed25519 public key), base64: it signs "
        "the models the device installs."
    )
    edge_boxes: list[EdgeBoxPublic] = Field(
        default_factory=list,
        description="The clinic's enrolled, unrevoked edge boxes, by box_id: the "
        "certificates to pin.",
    )

    @field_validator("server_public_key", "artifact_public_key", mode="before")
    @classmethod
    def _base64(cls, value: object) -> object:
        return base64.b64encode(value).decode() if isinstance(value, bytes) else value


class RefreshRequest(BaseModel):
    """A refresh token to spend (refresh) or revoke (logout)."""

    refresh_token: str = Field(min_length=1, max_length=200)


class DeviceLoginRequest(BaseModel):
    """A device assertion: the device signs a fresh nonce and the time with its key."""

    device_id: str = Field(min_length=1, max_length=64)
    issued_at: int = Field(
        ge=0, le=2**40, description="Unix seconds; within 5 minutes of the server clock."
    )
    nonce: str = Field(
        min_length=MIN_NONCE_LENGTH,
        max_length=MAX_NONCE_LENGTH,
        description=f"{MIN_NONCE_LENGTH}-{MAX_NONCE_LENGTH} URL-safe characters.",
    )
    signature: str = Field(
        min_length=1,
        max_length=200,
        description="Ed25519 signature, base64, of "
        "'coherency-device-login\\n{device_id}\\n{issued_at}\\n{nonce}'.",
    )


class LoginRequest(BaseModel):
    """Staff credentials."""

    username: str = Field(min_length=1, max_length=MAX_NAME_LENGTH)
    password: str = Field(min_length=1, max_length=MAX_PASSWORD_LENGTH)
    totp: str | None = Field(default=None, max_length=16, description="The current TOTP code.")
    organisation: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_NAME_LENGTH,
        description="The organisation's name or id: needed when the username exists in "
        "several organisations.",
    )


class LoginResponse(TokenResponse):
    """A staff user's tokens and who they are."""

    user_id: str
    role: str
    clinic_id: str | None
    organisation_id: str


class DeviceMe(_Public):
    """The calling device as the server knows it."""

    device_id: str
    clinic_id: str
    organisation_id: str
    name: str
    enrolled_at: datetime
