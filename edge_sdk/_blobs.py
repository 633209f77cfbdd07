"""Content-addressed blob stores: encrypted files on disk, or memory for tests.

Blobs (photos, depth maps, point clouds) are addressed by the SHA-256 of their
plaintext. `EncryptedFileBlobStore` keeps each blob in one file:

    header   magic "COHBLOB" | version 0x01 | file id (16 random bytes)
             | sealed metadata: AES-GCM(file key, sha256 | plaintext size) (56 bytes)
    chunks   AES-GCM(file key, 1 MiB of plaintext) each, the last one flagged final

The file key is HKDF(content key, salt=file id), so no two files share a key and the
chunk nonce can simply be the chunk index. Each chunk's nonce and associated data bind
its index and whether it is final, so reordering, truncation and appending are caught;
the sealed metadata binds the file to its hash, so a file moved or swapped in from
another blob is caught before any plaintext is returned. The metadata is written last,
by seeking back, because the hash is only known once the whole stream has been read.
File names are HMAC-SHA256(name key, hash): a directory listing reveals nothing of the
contents, not even which well-known file is stored.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import hmac
import io
import os
import secrets
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol, runtime_checkable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from crdt import is_sha256
from edge_sdk._errors import BlobCorruptError, BlobNotFoundError, StoreLockedError
from edge_sdk._files import fsync_dir, unlink_quietly
from edge_sdk._keys import derive_subkey

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = [
    "CHUNK_SIZE",
    "BlobRef",
    "BlobStore",
    "EncryptedFileBlobStore",
    "MemoryBlobStore",
]

CHUNK_SIZE = 1024 * 1024
"""Plaintext bytes per encrypted chunk (and per item yielded by `open`)."""

_MAGIC = b"COHBLOB"
_VERSION = 1
_PREFIX = _MAGIC + bytes([_VERSION])
_FILE_ID_SIZE = 16
_TAG_SIZE = 16
_META_PLAIN_SIZE = 32 + 8
_META_SIZE = _META_PLAIN_SIZE + _TAG_SIZE
_HEADER_SIZE = len(_PREFIX) + _FILE_ID_SIZE + _META_SIZE
_SEALED_CHUNK_SIZE = CHUNK_SIZE + _TAG_SIZE
# Nonce layout under a file key: 11-byte chunk index, then a kind byte. The kinds keep
# the metadata's nonce apart from every chunk's.
_KIND_CHUNK = 0
_KIND_FINAL_CHUNK = 1
_KIND_METADATA = 2
_TMP_DIR = "tmp"
# Temporary files this old are leftovers of a crash, not a write in progress.
_STALE_TMP_SECONDS = 24 * 60 * 60


@dataclass(frozen=True)
class BlobRef:
    """A stored blob.

    Attributes:
        sha256: Hex SHA-256 of the plaintext; the blob's address.
        size: Plaintext size in bytes.
    """

    sha256: str
    size: int


@runtime_checkable
class BlobStore(Protocol):
    """A content-addressed blob store. Blobs are addressed by the hex SHA-256 of their
    plaintext; putting the same content twice stores it once.
    """

    def put_stream(self, stream: BinaryIO) -> BlobRef:
        """Store everything `stream` yields until EOF, without holding it in memory."""
        ...

    def put_bytes(self, data: bytes) -> BlobRef:
        """Store `data`."""
        ...

    def open(self, sha256: str) -> Iterator[bytes]:
        """Yield the plaintext in chunks, each verified before it is yielded.

        Raises:
            BlobNotFoundError: No such blob (raised by the call, not on iteration).
            BlobCorruptError: The blob fails verification (may be raised mid-iteration,
                after earlier chunks were yielded).
        """
        ...

    def read_bytes(self, sha256: str) -> bytes:
        """Return the whole verified plaintext."""
        ...

    def copy_to(self, sha256: str, out: BinaryIO) -> int:
        """Write the verified plaintext to `out` and return the byte count.

        On BlobCorruptError `out` may already hold a verified prefix of the blob.
        """
        ...

    def exists(self, sha256: str) -> bool:
        """Whether a blob with this hash is stored (its content is not verified)."""
        ...

    def size(self, sha256: str) -> int:
        """The blob's plaintext size in bytes."""
        ...

    def list(self) -> Iterator[str]:
        """Yield the hash of every stored blob, in no particular order."""
        ...


