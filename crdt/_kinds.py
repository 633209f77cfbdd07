"""How each field of a record is stored in its Automerge document, described and checked.

`stored_fields` says, for every root key of a record document (the schema's fields and
the bookkeeping keys ``collection``, ``schema_version`` and ``_auth``), which Automerge
kind holds it: a scalar of given types, a string holding canonical JSON, collaborative
text, or a map. `record_schemas` publishes that beside each schema's JSON Schema, so
another Automerge implementation can write records this one accepts; `kind_problems`
is the check every received document passes (another implementation's default for a
string, JavaScript Automerge's Text, reads like a string but is not one).
"""

from __future__ import annotations

import enum
import functools
import json
import types
import typing
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime
from typing import Any

from crdt._authorship import AUTH_FIELD, AUTHOR_FIELDS
from crdt._columnar import MAKE_MAP, MAKE_TEXT, SET, DocumentOps, Op
from crdt._operations import ChangeIndex
from crdt._schemas import COLLECTIONS, FieldKind, Record

__all__ = [
    "COLLECTION_KEY",
    "SCHEMA_KEY",
    "StoredField",
    "kind_problems",
    "record_schema_files",
    "record_schemas",
    "stored_fields",
]

COLLECTION_KEY = "collection"
SCHEMA_KEY = "schema_version"
"""The ``schema_version`` every record document is created with."""

_MAKE_LIST = 2
# The value type codes of the saved format each scalar type may be stored as. A float
# field also takes an int: JavaScript writes a whole number as one.
_TYPE_CODES: dict[str, frozenset[int]] = {
    "str": frozenset({6}),
    "int": frozenset({4}),
    "float": frozenset({4, 5}),
    "bool": frozenset({1, 2}),
    "null": frozenset({0}),
}
_SCALAR_NAMES = {
    "str": "a string scalar",
    "int": "an int scalar",
    "float": "a float scalar",
    "bool": "a boolean scalar",
    "null": "a null scalar",
}
_FOUND_SCALARS = {
    0: "a null scalar",
    1: "a boolean scalar",
    2: "a boolean scalar",
    3: "an unsigned int scalar",
    4: "an int scalar",
    5: "a float (f64) scalar",
    6: "a string scalar",
    7: "a bytes scalar",
    8: "a counter",
    9: "a timestamp scalar",
}
_FOUND_OBJECTS = {
    MAKE_MAP: "a map",
    _MAKE_LIST: "a list",
    MAKE_TEXT: "collaborative text (an Automerge Text object)",
    6: "a table",
}


@dataclass(frozen=True, slots=True)
class StoredField:
    """How one root key of a record document is stored and written.

    Attributes:
        name: The root key.
        kind: "scalar" (one Automerge scalar of `types`), "json" (a string scalar
            holding the value as canonical JSON), "text" (an Automerge Text object:
            collaborative text) or "map" (an Automerge map).
        types: For "scalar": the scalar types it may hold, of str, int, float, bool
            and null. For "json": ("str",). Empty for "text" and "map".
        encoding: What a string holds, when it is not free text (a date, a time, one
            of an enum's values, JSON), or None.
        written: Who writes it and when.
        bookkeeping: True for keys every change or the record's machinery writes
            (not clinical values).
        immutable: True if no change after creation may write a different value.
    """

    name: str
    kind: str
    types: tuple[str, ...]
    encoding: str | None
    written: str
    bookkeeping: bool
    immutable: bool

    def allows(self, op: Op) -> bool:
        """True if the root operation `op` (a write) stores this field as it must be."""
        if self.kind == "text":
            return op.action == MAKE_TEXT
        if self.kind == "map":
            return op.action == MAKE_MAP
        if op.action != SET:
            return False
        return any(op.value_type in _TYPE_CODES[name] for name in self.types)

    def expected(self) -> str:
        """What this field must be, as a refusal names it."""
        if self.kind == "text":
            return "collaborative text (an Automerge Text object)"
        if self.kind == "map":
            return "a map"
        if self.kind == "json":
            return "a string scalar holding JSON"
        return " or ".join(_SCALAR_NAMES[t] for t in self.types)


def _written(name: str) -> str:
    at_creation = {
        "id": "at creation: the record id (also the document id)",
        "clinic_id": "at creation: the clinic the record belongs to",
        "created_at": "at creation: when the record was created",
        "created_by": "at creation: the id of the device that created it (its actor)",
        "updated_at": "by every change: when the change was made",
        "updated_by": "by every change: the id of the device making it (its actor)",
        "deleted": "false at creation; true by a delete, false by a restore",
    }
    return at_creation.get(name, "by the app (created, then updated as a whole value)")


