"""Blob storage backends: a local folder (default) or an S3-compatible object store.

Blobs are content-addressed and kept per clinic: the object key is
``{clinic_id}/{sha256}``, so one clinic's holdings say nothing about another's, and
the routes scope every lookup by the caller's clinic. The database (`Blob` rows) is
the source of truth for which clinic holds what; a backend only stores bytes.

An upload goes through a backend in four steps, driven by the routes with the upload's
database row locked:

    handle = backend.start(upload_id)                       # once
    etag = backend.write_part(upload_id, handle, n, offset, data)   # per chunk
    backend.complete(upload_id, handle, etags, clinic, sha256, size)
    backend.abort(upload_id, handle)                        # on give-up

`complete` verifies the SHA-256 and size of the assembled bytes before anything is
visible at the final key; on a mismatch it raises `IntegrityError` and leaves nothing
behind. Backend failures (disk, network) raise `BlobBackendError`.

    BlobBackendError          the storage cannot be used (disk, network, permissions)
    ├── UploadLostError       the upload's partial data is gone; start the upload again
    └── BlobMissingError      no blob at that key
    IntegrityError            the assembled bytes do not match the declared hash or size
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import secrets
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from sqlalchemy import select

from crdt import is_sha256
from sync_server._db import Database
from sync_server._models import Upload, utcnow
from sync_server._settings import Settings

S3Client = Any  # botocore clients are built at run time and carry no static types

__all__ = [
    "S3_MIN_PART_SIZE",
    "BlobBackend",
    "BlobBackendError",
    "BlobMissingError",
    "IntegrityError",
    "LocalBlobBackend",
    "S3BlobBackend",
    "UploadLostError",
    "make_blob_backend",
    "purge_stale_uploads",
]

log = logging.getLogger("sync_server.blobs")

S3_MIN_PART_SIZE = 5 * 1024 * 1024
"""S3's smallest multipart part, except the last one."""
S3_MAX_PARTS = 10_000
S3_MAX_COPY_SIZE = 5 * 1024**3
"""Above this, a single CopyObject is refused and a multipart copy is needed."""
READ_CHUNK = 1024 * 1024
"""Bytes per item yielded by `open` (and per read when hashing)."""

_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class BlobBackendError(Exception):
    """The blob storage cannot be used: a disk, network or permission failure."""


class UploadLostError(BlobBackendError):
    """The backend no longer holds the upload's partial data; the upload must restart."""


class BlobMissingError(BlobBackendError):
    """No blob is stored at that key."""


class IntegrityError(Exception):
    """The assembled upload does not have the declared SHA-256 or size.

    Nothing is left at the final key (nor in staging) when this is raised.
    """


@runtime_checkable
class BlobBackend(Protocol):
    """Where blob bytes live. Every method is blocking; call it from a worker thread.

    Attributes:
        min_part_size: The smallest chunk the backend accepts for any part but the
            last (0 when any size will do).
        max_parts: The most parts one upload may have (None for no limit).
    """

    min_part_size: int
    max_parts: int | None

    def start(self, upload_id: str) -> str | None:
        """Begin an upload; returns a handle to keep with it (None if not needed)."""
        ...

    def write_part(
        self, upload_id: str, handle: str | None, part_number: int, offset: int, data: bytes
    ) -> str | None:
        """Store part `part_number` (from 1) holding bytes `offset..offset+len(data)`.

        Writing the same part again replaces it, so a retried chunk is harmless.
        Returns the part's etag where the backend has one (S3), else None.

        Raises:
            UploadLostError: The upload's earlier parts are gone.
        """
        ...

    def complete(
        self,
        upload_id: str,
        handle: str | None,
        parts: Sequence[str | None],
        clinic_id: str,
        sha256: str,
        size: int,
    ) -> None:
        """Assemble the parts (etags in part order) into the blob at its final key.

        Raises:
            IntegrityError: The bytes' SHA-256 or size differ from `sha256`/`size`;
                the upload's data is discarded and nothing is at the final key.
            UploadLostError: The upload's parts are gone.
        """
        ...

    def abort(self, upload_id: str, handle: str | None) -> None:
        """Discard an upload's partial data (a no-op if there is none)."""
        ...

    def exists(self, clinic_id: str, sha256: str) -> bool:
        """Whether the clinic's blob is stored."""
        ...

    def size(self, clinic_id: str, sha256: str) -> int:
        """The stored blob's size in bytes.

        Raises:
            BlobMissingError: No such blob.
        """
        ...

    def open(
        self, clinic_id: str, sha256: str, start: int = 0, end: int | None = None
    ) -> Iterator[bytes]:
        """Yield bytes `start` (inclusive) to `end` (exclusive; None for the end of the
        blob) in chunks of up to 1 MiB. Nothing is read until the first item is taken.

        Raises:
            BlobMissingError: No such blob (on the first item).
        """
        ...

    def check(self) -> None:
        """Raise `BlobBackendError` if the storage is unusable (for readiness probes)."""
        ...


