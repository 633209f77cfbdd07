"""Token and key mechanics: the server's Ed25519 signing key and its short-lived JWT
access tokens, the hashes random bearer tokens are stored under, and the check of a
device's Ed25519 signature.

Access tokens are EdDSA JWTs whose ``kid`` header names the deployment key that signed
them (`sync_server.identity.keyring`); verification pins the algorithm (a token saying
``alg: none`` or HS256 is refused before its signature is even looked at) and checks
issuer, audience, expiry, issue time and subject. This key signs tokens only (and
endorses the artifact key for devices enrolled before there was one): published
artifacts (models) are signed by a key of their own (`sync_server.models.signing`).
Devices pin both public keys at enrolment.

Enrolment and refresh tokens are 256-bit random strings, stored only as SHA-256
hashes (a fast hash is enough for that much entropy).
"""

from __future__ import annotations

import functools
import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sync_server.errors import Unauthorized
from sync_server.keyfiles import load_or_create_ed25519

__all__ = [
    "ALGORITHM",
    "ED25519_KEY_SIZE",
    "LEEWAY_SECONDS",
    "AccessClaims",
    "Endorser",
    "SigningKey",
    "decode_access_token",
    "hash_token",
    "kid_of",
    "new_bearer_token",
    "token_header",
]

ALGORITHM = "EdDSA"
LEEWAY_SECONDS = 5
"""Clock skew allowed on a token's times."""
ED25519_KEY_SIZE = 32


@dataclass(frozen=True, slots=True)
class AccessClaims:
    """What a verified access token says."""

    subject: str  # device id or user id
    kind: str  # "device" or "user"
    clinic_id: str | None
    organisation_id: str
    role: str  # device, clinician, staff, admin
    token_id: str
    expires_at: datetime
    session_id: str | None = None  # a staff session's refresh-token family


class Endorser(Protocol):
    """A token key that vouches for other keys (`SigningKey`, the deployment's
    `sync_server.identity.keyring.TokenKeyring`)."""

    def endorse(self, statement: bytes) -> bytes: ...


def kid_of(public_key: bytes) -> str:
    """A token key's id (JWT ``kid``): the first 16 hex digits of its SHA-256, so every
    instance holding one key names it alike."""
    return hashlib.sha256(public_key).hexdigest()[:16]


class SigningKey:
    """One Ed25519 token key: signs access tokens (with its `kid` in their header)."""

    def __init__(self, private_key: Ed25519PrivateKey, *, issuer: str, audience: str) -> None:
        self._private = private_key
        self.public_key_bytes = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.kid = kid_of(self.public_key_bytes)
        self.issuer = issuer
        self.audience = audience

    @classmethod
    def load_or_create(cls, path: Path, *, issuer: str, audience: str) -> SigningKey:
        """Read the PEM key at `path`, creating it (mode 0600) on first start."""
        return cls(load_or_create_ed25519(path), issuer=issuer, audience=audience)

    def endorse(self, statement: bytes) -> bytes:
        """An Ed25519 signature of a domain-separated statement about another key
        (`edge_sdk.artifact_key_statement`), so devices that pinned this key learn a
        key they never pinned. Never used on anything a device or user sent."""
        return self._private.sign(statement)

    def issue_access_token(
        self,
        *,
        subject: str,
        kind: str,
        clinic_id: str | None,
        organisation_id: str,
        role: str,
        ttl: timedelta,
        now: datetime | None = None,
        session_id: str | None = None,
    ) -> tuple[str, datetime]:
        """A signed access token and its expiry; `session_id` names the refresh-token
        family of a staff session (claim ``sid``), whose idle time it then counts in."""
        now = now or datetime.now(UTC)
        expires = now + ttl
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "iat": int(now.timestamp()),
            "nbf": int(now.timestamp()) - 5,
            "exp": int(expires.timestamp()),
            "jti": secrets.token_hex(12),
            "kind": kind,
            "clinic": clinic_id,
            "org": organisation_id,
            "role": role,
        }
        if session_id is not None:
            claims["sid"] = session_id
        token = jwt.encode(claims, self._private, algorithm=ALGORITHM, headers={"kid": self.kid})
        return token, expires

    def verify_access_token(self, token: str) -> AccessClaims:
        """The claims of a valid access token signed by this key.

        Raises:
            Unauthorized: The token is malformed, signed by another key or with another
                algorithm, expired, or for another issuer or audience.
        """
        return decode_access_token(
            token, self.public_key_bytes, issuer=self.issuer, audience=self.audience
        )


def token_header(token: str) -> dict[str, Any]:
    """The unverified header of an access token, its algorithm checked.

    Raises:
        Unauthorized: ``invalid_token``: not a JWT, or not signed with EdDSA.
    """
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise Unauthorized(f"invalid access token: {exc}", code="invalid_token") from None
    if header.get("alg") != ALGORITHM:
        raise Unauthorized(
            f"access token algorithm {header.get('alg')!r} is not accepted", code="invalid_token"
        )
    return header


def decode_access_token(
    token: str, public_key: bytes, *, issuer: str, audience: str
) -> AccessClaims:
    """The claims of a valid access token signed by `public_key` (raw Ed25519).

    A token verified once is remembered (its signature and claims cannot change), so
    the next request that carries it costs a lookup; its expiry is checked at every
    use. Refused tokens are not remembered.

    Raises:
        Unauthorized: The token is malformed, signed by another key or with another
            algorithm, expired, or for another issuer or audience.
    """
    claims = _verified_claims(token, public_key, issuer, audience)
    if time.time() >= claims.expires_at.timestamp() + LEEWAY_SECONDS:
        raise Unauthorized("access token expired", code="token_expired")
    return claims


@functools.lru_cache(maxsize=4096)
def _verified_claims(token: str, public_key: bytes, issuer: str, audience: str) -> AccessClaims:
    token_header(token)
    try:
        claims = jwt.decode(
            token,
            Ed25519PublicKey.from_public_bytes(public_key),
            algorithms=[ALGORITHM],
            audience=audience,
            issuer=issuer,
            options={"require": ["exp", "iat", "sub", "iss", "aud", "jti"]},
            leeway=LEEWAY_SECONDS,
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized("access token expired", code="token_expired") from None
    except jwt.PyJWTError as exc:
        raise Unauthorized(f"invalid access token: {exc}", code="invalid_token") from None
    try:
        return AccessClaims(
            subject=str(claims["sub"]),
            kind=str(claims["kind"]),
            clinic_id=None if claims.get("clinic") is None else str(claims["clinic"]),
            organisation_id=str(claims["org"]),
            role=str(claims["role"]),
            token_id=str(claims["jti"]),
            expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
            session_id=None if claims.get("sid") is None else str(claims["sid"]),
        )
    except (KeyError, TypeError, ValueError):
        raise Unauthorized("access token lacks required claims", code="invalid_token") from None


def new_bearer_token() -> tuple[str, str]:
    """A new random bearer token (256 bits, URL-safe) and the hash to store it under."""
    token = secrets.token_urlsafe(32)
    return token, hash_token(token)


def hash_token(token: str) -> str:
    """The SHA-256 hex digest under which a random token is stored."""
    return hashlib.sha256(token.encode()).hexdigest()
