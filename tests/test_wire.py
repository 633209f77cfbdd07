"""The sync-message wire format: exact round trips, and every kind of damage refused."""

from __future__ import annotations

import struct
import zlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crdt import (
    WIRE_VERSION,
    Entry,
    EntryKind,
    MalformedMessageError,
    MessageTooLargeError,
    SyncMessage,
    SyncProtocolError,
    UnsupportedVersionError,
    decode_message,
    encode_message,
)

HEADER = struct.Struct(">4sBBII")
PROPERTY = settings(max_examples=200, deadline=None, database=None)

doc_ids = st.text(
    alphabet="0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ._:-",
    min_size=1,
    max_size=64,
)
entries = st.builds(
    Entry,
    kind=st.sampled_from(EntryKind),
    doc_id=doc_ids,
    payload=st.binary(max_size=300),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)
messages = st.builds(
    SyncMessage,
    control=st.dictionaries(st.text(max_size=12), json_values, max_size=4),
    entries=st.lists(entries, max_size=8).map(tuple),
)


def sample() -> bytes:
    return encode_message(
        SyncMessage(
            {"offer_done": True, "note": "größe ✓"},
            (
                Entry(EntryKind.OFFER, "doc-1", b"\x01" * 32),
                Entry(EntryKind.DOC, "doc-2", b"automerge bytes"),
                Entry(EntryKind.SYNC, "doc:3", b""),
                Entry(EntryKind.REJECT, "doc.4", "refusé".encode()),
            ),
        )
    )


def frame(body: bytes, *, magic: bytes = b"CHSY", version: int = WIRE_VERSION) -> bytes:
    """A header with a correct length and checksum around any body."""
    return HEADER.pack(magic, version, 0, len(body), zlib.crc32(body)) + body


def body(control: bytes, *raw_entries: bytes, count: int | None = None) -> bytes:
    n = len(raw_entries) if count is None else count
    return struct.pack(">I", len(control)) + control + struct.pack(">I", n) + b"".join(raw_entries)


def raw_entry(kind: int, doc_id: bytes, payload: bytes = b"") -> bytes:
    return bytes((kind, len(doc_id))) + doc_id + struct.pack(">I", len(payload)) + payload


# ---------------------------------------------------------------- round trips


def test_round_trip_of_every_entry_kind() -> None:
    decoded = decode_message(sample())
    assert decoded.control == {"offer_done": True, "note": "größe ✓"}
    assert [(e.kind, e.doc_id, e.payload) for e in decoded.entries] == [
        (EntryKind.OFFER, "doc-1", b"\x01" * 32),
        (EntryKind.DOC, "doc-2", b"automerge bytes"),
        (EntryKind.SYNC, "doc:3", b""),
        (EntryKind.REJECT, "doc.4", "refusé".encode()),
    ]


def test_empty_message_round_trips() -> None:
    data = encode_message(SyncMessage())
    assert decode_message(data) == SyncMessage({}, ())
    assert data[:4] == b"CHSY"
    assert data[4] == WIRE_VERSION


def test_encoding_is_deterministic() -> None:
    assert sample() == sample()


@PROPERTY
@given(messages)
def test_random_messages_round_trip(message: SyncMessage) -> None:
    data = encode_message(message)
    decoded = decode_message(data)
    assert dict(decoded.control) == dict(message.control)
    assert tuple(decoded.entries) == tuple(message.entries)
    assert encode_message(decoded) == data


@pytest.mark.parametrize("doc_id", ["", "a" * 65, "has space", "ümlaut", "slash/no"])
def test_encode_refuses_invalid_doc_ids(doc_id: str) -> None:
    with pytest.raises(ValueError):
        encode_message(SyncMessage({}, (Entry(EntryKind.DOC, doc_id, b""),)))


# ---------------------------------------------------------------- damage


def test_every_truncation_is_malformed() -> None:
    data = sample()
    for size in range(len(data)):
        with pytest.raises(MalformedMessageError):
            decode_message(data[:size])