class EncryptedFileBlobStore:
    """Blobs as AES-256-GCM encrypted files under `root`.

    Writes go to a temporary file that is renamed into place only when complete, so a
    crash never leaves a partial blob visible. Memory use is a few chunks whatever the
    blob size.

    Args:
        root: The directory holding the blobs; created if missing.
        key: A 32-byte key for blobs alone, e.g. `derive_subkey(data_key, "blobs")`.
    """

    def __init__(self, root: str | os.PathLike[str], key: bytes) -> None:
        self.root = Path(root)
        self._held_keys: _BlobKeys | None = _BlobKeys(key)
        self._tmp = self.root / _TMP_DIR
        self._tmp.mkdir(parents=True, exist_ok=True)
        self._remove_stale_tmp()

    def __repr__(self) -> str:
        return f"EncryptedFileBlobStore({str(self.root)!r})"

    @property
    def _keys(self) -> _BlobKeys:
        keys = self._held_keys
        if keys is None:
            raise StoreLockedError(f"{self.root}: the blob key was dropped (the store locked)")
        return keys

    def forget_key(self) -> None:
        """Drop the blob key from memory: every use raises `StoreLockedError` until
        `use_key` gives it back (the store's automatic logoff)."""
        self._held_keys = None

    def use_key(self, key: bytes) -> None:
        """Use `key` (again) for every blob."""
        self._held_keys = _BlobKeys(key)

    # --- writing ----------------------------------------------------------------

    def put_stream(self, stream: BinaryIO) -> BlobRef:
        """Encrypt and store everything `stream` yields until EOF."""
        return self._write(stream, self._keys)

    def put_bytes(self, data: bytes) -> BlobRef:
        """Encrypt and store `data`."""
        return self._write(io.BytesIO(data), self._keys)

    def _write(self, stream: _Reader, keys: _BlobKeys) -> BlobRef:
        fd, tmp_name = tempfile.mkstemp(prefix="put-", suffix=".tmp", dir=self._tmp)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as f:
                ref, file_id, file_key = _encrypt_stream(stream, f, keys)
                # Now that the hash is known, fill in the metadata slot left blank.
                f.seek(len(_PREFIX) + _FILE_ID_SIZE)
                f.write(_seal_metadata(file_key, file_id, ref))
                f.flush()
                os.fsync(f.fileno())
            target = self._path(ref.sha256, keys)
            if target.exists():
                return ref
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, target)
            fsync_dir(target.parent)
            return ref
        finally:
            unlink_quietly(tmp)

    # --- reading ----------------------------------------------------------------

    def open(self, sha256: str) -> Iterator[bytes]:
        """Yield the verified plaintext in chunks of up to `CHUNK_SIZE` bytes.

        Raises:
            BlobNotFoundError: No such blob.
            BlobCorruptError: The blob failed authentication or its hash check.
        """
        sha256 = _check_sha256(sha256)
        path = self._path(sha256, self._keys)
        # Verify the header now so a missing or swapped blob fails at the call.
        with _blob_file(path, sha256) as f:
            _read_header(f, path, sha256, self._keys)
        return self._chunks(path, sha256, self._keys)

    def _chunks(self, path: Path, sha256: str, keys: _BlobKeys) -> Iterator[bytes]:
        with _blob_file(path, sha256) as f:
            header = _read_header(f, path, sha256, keys)
            hasher = hashlib.sha256()
            aead = AESGCM(header.file_key)
            for index in range(header.chunk_count):
                final = index == header.chunk_count - 1
                sealed = f.read(_SEALED_CHUNK_SIZE if not final else header.last_sealed_size)
                nonce, aad = _chunk_nonce_aad(header.file_id, index, final)
                try:
                    plain = aead.decrypt(nonce, sealed, aad)
                except InvalidTag:
                    raise _corrupt(sha256, f"chunk {index} failed authentication") from None
                hasher.update(plain)
                yield plain
            if f.read(1) or not hmac.compare_digest(hasher.hexdigest(), sha256):
                raise _corrupt(sha256, "content does not match its hash")

    def read_bytes(self, sha256: str) -> bytes:
        """Return the whole verified plaintext."""
        return b"".join(self.open(sha256))

    def copy_to(self, sha256: str, out: BinaryIO) -> int:
        """Write the verified plaintext to `out`, one chunk at a time."""
        return _write_chunks(self.open(sha256), out)

    def exists(self, sha256: str) -> bool:
        """Whether the blob's file exists (its content is not verified)."""
        return self._path(_check_sha256(sha256), self._keys).is_file()

    def size(self, sha256: str) -> int:
        """The plaintext size, from the authenticated header."""
        sha256 = _check_sha256(sha256)
        path = self._path(sha256, self._keys)
        with _blob_file(path, sha256) as f:
            return _read_header(f, path, sha256, self._keys).size

    def list(self) -> Iterator[str]:
        """Yield the hash of every blob.

        Raises:
            BlobCorruptError: A blob file's header cannot be authenticated (the message
                names the file, since its hash is unknown).
        """
        for path in self._blob_files():
            yield _read_header_of_unknown(path, self._keys).sha256

    # --- rekey ------------------------------------------------------------------

    def rekey(self, new_key: bytes) -> None:
        """Re-encrypt every blob under `new_key`, one blob at a time.

        Each blob is written under the new key and renamed into place before its old
        file is removed, so a crash loses nothing; calling `rekey` again with the same
        new key (on a store opened with the old key) finishes the job. Afterwards this
        store uses `new_key`, and the old key reads nothing.

        Raises:
            BlobCorruptError: A blob fails verification; blobs before it are already
                re-encrypted, and it and those after it are untouched.
        """
        new_keys = _BlobKeys(new_key)
        if hmac.compare_digest(new_keys.name_key, self._keys.name_key):
            return
        for path in self._blob_files():
            try:
                header = _read_header_of_unknown(path, self._keys)
            except BlobCorruptError:
                # Already re-encrypted by an interrupted earlier rekey?
                _read_header_of_unknown(path, new_keys)
                continue
            source = self._chunks(path, header.sha256, self._keys)
            ref = self._write(_IteratorReader(source), new_keys)
            if ref.sha256 != header.sha256:  # pragma: no cover - _chunks verifies the hash
                raise _corrupt(header.sha256, "content changed while re-encrypting")
            os.unlink(path)
            fsync_dir(path.parent)
        self._held_keys = new_keys

    # --- paths ------------------------------------------------------------------

    def _path(self, sha256: str, keys: _BlobKeys) -> Path:
        name = keys.file_name(sha256)
        return self.root / name[:2] / name[2:4] / name

    def _blob_files(self) -> builtins.list[Path]:
        found: builtins.list[Path] = []
        for first in sorted(self.root.iterdir()):
            if len(first.name) != 2 or not first.is_dir():
                continue
            for second in sorted(first.iterdir()):
                if not second.is_dir():
                    continue
                found.extend(
                    path
                    for path in sorted(second.iterdir())
                    if is_sha256(path.name) and path.is_file()
                )
        return found

    def _remove_stale_tmp(self) -> None:
        cutoff = time.time() - _STALE_TMP_SECONDS
        for path in self._tmp.iterdir():
            # Best effort: another process may be finishing or removing the same file.
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()


