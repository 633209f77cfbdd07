"""One record as one Automerge document.

`RecordDocument` is the only code that touches `automerge.core` objects for records:
it writes typed values as Automerge scalars, JSON text or Automerge text, reads them
back through the record's schema, validates every write and every merge before it is
kept, and derives conflicts and history from the document's own change graph (the
1.0.0rc1 binding has no ``get_all`` and no change timestamps, so both are computed
from values at each change's heads).
"""

from __future__ import annotations

import difflib
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from automerge import core as am

from crdt._errors import (
    DocumentError,
    MergeRejectedError,
    NoConflictError,
    RecordValidationError,
)
from crdt._schemas import COLLECTIONS, META_FIELDS, FieldKind, Record, new_record_id

__all__ = [
    "ConflictValue",
    "FieldConflict",
    "HistoryEntry",
    "RecordDocument",
    "actor_for_device",
    "device_for_actor",
]

_COLLECTION_KEY = "collection"
_SCHEMA_KEY = "schema_version"
_SCHEMA_VERSION = 1
# Written by every change, so concurrent changes always "conflict" on them; they are
# bookkeeping, not clinical values, and are left out of conflict reports.
_BOOKKEEPING = frozenset({"updated_at", "updated_by", _COLLECTION_KEY, _SCHEMA_KEY})

_Got = tuple[Any, bytes]  # (value, op id) as returned by Document.get


def actor_for_device(device_id: str) -> bytes:
    """Return the Automerge actor id of a device: the 16 bytes of its UUID."""
    try:
        return uuid.UUID(device_id).bytes
    except ValueError:
        raise DocumentError(f"device id {device_id!r} is not a UUID") from None


def device_for_actor(actor: bytes) -> str:
    """Return the device id that writes as Automerge actor `actor`."""
    return str(uuid.UUID(bytes=actor)) if len(actor) == 16 else actor.hex()


@dataclass(frozen=True, slots=True)
class ConflictValue:
    """One of the concurrent values of a field, and the device that wrote it."""

    value: Any
    device_id: str
    current: bool  # the value every replica shows until a clinician resolves


