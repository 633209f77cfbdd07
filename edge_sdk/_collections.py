"""Typed access to the collections of records: `client.patients`, `client.wounds`, ...

Each operation runs inside the replica's access gate (one `AccessEvent` per call) and
writes a document and its projection in one transaction. Reads of many records are
`Query` objects (`edge_sdk._query`); live queries and record observers are in
`edge_sdk._live`.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Generic, TypeVar

from crdt import (
    CarePlan,
    ClinicalNote,
    FieldConflict,
    HistoryEntry,
    Patient,
    Record,
    RecordDocument,
    Wound,
    WoundAssessment,
)
from edge_sdk._errors import (
    NotEnrolledError,
    ReadOnlyCollectionError,
    RecordFromNewerAppError,
    RecordNotFoundError,
    RecordValidationError,
)
from edge_sdk._identity import DeviceIdentity
from edge_sdk._live import live_results, observe_record, watch_query
from edge_sdk._notify import Deliver, Subscription
from edge_sdk._query import Query
from edge_sdk._replica import Replica

__all__ = [
    "AssessmentsCollection",
    "CarePlansCollection",
    "Collection",
    "NotesCollection",
    "PatientHistoryCollection",
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
            NotEnrolledError: The store has no clinic yet (made without one, and not
                enrolled with a server).
        """
        with self._replica.access("create", self.name) as access:
            self._check_writable()
            if not self._replica.clinic_id:
                raise NotEnrolledError(
                    "this store has no clinic yet: enrol it with a server first"
                    " (client.enroll), or give EdgeClient.init a clinic_id"
                )
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
        """Records whose fields equal `filters` (any field of `query_fields`), by id.

        Raises:
            InvalidArgumentError: This collection has no such field (also a ValueError).
        """
        query = self.query(include_deleted=include_deleted, **filters).limit(limit)
        return query._with_action("list", ()).all()

    def query(self, *, include_deleted: bool = False, **equals: Any) -> Query[R]:
        """A query of this collection: records whose fields equal `equals`; refine it
        with `Query.where`, `order_by`, `limit`, and run it with `all` or `page`.

        Raises:
            ValueError: This collection has no such field.
        """
        query = Query(self).where(**equals)
        return query.including_deleted() if include_deleted else query

    def live(
        self,
        query: Query[R] | None,
        callback: Callable[[builtins.list[R]], None],
        *,
        deliver: Deliver | None = None,
    ) -> Subscription:
        """Call `callback` with the records of `query` (None: every record) now, and
        again whenever a committed change (a write here, a sync page, a bundle import, a
        session, a record becoming verified) changes them; at most once per commit.

        Args:
            query: A query of this collection (`query`); its limit and offset apply.
            callback: Gets the whole new result each time.
            deliver: Runs each call where the app wants it (default: the thread that
                committed the change; the first call: this thread).

        Returns:
            The subscription; `Subscription.cancel` stops the calls.

        Raises:
            ValueError: `query` is of another collection.
        """
        return watch_query(self._replica, query or self.query(), callback, deliver=deliver)

    def observe(
        self,
        record_id: str,
        callback: Callable[[R | None], None],
        *,
        deliver: Deliver | None = None,
    ) -> Subscription:
        """Call `callback` with record `record_id` now, and again whenever a committed
        change changes it; None while this device does not hold it or it is deleted.

        Returns:
            The subscription; `Subscription.cancel` stops the calls.
        """
        return observe_record(self, record_id, callback, deliver=deliver)

    def live_results(self, query: Query[R] | None = None) -> AsyncIterator[builtins.list[R]]:
        """The results of a live query as an async iterator (``async for records in
        ...``): the current result first, then each change, on the running event loop.
        A consumer that falls behind gets the latest result, not every one in between.
        Leaving the loop (or closing the iterator) cancels the subscription.
        """
        return live_results(lambda callback, deliver: self.live(query, callback, deliver=deliver))

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

    def _query(
        self,
        action: str,
        where: builtins.list[str],
        params: Sequence[Any],
        *,
        order_by: str = "id",
        limit: int | None = None,
    ) -> builtins.list[R]:
        return self._run(action, where, params, order_by=order_by, limit=limit)[0]

    def _run(
        self,
        action: str,
        where: Sequence[str],
        params: Sequence[Any],
        *,
        order_by: str = "id",
        limit: int | None = None,
        offset: int = 0,
        keys: Sequence[str] = (),
    ) -> tuple[builtins.list[R], builtins.list[tuple[Any, ...]]]:
        """Records matching SQL conditions on projection columns (one audited read,
        unverified records verified first), with the `keys` columns of each."""
        with self._replica.access(action, self.name) as access:
            rows = self._replica.store.query_rows(
                self.name,
                ("record", *keys),
                where,
                params,
                order_by=order_by,
                limit=limit,
                offset=offset,
            )
            records = [self._parse(row[0]) for row in rows]
            access.record_ids.extend(record.id for record in records)
            return records, [row[1:] for row in rows]

    def _parse(self, record_json: str) -> R:
        return self._typed(self._schema.model_validate(json.loads(record_json)))


