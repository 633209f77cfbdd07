"""Typed access to the collections of records: `client.patients`, `client.wounds`, ...

Each operation runs inside the replica's access gate (one `AccessEvent` per call) and
writes a document and its projection in one transaction.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from typing import Any, Generic, TypeVar

from crdt import (
    ClinicalNote,
    FieldConflict,
    HistoryEntry,
    Patient,
    Record,
    RecordDocument,
    Wound,
    WoundAssessment,
    sortable_time,
)
from edge_sdk._errors import (
    InvalidArgumentError,
    ReadOnlyCollectionError,
    RecordFromNewerAppError,
    RecordNotFoundError,
    RecordValidationError,
)
from edge_sdk._identity import DeviceIdentity
from edge_sdk._replica import Replica
from edge_sdk._store import SEARCH_SEPARATOR, fold

__all__ = [
    "AssessmentsCollection",
    "Collection",
    "NotesCollection",
    "PatientsCollection",
    "WoundsCollection",
]

R = TypeVar("R", bound=Record)

# What a reference check reads of the record referred to (projection columns).
_REFERENCE_COLUMNS: Mapping[str, tuple[str, ...]] = {
    "patients": ("id", "deleted"),
    "wounds": ("id", "deleted", "patient_id"),
}


class Collection(Generic[R]):
    """Typed access to one collection of records (`client.patients`, ...)."""

    _filters: Mapping[str, str] = {}

    def __init__(self, replica: Replica, schema: type[R]) -> None:
        self._replica = replica
        self._schema = schema

    @property
    def name(self) -> str:
        """The collection name."""
        return self._schema.collection

    def add(self, **values: Any) -> R:
        """Create a record. Metadata (id, clinic, times, device) is filled in.

        Raises:
            RecordValidationError: A value is missing or invalid.
        """
        with self._replica.access("create", self.name) as access:
            self._check_writable()
            self._check_references(values)
            document = RecordDocument.create(
                self._schema,
                values,
                device_id=self._replica.device_id,
                clinic_id=self._replica.clinic_id,
                signer=self._replica.identity,
            )
            access.record_ids.append(document.id)
            self._replica.store.put_documents([document])
            return self._typed(document.read())

    def get(self, record_id: str) -> R:
        """The record with id `record_id`, deleted or not.

        Raises:
            RecordNotFoundError: No such record in this collection.
            RecordFromNewerAppError: A newer version of the app wrote the record.
        """
        with self._replica.access("read", self.name) as access:
            access.record_ids.append(record_id)
            found = self._replica.store.get_record(self.name, record_id)
            if found is None:
                self._check_not_newer(record_id)
                raise RecordNotFoundError(f"no {self.name} record {record_id}")
            return self._typed(self._schema.model_validate(found))

    def update(self, record_id: str, **changes: Any) -> R:
        """Change some fields of a record; unchanged values write nothing.

        Raises:
            RecordNotFoundError: No such record.
            RecordValidationError: A field is unknown, immutable or invalid.
        """
        return self._change(
            "update",
            record_id,
            lambda doc: doc.update(changes, device_id=self._replica.device_id, signer=self._signer),
        )

    def delete(self, record_id: str) -> R:
        """Tombstone a record: it stays (and syncs) marked deleted."""
        return self._change(
            "delete",
            record_id,
            lambda doc: doc.delete(device_id=self._replica.device_id, signer=self._signer),
        )

    def restore(self, record_id: str) -> R:
        """Undo a delete."""
        return self._change(
            "restore",
            record_id,
            lambda doc: doc.restore(device_id=self._replica.device_id, signer=self._signer),
        )

    def list(
        self,
        *,
        include_deleted: bool = False,
        limit: int | None = None,
        **filters: Any,
    ) -> builtins.list[R]:
        """Records matching equality filters on indexed fields, oldest first.

        Filters by collection: patients `mrn`, `family_name`, `given_name`; wounds
        `patient_id`, `status`; assessments `wound_id`, `patient_id`; notes
        `patient_id`, `wound_id`.

        Raises:
            InvalidArgumentError: A filter is not supported by this collection (also a
                ValueError).
        """
        where, params = self._where(filters)
        if not include_deleted:
            where.append("deleted = 0")
        return self._query("list", where, params, limit=limit)

    def conflicts(self, record_id: str) -> builtins.list[FieldConflict]:
        """The conflicted fields of one record."""
        with self._replica.access("conflicts", self.name) as access:
            access.record_ids.append(record_id)
            return self._document(record_id).conflicts()

    def resolve(self, record_id: str, field_name: str, value: Any) -> R:
        """Settle a conflicted field on `value`, superseding every concurrent value.

        Raises:
            NoConflictError: The field has no conflict.
        """
        return self._change(
            "resolve",
            record_id,
            lambda doc: doc.resolve(
                field_name,
                value,
                device_id=self._replica.device_id,
                signer=self._signer,
            ),
        )

    def history(self, record_id: str) -> builtins.list[HistoryEntry]:
        """Every change to a record: which device, when, which fields, and whether
        the device's signature on it verifies (`HistoryEntry.verified`)."""
        with self._replica.access("history", self.name) as access:
            access.record_ids.append(record_id)
            return self._document(record_id).history(directory=self._replica.directory)

    @property
    def _signer(self) -> DeviceIdentity:
        return self._replica.identity

    # ---------------------------------------------------------------- internals
    def _check_references(self, values: Mapping[str, Any]) -> None:
        """Refuse a new record that points at records this device does not hold.

        Only local creation is checked: over sync a wound may arrive before its
        patient, and that is not an error.
        """

    def _referenced(self, collection: str, field_name: str, record_id: Any) -> dict[str, Any]:
        """The referenced record's id, deleted flag and (wounds) patient_id, from its
        projection columns: the whole record's JSON is not needed to check a reference."""
        columns = _REFERENCE_COLUMNS[collection]
        if isinstance(record_id, str):
            self._replica.store.settle((record_id,))  # a record awaiting verification
        row = (
            self._replica.store.execute(
                f"SELECT {', '.join(columns)} FROM {collection} WHERE id = ?", (record_id,)
            ).fetchone()
            if isinstance(record_id, str)
            else None
        )
        if record_id is None:
            raise RecordValidationError(self.name, [f"{field_name}: field required"])
        if row is None or row[1]:
            raise RecordValidationError(
                self.name, [f"{field_name}: no {collection} record {record_id} on this device"]
            )
        return dict(zip(columns, row, strict=True))

    def _typed(self, record: Record) -> R:
        assert isinstance(record, self._schema)
        return record

    def _document(self, record_id: str) -> RecordDocument:
        document = self._replica.store.get_document(record_id, device_id=self._replica.device_id)
        if document is None or document.collection != self.name:
            raise RecordNotFoundError(f"no {self.name} record {record_id}")
        if document.newer_than_schema:  # neither read nor written over by this app
            raise RecordFromNewerAppError(
                record_id, self.name, document.schema_version, self._schema.schema_version
            )
        return document

    def _check_not_newer(self, record_id: str) -> None:
        version = self._replica.store.newer_version(record_id)
        if version is not None and self._replica.store.collection_of(record_id) == self.name:
            raise RecordFromNewerAppError(
                record_id, self.name, version, self._schema.schema_version
            )

    def _check_writable(self) -> None:
        if not self._schema.device_writable:
            raise ReadOnlyCollectionError(
                f"{self.name} are server-owned: a device reads them and never writes them"
            )

    def _change(self, action: str, record_id: str, change: Callable[[RecordDocument], Any]) -> R:
        with self._replica.access(action, self.name) as access:
            access.record_ids.append(record_id)
            self._check_writable()
            store = self._replica.store
            with store.transaction():
                document = self._document(record_id)
                change(document)
                store.put_documents([document])
            return self._typed(document.read())

    def _where(self, filters: Mapping[str, Any]) -> tuple[builtins.list[str], builtins.list[Any]]:
        unknown = sorted(set(filters) - set(self._filters))
        if unknown:
            allowed = ", ".join(sorted(self._filters)) or "none"
            raise InvalidArgumentError(
                f"cannot filter {self.name} by {', '.join(unknown)} (allowed: {allowed})"
            )
        where = [f"{self._filters[name]} = ?" for name in filters]
        return where, [_sql_value(v) for v in filters.values()]

    def _query(
        self,
        action: str,
        where: builtins.list[str],
        params: Sequence[Any],
        *,
        order_by: str = "id",
        limit: int | None = None,
    ) -> builtins.list[R]:
        with self._replica.access(action, self.name) as access:
            rows = self._replica.store.query_records(
                self.name, where, params, order_by=order_by, limit=limit
            )
            access.record_ids.extend(row["id"] for row in rows)
            return [self._typed(self._schema.model_validate(row)) for row in rows]