@dataclass(frozen=True, slots=True)
class FieldConflict:
    """A field that concurrent writes left with more than one value."""

    record_id: str
    collection: str
    field: str
    values: tuple[ConflictValue, ...]


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One change to a record: who, when, and which fields."""

    change: str  # hex hash of the Automerge change
    device_id: str
    at: datetime
    action: str  # created | updated | deleted | restored
    fields: tuple[str, ...]


def _now() -> datetime:
    return datetime.now(UTC)


def _encode_scalar(value: Any) -> tuple[am.ScalarType, Any]:
    if value is None:
        return am.ScalarType.Null, None
    if isinstance(value, bool):
        return am.ScalarType.Boolean, value
    if isinstance(value, int):
        return am.ScalarType.Int, value
    if isinstance(value, float):
        return am.ScalarType.F64, value
    if isinstance(value, str):
        return am.ScalarType.Str, value
    raise TypeError(f"cannot store {type(value).__name__} as an Automerge scalar")


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _text_splices(old: str, new: str) -> list[tuple[int, int, str]]:
    """Minimal (position, delete count, insert) splices turning `old` into `new`.

    Applied right to left so earlier positions stay valid; writing a minimal diff
    (not the whole text) is what lets two offline edits of one note both survive.
    """
    ops = difflib.SequenceMatcher(a=old, b=new, autojunk=False).get_opcodes()
    return [(i1, i2 - i1, new[j1:j2]) for tag, i1, i2, j1, j2 in reversed(ops) if tag != "equal"]


class RecordDocument:
    """A replicated clinical record backed by one Automerge document.

    Build one with `create` or `load`; read it with `read`; change it with `update`,
    `splice_text`, `delete`, `restore` and `resolve`; combine replicas with `merge`.
    Every change is validated against the record's schema before it is kept.
    """

    __slots__ = ("_doc", "_id", "_record", "_saved", "_schema")

    def __init__(
        self, doc: am.Document, schema: type[Record], *, saved: bytes | None = None
    ) -> None:
        self._doc = doc
        self._schema = schema
        self._id: str | None = None
        # Caches dropped on every change: the validated read and the saved bytes
        # (a document received whole is stored with the very bytes it came in).
        self._record: Record | None = None
        self._saved = saved

    # ----------------------------------------------------------------- building
    @classmethod
    def create(
        cls,
        schema: type[Record],
        values: Mapping[str, Any],
        *,
        device_id: str,
        clinic_id: str,
        record_id: str | None = None,
        now: datetime | None = None,
    ) -> RecordDocument:
        """Create a new record document, validating `values` against `schema`.

        Raises:
            RecordValidationError: A value is missing, unknown or invalid.
        """
        _reject_unknown(schema, values)
        at = (now or _now()).isoformat()
        full = {
            **values,
            "id": record_id or new_record_id(),
            "clinic_id": clinic_id,
            "created_at": at,
            "created_by": device_id,
            "updated_at": at,
            "updated_by": device_id,
            "deleted": False,
        }
        record = schema.validate_values(full)
        dumped = record.model_dump(mode="json")
        doc = am.Document(actor_for_device(device_id))
        with doc.transaction() as tx:
            tx.put(am.ROOT, _COLLECTION_KEY, am.ScalarType.Str, schema.collection)
            tx.put(am.ROOT, _SCHEMA_KEY, am.ScalarType.Int, _SCHEMA_VERSION)
            for name in schema.model_fields:
                _put(tx, schema, name, dumped[name])
        created = cls(doc, schema)
        created._record = record
        return created

    @classmethod
    def load(cls, data: bytes, *, device_id: str | None = None) -> RecordDocument:
        """Load a saved document; `device_id` is the actor for later local writes.

        Raises:
            DocumentError: The bytes are not an Automerge document or not a record.
        """
        try:
            doc = am.Document.load(bytes(data))
        except Exception as exc:  # the binding raises bare Exception
            raise DocumentError(f"not an Automerge document: {exc}") from None
        if device_id is not None:
            doc.set_actor(actor_for_device(device_id))
        return cls(doc, _schema_of(doc), saved=bytes(data))

    @classmethod
    def empty(cls, schema: type[Record], *, device_id: str) -> RecordDocument:
        """An empty document to receive a record through the sync protocol."""
        return cls(am.Document(actor_for_device(device_id)), schema)

    def save(self) -> bytes:
        """The whole document as compact bytes."""
        if self._saved is None:
            self._saved = self._doc.save()
        return self._saved

    def fork(self, *, device_id: str | None = None) -> RecordDocument:
        """An independent copy sharing this document's history."""
        doc = self._doc.fork()
        doc.set_actor(actor_for_device(device_id) if device_id else self._doc.get_actor())
        return RecordDocument(doc, self._schema)

    # ------------------------------------------------------------------ reading
    @property
    def schema(self) -> type[Record]:
        """The record's schema class."""
        return self._schema

    @property
    def collection(self) -> str:
        """The record's collection name."""
        return self._schema.collection

    @property
    def id(self) -> str:
        """The record id (also the document id)."""
        if self._id is None:
            got = self._doc.get(am.ROOT, "id")
            if got is None or isinstance(got[0], am.ObjType) or not isinstance(got[0][1], str):
                raise DocumentError("document has no record id")
            self._id = got[0][1]
        return self._id

    @property
    def heads(self) -> list[bytes]:
        """The document's current heads, sorted (equal heads mean equal documents)."""
        return sorted(self._doc.get_heads())

    @property
    def automerge(self) -> am.Document:
        """The underlying Automerge document (for the sync protocol)."""
        return self._doc

    def values(self) -> dict[str, Any]:
        """The record's stored values, decoded but not validated."""
        return _current_values(self._doc, self._schema)

    def read(self) -> Record:
        """The record, validated against its schema."""
        if self._record is None:
            self._record = self._schema.validate_values(self.values())
        return self._record

    # ------------------------------------------------------------------ writing
    def update(
        self, changes: Mapping[str, Any], *, device_id: str, now: datetime | None = None
    ) -> list[str]:
        """Write the fields in `changes` that differ from the stored values.

        Returns:
            The names of the fields written (empty if nothing changed).

        Raises:
            RecordValidationError: A field is unknown, immutable or invalid.
        """
        _reject_unknown(self._schema, changes)
        immutable = sorted(set(changes) & self._schema.immutable_fields)
        if immutable:
            raise RecordValidationError(
                self.collection, [f"{name}: cannot change after creation" for name in immutable]
            )
        current = self.read().model_dump(mode="json")
        candidate = self._schema.validate_values({**current, **changes}).model_dump(mode="json")
        changed = [name for name in changes if candidate[name] != current[name]]
        if changed:
            self._write({name: candidate[name] for name in changed}, device_id=device_id, now=now)
        return changed

    def splice_text(
        self,
        field: str,
        position: int,
        delete: int,
        insert: str,
        *,
        device_id: str,
        now: datetime | None = None,
    ) -> None:
        """Delete `delete` characters at `position` of a text field and insert `insert`.

        Raises:
            RecordValidationError: The field is not a text field, the range is outside
                the text, or the result is invalid.
        """
        if self._schema.field_kind(field) is not FieldKind.TEXT:
            raise RecordValidationError(self.collection, [f"{field}: not a text field"])
        text = self.values()[field]
        if position < 0 or delete < 0 or position + delete > len(text):
            raise RecordValidationError(
                self.collection,
                [f"{field}: splice {position}+{delete} outside text of length {len(text)}"],
            )
        new_text = text[:position] + insert + text[position + delete :]
        self._schema.validate_values({**self.values(), field: new_text})
        self._commit(
            device_id, now, lambda tx: _splice(tx, self._text_obj(field), position, delete, insert)
        )

    def delete(self, *, device_id: str, now: datetime | None = None) -> bool:
        """Tombstone the record (it stays, marked deleted). False if it already was."""
        return self._set_deleted(True, device_id, now)

    def restore(self, *, device_id: str, now: datetime | None = None) -> bool:
        """Undo a tombstone. False if the record was not deleted."""
        return self._set_deleted(False, device_id, now)

    def resolve(
        self, field: str, value: Any, *, device_id: str, now: datetime | None = None
    ) -> None:
        """Write `value` to a conflicted field, superseding every concurrent value.

        Raises:
            NoConflictError: The field has no conflict.
            RecordValidationError: The value is invalid.
        """
        if not any(c.field == field for c in self.conflicts()):
            raise NoConflictError(f"{self.collection} {self.id} has no conflict on {field!r}")
        candidate = self._schema.validate_values({**self.values(), field: value})
        # Written even when equal to the current winner: a new write is what makes
        # the other concurrent values history instead of live alternatives.
        self._write({field: candidate.model_dump(mode="json")[field]}, device_id=device_id, now=now)

    def merge(self, other: RecordDocument) -> bool:
        """Merge another replica of this record into this one.

        The merged result is validated first; if it is invalid this document is left
        exactly as it was.

        Returns:
            True if anything new arrived.

        Raises:
            DocumentError: `other` is a different record.
            MergeRejectedError: The merged document would be invalid.
        """
        if other.collection != self.collection or other.id != self.id:
            raise DocumentError(
                f"cannot merge {other.collection}/{other.id} into {self.collection}/{self.id}"
            )
        candidate = self._doc.fork()
        candidate.set_actor(self._doc.get_actor())
        try:
            candidate.merge(other._doc)
        except Exception as exc:  # the binding raises bare Exception
            raise MergeRejectedError(self.id, f"automerge refused the changes: {exc}") from None
        return self.adopt(candidate)

    def adopt(self, candidate: am.Document) -> bool:
        """Replace this document by `candidate` (a descendant of it) if it validates.

        Used after `merge` and after receiving sync-protocol messages into a fork.

        Returns:
            True if the candidate has changes this document lacked.

        Raises:
            MergeRejectedError: The candidate would be invalid; nothing changed.
        """
        if sorted(candidate.get_heads()) == self.heads:
            return False
        reason = self.check_descendant(candidate)
        if reason is not None:
            raise MergeRejectedError(self.id, reason)
        self._doc = candidate
        self._record = self._saved = None
        return True

    def check_descendant(self, candidate: am.Document) -> str | None:
        """Why `candidate` may not replace this document, or None if it may."""
        try:
            schema = _schema_of(candidate)
        except DocumentError as exc:
            return str(exc)
        if schema is not self._schema:
            return f"collection changed from {self.collection} to {schema.collection}"
        values = _current_values(candidate, schema)
        try:
            schema.validate_values(values)
        except RecordValidationError as exc:
            return "; ".join(exc.errors)
        mine = self.values()
        moved = [n for n in sorted(schema.immutable_fields) if values.get(n) != mine.get(n)]
        if moved:
            return "immutable field changed: " + ", ".join(moved)
        return None

    # --------------------------------------------------- conflicts and history
    def conflicts(self) -> list[FieldConflict]:
        """Fields whose concurrent writes left live values that differ.

        The result is a pure function of the document's changes, so every replica
        that has the same changes reports the same conflicts in the same order.
        """
        changes = self._doc.get_changes([])
        if _is_linear(changes):
            return []
        ancestors = _ancestors(changes)
        found: list[FieldConflict] = []
        for name in sorted(self._doc.keys(am.ROOT)):
            if name in _BOOKKEEPING or self._schema.field_kind(name) is FieldKind.TEXT:
                continue
            live = self._live_writes(name, changes, ancestors)
            if len(live) < 2:
                continue
            current = self._doc.get(am.ROOT, name)
            current_op = current[1] if current else b""
            values = sorted(
                (
                    ConflictValue(
                        value=_decode(self._schema, name, got[0]),
                        device_id=device_for_actor(actor),
                        current=got[1] == current_op,
                    )
                    for actor, got in live
                ),
                key=lambda v: (v.device_id, _canonical_json(v.value)),
            )
            if len({_canonical_json(v.value) for v in values}) < 2:
                continue  # devices that agreed (both deleted, both "healed"): nothing to decide
            found.append(FieldConflict(self.id, self.collection, name, tuple(values)))
        return found

    def history(self) -> list[HistoryEntry]:
        """Every change to the record, oldest first: device, time and fields written.

        A field counts as written when the change made a new write to it, even of an
        equal value (resolving a conflict in favour of the current value is a write).
        """
        entries = []
        for change in self._doc.get_changes([]):
            after = [change.hash]
            fields = _fields_written(self._doc, after, list(change.deps))
            deleted = _scalar_at(self._doc, "deleted", after)
            if not change.deps:
                action = "created"
            elif "deleted" in fields:
                action = "deleted" if deleted else "restored"
            else:
                action = "updated"
            entries.append(
                HistoryEntry(
                    change=change.hash.hex(),
                    device_id=device_for_actor(change.actor_id),
                    at=datetime.fromisoformat(str(_scalar_at(self._doc, "updated_at", after))),
                    action=action,
                    fields=tuple(
                        f
                        for f in fields
                        if f not in META_FIELDS or (f == "deleted" and action != "created")
                    ),
                )
            )
        entries.sort(key=lambda e: (e.at, e.change))
        return entries

    # ---------------------------------------------------------------- internals
    def _write(self, dumped: Mapping[str, Any], *, device_id: str, now: datetime | None) -> None:
        def apply(tx: am.Transaction) -> None:
            for name, value in dumped.items():
                if self._schema.field_kind(name) is FieldKind.TEXT:
                    old = tx.text(self._text_obj(name))
                    for pos, delete, insert in _text_splices(old, value):
                        _splice(tx, self._text_obj(name), pos, delete, insert)
                else:
                    _put(tx, self._schema, name, value)

        self._commit(device_id, now, apply)

    def _set_deleted(self, deleted: bool, device_id: str, now: datetime | None) -> bool:
        if self.values().get("deleted") == deleted:
            return False
        self._commit(
            device_id, now, lambda tx: tx.put(am.ROOT, "deleted", am.ScalarType.Boolean, deleted)
        )
        return True

    def _commit(self, device_id: str, now: datetime | None, apply: Any) -> None:
        actor = actor_for_device(device_id)
        if self._doc.get_actor() != actor:
            self._doc.set_actor(actor)
        self._record = self._saved = None
        with self._doc.transaction() as tx:
            apply(tx)
            tx.put(am.ROOT, "updated_at", am.ScalarType.Str, (now or _now()).isoformat())
            tx.put(am.ROOT, "updated_by", am.ScalarType.Str, device_id)

    def _text_obj(self, field: str) -> bytes:
        got = self._doc.get(am.ROOT, field)
        if got is None or got[0] != am.ObjType.Text:
            raise DocumentError(f"{self.collection} {field} is not Automerge text")
        return got[1]

    def _live_writes(
        self,
        name: str,
        changes: Sequence[Any],
        ancestors: Mapping[bytes, frozenset[bytes]],
    ) -> list[tuple[bytes, _Got]]:
        """Writes of `name` that no later (causally following) write or delete superseded."""
        writes: list[tuple[Any, _Got]] = []
        touched: list[bytes] = []
        for change in changes:
            now = self._doc.get(am.ROOT, name, [change.hash])
            before = self._doc.get(am.ROOT, name, list(change.deps)) if change.deps else None
            if now is None:
                if before is not None:
                    touched.append(change.hash)
            elif before is None or now[1] != before[1]:
                writes.append((change, now))
                touched.append(change.hash)
        return [
            (change.actor_id, got)
            for change, got in writes
            if not any(change.hash in ancestors[other] for other in touched)
        ]