def _safe(name: str, what: str) -> str:
    if not _SAFE_NAME.fullmatch(name):
        raise ValueError(f"{what} {name!r} is not a safe storage name")
    return name


def _hex_sha256(sha256: str) -> str:
    if not is_sha256(sha256):
        raise ValueError(f"not a lowercase hex SHA-256: {sha256!r}")
    return sha256


# ------------------------------------------------------------------------ local folder


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
        return self._uploads / f"{_safe(upload_id, 'upload id')}.part"

    def blob_path(self, clinic_id: str, sha256: str) -> Path:
        """Where the clinic's blob lives (whether or not it exists)."""
        clinic_id = _safe(clinic_id, "clinic id")
        if clinic_id == "uploads":
            raise ValueError("'uploads' is reserved and cannot be a clinic id")
        sha256 = _hex_sha256(sha256)
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


# ------------------------------------------------------------------------ S3-compatible


class S3BlobBackend:
    """Blobs as objects in an S3-compatible bucket, key ``{clinic_id}/{sha256}``.

    An upload is an S3 multipart upload to a staging key ``_staging/{upload_id}``, so
    every chunk but the last must be at least 5 MiB. `complete` finishes the multipart
    upload, reads the staging object back as a stream to hash it (memory stays at one
    read buffer), copies it to the final key only if it matches, and deletes the
    staging object either way.

    Args:
        client: A boto3 S3 client (thread-safe; shared by every request).
        bucket: The bucket, which must exist (`make_blob_backend` creates it).
    """

    min_part_size = S3_MIN_PART_SIZE
    max_parts: int | None = S3_MAX_PARTS

    def __init__(self, client: S3Client, bucket: str) -> None:
        self._client = client
        self.bucket = bucket

    def __repr__(self) -> str:
        return f"S3BlobBackend(bucket={self.bucket!r})"

    @staticmethod
    def key(clinic_id: str, sha256: str) -> str:
        """The object key of a clinic's blob."""
        return f"{_safe(clinic_id, 'clinic id')}/{_hex_sha256(sha256)}"

    @staticmethod
    def staging_key(upload_id: str) -> str:
        """The object key an upload is assembled at before it is verified."""
        return f"_staging/{_safe(upload_id, 'upload id')}"

    def start(self, upload_id: str) -> str | None:
        """Create the multipart upload; its UploadId is the handle."""
        try:
            answer = self._client.create_multipart_upload(
                Bucket=self.bucket,
                Key=self.staging_key(upload_id),
                ContentType="application/octet-stream",
            )
        except Exception as exc:
            raise _backend_error(f"cannot start upload {upload_id}", exc) from exc
        return str(answer["UploadId"])

    def write_part(
        self, upload_id: str, handle: str | None, part_number: int, offset: int, data: bytes
    ) -> str | None:
        """Upload one part; returns its ETag."""
        if handle is None:
            raise UploadLostError(f"upload {upload_id} has no multipart upload")
        try:
            answer = self._client.upload_part(
                Bucket=self.bucket,
                Key=self.staging_key(upload_id),
                UploadId=handle,
                PartNumber=part_number,
                Body=data,
            )
        except Exception as exc:
            if _error_code(exc) == "NoSuchUpload" or not self._multipart_exists(upload_id, handle):
                raise UploadLostError(f"the multipart upload of {upload_id} is gone") from exc
            raise _backend_error(f"cannot write upload {upload_id}", exc) from exc
        return str(answer["ETag"])

    def _multipart_exists(self, upload_id: str, handle: str) -> bool:
        """Whether the multipart upload is still open (some S3-compatible servers
        answer a part sent to a missing upload with a 500, not NoSuchUpload)."""
        try:
            self._client.list_parts(
                Bucket=self.bucket, Key=self.staging_key(upload_id), UploadId=handle, MaxParts=1
            )
        except Exception as exc:
            return _error_code(exc) not in {"NoSuchUpload", "404"}
        return True

    def complete(
        self,
        upload_id: str,
        handle: str | None,
        parts: Sequence[str | None],
        clinic_id: str,
        sha256: str,
        size: int,
    ) -> None:
        """Finish the multipart upload into staging, verify, copy to the final key."""
        staging = self.staging_key(upload_id)
        final = self.key(clinic_id, sha256)
        try:
            if parts:
                if handle is None or any(etag is None for etag in parts):
                    raise UploadLostError(f"upload {upload_id} lacks its part etags")
                self._client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=staging,
                    UploadId=handle,
                    MultipartUpload={
                        "Parts": [
                            {"PartNumber": number, "ETag": str(etag)}
                            for number, etag in enumerate(parts, start=1)
                        ]
                    },
                )
            else:
                # An empty blob: S3 cannot complete a multipart upload without parts.
                self.abort(upload_id, handle)
                self._client.put_object(Bucket=self.bucket, Key=staging, Body=b"")
            try:
                actual_sha, actual_size, etag = self._hash_object(staging)
                if actual_size != size or actual_sha != sha256:
                    raise IntegrityError(
                        f"upload {upload_id} holds {actual_size} bytes with SHA-256 "
                        f"{actual_sha}, not the declared {size} bytes with SHA-256 {sha256}"
                    )
                self._copy(staging, final, etag, size)
            finally:
                self._delete(staging)
        except (IntegrityError, BlobBackendError):
            raise
        except Exception as exc:
            if _error_code(exc) == "NoSuchUpload":
                raise UploadLostError(f"the multipart upload of {upload_id} is gone") from exc
            raise _backend_error(f"cannot complete upload {upload_id}", exc) from exc

    def _hash_object(self, key: str) -> tuple[str, int, str]:
        answer = self._client.get_object(Bucket=self.bucket, Key=key)
        body = answer["Body"]
        hasher = hashlib.sha256()
        size = 0
        try:
            for chunk in body.iter_chunks(READ_CHUNK):
                hasher.update(chunk)
                size += len(chunk)
        finally:
            body.close()
        return hasher.hexdigest(), size, str(answer["ETag"])

    def _copy(self, source: str, target: str, etag: str, size: int) -> None:
        if size <= S3_MAX_COPY_SIZE:
            # If-Match: copy exactly the object that was hashed.
            self._client.copy_object(
                Bucket=self.bucket,
                Key=target,
                CopySource={"Bucket": self.bucket, "Key": source},
                CopySourceIfMatch=etag,
                ContentType="application/octet-stream",
            )
        else:  # pragma: no cover - needs a blob over 5 GiB
            self._client.copy({"Bucket": self.bucket, "Key": source}, self.bucket, target)

    def _delete(self, key: str) -> None:
        try:
            self._client.delete_object(Bucket=self.bucket, Key=key)
        except Exception as exc:  # cleanup only: the object is unreachable anyway
            log.warning("could not delete staging object %s: %s", key, exc)

    def abort(self, upload_id: str, handle: str | None) -> None:
        """Abort the multipart upload and delete any staging object."""
        if handle is not None:
            try:
                self._client.abort_multipart_upload(
                    Bucket=self.bucket, Key=self.staging_key(upload_id), UploadId=handle
                )
            except Exception as exc:
                if _error_code(exc) not in {"NoSuchUpload", "404"}:
                    raise _backend_error(f"cannot abort upload {upload_id}", exc) from exc
        self._delete(self.staging_key(upload_id))

    def exists(self, clinic_id: str, sha256: str) -> bool:
        """Whether the object exists (a HEAD request)."""
        try:
            self.size(clinic_id, sha256)
        except BlobMissingError:
            return False
        return True

    def size(self, clinic_id: str, sha256: str) -> int:
        """The object's ContentLength."""
        key = self.key(clinic_id, sha256)
        try:
            answer = self._client.head_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            if _error_code(exc) in {"404", "NoSuchKey", "NotFound"}:
                raise BlobMissingError(f"no blob {sha256} for clinic {clinic_id}") from exc
            raise _backend_error(f"cannot read blob {sha256}", exc) from exc
        return int(answer["ContentLength"])

    def open(
        self, clinic_id: str, sha256: str, start: int = 0, end: int | None = None
    ) -> Iterator[bytes]:
        """Stream the object (a ranged GET when only part of it is wanted)."""
        key = self.key(clinic_id, sha256)
        if end is not None and end <= start:
            return
        request: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if start or end is not None:
            request["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        try:
            answer = self._client.get_object(**request)
        except Exception as exc:
            if _error_code(exc) in {"404", "NoSuchKey", "NotFound"}:
                raise BlobMissingError(f"no blob {sha256} for clinic {clinic_id}") from exc
            raise _backend_error(f"cannot read blob {sha256}", exc) from exc
        body = answer["Body"]
        try:
            yield from body.iter_chunks(READ_CHUNK)
        finally:
            body.close()

    def check(self) -> None:
        """HEAD the bucket."""
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except Exception as exc:
            raise _backend_error(f"bucket {self.bucket} is not usable", exc) from exc

    def ensure_bucket(self, region: str) -> None:
        """Create the bucket if it does not exist (another worker may race us to it)."""
        try:
            self._client.head_bucket(Bucket=self.bucket)
            return
        except Exception as exc:
            if _error_code(exc) not in {"404", "NoSuchBucket", "NotFound"}:
                raise _backend_error(f"bucket {self.bucket} is not usable", exc) from exc
        request: dict[str, Any] = {"Bucket": self.bucket}
        if region != "us-east-1":
            request["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            self._client.create_bucket(**request)
        except Exception as exc:
            if _error_code(exc) not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                raise _backend_error(f"cannot create bucket {self.bucket}", exc) from exc
        log.info("created blob bucket %s", self.bucket)


def _error_code(exc: BaseException) -> str | None:
    """The S3 error code of a botocore ClientError, else None."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    code = response.get("Error", {}).get("Code")
    return str(code) if code is not None else None


def _backend_error(what: str, exc: BaseException) -> BlobBackendError:
    return BlobBackendError(f"{what}: {type(exc).__name__}: {exc}")


# ------------------------------------------------------------------------ factory


def make_blob_backend(settings: Settings) -> BlobBackend:
    """The blob backend the settings choose, ready to use.

    ``local``: a folder (`settings.resolved_blob_dir`), created if missing.
    ``s3``: a boto3 client on `s3_endpoint_url` (AWS when unset) with the settings'
    region and keys (the usual AWS credential chain when the keys are unset); the
    bucket is created if it does not exist.

    Raises:
        ValueError: The settings cannot work (an S3 chunk cap under 5 MiB).
        BlobBackendError: The storage cannot be reached or created.
    """
    if settings.blob_backend == "local":
        return LocalBlobBackend(settings.resolved_blob_dir)
    if settings.max_blob_chunk < S3_MIN_PART_SIZE:
        raise ValueError(
            f"max_blob_chunk is {settings.max_blob_chunk} bytes, but S3 parts other than "
            f"the last must be at least {S3_MIN_PART_SIZE} bytes"
        )
    import boto3
    from botocore.config import Config

    config = Config(
        region_name=settings.s3_region,
        signature_version="s3v4",
        connect_timeout=10,
        read_timeout=60,
        retries={"max_attempts": 5, "mode": "standard"},
        # Custom endpoints (MinIO, Ceph, moto) are addressed by path.
        s3={"addressing_style": "path" if settings.s3_endpoint_url else "auto"},
    )
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.s3_region,
        aws_access_key_id=settings.s3_access_key_id,
        aws_secret_access_key=settings.s3_secret_access_key,
        config=config,
    )
    backend = S3BlobBackend(client, settings.s3_bucket)
    backend.ensure_bucket(settings.s3_region)
    return backend


def purge_stale_uploads(
    db: Database,
    backend: BlobBackend,
    *,
    older_than: timedelta,
    now: datetime | None = None,
) -> int:
    """Discard uploads that received nothing for `older_than`, with their partial data.

    Meant to run periodically (any one worker); returns how many uploads went. A
    device whose upload was purged starts again on its next `POST /v1/blobs/uploads`.
    """
    cutoff = (now or utcnow()) - older_than
    with db.write() as session:
        stale = list(
            session.scalars(
                select(Upload).where(Upload.updated_at < cutoff).with_for_update(skip_locked=True)
            )
        )
        handles = [(upload.id, upload.backend_ref) for upload in stale]
        for upload in stale:
            session.delete(upload)
    for upload_id, handle in handles:
        try:
            backend.abort(upload_id, handle)
        except BlobBackendError as exc:
            log.warning("could not discard the data of stale upload %s: %s", upload_id, exc)
    if handles:
        log.info("discarded %d stale uploads", len(handles))
    return len(handles)
