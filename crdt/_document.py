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
import functools
import json
import typing
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from automerge import core as am
from pydantic import BaseModel

from crdt._authorship import (
    AUTH_FIELD,
    KeyDirectory,
    Signer,
    key_entry,
    parse_entry,
    signature_entry,
    signed_heads_message,
)
from crdt._columnar import (
    SET,
    ColumnarError,
    DocumentOps,
    Op,
    read_document,
)
from crdt._errors import (
    DocumentError,
    DocumentTooCostlyError,
    MergeRejectedError,
    NoConflictError,
    RecordValidationError,
)
from crdt._ids import actor_for_device, device_for_actor
from crdt._kinds import COLLECTION_KEY, SCHEMA_KEY, kind_problems
from crdt._limits import DEFAULT_LIMITS, DocumentLimits
from crdt._migrations import migration_steps
from crdt._operations import (
    EPOCH,
    ChangeIndex,
    auth_objects,
    envelopes,
    fields_by_change,
    parse_time,
)
from crdt._schemas import COLLECTIONS, META_FIELDS, FieldKind, Record, new_record_id
from crdt._verify import Authorship

__all__ = [
    "DEFAULT_LIMITS",
    "ConflictValue",
    "DocumentLimits",
    "FieldConflict",
    "HistoryEntry",
    "RecordDocument",
    "actor_for_device",
    "device_for_actor",
]

_COLLECTION_KEY = COLLECTION_KEY
_SCHEMA_KEY = SCHEMA_KEY
_FIRST_VERSION = 1  # what a document without a schema version was written as
# Written by every change, so concurrent changes always "conflict" on them; they are
# bookkeeping, not clinical values, and are left out of conflict reports.
_BOOKKEEPING = frozenset({"updated_at", "updated_by", _COLLECTION_KEY, _SCHEMA_KEY, AUTH_FIELD})


@dataclass(frozen=True, slots=True)
class ConflictValue:
    """One of the concurrent values of a field, and the device that wrote it."""

    value: Any
    device_id: str
    current: bool  # the value every replica shows until a clinician resolves
    at: datetime | None = None
    """When it was written (the ``updated_at`` of the change that wrote it)."""


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
    device_id: str | None
    """The device that made the change; None when its Automerge actor is no device's
    (another implementation's actor that neither signs as a device nor writes its own
    id as ``updated_by``): `actor` then says who it was."""
    at: datetime
    action: str  # created | updated | deleted | restored
    fields: tuple[str, ...]
    verified: bool | None = None
    """True if the device's signature on the change verifies against the directory
    `history` was given; False if not; None when no directory was given."""
    actor: str = ""
    """The change's Automerge actor id, in hex (a device's is its UUID's 16 bytes)."""


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


