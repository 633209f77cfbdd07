"""Sync bundles: signed, encrypted files that carry records between devices with no network.

`export_bundle` writes what a peer may lack (or everything); `import_bundle` merges it
after checking the whole file. Layout (integers big-endian)::

    magic      8 bytes  b"COHBUNDL"
    version    u8       BUNDLE_VERSION
    length     u32      bytes of header
    header     UTF-8 JSON: format, version, sender device id and public key, clinic,
               created_at, peer_id, document count, cipher, KDF salt and costs, key check
    messages   each: u32 length + AES-256-GCM(sealed crdt sync message), length > 0
    end        u32 0
    signature  64 bytes: Ed25519 by the sender over SHA-256 of everything before it

The header holds nothing of a patient. Each message is an `encode_message` batch of
OFFER (the sender's heads) and DOC (saved document) entries, under the wire size cap.
The key is Argon2id(passphrase, salt) through HKDF, fresh per bundle (the salt is
random), so a message's nonce is just its index and a final flag. The associated data
binds the header's hash, the index and the final flag: a message dropped, reordered,
moved from another bundle or cut off after any message fails to authenticate. The key
check in the header tells a wrong passphrase from a damaged message.

An import reads the file three times through one open descriptor: the signature and
layout, then every message decrypted and decoded, then the merge. The second and third
passes compare each message with the hash taken in the first, so a file changed on
disk mid-import is refused, not half applied.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import os
import struct
import tempfile
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from crdt import (
    DEFAULT_MAX_MESSAGE_SIZE,
    Entry,
    EntryKind,
    MessageTooLargeError,
    SyncMessage,
    SyncProtocolError,
    SyncReport,
    apply_documents,
    decode_message,
    encode_message,
    entry_size,
)
from edge_sdk._errors import (
    BundleDecryptError,
    BundleFormatError,
    BundleSignatureError,
    RecordNotFoundError,
    StoreCorruptError,
    translated_errors,
)
from edge_sdk._files import replace_durably
from edge_sdk._identity import verify_signature
from edge_sdk._keys import Argon2Params, PassphraseKeyProvider, derive_subkey
from edge_sdk._replica import Replica, ReplicaHolder, replica_of
from edge_sdk._store import Store

__all__ = [
    "BUNDLE_FORMAT",
    "BUNDLE_VERSION",
    "BundleInfo",
    "export_bundle",
    "import_bundle",
    "read_bundle_info",
]

BUNDLE_FORMAT = "coherency-bundle"
BUNDLE_VERSION = 1

_MAGIC = b"COHBUNDL"
_PREFIX = struct.Struct(">8sBI")
_U32 = struct.Struct(">I")
_FINAL = struct.Struct(">QB")
_SIGNATURE_SIZE = 64
_TAG_SIZE = 16
_HEAD_SIZE = 32
_KEY_CHECK_SIZE = 16
_CIPHER = "aes-256-gcm"
_SIGNATURE_CONTEXT = b"coherency-bundle/1 signature\x00"
_AAD_CONTEXT = b"coherency-bundle/1 message\x00"
# A header is a few hundred bytes; the cap keeps a wrong file from being read whole.
_MAX_HEADER_SIZE = 64 * 1024
# Sealed messages are read whole (one at a time), so their size is capped on read too.
_MAX_SEALED_SIZE = DEFAULT_MAX_MESSAGE_SIZE + _TAG_SIZE
# What the exporter packs into one message (a module knob so tests can force several).
_MESSAGE_CAP = DEFAULT_MAX_MESSAGE_SIZE
_MESSAGE_OVERHEAD = 512  # wire header, control JSON and count: generous, checked on encode


@dataclass(frozen=True, slots=True)
class BundleInfo:
    """What a bundle's signed header says (nothing of a patient).

    Attributes:
        sender_device_id: The device that exported and signed it.
        sender_public_key: That device's raw 32-byte Ed25519 public key.
        clinic_id: The sender's clinic.
        created_at: When it was exported (UTC).
        peer_id: The device it was exported for, or None for anyone.
        documents: How many documents it carries.
        size_bytes: The file's size.
    """

    sender_device_id: str
    sender_public_key: bytes
    clinic_id: str
    created_at: datetime
    peer_id: str | None
    documents: int
    size_bytes: int


# ------------------------------------------------------------------------- export


@translated_errors()
def export_bundle(
    client: Replica | ReplicaHolder,
    path: str | os.PathLike[str],
    *,
    passphrase: str,
    peer_id: str | None = None,
    everything: bool = False,
    kdf: Argon2Params | None = None,
) -> BundleInfo:
    """Write a signed, encrypted bundle of the documents `peer_id` may lack.

    With `peer_id` (and not `everything`), only documents whose heads differ from what
    this store last knew the peer to hold travel, then the peer is recorded as holding
    what was exported: if that bundle is lost, export again with `everything=True`.
    Without `peer_id`, every document travels. The file appears whole or not at all.

    Args:
        client: The exporting `EdgeClient` (or its `Replica`); its device signs the bundle.
        path: The bundle file to write (replaced if it exists).
        passphrase: The bundle passphrase the importer must type.
        peer_id: The receiving device's id, to send only what it may lack.
        everything: Send every document even when `peer_id` is given.
        kdf: Argon2id costs for the bundle key; by default `Argon2Params()`.

    Returns:
        The bundle's header information.

    Raises:
        KeyProviderError: The passphrase is empty.
        MessageTooLargeError: One document is over the sync message size cap.
        OSError: The file cannot be written.
    """
    replica = replica_of(client)
    store = replica.store
    kek, kdf_params = PassphraseKeyProvider(passphrase, params=kdf or Argon2Params()).new_kek()
    key = derive_subkey(kek, "bundle/encryption")
    all_heads = store.document_heads()
    known = store.peer_heads(peer_id) if peer_id is not None and not everything else {}
    doc_ids = sorted(d for d, heads in all_heads.items() if known.get(d) != sorted(heads))
    created_at = datetime.now(UTC)
    header = {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "sender_device_id": replica.device_id,
        "sender_public_key": _b64(replica.identity.public_key),
        "clinic_id": replica.clinic_id,
        "created_at": created_at.isoformat(),
        "peer_id": peer_id,
        "documents": len(doc_ids),
        "cipher": _CIPHER,
        "kdf": kdf_params,
        "key_check": _b64(_key_check(kek)),
    }
    header_bytes = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    prefix = _PREFIX.pack(_MAGIC, BUNDLE_VERSION, len(header_bytes))
    header_digest = hashlib.sha256(prefix + header_bytes).digest()

    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    exported: dict[str, list[bytes]] = {}
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as out:
            running = hashlib.sha256()

            def write(data: bytes) -> None:
                running.update(data)
                out.write(data)

            write(prefix + header_bytes)
            sealer = AESGCM(key)
            index = 0
            pending: bytes | None = None  # held back until we know whether it is the last
            with replica.access("sync-read", "*") as access:
                try:
                    for message in _pack_messages(store, doc_ids, exported):
                        if pending is not None:
                            write(_seal(sealer, header_digest, index, pending, final=False))
                            index += 1
                        pending = message
                finally:
                    access.record_ids.extend(exported)
            if pending is None:  # nothing to send: one empty message still ends the stream
                pending = encode_message(SyncMessage({}, ()))
            write(_seal(sealer, header_digest, index, pending, final=True))
            write(_U32.pack(0))
            out.write(replica.identity.sign(_SIGNATURE_CONTEXT + running.digest()))
            out.flush()
            os.fsync(out.fileno())
        replace_durably(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if peer_id is not None and exported:
        store.set_peer_heads(peer_id, exported)
    return BundleInfo(
        sender_device_id=replica.device_id,
        sender_public_key=replica.identity.public_key,
        clinic_id=replica.clinic_id,
        created_at=created_at,
        peer_id=peer_id,
        documents=len(doc_ids),
        size_bytes=target.stat().st_size,
    )


def _pack_messages(
    store: Store, doc_ids: Sequence[str], exported: dict[str, list[bytes]]
) -> Iterator[bytes]:
    """Encoded messages of OFFER + DOC pairs, each under the cap; fills `exported`."""
    room = _MESSAGE_CAP - _MESSAGE_OVERHEAD
    batch: list[Entry] = []
    used = 0
    for doc_id in doc_ids:
        # The saved bytes and heads are read as one row, so the heads recorded for the
        # peer are exactly those of the bytes sent, whatever was written meanwhile.
        found = store.saved_with_heads(doc_id)
        if found is None:
            raise RecordNotFoundError(f"document {doc_id} vanished during the export")
        data, heads = found
        pair = [
            Entry(EntryKind.OFFER, doc_id, b"".join(heads)),
            Entry(EntryKind.DOC, doc_id, data),
        ]
        size = sum(entry_size(e) for e in pair)
        if size > room:
            raise MessageTooLargeError(
                f"document {doc_id} ({len(data)} bytes) exceeds the {_MESSAGE_CAP}-byte message cap"
            )
        if batch and used + size > room:
            yield encode_message(SyncMessage({}, tuple(batch)), max_size=_MESSAGE_CAP)
            batch, used = [], 0
        batch += pair
        used += size
        exported[doc_id] = heads
    if batch:
        yield encode_message(SyncMessage({}, tuple(batch)), max_size=_MESSAGE_CAP)


# ------------------------------------------------------------------------- reading


@translated_errors()
def read_bundle_info(path: str | os.PathLike[str]) -> BundleInfo:
    """Check a bundle's layout and signature and return its header, without decrypting.

    This does not say whether the signer is trusted here; `import_bundle` does.

    Raises:
        BundleFormatError: Not a bundle, truncated, padded or an unsupported version.
        BundleSignatureError: The signature does not verify.
        OSError: The file cannot be read.
    """
    with open(path, "rb") as f:
        return _scan(f, str(path)).info


@translated_errors()
def import_bundle(
    client: Replica | ReplicaHolder,
    path: str | os.PathLike[str],
    *,
    passphrase: str,
    trust_new_signer: bool = True,
) -> SyncReport:
    """Verify a bundle completely, then merge its documents into `client`'s store.

    Nothing is stored unless the layout, the signature, the signer, the clinic and
    every message check out. A signer is trusted on first use: its device id and key
    are remembered, and a later bundle claiming that device id with another key is
    refused. Importing a bundle again changes nothing. A document that fails
    validation is reported in `SyncReport.rejected` and does not stop the others.
    The merge is one transaction.

    Args:
        client: The importing `EdgeClient` (or its `Replica`).
        path: The bundle file.
        passphrase: The bundle passphrase chosen at export.
        trust_new_signer: Accept a signer this store has never seen (and remember it).

    Returns:
        What was merged: `received` holds ids stored new or changed.

    Raises:
        BundleFormatError: Not a bundle, truncated, padded, an unsupported version, or
            a message that is damaged or out of place.
        BundleSignatureError: The signature does not verify; the signer's key differs
            from the one trusted for its device id; the signer is new and
            `trust_new_signer` is False; or the bundle is from another clinic.
        BundleDecryptError: The passphrase is wrong.
        KeyProviderError: The passphrase is empty.
        OSError: The file cannot be read.
    """
    replica = replica_of(client)
    store = replica.store
    with open(path, "rb") as f:
        scan = _scan(f, str(path))
        info = scan.info
        new_signer = _check_sender(replica, info, trust_new_signer=trust_new_signer)
        key = _unlock(scan.header, passphrase)

        # Pass 2: every message must authenticate and decode before anything is stored.
        offers: dict[str, list[bytes]] = {}
        documents: set[str] = set()
        for message in _messages(f, scan, key):
            for entry in message.entries:
                if entry.kind is EntryKind.OFFER:
                    offers[entry.doc_id] = _split_heads(entry.payload, strict=True)
                elif entry.kind is EntryKind.DOC:
                    if entry.doc_id in documents:
                        raise BundleFormatError(f"document {entry.doc_id} appears twice")
                    documents.add(entry.doc_id)
                else:
                    raise BundleFormatError(f"unexpected {entry.kind.name} entry in a bundle")
        if len(documents) != info.documents:
            raise BundleFormatError(
                f"header announces {info.documents} documents, the messages hold {len(documents)}"
            )

        # Pass 3: merge, in one transaction with the trust and peer bookkeeping.
        report = SyncReport(bytes_received=info.size_bytes)
        with store.transaction():
            if new_signer:
                store.trust_signer(
                    info.sender_device_id, info.sender_public_key, datetime.now(UTC).isoformat()
                )
            for message in _messages(f, scan, key):
                report.messages_received += 1
                apply_documents(
                    replica.documents,
                    [(e.doc_id, e.payload) for e in message.entries if e.kind is EntryKind.DOC],
                    device_id=replica.device_id,
                    policy=replica.policy,
                    report=report,
                    authorship=replica.directory,
                )
            if offers and info.sender_device_id != replica.device_id:
                # So an export back to the sender skips what it already holds.
                store.set_peer_heads(info.sender_device_id, offers)
        return report


# ------------------------------------------------------------------------- internals


@dataclass(frozen=True, slots=True)
class _Frame:
    offset: int
    length: int
    digest: bytes


@dataclass(frozen=True, slots=True)
class _Scan:
    info: BundleInfo
    header: Mapping[str, Any]
    header_digest: bytes
    frames: tuple[_Frame, ...]


def _scan(f: BinaryIO, source: str) -> _Scan:
    """Pass 1: walk the layout, hash every byte, and verify the signature."""
    size = os.fstat(f.fileno()).st_size
    running = hashlib.sha256()
    prefix = f.read(_PREFIX.size)
    magic = prefix[: len(_MAGIC)]
    if not prefix or magic != _MAGIC[: len(magic)]:
        raise BundleFormatError(f"{source} is not a Coherency sync bundle")
    if len(prefix) < _PREFIX.size:
        raise BundleFormatError(f"{source}: truncated bundle (no complete header)")
    _magic, version, header_size = _PREFIX.unpack(prefix)
    if version != BUNDLE_VERSION:
        raise BundleFormatError(
            f"{source}: bundle version {version} is not supported (this code reads "
            f"{BUNDLE_VERSION})"
        )
    if header_size > _MAX_HEADER_SIZE:
        raise BundleFormatError(f"{source}: header of {header_size} bytes is implausibly large")
    header_bytes = _read_exact(f, header_size, source, "header")
    running.update(prefix + header_bytes)
    header_digest = hashlib.sha256(prefix + header_bytes).digest()
    header, info = _parse_header(header_bytes, source, size)

    frames: list[_Frame] = []
    while True:
        length_bytes = _read_exact(f, _U32.size, source, "message length")
        running.update(length_bytes)
        (length,) = _U32.unpack(length_bytes)
        if length == 0:
            break
        if length < _TAG_SIZE or length > _MAX_SEALED_SIZE:
            raise BundleFormatError(f"{source}: message {len(frames)} has an impossible length")
        offset = f.tell()
        sealed = _read_exact(f, length, source, f"message {len(frames)}")
        running.update(sealed)
        frames.append(_Frame(offset, length, hashlib.sha256(sealed).digest()))
    if not frames:
        raise BundleFormatError(f"{source}: bundle holds no messages")
    signature = _read_exact(f, _SIGNATURE_SIZE, source, "signature")
    if f.read(1):
        raise BundleFormatError(f"{source}: unexpected bytes after the signature")
    signed = _SIGNATURE_CONTEXT + running.digest()
    if not verify_signature(info.sender_public_key, signed, signature):
        raise BundleSignatureError(
            f"{source}: the signature does not verify (the bundle was altered or damaged)"
        )
    return _Scan(info, header, header_digest, tuple(frames))


def _parse_header(data: bytes, source: str, size: int) -> tuple[Mapping[str, Any], BundleInfo]:
    try:
        header = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise BundleFormatError(f"{source}: the bundle header is not valid JSON") from None
    if not isinstance(header, dict) or header.get("format") != BUNDLE_FORMAT:
        raise BundleFormatError(f"{source} is not a Coherency sync bundle")
    version = header.get("version")
    if version != BUNDLE_VERSION or isinstance(version, bool):
        raise BundleFormatError(f"{source}: bundle version {version!r} is not supported")
    if header.get("cipher") != _CIPHER or not isinstance(header.get("kdf"), dict):
        raise BundleFormatError(f"{source}: unknown cipher or key derivation in the header")

    def text(name: str) -> str:
        value = header.get(name)
        if not isinstance(value, str) or not value:
            raise BundleFormatError(f"{source}: header field {name!r} is missing or invalid")
        return value

    def blob(name: str, length: int) -> bytes:
        try:
            value = base64.b64decode(text(name), validate=True)
        except binascii.Error:
            raise BundleFormatError(f"{source}: header field {name!r} is malformed") from None
        if len(value) != length:
            raise BundleFormatError(f"{source}: header field {name!r} has the wrong length")
        return value

    sender = text("sender_device_id")
    try:
        canonical = str(uuid.UUID(sender))
        created_at = datetime.fromisoformat(text("created_at"))
    except ValueError:
        raise BundleFormatError(f"{source}: malformed sender id or creation time") from None
    if canonical != sender:
        raise BundleFormatError(f"{source}: sender device id {sender!r} is not canonical")
    documents = header.get("documents")
    if not isinstance(documents, int) or isinstance(documents, bool) or documents < 0:
        raise BundleFormatError(f"{source}: header field 'documents' is invalid")
    blob("key_check", _KEY_CHECK_SIZE)
    info = BundleInfo(
        sender_device_id=sender,
        sender_public_key=blob("sender_public_key", 32),
        clinic_id=text("clinic_id"),
        created_at=created_at,
        peer_id=None if header.get("peer_id") is None else text("peer_id"),
        documents=documents,
        size_bytes=size,
    )
    return header, info


def _check_sender(replica: Replica, info: BundleInfo, *, trust_new_signer: bool) -> bool:
    """Refuse an untrusted signer or a foreign clinic; True if the signer is new here."""
    if info.clinic_id != replica.clinic_id:
        raise BundleSignatureError(
            f"bundle is from clinic {info.clinic_id}, this device belongs to {replica.clinic_id}"
        )
    if info.sender_device_id == replica.device_id:
        if not hmac.compare_digest(info.sender_public_key, replica.identity.public_key):
            raise BundleSignatureError(
                "bundle claims to come from this very device but is signed with another key"
            )
        return False
    row = replica.store.trusted_signer(info.sender_device_id)
    if row is not None:
        if not hmac.compare_digest(row[0], info.sender_public_key):
            raise BundleSignatureError(
                f"bundle claims device {info.sender_device_id}, but is signed with a "
                f"different key than the one trusted for it since {row[1]}"
            )
        return False
    if not trust_new_signer:
        raise BundleSignatureError(
            f"bundle is signed by device {info.sender_device_id}, which is not trusted here"
        )
    return True


def _unlock(header: Mapping[str, Any], passphrase: str) -> bytes:
    """The bundle key, or BundleDecryptError if the passphrase is not the bundle's."""
    try:
        kek = PassphraseKeyProvider(passphrase).kek(header["kdf"])
    except StoreCorruptError as exc:  # the keyring's KDF parser speaks of keyrings
        raise BundleFormatError(f"bundle key derivation parameters are invalid: {exc}") from None
    expected = base64.b64decode(header["key_check"])
    if not hmac.compare_digest(_key_check(kek), expected):
        raise BundleDecryptError("the passphrase does not open this bundle")
    return derive_subkey(kek, "bundle/encryption")


