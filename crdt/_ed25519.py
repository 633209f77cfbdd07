"""Ed25519 signature checks, one rule on every replica, with libsodium when installed.

Every change a replica receives carries a signature it must check, so the check is on
the hot path of a push, a merge and a first sync's verification. libsodium (PyNaCl, the
``crypto-accel`` extra) checks a signature in about half the time OpenSSL
(``cryptography``) takes on this machine; an install without it (a build for a
platform PyNaCl has no wheel for) uses ``cryptography``.

The two libraries do not accept quite the same signatures: libsodium also refuses a
public key that is not a canonical encoding or is a point of small order, and a
signature whose ``R`` is a point of small order. Such keys and signatures never come
from an honest signer (a small-order key lets anyone forge "its" signatures), but a
replica with libsodium and one without must still agree on every document, or they
would keep different sets of records. So `verify` refuses them itself before either
library looks (and an unreduced ``S`` too, which both refuse), and the two paths accept
exactly the same signatures: a test checks this against libsodium on crafted keys and
signatures.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = ["KEY_SIZE", "SIGNATURE_SIZE", "backend", "verify"]

KEY_SIZE = 32
SIGNATURE_SIZE = 64

_P = 2**255 - 19
_ORDER8 = 2707385501144840649318225287225658788936804267575313519463743609750303402022
# The encodings of points of small order (the sign bit aside), as libsodium lists them:
# y = 0 and y = p (order 4), 1 and p + 1 (the identity), p - 1 (order 2), and the two
# of order 8. Kept as the 255-bit little-endian integers of their encodings.
_SMALL_ORDER = frozenset({0, 1, _ORDER8, _P - _ORDER8, _P - 1, _P, _P + 1})
_SIGN_BIT = (1 << 255) - 1
_L = 2**252 + 27742317777372353535851937790883648493  # the group's order: S must be below it


def _y(encoded: bytes) -> int:
    return int.from_bytes(encoded, "little") & _SIGN_BIT


def _weak_key(public_key: bytes) -> bool:
    """True if `public_key` is not a canonical encoding or is a point of small order."""
    y = _y(public_key)
    return y >= _P or y in _SMALL_ORDER


def _sodium_check() -> Callable[[bytes, bytes, bytes], bool] | None:
    """libsodium's check, when PyNaCl (the crypto-accel extra) is installed."""
    try:
        from nacl.bindings import crypto_sign_open
        from nacl.exceptions import BadSignatureError
    except ImportError:  # an install without it: cryptography checks every signature
        return None

    def check(public_key: bytes, message: bytes, signature: bytes) -> bool:
        try:
            crypto_sign_open(signature + message, public_key)
        except BadSignatureError:
            return False
        return True

    return check


_SODIUM = _sodium_check()


def backend() -> str:
    """The library that checks signatures here: ``"libsodium"`` or ``"openssl"``."""
    return "libsodium" if _SODIUM is not None else "openssl"


def verify(public_key: bytes, message: bytes, signature: Any, *, sodium: bool = True) -> bool:
    """True if `signature` is a valid Ed25519 signature of `message` by `public_key`.

    Anything malformed (a key or signature of the wrong size or type, a weak key, a
    small-order ``R``) is simply False. `sodium` False checks with ``cryptography``
    even where libsodium is installed (the tests compare the two).
    """
    if not isinstance(signature, bytes) or len(signature) != SIGNATURE_SIZE:
        return False
    if not isinstance(public_key, bytes) or len(public_key) != KEY_SIZE:
        return False
    if _weak_key(public_key) or _y(signature[:32]) in _SMALL_ORDER:
        return False
    if int.from_bytes(signature[32:], "little") >= _L:  # S not reduced: a malleated copy
        return False
    if sodium and _SODIUM is not None:
        return _SODIUM(public_key, message, signature)
    try:
        _openssl_key(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


@lru_cache(maxsize=1024)  # a clinic's few devices sign every change: parse each key once
def _openssl_key(raw: bytes) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(raw)
