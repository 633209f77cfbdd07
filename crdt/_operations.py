"""A document's changes and operations as conflicts, history and authorship need them:
which change made each operation, what each change wrote, which changes only carry
signatures, and how far each actor's changes reach into each change's past.

Pure functions over `crdt._columnar.DocumentOps` and the binding's change list, one pass
each.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from crdt._authorship import AUTH_FIELD
from crdt._columnar import MAKE_MAP, MAKE_TEXT, SET, DocumentOps, OpId
from crdt._errors import DocumentError

__all__ = [
    "EPOCH",
    "ChangeIndex",
    "auth_objects",
    "clocks",
    "envelopes",
    "fields_by_change",
    "parse_time",
]


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class ChangeIndex:
    """A document's changes (causal order) and which change made each operation."""

    def __init__(self, changes: Sequence[Any]) -> None:
        self.changes = changes
        spans: dict[bytes, list[tuple[int, int, int]]] = {}
        for position, change in enumerate(changes):
            spans.setdefault(change.actor_id, []).append((change.start_op, change.max_op, position))
        for found in spans.values():
            found.sort()
        self._spans = spans
        self._firsts = {actor: [span[0] for span in found] for actor, found in spans.items()}

    def change_of(self, op_id: OpId) -> int:
        """The position of the change holding operation `op_id`."""
        counter, actor = op_id
        spans = self._spans.get(actor)
        if spans is not None:
            at = bisect.bisect_right(self._firsts[actor], counter) - 1
            if at >= 0 and spans[at][0] <= counter <= spans[at][1]:
                return spans[at][2]
        raise DocumentError("an operation belongs to no change of the document")


def fields_by_change(index: ChangeIndex, ops: DocumentOps) -> list[dict[str, Any]]:
    """For each change (in causal order): the fields it wrote, with the value it
    wrote where it put a scalar (None for deletes and text edits)."""
    change_of = index.change_of
    written: list[dict[str, Any]] = [{} for _ in index.changes]
    texts: dict[OpId, str] = {}
    for op in ops.root:
        written[change_of(op.id)][op.key] = op.value if op.action == SET else None
        if op.action == MAKE_TEXT:
            texts[op.id] = op.key
        for successor in op.successors:
            written[change_of(successor)].setdefault(op.key, None)
    for nested in ops.nested:
        field_name = texts.get(nested.obj)
        if field_name is None:
            continue  # not one of the record's text fields
        written[change_of(nested.id)].setdefault(field_name, None)
        for successor in nested.successors:
            written[change_of(successor)].setdefault(field_name, None)
    return written


def auth_objects(ops: DocumentOps) -> set[OpId]:
    """Every map that was ever the document's ``_auth`` field (concurrent creations
    leave several; all of their entries count)."""
    return {op.id for op in ops.root if op.key == AUTH_FIELD and op.action == MAKE_MAP}


def envelopes(index: ChangeIndex, ops: DocumentOps) -> set[int]:
    """Positions of the changes that only write signatures and keys."""
    auth = auth_objects(ops)
    counts = [0] * len(index.changes)
    for op in ops.root:
        if op.key == AUTH_FIELD:
            counts[index.change_of(op.id)] += 1
    for nested in ops.nested:
        if nested.obj in auth:
            counts[index.change_of(nested.id)] += 1
    return {
        position
        for position, change in enumerate(index.changes)
        if counts[position] and counts[position] == change.max_op - change.start_op + 1
    }


def clocks(changes: Sequence[Any]) -> dict[bytes, dict[bytes, int]]:
    """For each change: the highest seq of each actor among it and its ancestors."""
    clocks: dict[bytes, dict[bytes, int]] = {}
    for change in changes:
        clock: dict[bytes, int] = {}
        for dep in change.deps:
            for actor, seq in clocks.get(dep, {}).items():
                if seq > clock.get(actor, 0):
                    clock[actor] = seq
        clock[change.actor_id] = max(change.seq, clock.get(change.actor_id, 0))
        clocks[change.hash] = clock
    return clocks
