"""The audit log's primitives: RFC 9162 trees and proofs (checked against pymerkle, an
independent implementation), signed checkpoints and device chains."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st
from pymerkle import InmemoryTree

from crdt import (
    EMPTY_ROOT,
    GENESIS,
    AuditProofError,
    Checkpoint,
    MerkleFrontier,
    chain_hash,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    merkle_root,
    verify_chain,
    verify_consistency,
    verify_inclusion,
)

LEAVES = [f"event {i}".encode() for i in range(200)]
HASHES = [leaf_hash(data) for data in LEAVES]


def subtree(start: int, end: int) -> bytes:
    return merkle_root(HASHES[start:end])


def test_roots_match_an_independent_rfc9162_implementation() -> None:
    tree = InmemoryTree(algorithm="sha256")
    frontier = MerkleFrontier()
    assert frontier.root() == EMPTY_ROOT
    for n, data in enumerate(LEAVES, start=1):
        tree.append_entry(data)
        frontier.append(leaf_hash(data))
        assert frontier.root() == tree.get_state() == merkle_root(HASHES[:n])


def test_frontier_reports_the_perfect_subtrees_it_completes() -> None:
    frontier = MerkleFrontier()
    completed: list[tuple[int, int, bytes]] = []
    for digest in HASHES[:8]:
        completed += frontier.append(digest)
    assert [(level, index) for level, index, _ in completed] == [
        (1, 0), (1, 1), (2, 0), (1, 2), (1, 3), (2, 1), (3, 0)
    ]  # fmt: skip
    for level, index, digest in completed:
        width = 1 << level
        assert digest == subtree(index * width, (index + 1) * width)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 8, 9, 31, 64, 100])
def test_every_leaf_has_an_inclusion_proof(size: int) -> None:
    root = merkle_root(HASHES[:size])
    for index in range(size):
        path = inclusion_proof(index, size, subtree)
        verify_inclusion(leaf=HASHES[index], index=index, size=size, path=path, root=root)
        with pytest.raises(AuditProofError):  # another leaf at that place
            verify_inclusion(leaf=HASHES[size], index=index, size=size, path=path, root=root)


@pytest.mark.parametrize("second", [1, 2, 5, 8, 13, 64, 99])
def test_every_earlier_tree_has_a_consistency_proof(second: int) -> None:
    second_root = merkle_root(HASHES[:second])
    for first in range(1, second + 1):
        path = consistency_proof(first, second, subtree)
        verify_consistency(
            first=first,
            second=second,
            first_root=merkle_root(HASHES[:first]),
            second_root=second_root,
            path=path,
        )


@given(
    size=st.integers(2, 120),
    data=st.data(),
)
def test_forged_proofs_are_refused(size: int, data: st.DataObject) -> None:
    root = merkle_root(HASHES[:size])
    index = data.draw(st.integers(0, size - 1))
    path = inclusion_proof(index, size, subtree)
    which = data.draw(st.integers(0, len(path) - 1))
    bit = data.draw(st.integers(0, 255))
    forged = list(path)
    forged[which] = bytes(b ^ (1 << (bit % 8)) if i == bit // 8 else b
                          for i, b in enumerate(forged[which]))  # fmt: skip
    with pytest.raises(AuditProofError):
        verify_inclusion(leaf=HASHES[index], index=index, size=size, path=forged, root=root)
    with pytest.raises(AuditProofError):  # a proof for a shorter or longer path
        verify_inclusion(leaf=HASHES[index], index=index, size=size, path=path[:-1], root=root)
    first = data.draw(st.integers(1, size - 1))
    proof = consistency_proof(first, size, subtree)
    first_root = merkle_root(HASHES[:first])
    tampered = [bytes(32), *proof[1:]]
    with pytest.raises(AuditProofError):
        verify_consistency(
            first=first, second=size, first_root=first_root, second_root=root, path=tampered
        )
    # A rewritten history: the new tree does not extend the old one's root.
    with pytest.raises(AuditProofError):
        verify_consistency(
            first=first,
            second=size,
            first_root=leaf_hash(b"rewritten"),
            second_root=root,
            path=proof,
        )


def test_checkpoints_verify_only_with_the_servers_key() -> None:
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    unsigned = Checkpoint("coherency-audit/test", 3, merkle_root(HASHES[:3]), datetime.now(UTC))
    signed = Checkpoint(
        unsigned.origin, unsigned.size, unsigned.root, unsigned.at, key.sign(unsigned.message())
    )
    signed.verify(public)
    assert Checkpoint.from_json(signed.to_json()) == signed
    assert signed.body().splitlines()[:2] == [b"coherency-audit/test", b"3"]
    bigger = Checkpoint(signed.origin, 4, signed.root, signed.at, signed.signature)
    with pytest.raises(AuditProofError, match="not signed"):
        bigger.verify(public)
    with pytest.raises(AuditProofError, match="not a checkpoint"):
        Checkpoint.from_json({"origin": "x", "size": -1, "root": "00", "at": "", "signature": ""})


def test_a_device_chain_catches_edits_gaps_and_reordering() -> None:
    events = [f'{{"seq":{n}}}'.encode() for n in range(1, 6)]
    chain: list[tuple[int, bytes, bytes]] = []
    previous = GENESIS
    for seq, canonical in enumerate(events, start=1):
        previous = chain_hash(previous, canonical)
        chain.append((seq, canonical, previous))
    assert verify_chain(chain) == previous
    assert verify_chain(chain[2:], start_seq=3, previous=chain[1][2]) == previous
    edited = [*chain[:2], (3, b'{"seq":33}', chain[2][2]), *chain[3:]]
    with pytest.raises(AuditProofError, match="event 3 was altered"):
        verify_chain(edited)
    with pytest.raises(AuditProofError, match="event 3 is missing"):
        verify_chain([*chain[:2], *chain[3:]])
    with pytest.raises(AuditProofError, match="event 2 is missing or out of place"):
        verify_chain([chain[0], chain[2], chain[1]], start_seq=1)