def _messages(f: BinaryIO, scan: _Scan, key: bytes) -> Iterator[SyncMessage]:
    """Decrypt and decode each message, checking it is the one the signature covered."""
    opener = AESGCM(key)
    last = len(scan.frames) - 1
    for index, frame in enumerate(scan.frames):
        f.seek(frame.offset)
        sealed = f.read(frame.length)
        if not hmac.compare_digest(hashlib.sha256(sealed).digest(), frame.digest):
            raise BundleFormatError("the bundle file changed while it was being imported")
        final = index == last
        try:
            plain = opener.decrypt(
                _nonce(index, final), sealed, _aad(scan.header_digest, index, final)
            )
        except InvalidTag:
            # The key check passed, so the key is right: the message is damaged, out of
            # order, or the stream was cut short.
            raise BundleFormatError(
                f"message {index} of the bundle does not authenticate (damaged or out of place)"
            ) from None
        try:
            yield decode_message(plain)
        except SyncProtocolError as exc:
            raise BundleFormatError(f"message {index} of the bundle is malformed: {exc}") from None


def _seal(
    sealer: AESGCM, header_digest: bytes, index: int, message: bytes, *, final: bool
) -> bytes:
    sealed = sealer.encrypt(_nonce(index, final), message, _aad(header_digest, index, final))
    return _U32.pack(len(sealed)) + sealed


def _nonce(index: int, final: bool) -> bytes:
    # The key is unique to the bundle (random salt), so a counter nonce never repeats.
    return index.to_bytes(11, "big") + bytes((int(final),))


def _aad(header_digest: bytes, index: int, final: bool) -> bytes:
    return _AAD_CONTEXT + header_digest + _FINAL.pack(index, int(final))


def _key_check(kek: bytes) -> bytes:
    # A separate HKDF output: it reveals nothing of the encryption key, and the first
    # message's tag would offer a guesser the same passphrase test anyway.
    return derive_subkey(kek, "bundle/key-check")[:_KEY_CHECK_SIZE]


def _read_exact(f: BinaryIO, n: int, source: str, what: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise BundleFormatError(f"{source}: truncated bundle (the {what} is cut short)")
    return data


def _split_heads(joined: bytes, *, strict: bool = False) -> list[bytes]:
    if strict and len(joined) % _HEAD_SIZE:
        raise BundleFormatError("document heads are not a whole number of 32-byte hashes")
    return sorted(joined[i : i + _HEAD_SIZE] for i in range(0, len(joined), _HEAD_SIZE))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
