"""Checking who made a document's changes against a `crdt.KeyDirectory` (see
`crdt._authorship` for the scheme)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any

from crdt._authorship import (
    AUTH_FIELD,
    AUTHOR_FIELDS,
    KeyDirectory,
    parse_entry,
    signed_heads_message,
)
from crdt._columnar import MAKE_MAP, SET, DocumentOps
from crdt._ed25519 import verify
from crdt._errors import DocumentError
from crdt._ids import device_for_actor
from crdt._operations import ChangeIndex, auth_objects, clocks, envelopes

__all__ = ["Authorship"]


class Authorship:
    """Checks who made a document's changes against a `KeyDirectory`."""

    def __init__(
        self,
        *,
        doc_id: str,
        clinic_id: Any,
        changes: Sequence[Any],
        operations: Callable[[], DocumentOps],
        directory: KeyDirectory,
        known: Collection[bytes],
    ) -> None:
        self.doc_id = doc_id
        self.clinic_id = clinic_id
        self.operations = operations
        self.directory = directory
        self.changes = changes
        self.new = [i for i, c in enumerate(self.changes) if c.hash not in known]

    def problem(self) -> str | None:
        if not self.new:
            return None
        try:
            covered, problems = self._check()
        except DocumentError as exc:
            return str(exc)
        if problems:
            return problems[0]
        for position in self.new:
            change = self.changes[position]
            if position in self._envelope_positions:
                continue
            if change.seq > covered.get(change.actor_id, 0):
                return (
                    f"change {change.hash.hex()[:12]} by device "
                    f"{device_for_actor(change.actor_id)} is not signed by that device"
                )
        return None

    def verified(self) -> set[str]:
        self.new = list(range(len(self.changes)))
        try:
            covered, _ = self._check()
        except DocumentError:
            return set()
        return {
            change.hash.hex()
            for change in self.changes
            if change.seq <= covered.get(change.actor_id, 0)
        }

    def _check(self) -> tuple[dict[bytes, int], list[str]]:
        """(highest covered seq per actor, problems) over the new changes' signatures."""
        ops = self.operations()
        index = ChangeIndex(self.changes)
        self._envelope_positions = envelopes(index, ops)
        clinic = self.clinic_id
        if not isinstance(clinic, str):
            raise DocumentError("the record has no clinic")
        problems: list[str] = []
        new = set(self.new)
        auth = auth_objects(ops)
        if any(op.key == AUTH_FIELD and op.action != MAKE_MAP for op in ops.root):
            problems.append(f"{AUTH_FIELD} must be a map of keys and signatures")
        declared: dict[str, bytes] = {}
        signatures: list[tuple[str, int, Any]] = []
        for nested in ops.nested:
            if nested.obj not in auth:
                continue
            entry = parse_entry(nested.key or "")
            if entry is None:
                problems.append(f"unknown {AUTH_FIELD} entry {nested.key!r}")
                continue
            kind, device = entry
            if kind == "key":
                if isinstance(nested.value, bytes):
                    declared.setdefault(device, nested.value)
            else:
                signatures.append((device, index.change_of(nested.id), nested.value))
        reaches = clocks(self.changes)
        covered: dict[bytes, int] = {}
        keys: dict[str, bytes | None] = {}
        for device, position, signature in signatures:
            if position not in new:
                continue  # verified when this replica first received it
            envelope = self.changes[position]
            if device_for_actor(envelope.actor_id) != device:
                problems.append(f"a signature in the name of {device} was written by another")
                continue
            if device not in keys:
                keys[device] = self.directory.device_key(device, clinic, declared.get(device))
            key = keys[device]
            if key is None:
                problems.append(f"device {device} is not an enrolled device of clinic {clinic}")
                continue
            message = signed_heads_message(self.doc_id, envelope.deps)
            if not verify(key, message, signature):
                problems.append(f"a signature by device {device} does not verify")
                continue
            reach = 0
            for dep in envelope.deps:
                reach = max(reach, reaches.get(dep, {}).get(envelope.actor_id, 0))
            covered[envelope.actor_id] = max(covered.get(envelope.actor_id, 0), reach)
        self._check_author_fields(ops, index, new, problems)
        return covered, problems

    def _check_author_fields(
        self, ops: DocumentOps, index: ChangeIndex, new: set[int], problems: list[str]
    ) -> None:
        for op in ops.root:
            if op.key not in AUTHOR_FIELDS or op.action != SET:
                continue
            position = index.change_of(op.id)
            if position not in new:
                continue
            author = device_for_actor(self.changes[position].actor_id)
            if op.value != author:
                problems.append(f"a change by device {author} writes {op.key} = {op.value!r}")
