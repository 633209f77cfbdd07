"""A reader of Automerge's saved-document format, for what the binding does not expose.

The `automerge` 1.0.0rc1 binding returns only the winning value of a field (no
``get_all``), so conflicts and history used to be computed by reading the document at
every change's heads: quadratic in the history, and a long-lived record with one
concurrent branch cost seconds and gigabytes. A saved document (one "document chunk")
holds every operation once, with the ids of the operations that superseded it
(``succ``); an operation with no successor is a live value. Reading that is linear in
the number of operations.

Only what conflicts and history need is decoded: the root map's operations (key, id,
action, value, number of successors) and, for operations inside other objects, their
id and object (to attribute text edits to the change and field that made them).

Format: https://automerge.org/automerge-binary-format-spec/ (columnar encoding: LEB128
integers, run-length, delta and boolean columns, optional raw DEFLATE per column).
Anything that does not parse raises `ColumnarError`; callers treat the document as
unreadable (it was loaded by Automerge itself, so this means a format this reader
does not know).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ColumnarError",
    "DocumentOps",
    "Nested",
    "Op",
    "OpId",
    "measure_saved",
    "read_document",
]

_MAGIC = b"\x85\x6f\x4a\x83"
_CHUNK_DOCUMENT = 0

# Column types (the low three bits of a column spec); bit 3 marks DEFLATE.
_GROUP, _ACTOR, _ULEB, _DELTA, _BOOL, _STRING, _VALUE_META, _VALUE_RAW = range(8)
_DEFLATE = 0b1000

# Operation columns of a document chunk: (column id, type).
_OBJ_ACTOR, _OBJ_CTR = (0, _ACTOR), (0, _ULEB)
_KEY_ACTOR, _KEY_CTR, _KEY_STR = (1, _ACTOR), (1, _DELTA), (1, _STRING)
_ID_ACTOR, _ID_CTR = (2, _ACTOR), (2, _DELTA)
_ACTION = (4, _ULEB)
_VAL_META, _VAL_RAW = (5, _VALUE_META), (5, _VALUE_RAW)
_SUCC_NUM, _SUCC_ACTOR, _SUCC_CTR = (8, _GROUP), (8, _ACTOR), (8, _DELTA)

# Actions.
MAKE_MAP = 0
SET = 1
DELETE = 3
MAKE_TEXT = 4
_MAKES = frozenset({0, 2, 4, 6})

OpId = tuple[int, bytes]
"""An operation id: (counter, actor). Higher counter wins; equal counters by actor."""


class ColumnarError(ValueError):
    """The bytes are not a saved document this reader understands."""


@dataclass(frozen=True, slots=True)
class Op:
    """One operation of the root map."""

    key: str
    id: OpId
    action: int
    value: Any  # the scalar for SET; None for new objects
    successors: tuple[OpId, ...]  # the operations that overwrote or deleted it
    value_type: int | None = None
    """The saved format's type code of a SET's scalar (0 null, 1 false, 2 true, 3 uint,
    4 int, 5 f64, 6 string, 7 bytes, 8 counter, 9 timestamp); None for new objects."""

    @property
    def live(self) -> bool:
        """True if no later operation superseded it."""
        return not self.successors

    @property
    def writes_value(self) -> bool:
        """True for a write of a value or a new object (not a delete)."""
        return self.action == SET or self.action in _MAKES


@dataclass(frozen=True, slots=True)
class DocumentOps:
    """What conflicts and history need of a document's operations."""

    root: list[Op]  # in key order, then op id order
    nested: list[Nested]
    """Every operation inside another object (text characters, nested maps)."""


@dataclass(frozen=True, slots=True)
class Nested:
    """One operation inside an object other than the root map."""

    obj: OpId
    id: OpId
    successors: tuple[OpId, ...]
    key: str | None  # the map key, or None inside a list or text
    value: Any  # the scalar written, if any


