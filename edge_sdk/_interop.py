"""Records as plain Automerge documents, for other Automerge implementations.

`export_documents` gives each record's document as ``Automerge.save()`` bytes (what
``load()`` of JavaScript or Rust Automerge reads); `import_documents` merges such bytes
through the same checks a sync merge makes (`crdt.apply_documents`: limits, the
record's schema and field kinds, immutable fields, the clinic, and every new change
signed by an enrolled device), so no document enters a store any other way. Both are
one audited access each (``export``, ``import``). The kinds another implementation
must write are published by `crdt.record_schemas`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from crdt import (
    DEFAULT_LIMITS,
    CrdtError,
    RecordDocument,
    Rejection,
    SyncReport,
    apply_documents,
    refusal_reason,
)
from edge_sdk._errors import RecordNotFoundError
from edge_sdk._replica import Replica, ReplicaHolder, replica_of
from edge_sdk._sync import _PrefetchedStore

__all__ = ["export_documents", "import_documents"]


def export_documents(
    holder: Replica | ReplicaHolder, record_ids: Iterable[str]
) -> dict[str, bytes]:
    """The saved Automerge bytes of each record, by id (one audited ``export``).

    Raises:
        RecordNotFoundError: A record is not held here (nothing is exported).
    """
    replica = replica_of(holder)
    ids = list(dict.fromkeys(record_ids))
    with replica.access("export", "*") as access:
        replica.store.settle(ids)  # records awaiting verification are verified first
        found = replica.store.saved_documents(ids)
        missing = [doc_id for doc_id in ids if doc_id not in found]
        if missing:
            raise RecordNotFoundError(f"no such record: {', '.join(missing)}")
        access.record_ids.extend(ids)
    return {doc_id: found[doc_id] for doc_id in ids}


def import_documents(
    holder: Replica | ReplicaHolder, documents: Mapping[str, bytes] | Sequence[bytes]
) -> SyncReport:
    """Merge plain Automerge documents into the store, as a sync merge would.

    `documents` maps record ids to saved bytes (each must be that record), or is a
    list of saved bytes (each read for its id). Each is checked alone: one refused is
    reported in `SyncReport.rejected` with its reason (for an item of a list that is
    not a record at all, under the id ``#<position>``) and the others are merged, all
    in one transaction with one audited ``import``.

    Returns:
        The ids stored new or changed (`received`) and the refusals (`rejected`).
    """
    replica = replica_of(holder)
    report = SyncReport()
    incoming: list[tuple[str, bytes]] = []
    if isinstance(documents, Mapping):
        incoming = [(doc_id, bytes(data)) for doc_id, data in documents.items()]
    else:
        for position, data in enumerate(documents):
            try:
                doc_id = RecordDocument.load(bytes(data), limits=DEFAULT_LIMITS).id
            except CrdtError as exc:
                report.rejected.append(Rejection(f"#{position}", refusal_reason(exc)))
                continue
            incoming.append((doc_id, bytes(data)))
    report.bytes_received = sum(len(data) for _, data in incoming)
    store = replica.store
    with store.transaction(), replica.access("import", "*") as access:
        apply_documents(
            _PrefetchedStore(store, replica.device_id, [doc_id for doc_id, _ in incoming]),
            incoming,
            device_id=replica.device_id,
            policy=replica.policy,
            report=report,
            authorship=replica.directory,
        )
        access.record_ids.extend(sorted(report.received))
    return report
