"""The encrypted file blob store and the in-memory blob store."""

from __future__ import annotations

import hashlib
import io
import os
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from edge_sdk import (
    BlobCorruptError,
    BlobNotFoundError,
    BlobRef,
    BlobStore,
    EncryptedFileBlobStore,
    MemoryBlobStore,
)
from edge_sdk._blobs import CHUNK_SIZE

MiB = 1024 * 1024
HEADER_SIZE = 8 + 16 + 56
SEALED_CHUNK = CHUNK_SIZE + 16
MARKER = b"PATIENT-NAME:Ada-Okafor;MRN-000123;"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def blob_files(root: Path) -> list[Path]:
    return sorted(
        p for p in root.rglob("*") if p.is_file() and p.relative_to(root).parts[0] != "tmp"
    )


def only_blob_file(root: Path) -> Path:
    files = blob_files(root)
    assert len(files) == 1
    return files[0]


@pytest.fixture
def key() -> bytes:
    return os.urandom(32)


@pytest.fixture
def store(tmp_path: Path, key: bytes) -> EncryptedFileBlobStore:
    return EncryptedFileBlobStore(tmp_path / "blobs", key)


@pytest.fixture(params=["file", "memory"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "file":
        return EncryptedFileBlobStore(tmp_path / "blobs", os.urandom(32))
    return MemoryBlobStore()


SIZES = [0, 1, 1000, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE + 12345]
SIZE_IDS = ["empty", "1B", "1000B", "1MiB-1", "1MiB", "1MiB+1", "multi"]


# --- round trips ----------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
def test_round_trip(any_store: BlobStore, size: int) -> None:
    data = os.urandom(size)
    ref = any_store.put_bytes(data)

    assert ref == BlobRef(sha256=sha(data), size=size)
    assert any_store.exists(ref.sha256)
    assert any_store.size(ref.sha256) == size
    assert any_store.read_bytes(ref.sha256) == data
    chunks = list(any_store.open(ref.sha256))
    assert b"".join(chunks) == data
    assert all(len(c) <= CHUNK_SIZE for c in chunks)
    out = io.BytesIO()
    assert any_store.copy_to(ref.sha256, out) == size
    assert out.getvalue() == data
    assert list(any_store.list()) == [ref.sha256]


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
def test_file_layout_is_header_plus_sealed_chunks(
    store: EncryptedFileBlobStore, tmp_path: Path, size: int
) -> None:
    store.put_bytes(os.urandom(size))
    chunks = max(1, -(-size // CHUNK_SIZE))
    assert only_blob_file(tmp_path / "blobs").stat().st_size == HEADER_SIZE + size + 16 * chunks


def test_put_stream_handles_short_reads(any_store: BlobStore) -> None:
    class Trickle(io.RawIOBase):
        """Returns at most 1000 bytes per read, like a socket."""

        def __init__(self, data: bytes) -> None:
            self._data = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
            piece = self._data.read(min(len(buffer), 1000))
            buffer[: len(piece)] = piece
            return len(piece)

    data = os.urandom(2 * CHUNK_SIZE + 5)
    ref = any_store.put_stream(Trickle(data))  # type: ignore[arg-type]
    assert ref.sha256 == sha(data)
    assert any_store.read_bytes(ref.sha256) == data


def test_putting_the_same_content_twice_is_a_no_op(
    store: EncryptedFileBlobStore, tmp_path: Path
) -> None:
    data = os.urandom(5000)
    first = store.put_bytes(data)
    before = only_blob_file(tmp_path / "blobs").stat()
    second = store.put_stream(io.BytesIO(data))
    after = only_blob_file(tmp_path / "blobs").stat()
    assert first == second
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)
    assert list((tmp_path / "blobs" / "tmp").iterdir()) == []


def test_many_blobs_are_listed(any_store: BlobStore) -> None:
    refs = {any_store.put_bytes(os.urandom(n)).sha256 for n in (0, 1, 2, 300, 70000)}
    assert set(any_store.list()) == refs


def test_store_reopened_with_same_key_reads(tmp_path: Path, key: bytes) -> None:
    ref = EncryptedFileBlobStore(tmp_path / "blobs", key).put_bytes(b"hello")
    assert EncryptedFileBlobStore(tmp_path / "blobs", key).read_bytes(ref.sha256) == b"hello"


def test_missing_blob(any_store: BlobStore) -> None:
    missing = sha(b"never stored")
    assert not any_store.exists(missing)
    with pytest.raises(BlobNotFoundError, match=missing):
        any_store.open(missing)
    with pytest.raises(BlobNotFoundError):
        any_store.read_bytes(missing)
    with pytest.raises(BlobNotFoundError):
        any_store.size(missing)
    with pytest.raises(BlobNotFoundError):
        any_store.copy_to(missing, io.BytesIO())


def test_malformed_hash_is_value_error(any_store: BlobStore) -> None:
    with pytest.raises(ValueError):
        any_store.read_bytes("../../etc/passwd")
    with pytest.raises(ValueError):
        any_store.exists("abc")


def test_uppercase_hash_is_accepted(any_store: BlobStore) -> None:
    ref = any_store.put_bytes(b"x")
    assert any_store.read_bytes(ref.sha256.upper()) == b"x"


def test_memory_blob_store_satisfies_the_protocol() -> None:
    assert isinstance(MemoryBlobStore(), BlobStore)


# --- confidentiality ------------------------------------------------------------------


def test_file_names_do_not_reveal_the_hash(store: EncryptedFileBlobStore, tmp_path: Path) -> None:
    refs = [store.put_bytes(os.urandom(n)) for n in (0, 10, CHUNK_SIZE + 3)]
    paths = [str(p.relative_to(tmp_path)) for p in (tmp_path / "blobs").rglob("*")]
    for ref in refs:
        for path in paths:
            assert ref.sha256 not in path
            assert ref.sha256[:16] not in path


def test_same_content_under_another_key_gets_another_name(tmp_path: Path) -> None:
    a = EncryptedFileBlobStore(tmp_path / "a", os.urandom(32))
    b = EncryptedFileBlobStore(tmp_path / "b", os.urandom(32))
    a.put_bytes(b"same")
    b.put_bytes(b"same")
    assert only_blob_file(tmp_path / "a").name != only_blob_file(tmp_path / "b").name


def test_plaintext_never_reaches_disk(store: EncryptedFileBlobStore, tmp_path: Path) -> None:
    data = MARKER * (3 * CHUNK_SIZE // len(MARKER))
    store.put_bytes(data)
    store.put_bytes(MARKER)
    for path in (tmp_path / "blobs").rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert MARKER not in content
            assert MARKER[:12] not in content


# --- tampering ------------------------------------------------------------------------


def flip(path: Path, offset: int) -> None:
    content = bytearray(path.read_bytes())
    content[offset] ^= 0x01
    path.write_bytes(bytes(content))


THREE_CHUNKS = 2 * CHUNK_SIZE + 777
OFFSETS = {
    "magic": 0,
    "version": 7,
    "file-id": 10,
    "metadata": 40,
    "chunk-0": HEADER_SIZE + 5,
    "chunk-0-tag": HEADER_SIZE + SEALED_CHUNK - 1,
    "chunk-1": HEADER_SIZE + SEALED_CHUNK + CHUNK_SIZE // 2,
    "final-chunk": HEADER_SIZE + 2 * SEALED_CHUNK + 100,
    "last-byte": -1,
}


@pytest.mark.parametrize("where", list(OFFSETS))
def test_flipped_bit_anywhere_is_corrupt(
    store: EncryptedFileBlobStore, tmp_path: Path, where: str
) -> None:
    ref = store.put_bytes(os.urandom(THREE_CHUNKS))
    path = only_blob_file(tmp_path / "blobs")
    offset = OFFSETS[where] % path.stat().st_size
    flip(path, offset)
    with pytest.raises(BlobCorruptError, match=ref.sha256):
        store.read_bytes(ref.sha256)
    with pytest.raises(BlobCorruptError, match=ref.sha256):
        store.copy_to(ref.sha256, io.BytesIO())


def test_flipped_bit_in_a_later_chunk_fails_after_verified_chunks(
    store: EncryptedFileBlobStore, tmp_path: Path
) -> None:
    data = os.urandom(THREE_CHUNKS)
    ref = store.put_bytes(data)
    flip(only_blob_file(tmp_path / "blobs"), OFFSETS["chunk-1"])
    chunks = store.open(ref.sha256)
    assert next(chunks) == data[:CHUNK_SIZE]
    with pytest.raises(BlobCorruptError, match="chunk 1"):
        next(chunks)


@pytest.mark.parametrize("size", [10, CHUNK_SIZE, THREE_CHUNKS])
def test_truncation_is_corrupt(store: EncryptedFileBlobStore, tmp_path: Path, size: int) -> None:
    ref = store.put_bytes(os.urandom(size))
    path = only_blob_file(tmp_path / "blobs")
    content = path.read_bytes()
    for cut in {len(content) - 1, len(content) - 16, HEADER_SIZE, HEADER_SIZE - 1, 0}:
        path.write_bytes(content[:cut])
        with pytest.raises(BlobCorruptError, match=ref.sha256):
            store.read_bytes(ref.sha256)


def test_dropping_the_last_chunk_is_corrupt(store: EncryptedFileBlobStore, tmp_path: Path) -> None:
    ref = store.put_bytes(os.urandom(THREE_CHUNKS))
    path = only_blob_file(tmp_path / "blobs")
    path.write_bytes(path.read_bytes()[: HEADER_SIZE + 2 * SEALED_CHUNK])
    with pytest.raises(BlobCorruptError, match=ref.sha256):
        store.read_bytes(ref.sha256)


def test_dropping_the_last_chunk_of_exact_multiple_is_corrupt(
    store: EncryptedFileBlobStore, tmp_path: Path
) -> None:
    ref = store.put_bytes(os.urandom(2 * CHUNK_SIZE))
    path = only_blob_file(tmp_path / "blobs")
    path.write_bytes(path.read_bytes()[: HEADER_SIZE + SEALED_CHUNK])
    with pytest.raises(BlobCorruptError):
        store.read_bytes(ref.sha256)


@pytest.mark.parametrize("extra", [b"\x00", os.urandom(16), os.urandom(SEALED_CHUNK)])
def test_appended_garbage_is_corrupt(
    store: EncryptedFileBlobStore, tmp_path: Path, extra: bytes
) -> None:
    ref = store.put_bytes(os.urandom(CHUNK_SIZE + 1))
    path = only_blob_file(tmp_path / "blobs")
    with path.open("ab") as f:
        f.write(extra)
    with pytest.raises(BlobCorruptError, match=ref.sha256):
        store.read_bytes(ref.sha256)
    with pytest.raises(BlobCorruptError):
        store.size(ref.sha256)


def test_reordered_chunks_are_corrupt(store: EncryptedFileBlobStore, tmp_path: Path) -> None:
    ref = store.put_bytes(os.urandom(THREE_CHUNKS))
    path = only_blob_file(tmp_path / "blobs")
    content = path.read_bytes()
    header = content[:HEADER_SIZE]
    c0 = content[HEADER_SIZE : HEADER_SIZE + SEALED_CHUNK]
    c1 = content[HEADER_SIZE + SEALED_CHUNK : HEADER_SIZE + 2 * SEALED_CHUNK]
    rest = content[HEADER_SIZE + 2 * SEALED_CHUNK :]
    path.write_bytes(header + c1 + c0 + rest)
    with pytest.raises(BlobCorruptError, match="chunk 0"):
        store.read_bytes(ref.sha256)


def test_chunk_swapped_between_blobs_is_corrupt(
    store: EncryptedFileBlobStore, tmp_path: Path
) -> None:
    a = store.put_bytes(os.urandom(THREE_CHUNKS))
    path_a = only_blob_file(tmp_path / "blobs")
    b = store.put_bytes(os.urandom(THREE_CHUNKS))
    (path_b,) = [p for p in blob_files(tmp_path / "blobs") if p != path_a]
    content_a, content_b = path_a.read_bytes(), path_b.read_bytes()
    start, end = HEADER_SIZE + SEALED_CHUNK, HEADER_SIZE + 2 * SEALED_CHUNK
    path_a.write_bytes(content_a[:start] + content_b[start:end] + content_a[end:])
    path_b.write_bytes(content_b[:start] + content_a[start:end] + content_b[end:])
    for ref in (a, b):
        with pytest.raises(BlobCorruptError, match=f"{ref.sha256}.*chunk 1"):
            store.read_bytes(ref.sha256)


def test_whole_files_swapped_between_blobs_are_corrupt(
    store: EncryptedFileBlobStore, tmp_path: Path
) -> None:
    a = store.put_bytes(b"first blob")
    path_a = only_blob_file(tmp_path / "blobs")
    b = store.put_bytes(b"second blob")
    (path_b,) = [p for p in blob_files(tmp_path / "blobs") if p != path_a]
    content_a, content_b = path_a.read_bytes(), path_b.read_bytes()
    path_a.write_bytes(content_b)
    path_b.write_bytes(content_a)
    for ref in (a, b):
        with pytest.raises(BlobCorruptError, match=ref.sha256):
            store.open(ref.sha256)  # caught before any plaintext is returned
        with pytest.raises(BlobCorruptError):
            store.size(ref.sha256)
    with pytest.raises(BlobCorruptError, match="not its own"):
        list(store.list())


def test_blob_from_another_key_is_corrupt(tmp_path: Path) -> None:
    mine = EncryptedFileBlobStore(tmp_path / "mine", os.urandom(32))
    theirs = EncryptedFileBlobStore(tmp_path / "theirs", os.urandom(32))
    ref = mine.put_bytes(b"mine")
    theirs.put_bytes(b"theirs")
    # Their file placed where mine should be.
    only_blob_file(tmp_path / "mine").write_bytes(only_blob_file(tmp_path / "theirs").read_bytes())
    with pytest.raises(BlobCorruptError, match=ref.sha256):
        mine.read_bytes(ref.sha256)


# --- crash safety ---------------------------------------------------------------------


def test_failed_put_leaves_nothing_visible(store: EncryptedFileBlobStore, tmp_path: Path) -> None:
    class Broken(io.RawIOBase):
        def __init__(self) -> None:
            self._sent = 0

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
            if self._sent >= 3 * CHUNK_SIZE:
                raise OSError("connection reset")
            buffer[:] = b"\x00" * len(buffer)
            self._sent += len(buffer)
            return len(buffer)

    with pytest.raises(OSError, match="connection reset"):
        store.put_stream(Broken())  # type: ignore[arg-type]
    assert blob_files(tmp_path / "blobs") == []
    assert list((tmp_path / "blobs" / "tmp").iterdir()) == []
    assert list(store.list()) == []


def test_leftover_temp_files_are_invisible_and_stale_ones_removed(
    tmp_path: Path, key: bytes
) -> None:
    store = EncryptedFileBlobStore(tmp_path / "blobs", key)
    ref = store.put_bytes(b"kept")
    fresh = tmp_path / "blobs" / "tmp" / "put-fresh.tmp"
    stale = tmp_path / "blobs" / "tmp" / "put-stale.tmp"
    fresh.write_bytes(b"half a blob")
    stale.write_bytes(b"half a blob")
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(stale, (two_days_ago, two_days_ago))

    reopened = EncryptedFileBlobStore(tmp_path / "blobs", key)

    assert list(reopened.list()) == [ref.sha256]
    assert fresh.exists()
    assert not stale.exists()


# --- rekey ----------------------------------------------------------------------------


def test_rekey_keeps_content_and_retires_old_key(tmp_path: Path) -> None:
    old_key, new_key = os.urandom(32), os.urandom(32)
    store = EncryptedFileBlobStore(tmp_path / "blobs", old_key)
    contents = {store.put_bytes(d).sha256: d for d in (b"", b"a", os.urandom(THREE_CHUNKS))}
    old_files = {p.read_bytes() for p in blob_files(tmp_path / "blobs")}

    store.rekey(new_key)

    assert {h: store.read_bytes(h) for h in contents} == contents
    fresh = EncryptedFileBlobStore(tmp_path / "blobs", new_key)
    assert set(fresh.list()) == set(contents)
    assert {h: fresh.read_bytes(h) for h in contents} == contents
    old = EncryptedFileBlobStore(tmp_path / "blobs", old_key)
    for h in contents:
        assert not old.exists(h)
        with pytest.raises(BlobNotFoundError):
            old.read_bytes(h)
    assert not old_files & {p.read_bytes() for p in blob_files(tmp_path / "blobs")}
    assert len(blob_files(tmp_path / "blobs")) == len(contents)


def test_rekey_resumes_after_a_crash(tmp_path: Path) -> None:
    old_key, new_key = os.urandom(32), os.urandom(32)
    old = EncryptedFileBlobStore(tmp_path / "blobs", old_key)
    a, b = old.put_bytes(b"blob a"), old.put_bytes(os.urandom(CHUNK_SIZE + 9))
    # The state a crash leaves between renaming a's new file in and removing its old
    # one: a exists under both keys, b only under the old key.
    EncryptedFileBlobStore(tmp_path / "blobs", new_key).put_bytes(b"blob a")
    assert len(blob_files(tmp_path / "blobs")) == 3

    EncryptedFileBlobStore(tmp_path / "blobs", old_key).rekey(new_key)

    new = EncryptedFileBlobStore(tmp_path / "blobs", new_key)
    assert sorted(new.list()) == sorted([a.sha256, b.sha256])
    assert new.read_bytes(a.sha256) == b"blob a"
    assert new.size(b.sha256) == CHUNK_SIZE + 9
    assert len(blob_files(tmp_path / "blobs")) == 2


def test_rekey_to_the_same_key_changes_nothing(store: EncryptedFileBlobStore, key: bytes) -> None:
    ref = store.put_bytes(b"x")
    store.rekey(key)
    assert store.read_bytes(ref.sha256) == b"x"


def test_rekey_stops_at_a_corrupt_blob(store: EncryptedFileBlobStore, tmp_path: Path) -> None:
    ref = store.put_bytes(os.urandom(100))
    flip(only_blob_file(tmp_path / "blobs"), HEADER_SIZE + 3)
    with pytest.raises(BlobCorruptError, match=ref.sha256):
        store.rekey(os.urandom(32))


# --- big blobs stream -----------------------------------------------------------------


class Generated(io.RawIOBase):
    """`size` bytes made on the fly (each MiB distinct), hashed as they are read."""

    def __init__(self, size: int) -> None:
        self._left = size
        self._block = os.urandom(CHUNK_SIZE)
        self._counter = 0
        self.hasher = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        count = min(len(buffer), self._left, CHUNK_SIZE)
        if count <= 0:
            return 0
        piece = self._counter.to_bytes(8, "big") + self._block[8:count]
        piece = piece[:count]
        self._counter += 1
        buffer[:count] = piece
        self.hasher.update(piece)
        self._left -= count
        return count


class HashingSink(io.RawIOBase):
    def __init__(self) -> None:
        self.hasher = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.hasher.update(data)
        self.size += len(data)
        return len(data)


def peak_traced(action: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_200_mb_blob_streams_in_bounded_memory(
    store: EncryptedFileBlobStore, tmp_path: Path
) -> None:
    size = 200 * MiB + 12345
    source = Generated(size)
    refs: list[BlobRef] = []

    put_peak = peak_traced(lambda: refs.append(store.put_stream(source)))  # type: ignore[arg-type]

    (ref,) = refs
    assert ref == BlobRef(sha256=source.hasher.hexdigest(), size=size)
    sink = HashingSink()
    read_peak = peak_traced(lambda: store.copy_to(ref.sha256, sink))  # type: ignore[arg-type]
    assert sink.size == size
    assert sink.hasher.hexdigest() == ref.sha256
    assert put_peak < 16 * MiB, f"put peaked at {put_peak / MiB:.1f} MiB"
    assert read_peak < 16 * MiB, f"read peaked at {read_peak / MiB:.1f} MiB"