@pytest.mark.parametrize("mask", [0x01, 0x80, 0xFF])
def test_every_flipped_byte_is_refused(mask: int) -> None:
    data = sample()
    for offset in range(len(data)):
        damaged = bytearray(data)
        damaged[offset] ^= mask
        with pytest.raises(SyncProtocolError):
            decode_message(bytes(damaged))


def test_bad_magic_is_malformed() -> None:
    data = sample()
    with pytest.raises(MalformedMessageError, match="magic"):
        decode_message(b"XXXX" + data[4:])
    with pytest.raises(MalformedMessageError):
        decode_message(frame(data[HEADER.size :], magic=b"chsy"))


@pytest.mark.parametrize("version", [0, WIRE_VERSION + 1, 255])
def test_other_wire_versions_are_unsupported(version: int) -> None:
    with pytest.raises(UnsupportedVersionError):
        decode_message(frame(sample()[HEADER.size :], version=version))


def test_reserved_flags_are_unsupported() -> None:
    data = bytearray(sample())
    data[5] = 0x01
    with pytest.raises(UnsupportedVersionError):
        decode_message(bytes(data))


def test_over_the_cap_on_encode_and_on_decode() -> None:
    big = SyncMessage({}, (Entry(EntryKind.DOC, "doc", b"x" * 1000),))
    with pytest.raises(MessageTooLargeError):
        encode_message(big, max_size=1000)
    data = encode_message(big)
    with pytest.raises(MessageTooLargeError):
        decode_message(data, max_size=len(data) - 1)
    assert decode_message(data, max_size=len(data)).entries[0].payload == b"x" * 1000


def test_trailing_bytes_are_malformed() -> None:
    data = sample()
    with pytest.raises(MalformedMessageError):
        decode_message(data + b"\x00")
    # Trailing bytes inside a body whose length and checksum agree with them.
    padded = data[HEADER.size :] + b"extra"
    with pytest.raises(MalformedMessageError, match="trailing"):
        decode_message(frame(padded))


@pytest.mark.parametrize(
    "bad_body",
    [
        b"",
        body(b"not json"),
        body(b"[1, 2]"),
        body(b"\xff\xfe{}"),
        body(b"[" * 50_000),  # deeper than the JSON parser recurses
        body(b"{}", count=1),  # an entry promised but missing
        body(b"{}", raw_entry(9, b"doc")),  # unknown kind
        body(b"{}", raw_entry(2, b"")),  # empty doc id
        body(b"{}", raw_entry(2, b"bad id")),
        body(b"{}", raw_entry(2, "dök".encode())),
        body(b"{}", raw_entry(2, b"doc")[:-2]),  # payload length cut
        body(b"{}", bytes((2, 3)) + b"doc" + struct.pack(">I", 10) + b"short"),
        struct.pack(">I", 100) + b"{}",  # control length beyond the body
    ],
)
def test_well_framed_garbage_bodies_are_malformed(bad_body: bytes) -> None:
    with pytest.raises(MalformedMessageError):
        decode_message(frame(bad_body))


@PROPERTY
@given(st.binary(max_size=200))
def test_random_bytes_are_refused_as_sync_protocol_errors(data: bytes) -> None:
    with pytest.raises(SyncProtocolError):
        decode_message(data)


@settings(PROPERTY, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_random_bodies_in_a_valid_frame_decode_or_are_malformed(garbage: bytes) -> None:
    try:
        message = decode_message(frame(garbage))
    except MalformedMessageError:
        return
    # The rare body that parses is a message like any other.
    assert decode_message(encode_message(message)) == message


@PROPERTY
@given(messages, st.data())
def test_random_damage_to_random_messages_is_detected(message: SyncMessage, data: Any) -> None:
    encoded = encode_message(message)
    offset = data.draw(st.integers(0, len(encoded) - 1))
    mask = data.draw(st.integers(1, 255))
    damaged = bytearray(encoded)
    damaged[offset] ^= mask
    with pytest.raises(SyncProtocolError):
        decode_message(bytes(damaged))
