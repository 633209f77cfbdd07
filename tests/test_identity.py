"""Device identity: ids, Ed25519 signing and persistence."""

from __future__ import annotations

import uuid

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_sdk import DeviceIdentity, verify_signature


def test_generate_makes_a_uuid4_device_and_an_ed25519_key() -> None:
    identity = DeviceIdentity.generate()
    parsed = uuid.UUID(identity.device_id)
    assert parsed.version == 4
    assert str(parsed) == identity.device_id
    assert len(identity.public_key) == 32
    assert len(identity.private_bytes()) == 32


def test_each_identity_is_new() -> None:
    a, b = DeviceIdentity.generate(), DeviceIdentity.generate()
    assert a.device_id != b.device_id
    assert a.public_key != b.public_key


def test_sign_and_verify() -> None:
    identity = DeviceIdentity.generate()
    signature = identity.sign(b"enrolment challenge")
    assert len(signature) == 64
    assert verify_signature(identity.public_key, b"enrolment challenge", signature)
    # Signatures are checkable by anyone with the raw public key.
    Ed25519PublicKey.from_public_bytes(identity.public_key).verify(
        signature, b"enrolment challenge"
    )


def test_verify_rejects_other_data_key_or_tampered_signature() -> None:
    identity, other = DeviceIdentity.generate(), DeviceIdentity.generate()
    signature = identity.sign(b"data")
    tampered = bytes([signature[0] ^ 1]) + signature[1:]
    assert not verify_signature(identity.public_key, b"datA", signature)
    assert not verify_signature(other.public_key, b"data", signature)
    assert not verify_signature(identity.public_key, b"data", tampered)
    assert not verify_signature(identity.public_key, b"data", signature[:-1])
    assert not verify_signature(identity.public_key, b"data", b"")


def test_verify_with_malformed_public_key_is_value_error() -> None:
    identity = DeviceIdentity.generate()
    with pytest.raises(ValueError):
        verify_signature(identity.public_key[:31], b"data", identity.sign(b"data"))


def test_round_trip_through_private_bytes() -> None:
    identity = DeviceIdentity.generate()
    restored = DeviceIdentity.from_private_bytes(identity.device_id, identity.private_bytes())
    assert restored.device_id == identity.device_id
    assert restored.public_key == identity.public_key
    assert restored.actor_id == identity.actor_id
    assert verify_signature(identity.public_key, b"x", restored.sign(b"x"))


def test_actor_id_is_the_uuid_bytes() -> None:
    identity = DeviceIdentity.generate()
    assert identity.actor_id == uuid.UUID(identity.device_id).bytes
    assert len(identity.actor_id) == 16


def test_device_id_is_normalised() -> None:
    identity = DeviceIdentity.generate()
    shouted = identity.device_id.upper()
    restored = DeviceIdentity.from_private_bytes(shouted, identity.private_bytes())
    assert restored.device_id == identity.device_id


@pytest.mark.parametrize("device_id", ["", "not-a-uuid", "1234"])
def test_bad_device_id_is_refused(device_id: str) -> None:
    with pytest.raises(ValueError, match="not a UUID"):
        DeviceIdentity.from_private_bytes(device_id, bytes(32))


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_bad_private_key_is_refused(size: int) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        DeviceIdentity.from_private_bytes(str(uuid.uuid4()), bytes(size))


def test_repr_does_not_leak_the_private_key() -> None:
    identity = DeviceIdentity.generate()
    text = repr(identity)
    assert identity.device_id in text
    assert identity.private_bytes().hex() not in text