def _schema_of(doc: am.Document) -> type[Record]:
    got = doc.get(am.ROOT, _COLLECTION_KEY)
    if got is None or isinstance(got[0], am.ObjType):
        raise DocumentError("document has no collection: not a Coherency record")
    name = got[0][1]
    schema = COLLECTIONS.get(name) if isinstance(name, str) else None
    if schema is None:
        raise DocumentError(f"unknown collection {name!r}")
    return schema


def _reject_unknown(schema: type[Record], values: Iterable[str]) -> None:
    allowed = set(schema.data_fields())
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise RecordValidationError(
            schema.collection, [f"{name}: no such field (or not writable)" for name in unknown]
        )


def _put(tx: am.Transaction, schema: type[Record], name: str, value: Any) -> None:
    kind = schema.field_kind(name)
    if kind is FieldKind.TEXT:
        obj = tx.put_object(am.ROOT, name, am.ObjType.Text)
        _splice(tx, obj, 0, 0, value or "")
    elif kind is FieldKind.JSON:
        tx.put(am.ROOT, name, am.ScalarType.Str, _canonical_json(value))
    else:
        scalar_type, scalar = _encode_scalar(value)
        tx.put(am.ROOT, name, scalar_type, scalar)


def _splice(tx: am.Transaction, obj: bytes, position: int, delete: int, insert: str) -> None:
    for _ in range(delete):
        tx.delete(obj, position)
    # One element per character: the binding's multi-character insert makes one
    # element, which breaks positions for every later edit.
    for offset, char in enumerate(insert):
        tx.insert(obj, position + offset, am.ScalarType.Str, char)


