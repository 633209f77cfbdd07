"""The audit log's shared primitives: what a device and the server must compute alike.

- The server's log is a Merkle tree in the manner of Certificate Transparency (RFC 9162,
  section 2.1): a leaf's hash is ``SHA-256(0x00 || bytes)``, a node's
  ``SHA-256(0x01 || left || right)``, and the tree of ``n`` leaves splits at the largest
  power of two below ``n``. `MerkleFrontier` appends leaves keeping only the roots of
  its perfect subtrees; `inclusion_proof` and `consistency_proof` build the RFC's audit
  paths from any source of subtree hashes; `verify_inclusion` and `verify_consistency`
  are the RFC's verification algorithms, step by step.
- A `Checkpoint` is the server's signed statement of the tree (origin, size, root,
  time), in the line-oriented form of the C2SP tlog checkpoint; the Ed25519 signature
  covers it under its own domain, so it never passes for any other signature.
- Each device's log is a hash chain: event ``n``'s hash is
  ``SHA-256(domain || hash(n-1) || canonical bytes)``, the first one chained to
  `GENESIS`.

`canonical_json` gives the one byte form every audit event is hashed in. Pure: no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from crdt._errors import AuditProofError

__all__ = [
    "CHECKPOINT_DOMAIN",
    "EMPTY_ROOT",
    "GENESIS",
    "Checkpoint",
    "MerkleFrontier",
    "canonical_json",
    "chain_hash",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "merkle_root",
    "node_hash",
    "verify_chain",
    "verify_consistency",
    "verify_inclusion",
]

CHECKPOINT_DOMAIN = b"coherency-audit-checkpoint\n"
_CHAIN_DOMAIN = b"coherency-device-audit\n"
GENESIS = bytes(32)
"""The hash a device's first audit event is chained to."""
EMPTY_ROOT = hashlib.sha256(b"").digest()
"""The root of the empty tree (RFC 9162: the hash of the empty string)."""

SubtreeHash = Callable[[int, int], bytes]
"""The root of the leaves ``[start, end)`` of a tree (a perfect subtree, or the last,
ragged one): what a log supplies to build proofs."""


def canonical_json(fields: Mapping[str, object]) -> bytes:
    """The one byte form of an audit event: JSON, keys sorted, no spaces, ASCII only."""
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def leaf_hash(data: bytes) -> bytes:
    """RFC 9162 leaf hash: ``SHA-256(0x00 || data)``."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 interior node hash: ``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(b"\x01" + left + right).digest()


@dataclass(slots=True)
class MerkleFrontier:
    """The roots of the perfect subtrees a tree of `size` leaves decomposes into, left
    (largest) to right: enough to append a leaf and to give the root, in O(log n).

    `append` returns the perfect subtrees it completed, as ``(level, index, hash)``
    (the subtree of leaves ``[index * 2**level, (index + 1) * 2**level)``), so a log can
    keep the ones it wants for building proofs.
    """

    size: int = 0
    hashes: list[bytes] = field(default_factory=list)

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Add one leaf hash; returns the perfect subtrees this completed (level >= 1)."""
        completed: list[tuple[int, int, bytes]] = []
        current = leaf
        level = 0
        index = self.size
        # Each trailing 1 bit of the old size is a subtree of that level to merge with.
        while (self.size >> level) & 1:
            current = node_hash(self.hashes.pop(), current)
            level += 1
            index >>= 1
            completed.append((level, index, current))
        self.hashes.append(current)
        self.size += 1
        return completed

    def root(self) -> bytes:
        """The tree's root (`EMPTY_ROOT` when empty)."""
        if not self.hashes:
            return EMPTY_ROOT
        root = self.hashes[-1]
        for left in reversed(self.hashes[:-1]):
            root = node_hash(left, root)
        return root

    def copy(self) -> MerkleFrontier:
        """An independent copy."""
        return MerkleFrontier(self.size, list(self.hashes))


def merkle_root(leaves: Iterable[bytes]) -> bytes:
    """The root of the tree of these leaf hashes."""
    frontier = MerkleFrontier()
    for leaf in leaves:
        frontier.append(leaf)
    return frontier.root()