# The scalar type of a JSON value by its exact Python type (a subclass, such as an
# enum member, goes through `_encode_scalar`).
_SCALAR_TYPES: Mapping[type, am.ScalarType] = {
    str: am.ScalarType.Str,
    bool: am.ScalarType.Boolean,
    int: am.ScalarType.Int,
    float: am.ScalarType.F64,
    type(None): am.ScalarType.Null,
}


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

    __slots__ = (
        "_conflict_free",
        "_doc",
        "_dumped",
        "_id",
        "_ops",
        "_record",
        "_saved",
        "_schema",
        "_values",
    )

    def __init__(
        self, doc: am.Document, schema: type[Record], *, saved: bytes | None = None
    ) -> None:
        self._doc = doc
        self._schema = schema
        self._id: str | None = None
        # Caches dropped on every change: the decoded values, the validated read and
        # the saved bytes (a document received whole is stored with the very bytes it
        # came in).
        self._record: Record | None = None
        self._values: dict[str, Any] | None = None
        self._dumped: dict[str, Any] | None = None
        self._saved = saved
        self._ops: DocumentOps | None = None
        # Known to hold no conflict: made by `create` and changed only locally since
        # (a local change supersedes every value it writes over, so adds none).
        self._conflict_free = False

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
        signer: Signer | None = None,
    ) -> RecordDocument:
        """Create a new record document, validating `values` against `schema`.

        With `signer` (the device `device_id`), the new change is signed (`seal`).

        Raises:
            RecordValidationError: A value is missing, unknown or invalid.
        """
        _check_signer(signer, device_id)
        _reject_unknown(schema, values)
        record_id = record_id or new_record_id()
        at = (now or _now()).isoformat()
        full = {
            **values,
            "id": record_id,
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
            tx.put(am.ROOT, _SCHEMA_KEY, am.ScalarType.Int, schema.schema_version)
            for name, kind in _field_plan(schema):
                value = dumped[name]
                scalar_type = _SCALAR_TYPES.get(type(value)) if kind is FieldKind.SCALAR else None
                if scalar_type is not None:
                    tx.put(am.ROOT, name, scalar_type, value)
                else:
                    _put(tx, schema, name, value)
        created = cls(doc, schema)
        created._id = record_id
        # The record as every later read sees it, validated from the stored values: the
        # same as `record` unless a free-form field holds what JSON changes (a caller's
        # datetime reads back as the string it was stored as).
        created._record = schema.validate_values(dumped) if _free_form(schema) else record
        created._dumped = dumped
        created._conflict_free = True
        if signer is not None:
            created._seal(signer)
        return created

    @classmethod
    def load(
        cls,
        data: bytes,
        *,
        device_id: str | None = None,
        limits: DocumentLimits | None = None,
    ) -> RecordDocument:
        """Load a saved document; `device_id` is the actor for later local writes.

        With `limits` (for bytes received from elsewhere), the document is measured
        before Automerge loads it.

        Raises:
            DocumentError: The bytes are not an Automerge document or not a record.
            DocumentTooCostlyError: Over `limits`.
        """
        if limits is not None:
            reason = limits.check_saved(bytes(data))
            if reason is not None:
                raise DocumentTooCostlyError(reason)
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
            if got is not None and got[0] == am.ObjType.Text:
                raise DocumentError("id: expected a string scalar, found collaborative text")
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

    @property
    def schema_version(self) -> int:
        """The record schema version the document was written (or last upgraded) at."""
        got = self._doc.get(am.ROOT, _SCHEMA_KEY)
        if got is None or isinstance(got[0], am.ObjType) or not isinstance(got[0][1], int):
            return _FIRST_VERSION
        return int(got[0][1])

    @property
    def newer_than_schema(self) -> bool:
        """True if a newer version of the code wrote the record (its schema version is
        above `schema.schema_version`): its values cannot be read or judged here, and
        it is kept as it is until the code is updated."""
        return self.schema_version > self._schema.schema_version

    @property
    def needs_upgrade(self) -> bool:
        """True if the record was written at an older schema version (see `upgrade`)."""
        return self.schema_version < self._schema.schema_version

    def upgrade(
        self, *, device_id: str, now: datetime | None = None, signer: Signer | None = None
    ) -> bool:
        """Bring the record to its collection's current schema version with the
        registered migrations (`crdt.migrate`): one change by `device_id`, signed with
        `signer`, writing the migrated fields and the new version.

        Returns:
            False if the record was already at the current version (or newer).

        Raises:
            RecordValidationError: The migrated record does not satisfy the schema.
        """
        target = self._schema.schema_version
        if self.schema_version >= target:
            return False
        values = _current_values(self._doc, self._schema)  # a migration may change it
        for step in migration_steps(self.collection, self.schema_version, target):
            values = {**values, **step(values)}
        candidate = self._schema.validate_values(values).model_dump(mode="json")
        current = self.values()
        changed = {
            name: candidate[name]
            for name in self._schema.data_fields()
            if candidate[name] != current.get(name)
        }

        def apply(tx: am.Transaction) -> None:
            for name, value in changed.items():
                _put(tx, self._schema, name, value)  # migrations change no text field
            tx.put(am.ROOT, _SCHEMA_KEY, am.ScalarType.Int, target)

        self._commit(device_id, now, apply, signer)
        return True

    def values(self) -> dict[str, Any]:
        """The record's stored values, decoded but not validated: decoded once until
        the next change (a merge reads them for its policy, its checks and the
        record), a fresh dict each call whose nested lists and maps are the cached
        ones: treat those as read-only."""
        if self._values is None:
            self._values = _current_values(self._doc, self._schema)
        return dict(self._values)

    def read(self) -> Record:
        """The record, validated against its schema."""
        if self._record is None:
            self._record = self._schema.validate_values(self.values())
        return self._record

    def dumped(self) -> dict[str, Any]:
        """The record as JSON-ready values (``read().model_dump(mode="json")``), cached
        until the next change: treat it as read-only."""
        if self._dumped is None:
            self._dumped = self.read().model_dump(mode="json")
        return self._dumped

    # ------------------------------------------------------------------ writing
    def update(
        self,
        changes: Mapping[str, Any],
        *,
        device_id: str,
        now: datetime | None = None,
        signer: Signer | None = None,
    ) -> list[str]:
        """Write the fields in `changes` that differ from the stored values.

        Every write method takes an optional `signer` (the device `device_id`): the
        change is then signed at once (`seal`).

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
            self._write(
                {name: candidate[name] for name in changed},
                device_id=device_id,
                now=now,
                signer=signer,
            )
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
        signer: Signer | None = None,
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
            device_id,
            now,
            lambda tx: _splice(tx, self._text_obj(field), position, delete, insert),
            signer,
        )

    def delete(
        self, *, device_id: str, now: datetime | None = None, signer: Signer | None = None
    ) -> bool:
        """Tombstone the record (it stays, marked deleted). False if it already was."""
        return self._set_deleted(True, device_id, now, signer)

    def restore(
        self, *, device_id: str, now: datetime | None = None, signer: Signer | None = None
    ) -> bool:
        """Undo a tombstone. False if the record was not deleted."""
        return self._set_deleted(False, device_id, now, signer)

    def resolve(
        self,
        field: str,
        value: Any,
        *,
        device_id: str,
        now: datetime | None = None,
        signer: Signer | None = None,
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
        self._write(
            {field: candidate.model_dump(mode="json")[field]},
            device_id=device_id,
            now=now,
            signer=signer,
        )

    def merge(
        self,
        other: RecordDocument,
        *,
        limits: DocumentLimits = DEFAULT_LIMITS,
        authorship: KeyDirectory | None = None,
    ) -> bool:
        """Merge another replica of this record into this one.

        The merged result is validated (measured against `limits`, and with
        `authorship` its new changes' signatures checked) first; if it is invalid this
        document is left exactly as it was.

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
        return self.adopt(candidate, limits=limits, authorship=authorship)

    def adopt(
        self,
        candidate: am.Document,
        *,
        limits: DocumentLimits = DEFAULT_LIMITS,
        authorship: KeyDirectory | None = None,
    ) -> bool:
        """Replace this document by `candidate` (a descendant of it) if it validates.

        Used after `merge` and after receiving sync-protocol messages into a fork.

        Returns:
            True if the candidate has changes this document lacked.

        Raises:
            MergeRejectedError: The candidate would be invalid; nothing changed.
        """
        if sorted(candidate.get_heads()) == self.heads:
            return False
        known = {change.hash for change in self._doc.get_changes([])}
        proposed = RecordDocument(candidate, self._schema)
        reason = limits.check_document(candidate) or self._descendant_problem(proposed, known)
        if reason is None and authorship is not None:
            reason = proposed.authorship(authorship, known=known)
        if reason is not None:
            raise MergeRejectedError(self.id, reason)
        self._doc = candidate
        self._record = self._dumped = self._values = self._saved = self._ops = None
        self._conflict_free = False
        return True

    def check_descendant(self, candidate: am.Document) -> str | None:
        """Why `candidate` may not replace this document, or None if it may."""
        known = {change.hash for change in self._doc.get_changes([])}
        return self._descendant_problem(RecordDocument(candidate, self._schema), known)

    def _descendant_problem(self, proposed: RecordDocument, known: set[bytes]) -> str | None:
        candidate = proposed._doc
        try:
            schema = _schema_of(candidate)
        except DocumentError as exc:
            return str(exc)
        if schema is not self._schema:
            return f"collection changed from {self.collection} to {schema.collection}"
        values = _current_values(candidate, schema)
        # A record a newer version wrote is kept as it is (it is not for this code to
        # judge fields, or kinds of fields, it does not know); the checks below it
        # still passes.
        if not proposed.newer_than_schema:
            kinds = proposed.kind_problem(known=known)
            if kinds is not None:
                return kinds
            try:
                schema.validate_values(values)
            except RecordValidationError as exc:
                return "; ".join(exc.errors)
        mine = self.values()
        fixed = set(values) | set(mine) if schema.frozen else schema.immutable_fields
        moved = [n for n in sorted(fixed) if values.get(n) != mine.get(n)]
        if moved:
            return "immutable field changed: " + ", ".join(moved)
        return proposed.frozen_problem() if schema.frozen else None

    def kind_problem(self, *, known: Collection[bytes] = frozenset()) -> str | None:
        """Why the changes not in `known` (hashes) store a field as the wrong Automerge
        kind, or None: a scalar written as collaborative text (JavaScript Automerge's
        default for a string), a time as a timestamp scalar, a number as a string...
        The kinds are those `crdt.record_schemas` publishes."""
        changes = self._doc.get_changes([]) if known else ()
        problems = kind_problems(self._schema, self._operations(), changes, known=known)
        return "; ".join(problems) or None

    def frozen_problem(self) -> str | None:
        """For a frozen record (an intent): why its history is not one creation plus
        its author's signatures, or None. Any other change after creation is refused."""
        if not self._schema.frozen:
            return None
        changes = self._doc.get_changes([])
        index = ChangeIndex(changes)
        signatures = envelopes(index, self._operations())
        writes = [c for i, c in enumerate(changes) if i not in signatures]
        if len(writes) != 1 or any(c.actor_id != writes[0].actor_id for c in changes):
            return f"{self.collection} cannot change after creation"
        return None

    # --------------------------------------------------- conflicts and history
    def conflicts(self) -> list[FieldConflict]:
        """Fields whose concurrent writes left live values that differ.

        The result is a pure function of the document's changes, so every replica
        that has the same changes reports the same conflicts in the same order. It
        costs one pass over the document's operations (linear in its history).
        """
        if self._conflict_free or _is_linear(self._doc.get_changes([])):
            return []
        by_field: dict[str, list[Op]] = {}
        ops = self._operations()
        for op in ops.root:
            if op.live and op.writes_value:
                by_field.setdefault(op.key, []).append(op)
        index = ChangeIndex(self._doc.get_changes([]))
        # Every change writes updated_at: the time of each change, by its position.
        written_at = {
            index.change_of(op.id): parse_time(op.value)
            for op in ops.root
            if op.key == "updated_at" and op.action == SET
        }
        found: list[FieldConflict] = []
        for name in sorted(by_field):
            live = by_field[name]
            if len(live) < 2 or name in _BOOKKEEPING:
                continue
            if name not in self._schema.model_fields:
                continue
            if self._schema.field_kind(name) is FieldKind.TEXT:
                continue
            # Automerge shows the write with the highest op id (counter, then actor).
            winner = max(op.id for op in live)
            values = sorted(
                (
                    ConflictValue(
                        value=_decode_op(self._schema, name, op),
                        device_id=device_for_actor(op.id[1]),
                        current=op.id == winner,
                        at=written_at.get(index.change_of(op.id)),
                    )
                    for op in live
                ),
                key=lambda v: (v.device_id, _canonical_json(v.value)),
            )
            if len({_canonical_json(v.value) for v in values}) < 2:
                continue  # devices that agreed (both deleted, both "healed"): nothing to decide
            found.append(FieldConflict(self.id, self.collection, name, tuple(values)))
        return found

    def history(self, *, directory: KeyDirectory | None = None) -> list[HistoryEntry]:
        """Every change to the record, oldest first: device, time and fields written.

        A field counts as written when the change made a new write to it, even of an
        equal value (resolving a conflict in favour of the current value is a write),
        deleted it, or (text) inserted or deleted characters. Signature envelopes are
        not listed. With `directory`, each entry says whether its author is verified.
        One pass over the document's operations.
        """
        changes = self._doc.get_changes([])
        index = ChangeIndex(changes)
        ops = self._operations()
        touched = fields_by_change(index, ops)
        signature_only = envelopes(index, ops)
        verified = None if directory is None else self.signed_changes(directory)
        declared = _declared_devices(ops) | _self_named_devices(changes, touched)
        entries: list[HistoryEntry] = []
        at_of: dict[bytes, datetime] = {}
        for position, change in enumerate(changes):
            written = touched[position]
            deps = list(change.deps)
            at = parse_time(written.get("updated_at"))
            if at is None:
                at = at_of.get(deps[0], EPOCH) if deps else EPOCH
            at_of[change.hash] = at
            if position in signature_only:
                continue
            if not deps:
                action = "created"
            elif "deleted" in written:
                action = "deleted" if written["deleted"] is True else "restored"
            else:
                action = "updated"
            signed = verified is not None and change.hash.hex() in verified
            entries.append(
                HistoryEntry(
                    change=change.hash.hex(),
                    device_id=_device_of(change.actor_id, declared, signed=signed),
                    at=at,
                    action=action,
                    fields=tuple(
                        f
                        for f in sorted(written)
                        if f not in _BOOKKEEPING
                        and (f not in META_FIELDS or (f == "deleted" and action != "created"))
                    ),
                    verified=None if verified is None else signed,
                    actor=change.actor_id.hex(),
                )
            )
        entries.sort(key=lambda e: (e.at, e.change))
        return entries

    def _operations(self) -> DocumentOps:
        """The document's operations as its saved form lists them (cached until a change)."""
        if self._ops is None:
            try:
                self._ops = read_document(self.save())
            except ColumnarError:
                # Bytes received whole may be several chunks (all applied on load):
                # save the document afresh; it is one chunk, then changes it could
                # not apply yet, which are not part of its state.
                try:
                    self._ops = read_document(self._doc.save(), trailing=True)
                except ColumnarError as exc:
                    raise DocumentError(f"cannot read the document's operations: {exc}") from None
        return self._ops

    # ---------------------------------------------------------------- internals
    def _write(
        self,
        dumped: Mapping[str, Any],
        *,
        device_id: str,
        now: datetime | None,
        signer: Signer | None,
    ) -> None:
        def apply(tx: am.Transaction) -> None:
            for name, value in dumped.items():
                if self._schema.field_kind(name) is FieldKind.TEXT:
                    old = tx.text(self._text_obj(name))
                    for pos, delete, insert in _text_splices(old, value):
                        _splice(tx, self._text_obj(name), pos, delete, insert)
                else:
                    _put(tx, self._schema, name, value)

        self._commit(device_id, now, apply, signer)

    def _set_deleted(
        self, deleted: bool, device_id: str, now: datetime | None, signer: Signer | None
    ) -> bool:
        if self.values().get("deleted") == deleted:
            return False
        self._commit(
            device_id,
            now,
            lambda tx: tx.put(am.ROOT, "deleted", am.ScalarType.Boolean, deleted),
            signer,
        )
        return True

    def _commit(
        self, device_id: str, now: datetime | None, apply: Any, signer: Signer | None
    ) -> None:
        _check_signer(signer, device_id)
        if self._schema.frozen:
            raise RecordValidationError(
                self.collection, [f"{self.collection} cannot change after creation"]
            )
        actor = actor_for_device(device_id)
        if self._doc.get_actor() != actor:
            self._doc.set_actor(actor)
        self._record = self._dumped = self._values = self._saved = self._ops = None
        with self._doc.transaction() as tx:
            apply(tx)
            tx.put(am.ROOT, "updated_at", am.ScalarType.Str, (now or _now()).isoformat())
            tx.put(am.ROOT, "updated_by", am.ScalarType.Str, device_id)
        if signer is not None:
            self._seal(signer)

    # ---------------------------------------------------------------- authorship
    def seal(self, signer: Signer) -> None:
        """Sign the document's current heads as `signer` (one small envelope change).

        The signature covers `signer`'s own changes up to these heads; see
        `crdt._authorship`. Called after every signed write; does nothing when the
        signer's latest change is already an envelope.
        """
        if not self._sealed_by(signer.device_id):
            self._seal(signer)

    def _seal(self, signer: Signer) -> None:
        heads = self._doc.get_heads()
        signature = signer.sign(signed_heads_message(self.id, heads))
        actor = actor_for_device(signer.device_id)
        if self._doc.get_actor() != actor:
            self._doc.set_actor(actor)
        # The envelope writes only the signature map, which no record value reads:
        # the validated record stays.
        self._saved = self._ops = None
        with self._doc.transaction() as tx:
            got = tx.get(am.ROOT, AUTH_FIELD)
            if got is not None and got[0] == am.ObjType.Map:
                auth = got[1]
            else:
                auth = tx.put_object(am.ROOT, AUTH_FIELD, am.ObjType.Map)
            declared = key_entry(signer.device_id)
            if tx.get(auth, declared) is None:
                tx.put(auth, declared, am.ScalarType.Bytes, signer.public_key)
            tx.put(auth, signature_entry(signer.device_id, heads), am.ScalarType.Bytes, signature)

    def _sealed_by(self, device_id: str) -> bool:
        """True if the device's latest change is an envelope: nothing of it to sign."""
        actor = actor_for_device(device_id)
        changes = self._doc.get_changes([])
        latest = max(
            (i for i, change in enumerate(changes) if change.actor_id == actor),
            key=lambda i: changes[i].seq,
            default=None,
        )
        if latest is None:
            return True
        return latest in envelopes(ChangeIndex(changes), self._operations())

    def authorship(
        self, directory: KeyDirectory, *, known: Collection[bytes] = frozenset()
    ) -> str | None:
        """Why the changes not in `known` (hashes) cannot be trusted, or None.

        Every such change must be signed by its actor's device, whose key `directory`
        gives for the record's clinic; every signature among them must verify; and a
        change that writes ``created_by``, ``updated_by`` or ``device_id`` must write
        its own device. Envelope changes (signatures only) need no signature.
        """
        return self._authorship(directory, known).problem()

    def signed_changes(self, directory: KeyDirectory) -> set[str]:
        """Hex hashes of the changes whose author `directory` verifies (for history)."""
        return self._authorship(directory, frozenset()).verified()

    def _authorship(self, directory: KeyDirectory, known: Collection[bytes]) -> Authorship:
        return Authorship(
            doc_id=self.id,
            # The validated record when already read (the same value, without
            # decoding every field again).
            clinic_id=(
                self._record.clinic_id
                if self._record is not None
                else self.values().get("clinic_id")
            ),
            changes=self._doc.get_changes([]),
            operations=self._operations,
            directory=directory,
            known=known,
        )

    def _text_obj(self, field: str) -> bytes:
        got = self._doc.get(am.ROOT, field)
        if got is None or got[0] != am.ObjType.Text:
            raise DocumentError(f"{self.collection} {field} is not Automerge text")
        return got[1]


def _schema_of(doc: am.Document) -> type[Record]:
    got = doc.get(am.ROOT, _COLLECTION_KEY)
    if got is None:
        raise DocumentError("document has no collection: not a Coherency record")
    if isinstance(got[0], am.ObjType):
        found = "collaborative text" if got[0] == am.ObjType.Text else "an object"
        raise DocumentError(f"{_COLLECTION_KEY}: expected a string scalar, found {found}")
    name = got[0][1]
    schema = COLLECTIONS.get(name) if isinstance(name, str) else None
    if schema is None:
        raise DocumentError(f"unknown collection {name!r}")
    return schema


@functools.cache
def _field_plan(schema: type[Record]) -> tuple[tuple[str, FieldKind], ...]:
    """Every field of `schema` with how it is stored, in declaration order."""
    return tuple((name, schema.field_kind(name)) for name in schema.model_fields)


@functools.cache
def _free_form(schema: type[BaseModel]) -> bool:
    """True if a field of `schema` (or of a model inside it) is typed `Any` anywhere."""
    seen: set[Any] = set()

    def has_any(annotation: Any) -> bool:
        if annotation is Any:
            return True
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if annotation in seen:
                return False
            seen.add(annotation)
            return any(has_any(f.annotation) for f in annotation.model_fields.values())
        return any(has_any(arg) for arg in typing.get_args(annotation))

    return has_any(schema)


@functools.cache
def _writable(schema: type[Record]) -> frozenset[str]:
    return frozenset(schema.data_fields())


def _reject_unknown(schema: type[Record], values: Iterable[str]) -> None:
    unknown = sorted(set(values) - _writable(schema))
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
        if name in (_COLLECTION_KEY, _SCHEMA_KEY, AUTH_FIELD) or got is None:
            continue
        value, obj = got
        if isinstance(value, tuple):
            values[name] = _decode_scalar(json_fields, name, value[1])
        elif value == am.ObjType.Text:
            values[name] = doc.text(obj)
        else:
            values[name] = None  # nested objects are not part of any schema
    return values


def _is_linear(changes: Sequence[Any]) -> bool:
    """True if the changes form one chain: then no two writes can be concurrent."""
    previous: bytes | None = None
    for change in changes:
        deps = list(change.deps)
        if deps != ([previous] if previous is not None else []):
            return False
        previous = change.hash
    return True


def _decode_op(schema: type[Record], name: str, op: Op) -> Any:
    if op.action != SET:
        return None  # a nested object (text): read through Document.text, never here
    return _decode_scalar(schema.json_fields, name, op.value)


def _declared_devices(ops: DocumentOps) -> set[str]:
    """The devices that declare a key in the document's ``_auth`` map."""
    auth = auth_objects(ops)
    declared = set()
    for nested in ops.nested:
        if nested.obj in auth and nested.key is not None:
            entry = parse_entry(nested.key)
            if entry is not None and entry[0] == "key":
                declared.add(entry[1])
    return declared


def _self_named_devices(changes: Sequence[Any], written: Sequence[Mapping[str, Any]]) -> set[str]:
    """The devices one of whose changes writes its own id as ``updated_by`` or
    ``created_by`` (a device's first change always does; Automerge drops a later
    write of the value a field already holds)."""
    named = set()
    for change, fields in zip(changes, written, strict=True):
        device = device_for_actor(change.actor_id)
        if device in (fields.get("updated_by"), fields.get("created_by")):
            named.add(device)
    return named


def _device_of(actor: bytes, declared: Collection[str], *, signed: bool) -> str | None:
    """The device a change's actor is, or None when the actor is no device's.

    A device's actor is its UUID's 16 bytes, and the device says so in the document:
    its signature verifies, it declares its key in ``_auth``, or it writes its own id
    as ``updated_by`` or ``created_by`` (`_self_named_devices`). Sixteen bytes alone
    prove nothing: another implementation's random actor is as long.
    """
    if len(actor) != 16:
        return None
    device = device_for_actor(actor)
    return device if signed or device in declared else None


def _check_signer(signer: Signer | None, device_id: str) -> None:
    if signer is not None and signer.device_id != device_id:
        raise ValueError(f"signer {signer.device_id} is not device {device_id}")