class _Reader(Protocol):
    def read(self, size: int = -1, /) -> bytes | None: ...


class _BlobKeys:
    """The keys derived from a blob store key."""

    def __init__(self, key: bytes) -> None:
        self.name_key = derive_subkey(key, "blobs/names")
        self.content_key = derive_subkey(key, "blobs/content")

    def file_name(self, sha256: str) -> str:
        return hmac.new(self.name_key, bytes.fromhex(sha256), hashlib.sha256).hexdigest()

    def file_key(self, file_id: bytes) -> bytes:
        hkdf = HKDF(
            algorithm=hashes.SHA256(),
            length=32,
            salt=file_id,
            info=b"coherency/blobs/file-key/v1",
        )
        return hkdf.derive(self.content_key)


@dataclass(frozen=True)
class _Header:
    file_id: bytes
    file_key: bytes
    sha256: str
    size: int

    @property
    def chunk_count(self) -> int:
        # An empty blob is one empty final chunk; otherwise the final chunk is non-empty.
        return max(1, -(-self.size // CHUNK_SIZE))

    @property
    def last_sealed_size(self) -> int:
        return self.size - (self.chunk_count - 1) * CHUNK_SIZE + _TAG_SIZE

    @property
    def file_size(self) -> int:
        return _HEADER_SIZE + self.size + self.chunk_count * _TAG_SIZE


def _encrypt_stream(
    stream: _Reader, out: BinaryIO, keys: _BlobKeys
) -> tuple[BlobRef, bytes, bytes]:
    file_id = secrets.token_bytes(_FILE_ID_SIZE)
    file_key = keys.file_key(file_id)
    aead = AESGCM(file_key)
    out.write(_PREFIX + file_id + bytes(_META_SIZE))
    hasher = hashlib.sha256()
    size = 0
    index = 0
    chunk = _read_full(stream, CHUNK_SIZE)
    while True:
        # Read one chunk ahead: a chunk is final only if nothing follows it.
        following = _read_full(stream, CHUNK_SIZE) if len(chunk) == CHUNK_SIZE else b""
        final = not following
        hasher.update(chunk)
        size += len(chunk)
        nonce, aad = _chunk_nonce_aad(file_id, index, final)
        out.write(aead.encrypt(nonce, chunk, aad))
        if final:
            break
        chunk = following
        index += 1
    return BlobRef(sha256=hasher.hexdigest(), size=size), file_id, file_key


def _chunk_nonce_aad(file_id: bytes, index: int, final: bool) -> tuple[bytes, bytes]:
    kind = _KIND_FINAL_CHUNK if final else _KIND_CHUNK
    nonce = index.to_bytes(11, "big") + bytes([kind])
    aad = _PREFIX + file_id + index.to_bytes(8, "big") + bytes([final])
    return nonce, aad


def _seal_metadata(file_key: bytes, file_id: bytes, ref: BlobRef) -> bytes:
    plain = bytes.fromhex(ref.sha256) + ref.size.to_bytes(8, "big")
    return AESGCM(file_key).encrypt(_metadata_nonce(), plain, _PREFIX + file_id)


def _metadata_nonce() -> bytes:
    return bytes(11) + bytes([_KIND_METADATA])


def _read_header_of_unknown(path: Path, keys: _BlobKeys) -> _Header:
    """Read a header whose hash is not known in advance (listing, rekey)."""
    try:
        with builtins.open(path, "rb") as f:
            header = _parse_header(f.read(_HEADER_SIZE), keys)
            actual_size = os.fstat(f.fileno()).st_size
    except OSError as exc:
        raise BlobCorruptError(f"blob file {path} cannot be read: {exc}") from exc
    if header is None or header.file_size != actual_size:
        raise BlobCorruptError(f"blob file {path} failed authentication")
    if not hmac.compare_digest(keys.file_name(header.sha256), path.name):
        raise BlobCorruptError(f"blob file {path} holds blob {header.sha256}, not its own")
    return header


def _read_header(f: BinaryIO, path: Path, sha256: str, keys: _BlobKeys) -> _Header:
    header = _parse_header(f.read(_HEADER_SIZE), keys)
    if header is None:
        raise _corrupt(sha256, "header failed authentication")
    if not hmac.compare_digest(header.sha256, sha256):
        raise _corrupt(sha256, f"file holds blob {header.sha256} instead")
    if os.fstat(f.fileno()).st_size != header.file_size:
        raise _corrupt(sha256, "file is truncated or has extra data")
    return header


def _parse_header(data: bytes, keys: _BlobKeys) -> _Header | None:
    if len(data) != _HEADER_SIZE or not data.startswith(_PREFIX):
        return None
    file_id = data[len(_PREFIX) : len(_PREFIX) + _FILE_ID_SIZE]
    sealed = data[len(_PREFIX) + _FILE_ID_SIZE :]
    file_key = keys.file_key(file_id)
    try:
        plain = AESGCM(file_key).decrypt(_metadata_nonce(), sealed, _PREFIX + file_id)
    except InvalidTag:
        return None
    return _Header(
        file_id=file_id,
        file_key=file_key,
        sha256=plain[:32].hex(),
        size=int.from_bytes(plain[32:], "big"),
    )


@contextmanager
def _blob_file(path: Path, sha256: str) -> Iterator[BinaryIO]:
    """Open a blob file for reading; a missing file is BlobNotFoundError."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise BlobNotFoundError(f"no blob {sha256}") from None
    except OSError as exc:
        raise BlobCorruptError(f"blob {sha256} cannot be read: {exc}") from exc
    with os.fdopen(fd, "rb") as f:
        yield f


class _IteratorReader(io.RawIOBase):
    """A read-only stream over an iterator of byte chunks."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        super().__init__()
        self._chunks = chunks
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        target = memoryview(buffer).cast("B")
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = memoryview(chunk)
        count = min(len(target), len(self._pending))
        target[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count


def _read_full(stream: _Reader, size: int) -> bytes:
    """Read `size` bytes, or fewer only at EOF (streams may return short reads)."""
    first = stream.read(size)
    if first is None:
        raise BlockingIOError("put_stream needs a blocking stream")
    if len(first) == size or not first:
        return bytes(first)
    parts = [first]
    remaining = size - len(first)
    while remaining:
        more = stream.read(remaining)
        if more is None:
            raise BlockingIOError("put_stream needs a blocking stream")
        if not more:
            break
        parts.append(more)
        remaining -= len(more)
    return b"".join(parts)


def _write_chunks(chunks: Iterator[bytes], out: BinaryIO) -> int:
    total = 0
    for chunk in chunks:
        out.write(chunk)
        total += len(chunk)
    return total


def _check_sha256(sha256: str) -> str:
    normalized = sha256.lower()
    if not is_sha256(normalized):
        raise ValueError(f"not a hex SHA-256: {sha256!r}")
    return normalized


def _corrupt(sha256: str, reason: str) -> BlobCorruptError:
    return BlobCorruptError(f"blob {sha256} is corrupt: {reason}")


# --- in memory ----------------------------------------------------------------------


class MemoryBlobStore:
    """A `BlobStore` held in a dict, for tests and examples. Nothing is encrypted."""

    def __init__(self) -> None:
        self._blobs: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def put_stream(self, stream: BinaryIO) -> BlobRef:
        """Store everything `stream` yields (held in memory, by design)."""
        parts = []
        while chunk := _read_full(stream, CHUNK_SIZE):
            parts.append(chunk)
        return self.put_bytes(b"".join(parts))

    def put_bytes(self, data: bytes) -> BlobRef:
        """Store `data`."""
        data = bytes(data)
        sha256 = hashlib.sha256(data).hexdigest()
        with self._lock:
            self._blobs.setdefault(sha256, data)
        return BlobRef(sha256=sha256, size=len(data))

    def open(self, sha256: str) -> Iterator[bytes]:
        """Yield the blob in chunks of up to `CHUNK_SIZE` bytes."""
        data = self._get(sha256)
        return (data[i : i + CHUNK_SIZE] for i in range(0, max(len(data), 1), CHUNK_SIZE))

    def read_bytes(self, sha256: str) -> bytes:
        """Return the blob."""
        return self._get(sha256)

    def copy_to(self, sha256: str, out: BinaryIO) -> int:
        """Write the blob to `out` and return its size."""
        return _write_chunks(self.open(sha256), out)

    def exists(self, sha256: str) -> bool:
        """Whether the blob is stored."""
        with self._lock:
            return _check_sha256(sha256) in self._blobs

    def size(self, sha256: str) -> int:
        """The blob's size in bytes."""
        return len(self._get(sha256))

    def list(self) -> Iterator[str]:
        """Yield the hash of every blob."""
        with self._lock:
            hashes_now = builtins.list(self._blobs)
        return iter(hashes_now)

    def _get(self, sha256: str) -> bytes:
        sha256 = _check_sha256(sha256)
        with self._lock:
            data = self._blobs.get(sha256)
        if data is None:
            raise BlobNotFoundError(f"no blob {sha256}")
        return data