class PatientsCollection(Collection[Patient]):
    """Patients, searchable by name and MRN."""

    _filters = {"mrn": "mrn", "family_name": "family_name", "given_name": "given_name"}

    def search(
        self, text: str, *, include_deleted: bool = False, limit: int = 100
    ) -> builtins.list[Patient]:
        """Patients whose given name, family name or MRN starts with `text` (any case)."""
        folded = fold(text)
        escaped = folded.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        # Each part in search_text follows a separator: "%<sep>text%" is a prefix match
        # of any part.
        where = ["search_text LIKE ? ESCAPE '\\'"]
        if not include_deleted:
            where.append("deleted = 0")
        return self._query(
            "search",
            where,
            [f"%{SEARCH_SEPARATOR}{escaped}%"],
            order_by="family_name, given_name",
            limit=limit,
        )


class WoundsCollection(Collection[Wound]):
    """Wounds, listed by patient."""

    _filters = {"patient_id": "patient_id", "status": "status"}

    def _check_references(self, values: Mapping[str, Any]) -> None:
        self._referenced("patients", "patient_id", values.get("patient_id"))


class AssessmentsCollection(Collection[WoundAssessment]):
    """Wound assessments, listed by wound and date."""

    _filters = {"wound_id": "wound_id", "patient_id": "patient_id"}

    def _check_references(self, values: Mapping[str, Any]) -> None:
        wound = self._referenced("wounds", "wound_id", values.get("wound_id"))
        if wound["patient_id"] != values.get("patient_id"):
            raise RecordValidationError(
                self.name, [f"patient_id: wound {wound['id']} belongs to another patient"]
            )

    def for_wound(
        self,
        wound_id: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        include_deleted: bool = False,
    ) -> builtins.list[WoundAssessment]:
        """Assessments of one wound in capture order, optionally within [since, until)."""
        where = ["wound_id = ?"]
        params: builtins.list[Any] = [wound_id]
        if since is not None:
            where.append("captured_at >= ?")
            params.append(sortable_time(since))
        if until is not None:
            where.append("captured_at < ?")
            params.append(sortable_time(until))
        if not include_deleted:
            where.append("deleted = 0")
        return self._query("list", where, params, order_by="captured_at, id")


