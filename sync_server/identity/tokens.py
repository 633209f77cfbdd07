"""The server's Ed25519 signing key and its short-lived JWT access tokens.

Access tokens are EdDSA JWTs; verification pins the algorithm (a token saying
``alg: none`` or HS256 is refused before its signature is even looked at) and checks
issuer, audience, expiry, issue time and subject. The same key signs artifacts the
server publishes (models); devices pin its public key at enrolment.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sync_server.errors import Unauthorized

__all__ = ["ALGORITHM", "AccessClaims", "SigningKey"]

ALGORITHM = "EdDSA"


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


class SigningKey:
    """The server's Ed25519 key: signs access tokens and published artifacts."""

    def __init__(self, private_key: Ed25519PrivateKey, *, issuer: str, audience: str) -> None:
        self._private = private_key
        self.public_key_bytes = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.issuer = issuer
        self.audience = audience

    @classmethod
    def load_or_create(cls, path: Path, *, issuer: str, audience: str) -> SigningKey:
        """Read the PEM key at `path`, creating it (mode 0600) on first start."""
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            pem = Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            tmp = path.with_name(path.name + f".{secrets.token_hex(4)}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)  # first writer wins when several workers start at once
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path}: not an Ed25519 private key")
        return cls(key, issuer=issuer, audience=audience)

    def sign(self, data: bytes) -> bytes:
        """An Ed25519 signature of `data`."""
        return self._private.sign(data)

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
    ) -> tuple[str, datetime]:
        """A signed access token and its expiry."""
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
        return jwt.encode(claims, self._private, algorithm=ALGORITHM), expires

    def verify_access_token(self, token: str) -> AccessClaims:
        """The claims of a valid access token.

        Raises:
            Unauthorized: The token is malformed, signed by another key or with another
                algorithm, expired, or for another issuer or audience.
        """
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") != ALGORITHM:
                raise Unauthorized(
                    f"access token algorithm {header.get('alg')!r} is not accepted",
                    code="invalid_token",
                )
            claims = jwt.decode(
                token,
                self._private.public_key(),
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "iat", "sub", "iss", "aud", "jti"]},
                leeway=5,
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
            )
        except (KeyError, TypeError, ValueError):
            raise Unauthorized("access token lacks required claims", code="invalid_token") from None