class PatientsCollection(Collection[Patient]):
    """Patients, searchable by name and MRN."""

    def search(
        self, text: str, *, include_deleted: bool = False, limit: int = 100
    ) -> builtins.list[Patient]:
        """Patients whose given name, family name or MRN starts with `text` (any case),
        by family name then given name (`query().search(text)` is the same, as a query)."""
        query = self.query(include_deleted=include_deleted).search(text).limit(limit)
        return query._with_action("search", ("family_name", "given_name")).all()


class WoundsCollection(Collection[Wound]):
    """Wounds, listed by patient."""

    def _check_references(self, values: Mapping[str, Any]) -> None:
        self._referenced("patients", "patient_id", values.get("patient_id"))


class AssessmentsCollection(Collection[WoundAssessment]):
    """Wound assessments, listed by wound and date."""

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
        """Assessments of one wound in capture order, optionally within [since, until)
        (`for_wound_query` gives the same as a query, to page or watch)."""
        query = self.for_wound_query(wound_id, since=since, until=until)
        query = query.including_deleted() if include_deleted else query
        return query._with_action("list", ("captured_at",)).all()

    def for_wound_query(
        self,
        wound_id: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Query[WoundAssessment]:
        """The assessments of one wound captured in [since, until), in capture order,
        as a `Query` (``.page()``, ``.order_by("-captured_at")``, `live`)."""
        query = self.query(wound_id=wound_id).order_by("captured_at")
        if since is not None:
            query = query.where("captured_at", ">=", since)
        if until is not None:
            query = query.where("captured_at", "<", until)
        return query


class NotesCollection(Collection[ClinicalNote]):
    """Clinical notes; their text merges when edited on two devices offline."""

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


class PatientHistoryCollection(Collection[R]):
    """One part of a patient's medical history (`client.conditions`, `client.allergies`,
    `client.medications`): records of one patient, listed by patient."""

    def _check_references(self, values: Mapping[str, Any]) -> None:
        self._referenced("patients", "patient_id", values.get("patient_id"))

    def for_patient(self, patient_id: str, *, include_deleted: bool = False) -> builtins.list[R]:
        """The records of one patient, oldest first."""
        query = self.query(patient_id=patient_id).order_by("id")
        query = query.including_deleted() if include_deleted else query
        return query._with_action("list", ("patient_id",)).all()


class CarePlansCollection(PatientHistoryCollection[CarePlan]):
    """Care plans of wounds: goals, dressing regime, offloading and review date."""

    def _check_references(self, values: Mapping[str, Any]) -> None:
        wound = self._referenced("wounds", "wound_id", values.get("wound_id"))
        if wound["patient_id"] != values.get("patient_id"):
            raise RecordValidationError(
                self.name, [f"patient_id: wound {wound['id']} belongs to another patient"]
            )

    def for_wound(self, wound_id: str, *, include_deleted: bool = False) -> builtins.list[CarePlan]:
        """The care plans of one wound, oldest first."""
        query = self.query(wound_id=wound_id).order_by("id")
        query = query.including_deleted() if include_deleted else query
        return query._with_action("list", ("wound_id",)).all()
