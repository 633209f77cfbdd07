"""The sync-session wire format: pure functions from messages to bytes and back.

A message is a batch of entries, one per document, plus a small JSON object of
control fields. Layout (all integers big-endian)::

    magic    4 bytes  b"CHSY"
    version  u8       WIRE_VERSION
    flags    u8       0 (reserved)
    length   u32      bytes of body
    crc32    u32      of body
    body:
      control  u32 length + UTF-8 JSON object
      count    u32
      entries  count x (kind u8, doc id u8 length + ASCII, payload u32 length + bytes)

Anything that does not parse exactly, including trailing bytes, is a
`MalformedMessageError`; nothing is applied from a message that fails to decode.
"""

from __future__ import annotations

import enum
import json
import re
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from crdt._errors import MalformedMessageError, MessageTooLargeError, UnsupportedVersionError

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "WIRE_VERSION",
    "Entry",
    "EntryKind",
    "RecordHint",
    "SyncMessage",
    "decode_message",
    "encode_message",
    "entry_size",
]

MAGIC = b"CHSY"
WIRE_VERSION = 1
DEFAULT_MAX_MESSAGE_SIZE = 8 * 1024 * 1024
_HEADER = struct.Struct(">4sBBII")
_U32 = struct.Struct(">I")
_U16 = struct.Struct(">H")
_ENTRY_FIXED = 1 + 1 + 4  # kind, id length, payload length
_DOC_ID = re.compile(r"^[0-9A-Za-z._:-]{1,64}$")


class EntryKind(enum.IntEnum):
    """What an entry carries."""

    OFFER = 1  # payload: the sender's sorted heads of this document (32 bytes each)
    DOC = 2  # payload: the whole document, saved
    SYNC = 3  # payload: one Automerge sync-protocol message for this document
    REJECT = 4  # payload: UTF-8 reason the receiver refused this document
    RECORD = 5  # payload: a `RecordHint` for the DOC entry of the same id (pulls only)


@dataclass(frozen=True, slots=True)
class Entry:
    """One document's part of a message."""

    kind: EntryKind
    doc_id: str
    payload: bytes = b""


@dataclass(frozen=True, slots=True)
class SyncMessage:
    """A decoded message: control fields and a batch of entries."""

    control: Mapping[str, Any] = field(default_factory=dict)
    entries: Sequence[Entry] = ()


@dataclass(frozen=True, slots=True)
class RecordHint:
    """What the sender says a document it sends holds: its collection, its sorted heads,
    its record as compact JSON, and whether a field is in conflict.

    A pull may carry one after a DOC entry (an `EntryKind.RECORD` entry of the same
    id), so that a replica meeting the document for the first time can store it and
    its projection without loading it, and verify the claim in the background. A hint
    is a claim, never trusted on its own.
    """

    collection: str
    heads: tuple[bytes, ...]
    record_json: str
    conflicted: bool = False

    def encode(self) -> bytes:
        """The hint as an entry payload: flags, collection, heads, then the JSON."""
        name = self.collection.encode("ascii")
        return b"".join(
            (
                bytes((int(self.conflicted), len(name))),
                name,
                _U16.pack(len(self.heads)),
                *self.heads,
                self.record_json.encode(),
            )
        )

    @classmethod
    def decode(cls, payload: bytes) -> RecordHint:
        """Parse an `EntryKind.RECORD` payload.

        Raises:
            MalformedMessageError: It is not a well-formed hint.
        """
        try:
            flags, name_len = payload[0], payload[1]
            name = payload[2 : 2 + name_len].decode("ascii")
            at = 2 + name_len
            count = payload[at] << 8 | payload[at + 1]
            at += 2
            end = at + 32 * count
            if flags > 1 or len(name) != name_len or len(payload) < end:
                raise MalformedMessageError("a record hint is malformed")
            heads = tuple(payload[i : i + 32] for i in range(at, end, 32))
            record_json = payload[end:].decode()
        except (IndexError, UnicodeDecodeError):
            raise MalformedMessageError("a record hint is truncated or not UTF-8") from None
        return cls(name, heads, record_json, bool(flags))


def entry_size(entry: Entry) -> int:
    """Bytes `entry` adds to an encoded message."""
    return _ENTRY_FIXED + len(entry.doc_id) + len(entry.payload)


