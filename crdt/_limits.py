"""What one received document may cost a replica: bytes, changes, operations.

Measured from chunk headers before Automerge loads the bytes (`crdt._columnar`), and
from the change list after a merge.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass

from automerge import core as am

from crdt._columnar import ColumnarError, measure_saved

__all__ = ["DEFAULT_LIMITS", "DocumentLimits"]


@dataclass(frozen=True, slots=True)
class DocumentLimits:
    """What one received document may cost a replica to load, merge and show.

    A record's history compresses well: a few hundred saved bytes can hold a hundred
    thousand changes, so bytes alone bound nothing. Received documents (pushes,
    pulls, bundles, sync sessions) are measured from their chunk headers before they
    are loaded, and merged results are measured again; one over a limit is refused
    alone, with a reason that names the limit. Conflicts and history cost one pass
    over the operations, so these bounds also bound the time a document can take.
    """

    max_bytes: int = 8 * 1024 * 1024
    max_changes: int = 50_000
    max_operations: int = 2_000_000

    def measure(self, data: bytes) -> tuple[int, int]:
        """(changes, operations) loading saved bytes would apply; (0, 0) if they cannot
        be read (they are refused when checked)."""
        try:
            return _measured(data, 8 * self.max_bytes)
        except ColumnarError:
            return 0, 0

    def check_saved(self, data: bytes) -> str | None:
        """Why saved bytes may not be loaded here, or None."""
        if len(data) > self.max_bytes:
            return f"the document is {len(data)} bytes, over the limit of {self.max_bytes}"
        try:
            changes, operations = _measured(data, 8 * self.max_bytes)
        except ColumnarError as exc:
            return f"not a readable Automerge document: {exc}"
        return self._over(changes, operations)

    def check_document(self, doc: am.Document) -> str | None:
        """Why a loaded or merged document may not be kept here, or None."""
        changes = doc.get_changes([])
        operations = sum(change.max_op - change.start_op + 1 for change in changes)
        return self._over(len(changes), operations)

    def _over(self, changes: int, operations: int) -> str | None:
        if changes > self.max_changes:
            return f"the document has {changes} changes, over the limit of {self.max_changes}"
        if operations > self.max_operations:
            return (
                f"the document has {operations} operations, over the limit of {self.max_operations}"
            )
        return None


DEFAULT_LIMITS = DocumentLimits()

_REMEMBERED = 8192
_measurements: dict[tuple[bytes, int], tuple[int, int]] = {}
_measurements_lock = threading.Lock()


def _measured(data: bytes, max_inflated: int) -> tuple[int, int]:
    """`measure_saved`, remembered for the last few thousand documents by digest (a push
    is measured as a whole before any of its documents is loaded, and each document
    again as it is loaded: the second costs a hash, not a parse)."""
    key = (hashlib.sha256(data).digest(), max_inflated)
    found = _measurements.get(key)
    if found is None:
        found = measure_saved(data, max_inflated=max_inflated)
        with _measurements_lock:
            if len(_measurements) >= _REMEMBERED:
                _measurements.clear()
            _measurements[key] = found
    return found
