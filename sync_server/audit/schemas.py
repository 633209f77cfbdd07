"""Request and response bodies of the audit routes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from crdt import Checkpoint

__all__ = [
    "AuditEntryPublic",
    "BreakGlassGrantPublic",
    "BreakGlassRequest",
    "BreakGlassReview",
    "CheckpointPublic",
    "ConsistencyProof",
    "EventPagePublic",
    "InclusionProof",
]


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


_Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]


class BreakGlassRequest(BaseModel):
    """Ask for emergency access to a patient of another clinic."""

    model_config = ConfigDict(extra="forbid")

    patient_id: str = Field(min_length=1, max_length=64)
    reason: _Text = Field(
        description="Why (free text, kept with the grant for its review; never in the audit log)."
    )


class BreakGlassReview(BaseModel):
    """An admin's review of a break-glass grant."""

    model_config = ConfigDict(extra="forbid")

    note: _Text


class BreakGlassGrantPublic(BaseModel):
    """A break-glass grant: who, which patient (of which clinic), why, until when, and
    its review."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    user_id: str
    patient_id: str
    clinic_id: str
    reason: str
    granted_at: datetime
    expires_at: datetime
    reviewed_by: str | None
    reviewed_at: datetime | None
    review_note: str | None


class AuditEntryPublic(BaseModel):
    """One event of the audit log (ids only): when, who, from where, what, why, how it
    ended, and which patients it concerned."""

    model_config = ConfigDict(from_attributes=True)

    seq: int = Field(description="Its place in the log (its leaf index).")
    at: datetime
    actor_kind: str = Field(description="device, user, system or feed.")
    actor_id: str | None
    role: str | None
    device_id: str | None = Field(description="The device it came from, if a device.")
    address: str | None = Field(description="The caller's network address.")
    clinic_id: str | None
    kind: str = Field(description="The event kind (read, sync-pull, break-glass-grant...).")
    operation: str = Field(description="C, R, U, D or E (FHIR AuditEvent.action).")
    records: str | None = Field(description="What it touched: record ids, a blob address.")
    purpose: str | None = Field(description="treatment, operations or break-glass.")
    outcome: str
    patients: str | None = Field(description="Patient ids it concerned, comma-separated.")
    source: str = Field(
        default="server",
        description="server (the server's log) or device (a device's own chain: `seq` is "
        "its place in that chain, `actor_id` the user on the device, if any).",
    )


class EventPagePublic(BaseModel):
    """A page of audit events, newest first."""

    items: list[AuditEntryPublic]
    next_cursor: int | None = Field(description="Pass as `cursor` for the next page.")
