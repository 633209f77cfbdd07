"""Record schema evolution on a device: records an older app wrote are upgraded.

Each collection's records carry the schema version that wrote them; `crdt.migrate`
registers the migration from each version to the next. A replica upgrades:

- when it opens, every record of a collection whose version this code raised (once per
  bump, in batches of `BATCH` records per transaction), so that queries on projection
  columns see every record as the current version describes it;
- after a transaction that stored records from a device still on an older app (a
  sync, a bundle, a session), those records.

Upgrading all at open rather than lazily on read is deliberate: reads and filters come
from the projection tables, which must hold upgraded values for every record, and one
pass at the first open after an app update costs less than a check on every read.
Each upgrade is an ordinary signed change by this device (audited as ``migrate``,
synced, in history); migrations are deterministic, so two devices upgrading one
record write equal values and no conflict.

A record a newer app wrote is kept as it came (stored, synced on, never refused as
corrupt) with no projection row: reads of it raise `RecordFromNewerAppError`, and
`EdgeClient.records_needing_update` lists them.
"""

from __future__ import annotations

import logging
import threading

from crdt import CrdtError, RecordDocument
from edge_sdk._replica import Replica

__all__ = ["BATCH", "RecordUpgrades"]

_log = logging.getLogger("edge_sdk")

BATCH = 200
"""Records upgraded per transaction."""


class RecordUpgrades:
    """Upgrades a replica's outdated records at open and after each commit."""

    def __init__(self, replica: Replica) -> None:
        self._replica = replica
        self._running = threading.local()
        replica.store.queue_outdated()
        replica.store.add_commit_listener(self._after_commit)
        self.run()

    def _after_commit(self, written: frozenset[str]) -> None:
        self.run()

    def run(self) -> int:
        """Upgrade every record queued for it; returns how many were upgraded."""
        if getattr(self._running, "active", False):
            return 0  # the upgrade's own commit
        self._running.active = True
        try:
            return self._drain()
        finally:
            self._running.active = False

    def _drain(self) -> int:
        replica = self._replica
        store = replica.store
        total = 0
        while ids := store.outdated(limit=BATCH):
            with store.transaction():
                by_collection: dict[str, list[RecordDocument]] = {}
                for doc_id in ids:
                    document = store.get_document(doc_id, device_id=replica.device_id)
                    if document is not None and document.needs_upgrade:
                        by_collection.setdefault(document.collection, []).append(document)
                for collection, documents in by_collection.items():
                    with replica.access("migrate", collection) as access:
                        upgraded = [d for d in documents if self._upgrade(d)]
                        access.record_ids.extend(d.id for d in upgraded)
                        store.put_documents(upgraded)
                        total += len(upgraded)
                store.upgraded(ids)
        return total

    def _upgrade(self, document: RecordDocument) -> bool:
        replica = self._replica
        try:
            return document.upgrade(device_id=replica.device_id, signer=replica.identity)
        except CrdtError as exc:
            # The record stays as it is (it still reads as before); a person can fix it.
            _log.warning("record %s was not upgraded: %s", document.id, exc)
            return False
