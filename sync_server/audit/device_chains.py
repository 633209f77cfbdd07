"""Devices' audit chains: stored append-only as pushed, their heads put in the log.

Each device hash-chains its own audit log (`crdt.chain_hash`) and pushes the events the
server has not acknowledged. `receive_device_events` checks that they continue the
chain the server holds for the device (`crdt.verify_chain` from its last stored event),
refuses a break whole (`ChainBroken`, naming the event), accepts events it already
holds again if they are the same (a push cut off in flight is sent again), stores the
new ones and records a `DeviceAuditReceived` event naming the device's new head. In
the same transaction `device_receipt` seals that event in the Merkle log and gives the
device a signed checkpoint that covers it and the event's inclusion proof: the device
keeps them, and so witnesses the server's log.

A clinic's edge box relays its devices' chains: `chain_owner` names whose chain a push
extends (the caller's own, or, for an edge box, a device of its clinic), and the
events go to that device's chain exactly as if it had pushed them itself.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from crdt import GENESIS, AuditProofError, Checkpoint, verify_chain
from sync_server.audit.events import Actor, DeviceAuditReceived
from sync_server.audit.log import (
    CheckpointSigner,
    inclusion_path,
    issue_checkpoint,
    seal,
)
from sync_server.audit.services import record_event
from sync_server.audit.tables import DeviceAuditEvent, DeviceAuditPatient
from sync_server.db import insert_many, insert_many_unless_taken, utcnow
from sync_server.errors import ChainBroken, Conflict, Forbidden, NotFound, Unprocessable
from sync_server.identity.principals import Principal
from sync_server.identity.tables import Device

__all__ = [
    "EDGE_ROLE",
    "DeviceChainHead",
    "DeviceReceipt",
    "PushedEvent",
    "chain_owner",
    "device_chain",
    "device_receipt",
    "patients_named",
    "receive_device_events",
]


EDGE_ROLE = "edge"
"""The role of an edge box, which may push the chains of its clinic's devices."""


@dataclass(frozen=True, slots=True)
class PushedEvent:
    """One event of a device's chain as pushed: number, canonical bytes, hash."""

    seq: int
    canonical: bytes
    hash: bytes


@dataclass(frozen=True, slots=True)
class DeviceChainHead:
    """Where a device's chain stands on the server after a push."""

    device_id: str
    head_seq: int
    head_hash: bytes
    received: int  # events new to the server in this push


@dataclass(frozen=True, slots=True)
class DeviceReceipt:
    """What the device keeps: its head, the log's leaf naming it, and a signed
    checkpoint covering that leaf with the leaf's inclusion proof."""

    head_seq: int
    head_hash: bytes
    leaf_index: int
    leaf: bytes
    inclusion: list[bytes]
    checkpoint: Checkpoint
    public_key: bytes


def chain_owner(*, session: Session, principal: Principal, device_id: str | None) -> str:
    """Whose chain a push by `principal` extends: its own (`device_id` None or its own
    id), or, for an edge box relaying, `device_id`, an enrolled, unrevoked device of
    the box's clinic.

    Raises:
        Forbidden: ``not_your_chain`` (a device naming another device's chain) or
            ``device_revoked`` (a box naming a revoked device of its clinic).
        NotFound: ``device_not_found``: a box naming no device of its clinic (whether
            or not one exists elsewhere).
    """
    if device_id is None or device_id == principal.id:
        return principal.id
    if principal.kind != "device" or principal.role != EDGE_ROLE:
        raise Forbidden(
            "a device pushes only its own audit chain (only an edge box relays others)",
            code="not_your_chain",
        )
    device = session.get(Device, device_id)
    if device is None or device.clinic_id != principal.clinic_id or device.kind == EDGE_ROLE:
        raise NotFound("no such device in this clinic", code="device_not_found")
    if device.revoked_at is not None:
        raise Forbidden("this device has been revoked", code="device_revoked")
    return device.id


def receive_device_events(
    *,
    session: Session,
    device_id: str,
    clinic_id: str,
    events: Sequence[PushedEvent],
    relayed_by: Principal | None = None,
) -> DeviceChainHead:
    """Append a device's audit events to the server's copy of its chain (pushed by the
    device, or relayed by its clinic's edge box: `relayed_by`, the audit's actor).

    Raises:
        Unprocessable: No events, numbers not consecutive, or an event that is not the
            device's own (its canonical bytes name another device or number).
        ChainBroken: The events do not continue the chain the server holds (or one
            the server holds differs): nothing of the push is stored.
    """
    if not events:
        raise Unprocessable("an audit push needs at least one event", code="audit_push_empty")
    for before, after in itertools.pairwise(events):
        if after.seq != before.seq + 1:
            raise Unprocessable(
                f"audit events must be consecutive: {after.seq} follows {before.seq}",
                code="audit_push_invalid",
            )
    named = {event.seq: _patients_in(_own_fields(event, device_id)) for event in events}
    last = session.execute(
        select(DeviceAuditEvent.seq, DeviceAuditEvent.hash)
        .where(DeviceAuditEvent.device_id == device_id)
        .order_by(DeviceAuditEvent.seq.desc())
        .limit(1)
        .with_for_update()
    ).one_or_none()
    held, previous = (0, GENESIS) if last is None else (int(last[0]), bytes(last[1]))
    _check_resent(session, device_id, [e for e in events if e.seq <= held], held)
    new = [event for event in events if event.seq > held]
    expected = held + 1
    for event in new:
        try:
            verify_chain(
                [(event.seq, event.canonical, event.hash)], start_seq=expected, previous=previous
            )
        except AuditProofError as exc:
            raise ChainBroken(
                f"the audit chain of device {device_id} breaks at event {expected} "
                f"(the server holds events up to {held}): {exc}",
                seq=expected,
                server_seq=held,
            ) from None
        previous, expected = event.hash, expected + 1
    now = utcnow()
    stored = insert_many_unless_taken(
        session,
        DeviceAuditEvent,
        [
            {
                "device_id": device_id,
                "seq": event.seq,
                "clinic_id": clinic_id,
                "canonical": event.canonical,
                "hash": event.hash,
                "received_at": now,
            }
            for event in new
        ],
    )
    if stored:
        insert_many(
            session,
            DeviceAuditPatient,
            [
                {"device_id": device_id, "seq": event.seq, "patient_id": patient_id}
                for event in new
                for patient_id in named[event.seq]
            ],
        )
    else:
        # Another push of the same chain (a second sync of the device) stored these
        # numbers first: sent again, they are found held and accepted if the same.
        raise Conflict(
            f"another push of device {device_id}'s audit chain came first; send it again",
            code="audit_push_busy",
        )
    head = events[-1]
    record_event(
        session=session,
        event=DeviceAuditReceived(
            actor=Actor.device(device_id) if relayed_by is None else Actor.of(relayed_by),
            clinic_id=clinic_id,
            device_id=device_id,
            head_seq=head.seq,
            head_hash=head.hash.hex(),
            received=len(new),
        ),
    )
    return DeviceChainHead(device_id, head.seq, head.hash, len(new))


