"""Who may use the box: the clinic's enrolled, unrevoked devices, as central knows them.

A device logs in at the box exactly as it logs in at central (``POST /v1/auth/device``):
it signs `crdt.device_login_message` (its id, the time, a fresh nonce) with its key.
The box checks the signature against the key central's directory gives for that
device (the directory the box last pulled: a device revoked since drops out of it and
is refused once the box has synced), the time (within `LOGIN_MAX_SKEW_SECONDS` of the
box's clock) and the nonce (once only), and answers a short-lived access token signed
with the box's own key. It never issues a refresh token: a device logs in again.

A bearer token is either one the box issued (checked against the box's key) or an
access token central issued to a device of the box's clinic (checked against
central's key, pinned at the box's enrolment). Either way the device must still be in
the directory when it calls.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from crdt import device_login_message, verify_ed25519

__all__ = [
    "ACCESS_TOKEN_SECONDS",
    "LOGIN_MAX_SKEW_SECONDS",
    "REFRESH_INTERVAL_SECONDS",
    "BoxAuthError",
    "BoxTokens",
]

ACCESS_TOKEN_SECONDS = 900
LOGIN_MAX_SKEW_SECONDS = 300
REFRESH_INTERVAL_SECONDS = 5.0
_ALGORITHM = "EdDSA"
_AUDIENCE = "coherency-edge"
_CENTRAL_AUDIENCE = "coherency"
_NONCE = re.compile(r"[A-Za-z0-9_\-]{16,64}")


class BoxAuthError(Exception):
    """A caller the box refuses: `status` 401 (log in again) or 403 (revoked)."""

    def __init__(self, message: str, *, status: int = 401, code: str = "unauthorized") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class BoxTokens:
    """Device logins at the box and the bearer tokens they earn.

    Args:
        box_key: The box's Ed25519 private key (its device identity).
        box_id: The box's device id (the tokens' issuer).
        clinic_id: The box's clinic: the only clinic whose devices it serves.
        central_key: Central's token key (raw Ed25519), pinned at enrolment; or a
            callable returning the keys the box trusts now (central's keys rotate),
            read at each check.
        directory: Returns the devices central last listed for the clinic.
        was_known: True for a device the box served before (refused as revoked,
            rather than unknown, when it drops out of the directory).
        refresh: Fetches central's directory afresh, when it can (a device enrolled
            since the box last pulled it); called at most once per
            `REFRESH_INTERVAL_SECONDS`, so unknown callers cannot make the box hammer
            central.
        claim_nonce: Records a login nonce durably, False if it was seen (the box's
            store: a restarted box still refuses a replayed login); in memory when None.
    """

    def __init__(
        self,
        *,
        box_key: Ed25519PrivateKey,
        box_id: str,
        clinic_id: str,
        central_key: bytes | Callable[[], Sequence[bytes]],
        directory: Any,
        was_known: Any,
        refresh: Any = None,
        claim_nonce: Any = None,
    ) -> None:
        self._key = box_key
        self._issuer = f"coherency-edge:{box_id}"
        self._clinic = clinic_id
        self._central_keys = central_key if callable(central_key) else (lambda: (central_key,))
        self._directory = directory
        self._was_known = was_known
        self._refresh = refresh
        self._claim_nonce = claim_nonce
        self._refreshed_at = -REFRESH_INTERVAL_SECONDS
        self._nonces: dict[str, float] = {}
        self._lock = threading.Lock()

    def login(
        self, *, device_id: str, issued_at: int, nonce: str, signature: bytes
    ) -> dict[str, Any]:
        """Check a signed device login; the token answer (as central's, without a
        refresh token).

        Raises:
            BoxAuthError: Not a device of the clinic, revoked, a bad signature, a stale
                time or a replayed nonce.
        """
        key = self.device_key(device_id)
        if not _NONCE.fullmatch(nonce):
            raise BoxAuthError(
                "the nonce must be 16-64 URL-safe characters", status=400, code="bad_nonce"
            )
        now = time.time()
        if abs(now - issued_at) > LOGIN_MAX_SKEW_SECONDS:
            raise BoxAuthError(
                "the login was signed too far from the box's clock", code="stale_assertion"
            )
        if not verify_ed25519(key, device_login_message(device_id, issued_at, nonce), signature):
            raise BoxAuthError("the login signature does not verify", code="bad_signature")
        self._claim(nonce, now)
        expires = datetime.now(UTC) + timedelta(seconds=ACCESS_TOKEN_SECONDS)
        token = jwt.encode(
            {
                "iss": self._issuer,
                "aud": _AUDIENCE,
                "sub": device_id,
                "clinic": self._clinic,
                "iat": int(now),
                "exp": int(expires.timestamp()),
                "jti": secrets.token_hex(12),
            },
            self._key,
            algorithm=_ALGORITHM,
        )
        return {
            "access_token": token,
            "access_token_expires_at": expires.isoformat(),
            "refresh_token": None,
            "token_type": "bearer",
        }

    def caller(self, authorization: str | None) -> str:
        """The device id behind a bearer token the box accepts.

        Raises:
            BoxAuthError: No token, a token neither the box nor central signed for a
                device of this clinic, expired, or its device is revoked.
        """
        if not authorization or not authorization.lower().startswith("bearer "):
            raise BoxAuthError("a bearer token is required", code="missing_token")
        token = authorization[7:].strip()
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") != _ALGORITHM:
                raise BoxAuthError("this token algorithm is not accepted", code="invalid_token")
            unverified = jwt.decode(token, options={"verify_signature": False})
            if unverified.get("iss") == self._issuer:
                claims = jwt.decode(
                    token,
                    self._key.public_key(),
                    algorithms=[_ALGORITHM],
                    audience=_AUDIENCE,
                    issuer=self._issuer,
                    options={"require": ["exp", "sub", "iss", "aud"]},
                    leeway=5,
                )
            else:  # an access token central gave a device of the clinic
                claims = self._central_claims(token)
                if claims.get("kind") != "device" or claims.get("role") not in {"device", None}:
                    raise BoxAuthError(
                        "only devices may use the box", status=403, code="devices_only"
                    )
        except jwt.ExpiredSignatureError:
            raise BoxAuthError("access token expired", code="token_expired") from None
        except jwt.PyJWTError as exc:
            raise BoxAuthError(f"invalid access token: {exc}", code="invalid_token") from None
        if claims.get("clinic") != self._clinic:
            raise BoxAuthError("this token is for another clinic", status=403, code="wrong_clinic")
        device_id = str(claims["sub"])
        self.device_key(device_id)  # revoked since the token was issued: refused now
        return device_id

    def _central_claims(self, token: str) -> dict[str, Any]:
        """The claims of a token signed by one of central's keys the box trusts."""
        keys = list(self._central_keys())
        for n, key in enumerate(reversed(keys)):
            try:
                claims: dict[str, Any] = jwt.decode(
                    token,
                    Ed25519PublicKey.from_public_bytes(key),
                    algorithms=[_ALGORITHM],
                    audience=_CENTRAL_AUDIENCE,
                    options={"require": ["exp", "sub", "aud"]},
                    leeway=5,
                )
                return claims
            except jwt.InvalidSignatureError:
                if n == len(keys) - 1:
                    raise
        raise jwt.InvalidSignatureError("no central key is trusted")

    def device_key(self, device_id: str) -> bytes:
        """The device's key from central's directory.

        Raises:
            BoxAuthError: 403 ``device_revoked`` for a device the box served before that
                central no longer lists; 401 for one it never knew.
        """
        key = self._directory().get(device_id)
        if key is None and self._refresh is not None and self._may_refresh():
            self._refresh()
            key = self._directory().get(device_id)
        if key is not None:
            return bytes(key)
        if self._was_known(device_id):
            raise BoxAuthError("this device was revoked", status=403, code="device_revoked")
        raise BoxAuthError(
            "this device is not an enrolled device of the box's clinic (or the box has "
            "not heard of it from the central server yet)",
            code="unknown_device",
        )

    def _may_refresh(self) -> bool:
        with self._lock:
            now = time.monotonic()
            if now - self._refreshed_at < REFRESH_INTERVAL_SECONDS:
                return False
            self._refreshed_at = now
            return True

    def _claim(self, nonce: str, now: float) -> None:
        if self._claim_nonce is not None:
            if not self._claim_nonce(nonce, now, 2 * LOGIN_MAX_SKEW_SECONDS):
                raise BoxAuthError("this login was already used", code="replayed_assertion")
            return
        with self._lock:
            for old, at in list(self._nonces.items()):
                if now - at > 2 * LOGIN_MAX_SKEW_SECONDS:
                    del self._nonces[old]
            if nonce in self._nonces:
                raise BoxAuthError("this login was already used", code="replayed_assertion")
            self._nonces[nonce] = now
