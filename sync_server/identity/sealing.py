"""Secrets the server must read back (TOTP secrets), sealed at rest with AES-256-GCM.

The secret key file (`Settings.secret_key_file`, default ``<data_dir>/secret-key``)
holds 32 random bytes, created on first start with mode 0600. Each purpose seals with
its own key, derived from that file with HKDF-SHA256 (the purpose is the HKDF info), so
no two kinds of secret ever share a key. A sealed value is text, ``v1.`` and the
URL-safe base64 of the 12-byte nonce, the ciphertext and the tag; the associated data
is the purpose and the row it belongs to (a user id), so a sealed secret copied onto
another row does not open.

The key file must be backed up with the database and shared by every worker: without
it no sealed secret can be opened (every TOTP user must then be given a new secret).
"""

from __future__ import annotations

import base64
import binascii
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from sync_server.errors import Unavailable
from sync_server.keyfiles import load_or_create_secret

__all__ = ["SEALED_PREFIX", "TOTP_PURPOSE", "SecretBox", "is_sealed"]

SEALED_PREFIX = "v1."
TOTP_PURPOSE = "totp-secret"
_NONCE_SIZE = 12


def is_sealed(value: str) -> bool:
    """True for a value `SecretBox.seal` made (a TOTP secret in base32 never is)."""
    return value.startswith(SEALED_PREFIX)


class SecretBox:
    """Seals and opens short secrets of one purpose under the server's secret key."""

    def __init__(self, master_key: bytes, *, purpose: str = TOTP_PURPOSE) -> None:
        if len(master_key) != 32:
            raise ValueError("the secret key is 32 bytes")
        self._purpose = purpose
        key = HKDF(
            algorithm=hashes.SHA256(),
            length=32,
            salt=None,
            info=b"coherency-sealing\n" + purpose.encode(),
        ).derive(master_key)
        self._aead = AESGCM(key)

    @classmethod
    def load_or_create(cls, path: Path, *, purpose: str = TOTP_PURPOSE) -> SecretBox:
        """The box for `purpose` under the key file at `path` (created, 0600, if missing)."""
        return cls(load_or_create_secret(path), purpose=purpose)

    def _associated(self, bound_to: str) -> bytes:
        return self._purpose.encode() + b"\n" + bound_to.encode()

    def seal(self, secret: str, *, bound_to: str) -> str:
        """`secret` sealed for the row `bound_to` (a new random nonce each time)."""
        nonce = secrets.token_bytes(_NONCE_SIZE)
        sealed = self._aead.encrypt(nonce, secret.encode(), self._associated(bound_to))
        return SEALED_PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode("ascii")

    def open(self, sealed: str, *, bound_to: str) -> str:
        """The secret `seal` sealed for `bound_to`.

        Raises:
            Unavailable: ``secret_key_mismatch``: the value is not sealed, was sealed
                under another key, for another row, or was altered. The server's secret
                key file is not the one the secret was sealed with: an operator's
                problem, not the client's.
        """
        try:
            if not is_sealed(sealed):
                raise ValueError("not sealed")
            raw = base64.urlsafe_b64decode(sealed[len(SEALED_PREFIX) :].encode("ascii"))
            plain = self._aead.decrypt(
                raw[:_NONCE_SIZE], raw[_NONCE_SIZE:], self._associated(bound_to)
            )
            return plain.decode()
        except (InvalidTag, ValueError, binascii.Error, UnicodeError):
            raise Unavailable(
                "a stored secret does not open with the server's secret key "
                "(COHERENCY_SERVER_SECRET_KEY_FILE is not the key it was sealed with)",
                code="secret_key_mismatch",
            ) from None
