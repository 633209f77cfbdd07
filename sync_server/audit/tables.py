"""The audit log's tables.

- `audit_events`: who read or wrote what, when, from where, with what outcome. Rows are
  written only through `sync_server.audit.record_event`, from typed events
  (`sync_server.audit.events`); each gets its place in the log (`seq`, from 0) and its
  RFC 9162 leaf hash when its transaction commits (`sync_server.audit.log`).
- `audit_patients`: which patients each event concerned (for the accounting of
  disclosures).
- `audit_log_head`: the log's one head row (size and the roots of its perfect subtrees),
  locked for the last moments of each transaction that appends to it.
- `audit_nodes`: the hashes of the log's perfect subtrees of 256 leaves and more, kept
  as they complete, so proofs never read more than a few hundred leaves.
- `audit_checkpoints`: the checkpoints the server signed.
- `break_glass_grants`: emergency access a clinician asked for to a patient outside
  their clinic, with the reason they gave (free text: kept here, never in the log) and
  its review by an admin.
- `device_audit_events`: each device's own hash-chained audit log, as pushed (append
  only; `sync_server.audit.device_chains`).
- `device_audit_patients`: which patients each device event names (for the accounting
  of disclosures).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Integer, LargeBinary, SmallInteger, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from sync_server.db import Base, Id, UTCDateTime, utcnow

__all__ = [
    "AuditCheckpoint",
    "AuditEvent",
    "AuditLogHead",
    "AuditNode",
    "AuditPatient",
    "BreakGlassGrant",
    "DeviceAuditEvent",
    "DeviceAuditPatient",
]

_BigId = BigInteger().with_variant(Integer, "sqlite")


class AuditEvent(Base):
    """One read or write of patient data (or an identity or staff action) on the server."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(_BigId, primary_key=True)
    seq: Mapped[int | None] = mapped_column(BigInteger, unique=True, index=True)  # at commit
    leaf_hash: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    actor_kind: Mapped[str] = mapped_column(String(10))  # device, user, system, feed
    actor_id: Mapped[str | None] = mapped_column(Id, index=True)
    role: Mapped[str | None] = mapped_column(String(20))
    clinic_id: Mapped[str | None] = mapped_column(Id, index=True)
    action: Mapped[str] = mapped_column(String(40))  # the event kind (`Event.name`)
    operation: Mapped[str] = mapped_column(String(1), server_default="E")  # C R U D E
    target: Mapped[str | None] = mapped_column(Text)  # record ids / blob address, no names
    outcome: Mapped[str] = mapped_column(String(40))
    purpose: Mapped[str | None] = mapped_column(String(20))  # treatment, break-glass, ...
    patients: Mapped[str | None] = mapped_column(Text)  # comma-separated patient ids
    address: Mapped[str | None] = mapped_column(String(64))  # the caller's network address
    request_id: Mapped[str | None] = mapped_column(String(64))


class AuditPatient(Base):
    """One patient an audit event concerned: written with the event's own insert, one
    row per id of its `patients` (`sync_server.audit.services`)."""

    __tablename__ = "audit_patients"

    event_id: Mapped[int] = mapped_column(
        _BigId, ForeignKey("audit_events.id", ondelete="CASCADE"), primary_key=True
    )
    patient_id: Mapped[str] = mapped_column(Id, primary_key=True, index=True)


class AuditLogHead(Base):
    """The log's head: how many events it holds and the roots of its perfect subtrees
    (concatenated 32-byte hashes, largest first)."""

    __tablename__ = "audit_log_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)  # always 1
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    frontier: Mapped[bytes] = mapped_column(LargeBinary, default=b"")


class AuditNode(Base):
    """The hash of the perfect subtree of leaves ``[index * 2**level, (index + 1) *
    2**level)``."""

    __tablename__ = "audit_nodes"

    level: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    index: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class AuditCheckpoint(Base):
    """A checkpoint the server signed (`crdt.Checkpoint`)."""

    __tablename__ = "audit_checkpoints"

    id: Mapped[int] = mapped_column(_BigId, primary_key=True)
    origin: Mapped[str] = mapped_column(String(120))
    size: Mapped[int] = mapped_column(BigInteger, index=True)
    root: Mapped[bytes] = mapped_column(LargeBinary(32))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    signature: Mapped[bytes] = mapped_column(LargeBinary(64))


class BreakGlassGrant(Base):
    """Emergency ("break-glass") access of one staff user to one patient of another
    clinic, until `expires_at`, and its review."""

    __tablename__ = "break_glass_grants"

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    organisation_id: Mapped[str] = mapped_column(Id, index=True)
    user_id: Mapped[str] = mapped_column(Id, index=True)
    patient_id: Mapped[str] = mapped_column(Id, index=True)
    clinic_id: Mapped[str] = mapped_column(Id)  # the patient's clinic
    reason: Mapped[str] = mapped_column(Text)  # free text: never copied to the audit log
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    reviewed_by: Mapped[str | None] = mapped_column(Id)
    reviewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    review_note: Mapped[str | None] = mapped_column(Text)


class DeviceAuditEvent(Base):
    """One event of a device's hash-chained audit log (`crdt.chain_hash`), as pushed."""

    __tablename__ = "device_audit_events"

    device_id: Mapped[str] = mapped_column(Id, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    clinic_id: Mapped[str] = mapped_column(Id, index=True)
    canonical: Mapped[bytes] = mapped_column(LargeBinary)
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DeviceAuditPatient(Base):
    """One patient a device's audit event names (from its canonical bytes)."""

    __tablename__ = "device_audit_patients"

    device_id: Mapped[str] = mapped_column(Id, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    patient_id: Mapped[str] = mapped_column(Id, primary_key=True, index=True)
