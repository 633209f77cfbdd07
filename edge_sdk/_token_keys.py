"""Learning the server's new token key after a rotation, vouched for by the pinned one.

A device pins the server's token key at enrolment. When the server rotates it, each
new key comes with the previous key's signature of `token_key_statement` (a statement
in its own domain: no other signature the server makes can pass for one). Token answers
carry the deployment's chain of keys; `follow_token_keys` walks it from the pinned key,
accepting a key only when the key before it (already trusted) endorsed it. A key
nobody trusted vouched for is never accepted.

The key pinned at enrolment still names the server as a sync peer
(`edge_sdk.server_peer_id`): a rotation does not restart any cursor.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from edge_sdk._identity import verify_signature

__all__ = ["TOKEN_KEY_DOMAIN", "TokenKeyLink", "follow_token_keys", "token_key_statement"]

TOKEN_KEY_DOMAIN = b"coherency-token-key-rotation\n"
_KEY_SIZE = 32


def token_key_statement(public_key: bytes) -> bytes:
    """The bytes a server's token key signs to vouch for its successor (`public_key`)."""
    return TOKEN_KEY_DOMAIN + public_key


@dataclass(frozen=True, slots=True)
class TokenKeyLink:
    """One key of the server's chain: its raw public key and the previous key's
    endorsement of it (None for the deployment's first key)."""

    public_key: bytes
    endorsement: bytes | None


def follow_token_keys(pinned: bytes, chain: Iterable[TokenKeyLink]) -> bytes:
    """The newest key of `chain` that `pinned` vouches for, directly or through keys
    it vouched for (oldest first); `pinned` itself when it vouches for none."""
    current = pinned
    for link in chain:
        if (
            link.endorsement is None
            or len(link.public_key) != _KEY_SIZE
            or link.public_key == current
        ):
            continue
        if verify_signature(current, token_key_statement(link.public_key), link.endorsement):
            current = link.public_key
    return current
