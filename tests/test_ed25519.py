"""One signature rule on every replica: libsodium (the crypto-accel extra) and
cryptography's OpenSSL accept exactly the same Ed25519 signatures through
`crdt.verify_ed25519`, including the crafted keys and signatures the two libraries
judge differently on their own."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from nacl.bindings import crypto_scalarmult_ed25519_base_noclamp, crypto_sign_open
from nacl.exceptions import BadSignatureError

from crdt import ed25519_backend, verify_ed25519
from edge_sdk import DeviceIdentity

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
ORDER8 = 2707385501144840649318225287225658788936804267575313519463743609750303402022


def both(public_key: bytes, message: bytes, signature: bytes) -> tuple[bool, bool]:
    """The verdict through libsodium and through OpenSSL."""
    return (
        verify_ed25519(public_key, message, signature),
        verify_ed25519(public_key, message, signature, sodium=False),
    )


def sodium_alone(public_key: bytes, message: bytes, signature: bytes) -> bool:
    try:
        crypto_sign_open(signature + message, public_key)
    except BadSignatureError:
        return False
    return True


def openssl_alone(public_key: bytes, message: bytes, signature: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def encoding(y: int, sign: int = 0) -> bytes:
    return (y | sign << 255).to_bytes(32, "little")


def test_the_test_environment_checks_with_libsodium() -> None:
    # The install the benchmarks and CI use has the crypto-accel extra.
    assert ed25519_backend() == "libsodium"


def test_honest_signatures_verify_and_altered_ones_do_not_on_both_paths() -> None:
    rng = random.Random(1604)
    for _ in range(200):
        identity = DeviceIdentity.generate()
        message = rng.randbytes(rng.randrange(0, 300))
        signature = identity.sign(message)
        key = identity.public_key
        assert both(key, message, signature) == (True, True)
        flipped = bytearray(signature)
        flipped[rng.randrange(64)] ^= 1 << rng.randrange(8)
        assert both(key, message, bytes(flipped)) == (False, False)
        if message:
            altered = bytearray(message)
            altered[rng.randrange(len(altered))] ^= 1 << rng.randrange(8)
            assert both(key, bytes(altered), signature) == (False, False)
        other = DeviceIdentity.generate().public_key
        assert both(other, message, signature) == (False, False)


@pytest.mark.parametrize(
    "y", [0, 1, ORDER8, P - ORDER8, P - 1, P, P + 1], ids=lambda y: hex(y)[:10]
)
@pytest.mark.parametrize("sign", [0, 1])
def test_a_small_order_key_is_refused_everywhere(y: int, sign: int) -> None:
    key = encoding(y, sign)
    # The signature OpenSSL's cofactorless check accepts under the identity point:
    # R = [S]B, whatever the message (anyone can forge it).
    s = 5
    r = crypto_scalarmult_ed25519_base_noclamp(s.to_bytes(32, "little"))
    forged = r + s.to_bytes(32, "little")
    assert not sodium_alone(key, b"anything", forged)  # the list matches libsodium's
    assert both(key, b"anything", forged) == (False, False)
    if y in (1, P + 1) and sign == 0:
        assert openssl_alone(key, b"anything", forged)  # why the rule checks it itself


def test_a_key_that_is_not_a_canonical_encoding_is_refused_everywhere() -> None:
    for y in range(P, 2**255):
        key = encoding(y)
        assert not sodium_alone(key, b"m", bytes(64))
        assert both(key, b"m", bytes(64)) == (False, False)


def test_an_unreduced_s_is_refused_on_both_paths() -> None:
    identity = DeviceIdentity.generate()
    signature = identity.sign(b"record")
    s = int.from_bytes(signature[32:], "little")
    malleated = signature[:32] + (s + L).to_bytes(32, "little")
    assert not sodium_alone(identity.public_key, b"record", malleated)
    assert both(identity.public_key, b"record", malleated) == (False, False)


def test_a_small_order_r_is_refused_on_both_paths() -> None:
    # Under the identity key (refused too) a signature R = identity, S = 0 holds for
    # OpenSSL; the rule refuses it for its R as well as its key.
    key = encoding(1)
    signature = encoding(1) + bytes(32)
    assert openssl_alone(key, b"m", signature)
    assert both(key, b"m", signature) == (False, False)


@pytest.mark.parametrize(
    ("key", "signature"),
    [
        (b"\x01" * 31, b"\x00" * 64),
        (b"\x01" * 33, b"\x00" * 64),
        (b"\x02" * 32, b"\x00" * 63),
        (b"\x02" * 32, "not bytes"),
        ("not bytes", b"\x00" * 64),
    ],
)
def test_malformed_keys_and_signatures_are_simply_false(key: object, signature: object) -> None:
    assert verify_ed25519(key, b"m", signature) is False  # type: ignore[arg-type]
    assert verify_ed25519(key, b"m", signature, sodium=False) is False  # type: ignore[arg-type]


def test_an_install_without_libsodium_checks_with_openssl() -> None:
    # A build for a platform PyNaCl has no wheel for: the same rule, through OpenSSL.
    code = (
        "import sys; sys.modules['nacl'] = None\n"
        "from crdt import ed25519_backend, verify_ed25519\n"
        "from edge_sdk import DeviceIdentity\n"
        "me = DeviceIdentity.generate(); sig = me.sign(b'm')\n"
        "print(ed25519_backend(), verify_ed25519(me.public_key, b'm', sig),"
        " verify_ed25519(me.public_key, b'n', sig))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.split() == ["openssl", "True", "False"]