# ---------------------------------------------------------------- primitives
class _Reader:
    __slots__ = ("data", "end", "pos")

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    def done(self) -> bool:
        return self.pos >= self.end

    def uleb(self) -> int:
        result = shift = 0
        data, pos, end = self.data, self.pos, self.end
        while True:
            if pos >= end:
                raise ColumnarError("truncated integer")
            byte = data[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                self.pos = pos
                return result
            shift += 7
            if shift > 63:
                raise ColumnarError("integer too long")

    def sleb(self) -> int:
        result = shift = 0
        data, pos, end = self.data, self.pos, self.end
        while True:
            if pos >= end:
                raise ColumnarError("truncated integer")
            byte = data[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                self.pos = pos
                if byte & 0x40:
                    result -= 1 << shift
                return result
            if shift > 63:
                raise ColumnarError("integer too long")

    def take(self, size: int) -> bytes:
        if size < 0 or self.pos + size > self.end:
            raise ColumnarError("truncated field")
        out = self.data[self.pos : self.pos + size]
        self.pos += size
        return out


def _booleans(data: bytes) -> Iterator[bool]:
    reader = _Reader(data)
    value = False
    while not reader.done():
        for _ in range(reader.uleb()):
            yield value
        value = not value


def _values(meta: bytes, raw: bytes, limit: int, types: list[int | None]) -> list[Any]:
    """The values of a value column; each one's type code is appended to `types`."""
    source = _Reader(raw)
    out: list[Any] = []
    for code in _column(meta, _UINT, limit):
        if code is None:
            out.append(None)
            types.append(None)
            continue
        kind, size = code & 0x0F, code >> 4
        types.append(kind)
        payload = source.take(size)
        if kind == 0:
            out.append(None)
        elif kind in (1, 2):
            out.append(kind == 2)
        elif kind in (3, 8, 9):  # unsigned, counter, timestamp: LEB128 ints
            out.append(_Reader(payload).uleb() if kind == 3 else _Reader(payload).sleb())
        elif kind == 4:
            out.append(_Reader(payload).sleb())
        elif kind == 5:
            if size != 8:
                raise ColumnarError("a float is not 8 bytes")
            out.append(struct.unpack("<d", payload)[0])
        elif kind == 6:
            try:
                out.append(payload.decode())
            except UnicodeDecodeError:
                raise ColumnarError("a string value is not UTF-8") from None
        else:
            out.append(payload)
    return out


# Column decoders for `read_document`: whole columns at once into lists, with the
# one-byte integer (nearly every integer in a record) read inline. A generator per
# column cost more than the rest of reading a document.
def _uleb_at(data: bytes, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise ColumnarError("truncated integer")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ColumnarError("integer too long")


def _sleb_at(data: bytes, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise ColumnarError("truncated integer")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            if byte & 0x40:
                result -= 1 << shift
            return result, pos
        if shift > 63:
            raise ColumnarError("integer too long")


_UINT, _INT, _STR = range(3)


def _column(data: bytes, kind: int, limit: int) -> list[Any]:
    """The first `limit` values of a run-length column of unsigned integers, signed
    integers or strings (repeated runs, literal runs and null runs)."""
    out: list[Any] = []
    pos, end = 0, len(data)
    while pos < end and len(out) < limit:
        byte = data[pos]
        if byte < 0x40:  # a one-byte positive count
            count, pos = byte, pos + 1
        else:
            count, pos = _sleb_at(data, pos, end)
        if count == 0:
            nulls, pos = _uleb_at(data, pos, end)
            out += [None] * min(nulls, limit - len(out))
            continue
        values = 1 if count > 0 else min(-count, limit - len(out))
        found: list[Any] = []
        for _ in range(values):
            if pos >= end:
                raise ColumnarError("truncated integer")
            byte = data[pos]
            value: Any
            if kind == _INT:
                if byte < 0x40:
                    value, pos = byte, pos + 1
                elif byte < 0x80:
                    value, pos = byte - 0x80, pos + 1
                else:
                    value, pos = _sleb_at(data, pos, end)
            else:
                if byte < 0x80:
                    value, pos = byte, pos + 1
                else:
                    value, pos = _uleb_at(data, pos, end)
                if kind == _STR:
                    size = value
                    if pos + size > end:
                        raise ColumnarError("truncated field")
                    try:
                        value = data[pos : pos + size].decode()
                    except UnicodeDecodeError:
                        raise ColumnarError("a key is not UTF-8") from None
                    pos += size
            found.append(value)
        if count > 0:
            out += found * min(count, limit - len(out))
        else:
            out += found
    return out


# ---------------------------------------------------------------- the chunk
def read_document(data: bytes, *, trailing: bool = False) -> DocumentOps:
    """The root map's operations and the ids of all other operations of a saved document.

    With `trailing`, chunks after the document chunk are ignored: `Document.save()`
    appends changes it holds but could not apply yet (their dependencies are missing),
    which are not part of the document's state.

    Raises:
        ColumnarError: `data` does not start with a document chunk of a known layout,
            or (without `trailing`) holds more than that chunk.
    """
    reader = _Reader(data)
    if reader.take(4) != _MAGIC:
        raise ColumnarError("not an Automerge chunk")
    reader.take(4)  # checksum: Automerge verified it when it loaded these bytes
    if reader.take(1)[0] != _CHUNK_DOCUMENT:
        raise ColumnarError("not a document chunk")
    length = reader.uleb()
    if reader.pos + length > len(data):
        raise ColumnarError("truncated chunk")
    if not trailing and reader.pos + length != len(data):
        raise ColumnarError("more than one chunk")
    reader.end = reader.pos + length
    actors = [reader.take(reader.uleb()) for _ in range(reader.uleb())]
    for _ in range(reader.uleb()):  # heads
        reader.take(32)
    change_columns = _column_layout(reader)
    op_columns = _column_layout(reader)
    reader.pos += sum(size for _, size in change_columns)
    columns: dict[tuple[int, int], bytes] = {}
    for spec, size in op_columns:
        raw = reader.take(size)
        if spec & _DEFLATE:
            try:
                raw = zlib.decompress(raw, -15)
            except zlib.error:
                raise ColumnarError("a compressed column does not inflate") from None
        columns[(spec >> 4, spec & 0b111)] = raw
    return _ops(columns, actors)


def _column_layout(reader: _Reader) -> list[tuple[int, int]]:
    return [(reader.uleb(), reader.uleb()) for _ in range(reader.uleb())]


def _ops(columns: dict[tuple[int, int], bytes], actors: list[bytes]) -> DocumentOps:
    def column(key: tuple[int, int], kind: int, size: int) -> list[Any]:
        # A column shorter than the operations reads as nulls past its end.
        values = _column(columns.get(key, b""), kind, size)
        return values + [None] * (size - len(values)) if len(values) < size else values

    def actor(index: int | None) -> bytes:
        if index is None or index >= len(actors):
            raise ColumnarError("an operation names an unknown actor")
        return actors[index]

    # The operations are those with an id; every other column is read that far only.
    count = _count(columns.get(_ID_ACTOR, b""), _Reader.uleb)
    id_actor = _column(columns.get(_ID_ACTOR, b""), _UINT, count)
    id_ctr = _running_total(_column(columns.get(_ID_CTR, b""), _INT, count))
    count = min(len(id_actor), len(id_ctr))
    obj_actor = column(_OBJ_ACTOR, _UINT, count)
    obj_ctr = column(_OBJ_CTR, _UINT, count)
    key_str = column(_KEY_STR, _STR, count)
    action = column(_ACTION, _UINT, count)
    value_types: list[int | None] = []
    values = _values(columns.get(_VAL_META, b""), columns.get(_VAL_RAW, b""), count, value_types)
    values += [None] * (count - len(values))
    value_types += [None] * (count - len(value_types))
    succ_num = column(_SUCC_NUM, _UINT, count)
    successors_in_all = sum(number or 0 for number in succ_num)
    succ_actor = column(_SUCC_ACTOR, _UINT, successors_in_all)
    succ_ctr = _running_total(column(_SUCC_CTR, _INT, successors_in_all))
    root: list[Op] = []
    nested: list[Nested] = []
    next_successor = 0
    for position in range(count):
        op_ctr = id_ctr[position]
        if op_ctr is None:
            raise ColumnarError("an operation has no id")
        op_id = (op_ctr, actor(id_actor[position]))
        number = succ_num[position] or 0
        if number:
            successors: tuple[OpId, ...] = tuple(
                (_counter(succ_ctr[at]), actor(succ_actor[at]))
                for at in range(next_successor, next_successor + number)
            )
            next_successor += number
        else:
            successors = ()
        o_actor, o_ctr, act = obj_actor[position], obj_ctr[position], action[position]
        value = values[position] if act == SET else None
        value_type = value_types[position] if act == SET else None
        if o_actor is None and o_ctr is None:
            key = key_str[position]
            if key is None or act is None:
                raise ColumnarError("a root operation has no key or action")
            root.append(Op(key, op_id, act, value, successors, value_type))
        else:
            if o_ctr is None:
                raise ColumnarError("an operation names no object")
            obj = (o_ctr, actor(o_actor))
            nested.append(Nested(obj, op_id, successors, key_str[position], value))
    return DocumentOps(root, nested)


def _running_total(steps: list[int | None]) -> list[int | None]:
    """A delta column's values: each the sum of the steps so far (nulls stay null)."""
    total = 0
    for position, step in enumerate(steps):
        if step is not None:
            total += step
            steps[position] = total
    return steps


def _counter(value: int | None) -> int:
    if value is None:
        raise ColumnarError("a successor has no counter")
    return value


# ---------------------------------------------------------------- cost before loading
_CHUNK_CHANGE, _CHUNK_COMPRESSED = 1, 2


def measure_saved(data: bytes, *, max_inflated: int) -> tuple[int, int]:
    """(changes, operations) that loading `data` would apply, read from chunk headers.

    Cheap: run-length columns are counted, not expanded, so a document whose history
    compresses to a few hundred bytes is measured without being loaded. Compressed
    chunks and columns are inflated up to `max_inflated` bytes in all.

    Raises:
        ColumnarError: Not Automerge chunks, or more than `max_inflated` once inflated.
    """
    budget = [max_inflated]
    reader = _Reader(data)
    changes = operations = 0
    while not reader.done():
        if reader.take(4) != _MAGIC:
            raise ColumnarError("not an Automerge chunk")
        reader.take(4)
        kind = reader.take(1)[0]
        body = reader.take(reader.uleb())
        if kind == _CHUNK_DOCUMENT:
            found_changes, found_ops = _measure_document(body, budget)
        elif kind == _CHUNK_CHANGE:
            found_changes, found_ops = 1, _measure_change(body, budget)
        elif kind == _CHUNK_COMPRESSED:
            found_changes, found_ops = 1, _measure_change(_inflate(body, budget), budget)
        else:
            raise ColumnarError(f"unknown chunk type {kind}")
        changes += found_changes
        operations += found_ops
    return changes, operations


def _inflate(raw: bytes, budget: list[int]) -> bytes:
    inflater = zlib.decompressobj(-15)
    try:
        out = inflater.decompress(raw, budget[0] + 1)
    except zlib.error:
        raise ColumnarError("compressed data does not inflate") from None
    if len(out) > budget[0] or inflater.unconsumed_tail:
        raise ColumnarError("compressed data inflates past the size limit")
    budget[0] -= len(out)
    return out


def _count(data: bytes, skip: Callable[[_Reader], Any]) -> int:
    """How many values a run-length column holds, without expanding its runs."""
    reader = _Reader(data)
    total = 0
    while not reader.done():
        count = reader.sleb()
        if count > 0:
            skip(reader)
            total += count
        elif count < 0:
            for _ in range(-count):
                skip(reader)
            total -= count
        else:
            total += reader.uleb()
    return total


def _columns_of(
    reader: _Reader, layout: list[tuple[int, int]], budget: list[int]
) -> dict[tuple[int, int], bytes]:
    found: dict[tuple[int, int], bytes] = {}
    for spec, size in layout:
        raw = reader.take(size)
        found[(spec >> 4, spec & 0b111)] = _inflate(raw, budget) if spec & _DEFLATE else raw
    return found


def _measure_document(body: bytes, budget: list[int]) -> tuple[int, int]:
    reader = _Reader(body)
    for _ in range(reader.uleb()):
        reader.take(reader.uleb())
    for _ in range(reader.uleb()):
        reader.take(32)
    change_layout = _column_layout(reader)
    op_layout = _column_layout(reader)
    change_columns = _columns_of(reader, change_layout, budget)
    op_columns = _columns_of(reader, op_layout, budget)
    changes = _count(change_columns.get((0, _ACTOR), b""), _Reader.uleb)
    operations = _count(op_columns.get(_ID_ACTOR, b""), _Reader.uleb)
    return changes, operations


def _measure_change(body: bytes, budget: list[int]) -> int:
    reader = _Reader(body)
    for _ in range(reader.uleb()):  # dependencies
        reader.take(32)
    reader.take(reader.uleb())  # actor
    reader.uleb()  # seq
    reader.uleb()  # start op
    reader.sleb()  # time
    reader.take(reader.uleb())  # message
    for _ in range(reader.uleb()):  # other actors
        reader.take(reader.uleb())
    columns = _columns_of(reader, _column_layout(reader), budget)
    return _count(columns.get(_ACTION, b""), _Reader.uleb)


# ---------------------------------------------------------------- native build
# setup.py compiles everything above this block with mypyc, as `crdt._columnar_native`
# (about twice as fast); the compiled copy carries the SHA-256 of this file, and is
# used only while it matches (an edited module runs as Python, with a warning, until
# it is rebuilt: `make install`). COHERENCY_PURE_PYTHON=1 at run time reads in Python too
# (to compare the two).
def _native() -> Any:
    import os

    if os.environ.get("COHERENCY_PURE_PYTHON") == "1":
        return None
    try:
        import crdt._columnar_native as native  # type: ignore[import-not-found]
    except ImportError:  # built without it (COHERENCY_PURE_PYTHON=1, or no compiler)
        return None
    import hashlib
    import warnings
    from pathlib import Path

    if hashlib.sha256(Path(__file__).read_bytes()).hexdigest() != native.SOURCE_SHA256:
        warnings.warn(
            "crdt._columnar_native was built from another version of crdt/_columnar.py; "
            "reading documents in pure Python until it is rebuilt (make install)",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    return native


def backend() -> str:
    """Which reader this install uses: ``"mypyc"`` (compiled) or ``"python"``."""
    return "python" if _NATIVE is None else "mypyc"


_NATIVE = _native()
if _NATIVE is not None:
    ColumnarError = _NATIVE.ColumnarError  # type: ignore[misc]
    DocumentOps = _NATIVE.DocumentOps  # type: ignore[misc]
    Nested = _NATIVE.Nested  # type: ignore[misc]
    Op = _NATIVE.Op  # type: ignore[misc]
    measure_saved = _NATIVE.measure_saved
    read_document = _NATIVE.read_document
