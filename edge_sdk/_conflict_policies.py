"""Conflict-resolution policies: what to do when a merge leaves a field in conflict.

By default a conflict stays visible (both values kept; the current one shown until a
clinician resolves it). An app may register a policy per collection and field
(`EdgeClient.on_conflict`); after each transaction that stored records commits (a
sync page, a bundle import, a session), every new conflict on a field with a policy is
handed to it, once:

- the policy returns a value: it is written as an ordinary `resolve` by this device
  (signed, audited, synced, in history);
- it returns None: the conflict stays for a person ("ask the user"), and the policy is
  not asked again about the same values.

Built in: `keep_both` (the default), `latest_wins` (the value written last, by the
time its change carries; ties broken by device id), `merge_lists` (the union of list
values, first seen first). Policies must be deterministic: two devices with the same
policy then write the same value, which leaves no conflict, so they never loop.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from crdt import COLLECTIONS, ConflictValue, CrdtError, FieldConflict
from edge_sdk._errors import EdgeError, InvalidArgumentError
from edge_sdk._notify import Subscription
from edge_sdk._replica import Replica

__all__ = ["ConflictPolicies", "ConflictPolicy", "keep_both", "latest_wins", "merge_lists"]

_log = logging.getLogger("edge_sdk")

ConflictPolicy = Callable[[FieldConflict], Any]
"""Given a conflict, the value to keep, or None to leave the conflict for a person."""

Resolver = Callable[[str, str, str, Any], object]
"""Writes a resolution: (collection, record id, field, value)."""


def keep_both(conflict: FieldConflict) -> None:
    """Leave the conflict visible for a clinician (the default)."""
    return None


def latest_wins(conflict: FieldConflict) -> Any:
    """The value written last (by its change's ``updated_at``; then by device id)."""
    return max(conflict.values, key=_recency).value


def merge_lists(conflict: FieldConflict) -> Any:
    """The union of the values of a list field, in the order first seen; None (leave
    the conflict) if a value is not a list."""
    merged: list[Any] = []
    seen: set[str] = set()
    for candidate in conflict.values:
        if not isinstance(candidate.value, list | tuple):
            return None
        for item in candidate.value:
            key = _canonical(item)
            if key not in seen:
                seen.add(key)
                merged.append(item)
    return merged


class ConflictPolicies:
    """The policies an `EdgeClient` runs on the conflicts merges create."""

    def __init__(self, replica: Replica, resolve: Resolver) -> None:
        self._replica = replica
        self._resolve = resolve
        self._policies: dict[tuple[str, str], ConflictPolicy] = {}
        self._lock = threading.RLock()
        self._running = threading.local()
        replica.store.add_commit_listener(self._after_commit)

    def add(self, collection: str, field: str, policy: ConflictPolicy) -> Subscription:
        """Run `policy` on conflicts of `collection`.`field` (the ones already in the
        store too); cancel the subscription to go back to keeping both."""
        schema = COLLECTIONS.get(collection)
        if schema is None or field not in schema.data_fields():
            raise InvalidArgumentError(f"no field {field!r} in collection {collection!r}")
        key = (collection, field)
        with self._lock:
            self._policies[key] = policy

        def cancel() -> None:
            with self._lock:
                if self._policies.get(key) is policy:
                    del self._policies[key]

        subscription = Subscription(cancel)
        self.run()
        return subscription

    def _after_commit(self, written: frozenset[str]) -> None:
        if any(collection in written for collection, _ in list(self._policies)):
            self.run()

    def run(self) -> int:
        """Hand every unhandled conflict on a field with a policy to it; returns how
        many were resolved."""
        if getattr(self._running, "active", False):
            return 0  # a resolution's own commit
        self._running.active = True
        try:
            with self._lock:
                return self._run()
        finally:
            self._running.active = False

    def _run(self) -> int:
        if not self._policies:
            return 0
        store = self._replica.store
        resolved = 0
        rows = store.execute(
            "SELECT c.doc_id, c.collection, c.field, h.conflict_values FROM conflicts c"
            " LEFT JOIN handled_conflicts h ON h.doc_id = c.doc_id AND h.field = c.field"
            " ORDER BY c.doc_id, c.field"
        ).fetchall()
        for doc_id, collection, field, handled in rows:
            policy = self._policies.get((collection, field))
            if policy is None:
                continue
            # Handing the values to the app's policy reads patient data: audited.
            with self._replica.access("conflicts", collection) as access:
                access.record_ids.append(doc_id)
                document = store.get_document(doc_id)
                conflict = next(
                    (c for c in (document.conflicts() if document else []) if c.field == field),
                    None,
                )
            if conflict is None:
                continue
            values_key = _canonical([[v.device_id, v.value] for v in conflict.values])
            if handled == values_key:
                continue  # asked once about exactly these values
            with store.transaction():
                store.execute(
                    "INSERT OR REPLACE INTO handled_conflicts(doc_id, field, conflict_values)"
                    " VALUES (?, ?, ?)",
                    (doc_id, field, values_key),
                )
            try:
                value = policy(conflict)
                if value is not None:
                    self._resolve(collection, doc_id, field, value)
                    resolved += 1
            except (EdgeError, CrdtError) as exc:
                _log.warning("%s.%s of %s left in conflict: %s", collection, field, doc_id, exc)
            except Exception:
                # The app's policy failed: the merge stands, the conflict stays visible.
                _log.exception("the %s.%s conflict policy failed on %s", collection, field, doc_id)
        return resolved


def _recency(value: ConflictValue) -> tuple[float, str, str]:
    at = value.at.timestamp() if value.at is not None else float("-inf")
    return at, value.device_id, _canonical(value.value)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
