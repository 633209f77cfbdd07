"""The device's audit log: a hash chain of every access, in the encrypted store.

Each access the gate (`edge_sdk._access`) lets through, or refuses, becomes one row of
``audit_events``: its number (``seq``: 1, 2, ...), its canonical bytes
(`crdt.canonical_json` of ids and codes only, never a name or a clinical value) and
its hash, chained to the row before (`crdt.chain_hash`, the first to `crdt.GENESIS`).

Sync pushes the chain to the server append-only (`edge_sdk._audit_push`); the server
puts the chain's head in its own Merkle log and answers with a signed checkpoint and
the proof that the checkpoint covers that head, which the device checks and keeps
(``audit_checkpoints``). `edge_sdk._audit_verify.verify_audit` then finds, in a device
store: an edited, deleted or moved event, the newest events deleted (a kept checkpoint
names a head the chain no longer reaches, or reaches with another hash), and a kept
checkpoint that is not signed by the server's key, whose proof fails, or that does not
extend an earlier one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from crdt import (
    GENESIS,
    AuditProofError,
    canonical_json,
    chain_hash,
    leaf_hash,
    verify_inclusion,
)
from edge_sdk._access import AccessEvent
from edge_sdk._store import PROJECTIONS, Store
from edge_sdk._transport import AuditReceipt, ChainedEvent

__all__ = [
    "CHECKPOINT_KEY_META",
    "DeviceAuditLog",
    "as_bytes",
    "check_receipt",
    "operation_code",
    "time_text",
]

CHECKPOINT_KEY_META = "audit.key."
"""Store metadata key (+ the peer's name) of the checkpoint key trusted on first use by
a replica that is not enrolled (an in-memory hub)."""

_OPERATIONS = {
    "create": "C",
    "blob-write": "C",
    "read": "R",
    "list": "R",
    "search": "R",
    "query": "R",
    "live": "R",
    "observe": "R",
    "find": "R",
    "history": "R",
    "conflicts": "R",
    "sync-read": "R",
    "export": "R",
    "blob-read": "R",
    "update": "U",
    "restore": "U",
    "resolve": "U",
    "migrate": "U",
    "sync-write": "U",
    "import": "U",
    "delete": "D",
    "quarantine": "D",
}


def operation_code(action: str) -> str:
    """The FHIR AuditEvent action code of an SDK action: C, R, U, D, or E (execute)."""
    return _OPERATIONS.get(action, "E")


def time_text(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class DeviceAuditLog:
    """The store's audit chain: the gate's journal (`edge_sdk._access.AccessJournal`)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def transaction(self) -> Any:
        """The store transaction a write and its audit row share."""
        return self._store.transaction()

    def record(self, event: AccessEvent) -> None:
        """Append `event` to the chain, in the open transaction or in its own.

        A sync step that touched no record (an empty pull page) is not written: it read
        and wrote no patient data, and a watch loop would otherwise never go quiet.
        """
        if event.action.startswith("sync-") and not event.record_ids and event.outcome == "ok":
            return
        store = self._store
        with store.transaction():
            seq, previous = self.head()
            fields = {
                "v": 1,
                "seq": seq + 1,
                "at": time_text(event.at),
                "device_id": event.device_id,
                "user": event.user,
                "operation": operation_code(event.action),
                "action": event.action,
                "collection": event.collection,
                "records": list(event.record_ids),
                "patients": _patients_of(store, event.collection, event.record_ids),
                "outcome": event.outcome,
                "purpose": event.purpose,
            }
            canonical = canonical_json(fields)
            store.execute(
                "INSERT INTO audit_events(seq, canonical, hash) VALUES (?, ?, ?)",
                (seq + 1, canonical, chain_hash(previous, canonical)),
            )

    def head(self) -> tuple[int, bytes]:
        """The chain's last seq and hash ((0, GENESIS) when empty)."""
        row = self._store.execute(
            "SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        return (0, GENESIS) if row is None else (int(row[0]), bytes(row[1]))

    def events(self, *, after: int = 0, limit: int | None = None) -> list[ChainedEvent]:
        """The chain's events with seq above `after`, in order."""
        sql = "SELECT seq, canonical, hash FROM audit_events WHERE seq > ? ORDER BY seq"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        rows = self._store.execute(sql, (after,)).fetchall()
        return [ChainedEvent(int(r[0]), as_bytes(r[1]), as_bytes(r[2])) for r in rows]

    def hash_at(self, seq: int) -> bytes | None:
        """The stored hash of event `seq`, or None."""
        row = self._store.execute("SELECT hash FROM audit_events WHERE seq = ?", (seq,)).fetchone()
        return None if row is None else bytes(row[0])


def as_bytes(value: Any) -> bytes:
    """A BLOB column's value as bytes (an edit by hand may have stored text)."""
    return value.encode() if isinstance(value, str) else bytes(value)


def _patients_of(store: Store, collection: str, ids: Sequence[str]) -> list[str]:
    """The patients the records `ids` of `collection` ("*": any) belong to, as far as
    this store knows them."""
    if not ids:
        return []
    by_collection: dict[str, list[str]] = {}
    if collection == "*":
        for start in range(0, len(ids), 500):
            chunk = list(ids[start : start + 500])
            marks = ",".join("?" for _ in chunk)
            rows = store.execute(
                f"SELECT collection, id FROM documents WHERE id IN ({marks})", chunk
            ).fetchall()
            for name, record_id in rows:
                by_collection.setdefault(str(name), []).append(str(record_id))
    else:
        by_collection[collection] = list(ids)
    found: set[str] = set()
    for name, record_ids in by_collection.items():
        if name == "patients":
            found.update(record_ids)
            continue
        query = _PATIENT_QUERIES.get(name)
        if query is None and "patient_id" in PROJECTIONS.get(name, {}):
            query = f"SELECT DISTINCT patient_id FROM {name} WHERE id IN ({{marks}})"
        if query is None:
            continue
        for start in range(0, len(record_ids), 500):
            chunk = record_ids[start : start + 500]
            marks = ",".join("?" for _ in chunk)
            rows = store.execute(query.format(marks=marks), chunk).fetchall()
            found.update(str(row[0]) for row in rows if row[0])
    return sorted(found)


# The patients of records that do not name one themselves: a decision through the
# intent it answers, a blob (by its SHA-256) through the assessments that refer to it.
_PATIENT_QUERIES = {
    "decisions": "SELECT DISTINCT i.patient_id FROM decisions d"
    " JOIN intents i ON i.id = d.intent_id WHERE d.id IN ({marks})",
    "blobs": "SELECT DISTINCT a.patient_id FROM assessments a, json_each(a.record, '$.blobs') b"
    " WHERE json_extract(b.value, '$.sha256') IN ({marks})",
}


def check_receipt(receipt: AuditReceipt, key: bytes, device_id: str) -> None:
    """Raise `AuditProofError` unless the checkpoint is signed by `key` and the leaf,
    which names this device's head, is in it."""
    receipt.checkpoint.verify(key)
    named = f"{device_id}:{receipt.head_seq}:{receipt.head_hash.hex()}"
    try:
        leaf = json.loads(receipt.leaf)
    except ValueError:
        raise AuditProofError("the server's leaf is not an audit event") from None
    if not isinstance(leaf, dict) or named not in {str(v) for v in leaf.values()}:
        raise AuditProofError(f"the server's leaf does not name this device's head ({named})")
    verify_inclusion(
        leaf=leaf_hash(receipt.leaf),
        index=receipt.leaf_index,
        size=receipt.checkpoint.size,
        path=receipt.inclusion,
        root=receipt.checkpoint.root,
    )
