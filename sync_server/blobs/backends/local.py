"""The local-folder blob backend (the default): one file per blob, written by
hash-then-rename. Driver errors (OSError) become `BlobBackendError` here."""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from collections.abc import Iterator, Sequence
from pathlib import Path

from sync_server.blobs.backends.base import (
    READ_CHUNK,
    BlobBackendError,
    BlobMissingError,
    IntegrityError,
    UploadLostError,
    hex_sha256,
    safe_name,
)

__all__ = ["LocalBlobBackend"]


class LocalBlobBackend:
    """Blobs as files under `root`: ``root/{clinic}/{sha[:2]}/{sha}``.

    Uploads in progress are ``root/uploads/{upload_id}.part``; each part is written at
    its offset (``pwrite``) and fsynced, so a chunk sent again lands on the same bytes.
    `complete` hashes the part file and only then renames it into place. Files are
    created 0600 and folders 0700.
    """

    min_part_size = 0
    max_parts: int | None = None

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._uploads = self.root / "uploads"
        try:
            _mkdirs(self._uploads, self.root)
        except OSError as exc:
            raise BlobBackendError(f"blob folder {self.root} cannot be created: {exc}") from exc

    def __repr__(self) -> str:
        return f"LocalBlobBackend({str(self.root)!r})"

    def _part_path(self, upload_id: str) -> Path:
        return self._uploads / f"{safe_name(upload_id, 'upload id')}.part"

    def blob_path(self, clinic_id: str, sha256: str) -> Path:
        """Where the clinic's blob lives (whether or not it exists)."""
        clinic_id = safe_name(clinic_id, "clinic id")
        if clinic_id == "uploads":
            raise ValueError("'uploads' is reserved and cannot be a clinic id")
        sha256 = hex_sha256(sha256)
        return self.root / clinic_id / sha256[:2] / sha256

    def start(self, upload_id: str) -> str | None:
        """Create the empty part file."""
        path = self._part_path(upload_id)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.close(fd)
        except OSError as exc:
            raise BlobBackendError(f"cannot start upload {upload_id}: {exc}") from exc
        return None

    def write_part(
        self, upload_id: str, handle: str | None, part_number: int, offset: int, data: bytes
    ) -> str | None:
        """Write `data` at `offset` of the part file, cut anything after it, fsync."""
        path = self._part_path(upload_id)
        try:
            fd = os.open(path, os.O_WRONLY)
        except FileNotFoundError:
            raise UploadLostError(f"the data of upload {upload_id} is gone") from None
        except OSError as exc:
            raise BlobBackendError(f"cannot write upload {upload_id}: {exc}") from exc
        try:
            if os.fstat(fd).st_size < offset:
                raise UploadLostError(f"the data of upload {upload_id} is truncated")
            view = memoryview(data)
            position = offset
            while view:
                written = os.pwrite(fd, view, position)
                view = view[written:]
                position += written
            # Bytes past this chunk are left over from an earlier, longer attempt.
            os.ftruncate(fd, position)
            os.fsync(fd)
        except OSError as exc:
            raise BlobBackendError(f"cannot write upload {upload_id}: {exc}") from exc
        finally:
            os.close(fd)
        return None

    def complete(
        self,
        upload_id: str,
        handle: str | None,
        parts: Sequence[str | None],
        clinic_id: str,
        sha256: str,
        size: int,
    ) -> None:
        """Hash the part file; if it matches, rename it to the blob's path."""
        target = self.blob_path(clinic_id, sha256)
        path = self._part_path(upload_id)
        if size == 0 and not path.exists():
            self.start(upload_id)
        try:
            actual_sha, actual_size = _hash_file(path)
        except FileNotFoundError:
            raise UploadLostError(f"the data of upload {upload_id} is gone") from None
        except OSError as exc:
            raise BlobBackendError(f"cannot read upload {upload_id}: {exc}") from exc
        if actual_size != size or actual_sha != sha256:
            _unlink_quietly(path)
            raise IntegrityError(
                f"upload {upload_id} holds {actual_size} bytes with SHA-256 {actual_sha}, "
                f"not the declared {size} bytes with SHA-256 {sha256}"
            )
        try:
            _mkdirs(target.parent, self.root)
            os.replace(path, target)
            _fsync_dir(target.parent)
        except OSError as exc:
            raise BlobBackendError(f"cannot store blob {sha256}: {exc}") from exc

    def abort(self, upload_id: str, handle: str | None) -> None:
        """Delete the part file."""
        _unlink_quietly(self._part_path(upload_id))

    def exists(self, clinic_id: str, sha256: str) -> bool:
        """Whether the blob's file exists."""
        return self.blob_path(clinic_id, sha256).is_file()

    def size(self, clinic_id: str, sha256: str) -> int:
        """The blob file's size."""
        try:
            return self.blob_path(clinic_id, sha256).stat().st_size
        except FileNotFoundError:
            raise BlobMissingError(f"no blob {sha256} for clinic {clinic_id}") from None
        except OSError as exc:
            raise BlobBackendError(f"cannot read blob {sha256}: {exc}") from exc

    def open(
        self, clinic_id: str, sha256: str, start: int = 0, end: int | None = None
    ) -> Iterator[bytes]:
        """Yield the file's bytes `start..end` in chunks of up to 1 MiB."""
        path = self.blob_path(clinic_id, sha256)
        try:
            f = path.open("rb")
        except FileNotFoundError:
            raise BlobMissingError(f"no blob {sha256} for clinic {clinic_id}") from None
        with f:
            f.seek(start)
            remaining = None if end is None else max(0, end - start)
            while remaining is None or remaining > 0:
                want = READ_CHUNK if remaining is None else min(READ_CHUNK, remaining)
                chunk = f.read(want)
                if not chunk:
                    break
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk

    def check(self) -> None:
        """Write, read back and delete a probe file in the uploads folder."""
        probe = self._uploads / f".probe-{secrets.token_hex(8)}"
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, b"ok")
            finally:
                os.close(fd)
            if probe.read_bytes() != b"ok":
                raise BlobBackendError(f"blob folder {self.root} does not read back")
        except OSError as exc:
            raise BlobBackendError(f"blob folder {self.root} is not usable: {exc}") from exc
        finally:
            _unlink_quietly(probe)


def _mkdirs(directory: Path, root: Path) -> None:
    """Create `directory` (and parents up to `root`) with mode 0700."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    # mkdir's mode is masked by the umask; make sure of it for the folders we own.
    current = directory
    while True:
        if current.stat().st_mode & 0o077:
            current.chmod(0o700)
        if current == root or root not in current.parents:
            break
        current = current.parent


def _hash_file(path: Path) -> tuple[str, int]:
    hasher = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(READ_CHUNK):
            hasher.update(chunk)
            size += len(chunk)
    return hasher.hexdigest(), size


def _fsync_dir(directory: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
