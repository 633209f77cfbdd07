"""Signed authorship: who made each change of a record, verifiable on every replica.

Changes travel through other devices (bundles, edge boxes, the server), so the device
that delivers a change says nothing about who made it; the Automerge actor on a change
is only a claim. Each device therefore signs the changes it makes, and the signatures
travel inside the document itself, in a reserved root map ``_auth`` that is not part
of the record:

- ``_auth["key:<device id>"]``: the device's Ed25519 public key, as it declares it
  (replicas check it against their directory of enrolled devices);
- ``_auth["sig:<device id>:<n>"]``: the device's signature over
  ``signed_heads_message(doc_id, heads)``, where ``heads`` are exactly the dependencies
  of the change holding the signature (the *envelope*). Change hashes chain by content,
  so signing heads authenticates every change before them; the signer vouches only for
  the changes of its own actor among them.

After every local write `RecordDocument` adds one envelope (`seal`). A replica that
receives changes calls `verify_authorship` with a `KeyDirectory` (which devices are
enrolled in the record's clinic, and their keys): every new change must be covered by
a valid signature of its actor's device, every new signature must verify, and a change
that writes ``created_by``, ``updated_by`` or ``device_id`` must write its signer.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "AUTHOR_FIELDS",
    "AUTH_FIELD",
    "KeyDirectory",
    "Signer",
    "StaticDirectory",
    "server_device_id",
    "signed_heads_message",
]

AUTH_FIELD = "_auth"
"""The reserved root map holding keys and signatures; never part of a record."""

AUTHOR_FIELDS = frozenset({"created_by", "updated_by", "device_id"})
"""Fields whose value must be the device that wrote them."""

_KEY_PREFIX = "key:"
_SIG_PREFIX = "sig:"


class Signer(Protocol):
    """A device that signs its changes (an `edge_sdk.DeviceIdentity`, or the server)."""

    @property
    def device_id(self) -> str:
        """The device's id (a UUID): also its Automerge actor."""
        ...

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte Ed25519 public key."""
        ...

    def sign(self, data: bytes) -> bytes:
        """An Ed25519 signature of `data`."""
        ...


class KeyDirectory(Protocol):
    """Which devices may author changes to a clinic's records, and their keys."""

    def device_key(self, device_id: str, clinic_id: str, declared: bytes | None) -> bytes | None:
        """The public key `device_id` signs with, if it may write `clinic_id`'s records.

        `declared` is the key the document says the device has (None if it says
        none): a directory of enrolled devices ignores it; a store that trusts keys on
        first use may take it. None refuses the device.
        """
        ...


@dataclass(frozen=True, slots=True)
class StaticDirectory:
    """A fixed map of (clinic, device) to key: a shipped test double, and what a replica
    builds from the enrolled devices it knows."""

    keys: Mapping[tuple[str, str], bytes]

    def device_key(self, device_id: str, clinic_id: str, declared: bytes | None) -> bytes | None:
        """The key of `device_id` in `clinic_id`, or None."""
        return self.keys.get((clinic_id, device_id))


def signed_heads_message(doc_id: str, heads: Iterable[bytes]) -> bytes:
    """The bytes a device signs: "my changes reachable from these heads of this record"."""
    return b"coherency-changes\n" + doc_id.encode() + b"\n" + b"".join(sorted(heads))


def server_device_id(public_key: bytes) -> str:
    """The device id (and Automerge actor) under which a server signs the documents it
    writes itself (decisions), derived from its public key: every replica that pinned
    the key knows it."""
    digest = hashlib.sha256(b"coherency-server-actor\n" + public_key).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


def key_entry(device_id: str) -> str:
    """The ``_auth`` key under which a device declares its public key."""
    return _KEY_PREFIX + device_id


def signature_entry(device_id: str, heads: Sequence[bytes]) -> str:
    """The ``_auth`` key of a device's signature over `heads` (unique per heads)."""
    return f"{_SIG_PREFIX}{device_id}:{b''.join(sorted(heads)).hex()[:32]}"


def parse_entry(key: str) -> tuple[str, str] | None:
    """(kind, device id) of an ``_auth`` key: kind "key" or "sig"; None if malformed."""
    if key.startswith(_KEY_PREFIX):
        return "key", key[len(_KEY_PREFIX) :]
    if key.startswith(_SIG_PREFIX):
        device, _, rest = key[len(_SIG_PREFIX) :].partition(":")
        if rest:
            return "sig", device
    return None