def _split(n: int) -> int:
    """The largest power of two smaller than `n` (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def inclusion_proof(index: int, size: int, subtree: SubtreeHash) -> list[bytes]:
    """RFC 9162 PATH(index, D[size]): the audit path of leaf `index` in the tree of
    `size` leaves, from the bottom up."""
    if not 0 <= index < size:
        raise AuditProofError(f"leaf {index} is not in a tree of {size}")
    path: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            path.append(subtree(start + k, end))
            end = start + k
        else:
            path.append(subtree(start, start + k))
            start += k
    path.reverse()
    return path


def consistency_proof(first: int, second: int, subtree: SubtreeHash) -> list[bytes]:
    """RFC 9162 PROOF(first, D[second]): the consistency proof that the tree of `second`
    leaves extends the tree of its first `first` leaves."""
    if not 0 < first <= second:
        raise AuditProofError(f"no consistency proof from size {first} to {second}")
    path: list[bytes] = []
    start, end, m, whole = 0, second, first, True
    while True:
        n = end - start
        if m == n:
            if not whole:
                path.append(subtree(start, end))
            break
        k = _split(n)
        if m <= k:
            path.append(subtree(start + k, end))
            end = start + k
        else:
            path.append(subtree(start, start + k))
            start += k
            m -= k
            whole = False
    path.reverse()
    return path


def verify_inclusion(
    *, leaf: bytes, index: int, size: int, path: Sequence[bytes], root: bytes
) -> None:
    """Check that leaf hash `leaf` is leaf `index` of the tree of `size` leaves whose
    root is `root` (RFC 9162 section 2.1.3.2). Raises `AuditProofError` if not."""
    if not 0 <= index < size:
        raise AuditProofError(f"leaf {index} is not in a tree of {size}")
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            raise AuditProofError("the inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise AuditProofError("the inclusion proof is too short")
    if r != root:
        raise AuditProofError(f"leaf {index} is not in the tree of {size} with that root")


def verify_consistency(
    *, first: int, second: int, first_root: bytes, second_root: bytes, path: Sequence[bytes]
) -> None:
    """Check that the tree of `second` leaves with root `second_root` extends the tree
    of `first` leaves with root `first_root` (RFC 9162 section 2.1.4.2). Raises
    `AuditProofError` if not."""
    if first < 0 or second < first:
        raise AuditProofError(f"a tree of {second} cannot extend a tree of {first}")
    if first == second:
        if path or first_root != second_root:
            raise AuditProofError(f"two different trees of the same size {first}")
        return
    if first == 0:
        if path:
            raise AuditProofError("a proof from the empty tree is empty")
        return
    if not path:
        raise AuditProofError("the consistency proof is empty")
    proof = list(path)
    if first & (first - 1) == 0:
        proof.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            raise AuditProofError("the consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise AuditProofError("the consistency proof is too short")
    if fr != first_root:
        raise AuditProofError(f"the proof does not lead to the tree of {first} with that root")
    if sr != second_root:
        raise AuditProofError(f"the proof does not lead to the tree of {second} with that root")


def _time_text(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The server's signed statement that its log had `size` events with root `root`
    at `at` (its origin names the log: one per server)."""

    origin: str
    size: int
    root: bytes
    at: datetime
    signature: bytes = b""

    def body(self) -> bytes:
        """The checkpoint's text: origin, size, base64 root, then a ``time`` line."""
        root = base64.b64encode(self.root).decode()
        return f"{self.origin}\n{self.size}\n{root}\ntime {_time_text(self.at)}\n".encode()

    def message(self) -> bytes:
        """What the signature covers: the body under the checkpoint domain."""
        return CHECKPOINT_DOMAIN + self.body()

    def verify(self, public_key: bytes) -> None:
        """Raise `AuditProofError` unless `public_key` signed this checkpoint."""
        try:
            Ed25519PublicKey.from_public_bytes(public_key).verify(self.signature, self.message())
        except (InvalidSignature, ValueError) as exc:
            raise AuditProofError(
                f"the checkpoint of size {self.size} is not signed by the server's key"
            ) from exc

    def to_json(self) -> dict[str, object]:
        """The wire and file form (hex root and signature)."""
        return {
            "origin": self.origin,
            "size": self.size,
            "root": self.root.hex(),
            "at": _time_text(self.at),
            "signature": self.signature.hex(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Checkpoint:
        """Read `to_json`'s form; raises `AuditProofError` if it is not one."""
        try:
            size = data["size"]
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise ValueError("size")
            root = bytes.fromhex(str(data["root"]))
            if len(root) != 32:
                raise ValueError("root")
            return cls(
                origin=str(data["origin"]),
                size=size,
                root=root,
                at=datetime.fromisoformat(str(data["at"]).replace("Z", "+00:00")),
                signature=bytes.fromhex(str(data["signature"])),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise AuditProofError(f"not a checkpoint: {exc}") from exc


def chain_hash(previous: bytes, canonical: bytes) -> bytes:
    """The hash of a device audit event whose canonical bytes are `canonical`, chained
    to the event before it (`GENESIS` for the first)."""
    return hashlib.sha256(_CHAIN_DOMAIN + previous + canonical).digest()


def verify_chain(
    events: Iterable[tuple[int, bytes, bytes]], *, start_seq: int = 1, previous: bytes = GENESIS
) -> bytes:
    """Check a run of a device's chain: ``(seq, canonical bytes, hash)`` in order,
    numbered from `start_seq` and chained to `previous`. Returns the last hash (the
    chain's head); raises `AuditProofError` naming the first event that breaks it."""
    expected = start_seq
    for seq, canonical, digest in events:
        if seq != expected:
            raise AuditProofError(
                f"device audit event {expected} is missing or out of place "
                f"(event {seq} is where it should be)"
            )
        if chain_hash(previous, canonical) != digest:
            raise AuditProofError(f"device audit event {seq} was altered (its hash differs)")
        previous = digest
        expected += 1
    return previous
