"""A device's identity: a random device id and an Ed25519 signing key.

The device id is a UUID4; its 16 bytes double as the device's Automerge actor id, so a
change in a document can be traced to the device that made it. The private key signs
enrolment challenges and sync bundles; the server and peers check signatures with
`verify_signature` and the enrolled public key.
"""

from __future__ import annotations

import uuid

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from crdt import verify_ed25519

__all__ = ["DeviceIdentity", "verify_signature"]

_KEY_SIZE = 32


class DeviceIdentity:
    """A device id and its Ed25519 key pair.

    Create one with `generate()` on first run, persist `device_id` and
    `private_bytes()` in the encrypted store, and rebuild it with
    `from_private_bytes()`.
    """

    __slots__ = ("_device_id", "_private_key", "_public_key")

    def __init__(self, device_id: str, private_key: Ed25519PrivateKey) -> None:
        self._device_id = _canonical_uuid(device_id)
        self._private_key = private_key
        self._public_key = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @classmethod
    def generate(cls) -> DeviceIdentity:
        """Make a new identity: a random UUID4 device id and a new Ed25519 key."""
        return cls(str(uuid.uuid4()), Ed25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, device_id: str, raw: bytes) -> DeviceIdentity:
        """Rebuild an identity from its device id and 32-byte raw private key.

        Raises:
            ValueError: `device_id` is not a UUID or `raw` is not 32 bytes.
        """
        if len(raw) != _KEY_SIZE:
            raise ValueError(f"an Ed25519 private key is {_KEY_SIZE} bytes, not {len(raw)}")
        return cls(device_id, Ed25519PrivateKey.from_private_bytes(raw))

    @property
    def device_id(self) -> str:
        """The device id, a lowercase hyphenated UUID string."""
        return self._device_id

    @property
    def actor_id(self) -> bytes:
        """The 16 bytes of the device UUID, used as the Automerge actor id."""
        return uuid.UUID(self._device_id).bytes

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte Ed25519 public key."""
        return self._public_key

    def sign(self, data: bytes) -> bytes:
        """Return the 64-byte Ed25519 signature of `data`."""
        return self._private_key.sign(data)

    def private_bytes(self) -> bytes:
        """The raw 32-byte private key. Store it only in the encrypted store."""
        return self._private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())

    def __repr__(self) -> str:
        return f"DeviceIdentity(device_id={self._device_id!r})"


def verify_signature(public_key: bytes, data: bytes, signature: bytes) -> bool:
    """Whether `signature` is a valid Ed25519 signature of `data` by `public_key`.

    Raises:
        ValueError: `public_key` is not a 32-byte Ed25519 public key (a configuration
            error, unlike a bad signature, which returns False).
    """
    if len(public_key) != _KEY_SIZE:
        raise ValueError(f"an Ed25519 public key is {_KEY_SIZE} bytes, not {len(public_key)}")
    return verify_ed25519(public_key, data, signature)


def _canonical_uuid(device_id: str) -> str:
    try:
        parsed = uuid.UUID(device_id)
    except (ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"device id {device_id!r} is not a UUID") from exc
    return str(parsed)