def _scalar_types(annotation: Any) -> tuple[list[str], list[str]]:
    """(scalar types, what the string holds) of a field's annotation."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _scalar_types(typing.get_args(annotation)[0])
    if origin is typing.Union or origin is types.UnionType:
        found: list[str] = []
        encodings: list[str] = []
        for arg in typing.get_args(annotation):
            kinds, encoding = _scalar_types(arg)
            found += [k for k in kinds if k not in found]
            encodings += [e for e in encoding if e not in encodings]
        return found, encodings
    if annotation is type(None):
        return ["null"], []
    if annotation is bool:
        return ["bool"], []
    if annotation is int:
        return ["int"], []
    if annotation is float:
        return ["float"], []
    if annotation is datetime:
        return ["str"], ["an ISO 8601 date-time with its UTC offset (not a timestamp scalar)"]
    if annotation is date:
        return ["str"], ["an ISO 8601 date (YYYY-MM-DD)"]
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        values = ", ".join(str(member.value) for member in annotation)
        return ["str"], [f"one of: {values}"]
    if annotation is str:
        return ["str"], []
    raise TypeError(f"no Automerge scalar type for {annotation!r}")


@functools.cache
def stored_fields(schema: type[Record]) -> tuple[StoredField, ...]:
    """Every root key of `schema`'s documents and how it is stored, bookkeeping first."""
    immutable = schema.immutable_fields
    fields = [
        StoredField(
            COLLECTION_KEY,
            "scalar",
            ("str",),
            f"the collection name: {schema.collection}",
            "at creation",
            bookkeeping=True,
            immutable=True,
        ),
        StoredField(
            SCHEMA_KEY,
            "scalar",
            ("int",),
            f"the record schema version: {schema.schema_version}",
            "at creation, and by an upgrade (crdt.migrate)",
            bookkeeping=True,
            immutable=False,
        ),
        StoredField(
            AUTH_FIELD,
            "map",
            (),
            "the devices' Ed25519 public keys (key:<device id>) and signatures "
            "(sig:<device id>:<heads>) as bytes scalars",
            "by every signing device, in a change of its own after each of its changes",
            bookkeeping=True,
            immutable=False,
        ),
    ]
    for name, info in schema.model_fields.items():
        kind = schema.field_kind(name)
        if kind is FieldKind.TEXT:
            stored: tuple[str, tuple[str, ...], str | None] = ("text", (), None)
        elif kind is FieldKind.JSON:
            stored = ("json", ("str",), "the value as canonical JSON (sorted keys, no spaces)")
        else:
            scalars, encodings = _scalar_types(info.annotation)
            stored = ("scalar", tuple(scalars), "; ".join(encodings) or None)
        written = _written(name)
        if name in AUTHOR_FIELDS:
            written += "; must be the id of the device whose change writes it"
        fields.append(
            StoredField(
                name,
                *stored,
                written=written,
                bookkeeping=name in {"updated_at", "updated_by"},
                immutable=schema.frozen or name in immutable,
            )
        )
    return tuple(fields)


@functools.cache
def _by_name(schema: type[Record]) -> dict[str, StoredField]:
    return {f.name: f for f in stored_fields(schema)}


def kind_problems(
    schema: type[Record],
    ops: DocumentOps,
    changes: Sequence[Any],
    *,
    known: Collection[bytes] = frozenset(),
) -> list[str]:
    """Why the writes of the changes not in `known` (hashes) store a field as the
    wrong Automerge kind: one line per field, naming the expected and found kinds.

    Every write counts, not only the live one: a value hidden behind a concurrent one
    shows again in a conflict or in history. Keys the schema does not have are left to
    schema validation.
    """
    fields = _by_name(schema)
    index = ChangeIndex(changes) if known else None
    problems: dict[str, str] = {}
    for op in ops.root:
        if not op.writes_value or op.key in problems:
            continue
        stored = fields.get(op.key)
        if stored is None or stored.allows(op):
            continue
        if index is not None and changes[index.change_of(op.id)].hash in known:
            continue
        problems[op.key] = f"{op.key}: expected {stored.expected()}, found {_found(op)}"
    return [problems[name] for name in sorted(problems)]


def _found(op: Op) -> str:
    if op.action == SET:
        return _FOUND_SCALARS.get(op.value_type or 0, f"a scalar of type {op.value_type}")
    return _FOUND_OBJECTS.get(op.action, f"an object (action {op.action})")


def record_schemas() -> dict[str, dict[str, Any]]:
    """The published description of every record collection, by collection name.

    Each is a JSON Schema (2020-12) of the record's values as they read (the pydantic
    model's serialisation schema), with ``x-coherency`` saying how the record is stored
    in its Automerge document: the collection, the schema version, whether devices may
    write it and whether it is frozen after creation, and per root key (the fields and
    the bookkeeping keys) its Automerge kind (``StoredField``). Another Automerge
    implementation writes records this one accepts by following it.
    """
    published: dict[str, dict[str, Any]] = {}
    for name, schema in sorted(COLLECTIONS.items()):
        document = schema.model_json_schema(mode="serialization")
        published[name] = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"{name}.schema.json",
            **document,
            "x-coherency": {
                "collection": name,
                "schema_version": schema.schema_version,
                "device_writable": schema.device_writable,
                "frozen": schema.frozen,
                "fields": {
                    f.name: {
                        k: list(v) if isinstance(v, tuple) else v
                        for k, v in asdict(f).items()
                        if k != "name"
                    }
                    for f in stored_fields(schema)
                },
            },
        }
    return published


def record_schema_files() -> dict[str, str]:
    """`record_schemas` as files: ``<collection>.schema.json`` name to its text (what
    ``coherency schema --out DIR`` writes and docs/schemas/ holds)."""
    return {
        f"{name}.schema.json": json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False)
        + "\n"
        for name, schema in record_schemas().items()
    }
