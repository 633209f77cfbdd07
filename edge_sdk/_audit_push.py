"""Pushing the device's audit chain with each sync, append-only, and keeping the
server's signed checkpoint that covers it (see `edge_sdk._audit`)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from crdt import AuditProofError
from edge_sdk._audit import CHECKPOINT_KEY_META, DeviceAuditLog, check_receipt, time_text
from edge_sdk._errors import AuditPushError
from edge_sdk._replica import Replica
from edge_sdk._transport import AuditReceipt, ChainedEvent, SyncTransport

__all__ = ["AUDIT_PUSH_BATCH", "AUDIT_PUSH_BYTES", "push_audit"]

log = logging.getLogger("edge_sdk.audit")

AUDIT_PUSH_BATCH = 2000
"""Most audit events per push request."""
AUDIT_PUSH_BYTES = 4 * 1024 * 1024
"""Canonical bytes per push request (base64 in JSON: within the server's 8 MiB cap);
one larger event goes alone."""
_PUSHED = "audit.pushed"  # store meta: the highest seq the server acknowledged


def push_audit(replica: Replica, transport: SyncTransport) -> AuditReceipt | None:
    """Push the events the server has not acknowledged, append-only; check and keep the
    checkpoint it answers with. Returns the last receipt (None: nothing to push).

    Local events are never removed, whatever the answer.

    Raises:
        AuditPushError: The server refused the chain (it breaks where the server's
            copy ends), or its checkpoint or proof does not verify.
    """
    journal = DeviceAuditLog(replica.store)
    pushed = int(replica.store.get_meta(_PUSHED) or "0")
    receipt: AuditReceipt | None = None
    retried = False
    while True:
        events = _sized(journal.events(after=pushed, limit=AUDIT_PUSH_BATCH))
        if not events:
            return receipt
        try:
            receipt = transport.push_audit(events)
        except AuditPushError as exc:
            # The server holds less than we thought (restored from a backup): send
            # from where it stands, once.
            if retried or exc.server_seq is None or exc.server_seq >= pushed:
                raise
            log.warning("the server holds audit events up to %d only", exc.server_seq)
            pushed, retried = exc.server_seq, True
            continue
        _keep_receipt(replica, transport.peer_id, receipt, events[-1])
        pushed = receipt.head_seq


def _sized(events: list[ChainedEvent]) -> list[ChainedEvent]:
    """The first events of `events` that fit one request (at least one)."""
    total = 0
    for count, event in enumerate(events):
        total += len(event.canonical) + 128
        if count and total > AUDIT_PUSH_BYTES:
            return events[:count]
    return events


def _keep_receipt(replica: Replica, peer: str, receipt: AuditReceipt, last: ChainedEvent) -> None:
    if receipt.head_seq != last.seq or receipt.head_hash != last.hash:
        raise AuditPushError(
            f"the server acknowledged audit event {receipt.head_seq}, not {last.seq} as sent"
        )
    key = _checkpoint_key(replica, peer, receipt.public_key)
    try:
        check_receipt(receipt, key, replica.device_id)
    except AuditProofError as exc:
        raise AuditPushError(f"the server's audit receipt does not verify: {exc}") from None
    store = replica.store
    with store.transaction():
        store.execute(
            "INSERT INTO audit_checkpoints(peer, head_seq, head_hash, checkpoint, leaf_index,"
            " leaf, inclusion, public_key, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                peer,
                receipt.head_seq,
                receipt.head_hash,
                json.dumps(receipt.checkpoint.to_json()),
                receipt.leaf_index,
                receipt.leaf,
                json.dumps([p.hex() for p in receipt.inclusion]),
                key,
                time_text(datetime.now(UTC)),
            ),
        )
        store.set_meta(_PUSHED, str(receipt.head_seq))


def _checkpoint_key(replica: Replica, peer: str, offered: bytes) -> bytes:
    """The key checkpoints from `peer` must be signed with: the artifact key pinned at
    enrolment, else the first key the peer offered (kept)."""
    enrollment = replica.enrollment
    if enrollment is not None and enrollment.artifact_public_key is not None:
        return enrollment.artifact_public_key
    kept = replica.store.get_meta(CHECKPOINT_KEY_META + peer)
    if kept:
        return bytes.fromhex(kept)
    with replica.store.transaction():
        replica.store.set_meta(CHECKPOINT_KEY_META + peer, offered.hex())
    return offered