class NotesCollection(Collection[ClinicalNote]):
    """Clinical notes; their text merges when edited on two devices offline."""

    _filters = {"patient_id": "patient_id", "wound_id": "wound_id"}

    def _check_references(self, values: Mapping[str, Any]) -> None:
        self._referenced("patients", "patient_id", values.get("patient_id"))
        if values.get("wound_id") is not None:
            wound = self._referenced("wounds", "wound_id", values.get("wound_id"))
            if wound["patient_id"] != values.get("patient_id"):
                raise RecordValidationError(
                    self.name, [f"wound_id: wound {wound['id']} belongs to another patient"]
                )

    def splice(self, record_id: str, position: int, delete: int, insert: str) -> ClinicalNote:
        """Delete `delete` characters at `position` and insert `insert` there."""
        return self._change(
            "update",
            record_id,
            lambda doc: doc.splice_text(
                "text",
                position,
                delete,
                insert,
                device_id=self._replica.device_id,
                signer=self._replica.identity,
            ),
        )

    def edit(self, record_id: str, text: str) -> ClinicalNote:
        """Replace the text; written as the minimal splices, so concurrent edits merge."""
        return self.update(record_id, text=text)


def _sql_value(value: Any) -> Any:
    """A filter value as the projection stores it (dates as ISO strings)."""
    return value.isoformat() if isinstance(value, date) else value  # datetimes are dates