def encode_message(message: SyncMessage, *, max_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> bytes:
    """Encode `message` to bytes.

    Raises:
        MessageTooLargeError: The encoded message would exceed `max_size`.
        ValueError: A doc id is not a valid identifier.
    """
    control = json.dumps(dict(message.control), separators=(",", ":"), sort_keys=True).encode()
    parts = [_U32.pack(len(control)), control, _U32.pack(len(message.entries))]
    for entry in message.entries:
        if not _DOC_ID.match(entry.doc_id):
            raise ValueError(f"invalid doc id {entry.doc_id!r}")
        doc_id = entry.doc_id.encode("ascii")
        parts += [
            bytes((int(entry.kind), len(doc_id))),
            doc_id,
            _U32.pack(len(entry.payload)),
            entry.payload,
        ]
    body = b"".join(parts)
    size = _HEADER.size + len(body)
    if size > max_size:
        raise MessageTooLargeError(f"message of {size} bytes exceeds the {max_size}-byte cap")
    return _HEADER.pack(MAGIC, WIRE_VERSION, 0, len(body), zlib.crc32(body)) + body


def decode_message(
    data: bytes, *, max_size: int = DEFAULT_MAX_MESSAGE_SIZE, max_entries: int | None = None
) -> SyncMessage:
    """Decode bytes produced by `encode_message`.

    With `max_entries`, a message announcing more entries is refused before any entry
    is read (a few megabytes can announce a million tiny entries).

    Raises:
        MessageTooLargeError: `data` is longer than `max_size`, or holds more than
            `max_entries` entries.
        UnsupportedVersionError: Another wire version wrote it.
        MalformedMessageError: Anything else is wrong with it.
    """
    view = memoryview(data)
    if len(view) > max_size:
        raise MessageTooLargeError(f"message of {len(view)} bytes exceeds the {max_size}-byte cap")
    if len(view) < _HEADER.size:
        raise MalformedMessageError(f"truncated: {len(view)} bytes is shorter than the header")
    magic, version, flags, length, crc = _HEADER.unpack_from(view)
    if magic != MAGIC:
        raise MalformedMessageError("not a Coherency sync message (bad magic)")
    if version != WIRE_VERSION:
        raise UnsupportedVersionError(
            f"wire version {version} is not supported (this code reads {WIRE_VERSION})"
        )
    if flags:
        # Reserved: a writer that sets them means something this reader cannot honour.
        raise UnsupportedVersionError(f"wire flags {flags:#04x} are not supported")
    body = view[_HEADER.size :]
    if len(body) != length:
        raise MalformedMessageError(
            f"truncated or padded: header says {length} body bytes, got {len(body)}"
        )
    if zlib.crc32(body) != crc:
        raise MalformedMessageError("checksum mismatch: the message was corrupted")
    # One pass over the body's bytes with local names: a pull page holds thousands of
    # entries, and a method call per field was most of decoding one.
    data = bytes(body)
    end = len(data)
    _need(0, 4, end)
    (size,) = _U32.unpack_from(data, 0)
    _need(4, size + 4, end)
    try:
        control = json.loads(data[4 : 4 + size])
    except (ValueError, RecursionError):  # RecursionError: deeply nested JSON
        raise MalformedMessageError("control fields are not valid JSON") from None
    if not isinstance(control, dict):
        raise MalformedMessageError("control fields are not a JSON object")
    (count,) = _U32.unpack_from(data, 4 + size)
    pos = 8 + size
    if max_entries is not None and count > max_entries:
        raise MessageTooLargeError(
            f"message of {count} entries exceeds the {max_entries}-entry cap"
        )
    entries = []
    kinds, valid_id, unpack = _KINDS, _DOC_ID.match, _U32.unpack_from
    for _ in range(count):
        _need(pos, 2, end)
        kind_byte, id_len = data[pos], data[pos + 1]
        kind = kinds.get(kind_byte)
        if kind is None:
            raise MalformedMessageError(f"unknown entry kind {kind_byte}")
        pos += 2
        _need(pos, id_len, end)
        doc_id = data[pos : pos + id_len].decode("ascii", errors="replace")
        if not valid_id(doc_id):
            raise MalformedMessageError(f"invalid doc id {doc_id!r}")
        pos += id_len
        _need(pos, 4, end)
        (size,) = unpack(data, pos)
        pos += 4
        _need(pos, size, end)
        entries.append(Entry(kind, doc_id, data[pos : pos + size]))
        pos += size
    if pos < end:
        raise MalformedMessageError(f"{end - pos} unexpected trailing bytes")
    return SyncMessage(control=control, entries=tuple(entries))


_KINDS = {kind.value: kind for kind in EntryKind}


def _need(pos: int, n: int, end: int) -> None:
    if pos + n > end:
        raise MalformedMessageError(
            f"truncated: needed {n} bytes at offset {pos}, {end - pos} left"
        )