def _decode(schema: type[Record], name: str, value: Any) -> Any:
    if isinstance(value, am.ObjType):
        return None  # text is read through Document.text, never here
    return _decode_scalar(schema.json_fields, name, value[1])


def _decode_scalar(json_fields: frozenset[str], name: str, scalar: Any) -> Any:
    if name in json_fields and isinstance(scalar, str):
        try:
            return json.loads(scalar)
        except ValueError:
            return scalar  # left for schema validation to reject
    return scalar


def _current_values(doc: am.Document, schema: type[Record]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    json_fields = schema.json_fields
    # keys() and values() walk the root map in the same (key) order: one call each,
    # rather than a get() per field, which is most of the cost of reading a record.
    names = doc.keys(am.ROOT)
    found: list[Any] = doc.values(am.ROOT)
    if len(names) != len(found):  # never expected; fall back to reading field by field
        found = [doc.get(am.ROOT, name) for name in names]
    for name, got in zip(names, found, strict=True):
        if name in (_COLLECTION_KEY, _SCHEMA_KEY) or got is None:
            continue
        value, obj = got
        if isinstance(value, tuple):
            values[name] = _decode_scalar(json_fields, name, value[1])
        elif value == am.ObjType.Text:
            values[name] = doc.text(obj)
        else:
            values[name] = None  # nested objects are not part of any schema
    return values


def _scalar_at(doc: am.Document, name: str, heads: list[bytes]) -> Any:
    got = doc.get(am.ROOT, name, heads)
    return None if got is None or isinstance(got[0], am.ObjType) else got[0][1]


def _fields_written(doc: am.Document, after: list[bytes], before: list[bytes]) -> list[str]:
    """Fields a change wrote: a new op id, or for text a changed text."""
    names = set(doc.keys(am.ROOT, after))
    if before:
        names |= set(doc.keys(am.ROOT, before))
    written = []
    for name in sorted(names - _BOOKKEEPING):
        now = doc.get(am.ROOT, name, after)
        then = doc.get(am.ROOT, name, before) if before else None
        if now is None or then is None:
            changed = now is not then
        elif now[0] == am.ObjType.Text and now[1] == then[1]:
            changed = doc.text(now[1], after) != doc.text(then[1], before)
        else:
            changed = now[1] != then[1]
        if changed:
            written.append(name)
    return written


def _is_linear(changes: Sequence[Any]) -> bool:
    """True if the changes form one chain: then no two writes can be concurrent."""
    previous: bytes | None = None
    for change in changes:
        deps = list(change.deps)
        if deps != ([previous] if previous is not None else []):
            return False
        previous = change.hash
    return True


def _ancestors(changes: Sequence[Any]) -> dict[bytes, frozenset[bytes]]:
    """Strict ancestors of each change (changes arrive in causal order)."""
    result: dict[bytes, frozenset[bytes]] = {}
    for change in changes:
        acc: set[bytes] = set()
        for dep in change.deps:
            acc.add(dep)
            acc |= result.get(dep, frozenset())
        result[change.hash] = frozenset(acc)
    return result
