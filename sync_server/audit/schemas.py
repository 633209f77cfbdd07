"""Request and response bodies of the audit routes."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from crdt import Checkpoint

__all__ = ["CheckpointPublic", "ConsistencyProof", "InclusionProof"]


class CheckpointPublic(BaseModel):
    """A checkpoint the server signed: the Ed25519 signature covers
    ``b"coherency-audit-checkpoint\\n" + body`` (`crdt.Checkpoint`), verifiable with the
    artifact key devices pinned at enrolment."""

    origin: str
    size: int = Field(description="How many events the log held.")
    root: str = Field(description="The RFC 9162 root of those events, hex.")
    at: datetime
    signature: str = Field(description="Ed25519 signature, hex.")
    body: str = Field(description="The signed text: origin, size, base64 root, time.")

    @classmethod
    def of(cls, checkpoint: Checkpoint) -> CheckpointPublic:
        """The public form of `checkpoint`."""
        return cls(
            origin=checkpoint.origin,
            size=checkpoint.size,
            root=checkpoint.root.hex(),
            at=checkpoint.at,
            signature=checkpoint.signature.hex(),
            body=checkpoint.body().decode(),
        )


class InclusionProof(BaseModel):
    """RFC 9162 inclusion proof of one event (leaf `seq`) in the tree of `size` events."""

    seq: int
    size: int
    leaf: str = Field(description="The event's canonical bytes (ASCII JSON, ids only).")
    leaf_hash: str
    path: list[str] = Field(description="The audit path, bottom up, hex.")


class ConsistencyProof(BaseModel):
    """RFC 9162 proof that the tree of `second` events extends the tree of `first`."""

    first: int
    second: int
    path: list[str]