def patients_named(canonical: bytes) -> list[str]:
    """The patient ids a device event's canonical bytes name (its ``patients``), each
    once; anything that is not an id is left out."""
    return _patients_in(_fields(canonical))


def _fields(canonical: bytes) -> dict[str, Any] | None:
    """An event's canonical bytes as the JSON object they should be (None if not)."""
    try:
        fields = json.loads(canonical)
    except ValueError:
        return None
    return fields if isinstance(fields, dict) else None


def _patients_in(fields: dict[str, Any] | None) -> list[str]:
    named = None if fields is None else fields.get("patients")
    if not isinstance(named, list):
        return []
    return list(dict.fromkeys(p for p in named if isinstance(p, str) and 0 < len(p) <= 64))


def _own_fields(event: PushedEvent, device_id: str) -> dict[str, Any]:
    """The fields of `event`, refused unless it is that event of this device."""
    fields = _fields(event.canonical)
    if fields is None or fields.get("seq") != event.seq or fields.get("device_id") != device_id:
        raise Unprocessable(
            f"audit event {event.seq} is not event {event.seq} of device {device_id}",
            code="audit_push_invalid",
        )
    return fields


def _check_resent(
    session: Session, device_id: str, resent: Sequence[PushedEvent], held: int
) -> None:
    """Events the server holds already may come again, unchanged."""
    if not resent:
        return
    stored = {
        int(seq): bytes(digest)
        for seq, digest in session.execute(
            select(DeviceAuditEvent.seq, DeviceAuditEvent.hash).where(
                DeviceAuditEvent.device_id == device_id,
                DeviceAuditEvent.seq >= resent[0].seq,
                DeviceAuditEvent.seq <= resent[-1].seq,
            )
        ).all()
    }
    for event in resent:
        if stored.get(event.seq) != event.hash:
            raise ChainBroken(
                f"audit event {event.seq} of device {device_id} differs from the one the "
                "server holds",
                seq=event.seq,
                server_seq=held,
            )


def device_receipt(
    *, session: Session, head: DeviceChainHead, signer: CheckpointSigner
) -> DeviceReceipt:
    """A new signed checkpoint that covers the event naming `head`, with the event's
    leaf and inclusion proof.

    Run in the push's transaction, after `receive_device_events`: the push's events
    are sealed in the log here, so the receipt, its checkpoint and the events commit
    together (one transaction, one commit), or none of them does."""
    sealed = seal(session=session)
    target = f"{head.device_id}:{head.head_seq}:{head.head_hash.hex()}"
    at = next(
        (
            i
            for i in reversed(range(len(sealed.events)))
            if sealed.events[i].action == DeviceAuditReceived.name
            and sealed.events[i].target == target
        ),
        None,
    )
    if at is None:  # pragma: no cover - receive_device_events recorded it just before
        raise Conflict("the audit push was not sealed in the log; retry", code="audit_log_busy")
    seq = sealed.events[at].seq
    assert seq is not None  # sealed
    # Nothing signed before this transaction covers a leaf it sealed: sign anew.
    checkpoint = issue_checkpoint(session=session, signer=signer)
    return DeviceReceipt(
        head_seq=head.head_seq,
        head_hash=head.head_hash,
        leaf_index=seq,
        leaf=sealed.leaves[at],
        inclusion=inclusion_path(
            session=session, seq=seq, size=checkpoint.size, known=sealed.subtrees
        ),
        checkpoint=checkpoint,
        public_key=signer.public_key_bytes,
    )


def device_chain(*, session: Session, device_id: str) -> list[PushedEvent]:
    """The audit events the server holds for a device, in order."""
    rows = session.execute(
        select(DeviceAuditEvent.seq, DeviceAuditEvent.canonical, DeviceAuditEvent.hash)
        .where(DeviceAuditEvent.device_id == device_id)
        .order_by(DeviceAuditEvent.seq)
    ).all()
    return [PushedEvent(int(s), bytes(c), bytes(h)) for s, c, h in rows]
