"""The S3-compatible blob backend (AWS, MinIO, Ceph): multipart uploads to a staging
key, verified, then copied to the final key. botocore's errors (`ClientError`,
`BotoCoreError`) become `BlobBackendError` here."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from sync_server.blobs.backends.base import (
    READ_CHUNK,
    BlobBackendError,
    BlobMissingError,
    IntegrityError,
    UploadLostError,
    hex_sha256,
    safe_name,
)

S3Client = Any  # botocore clients are built at run time and carry no static types

__all__ = ["S3_MAX_COPY_SIZE", "S3_MAX_PARTS", "S3_MIN_PART_SIZE", "S3BlobBackend"]

log = logging.getLogger("sync_server.blobs")

_DRIVER_ERRORS = (ClientError, BotoCoreError)
"""What botocore raises: an S3 error answer, or a failure to get one (network, timeout)."""

S3_MIN_PART_SIZE = 5 * 1024 * 1024
"""S3's smallest multipart part, except the last one."""
S3_MAX_PARTS = 10_000
S3_MAX_COPY_SIZE = 5 * 1024**3
"""Above this, a single CopyObject is refused and a multipart copy is needed."""


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
        return f"{safe_name(clinic_id, 'clinic id')}/{hex_sha256(sha256)}"

    @staticmethod
    def staging_key(upload_id: str) -> str:
        """The object key an upload is assembled at before it is verified."""
        return f"_staging/{safe_name(upload_id, 'upload id')}"

    def start(self, upload_id: str) -> str | None:
        """Create the multipart upload; its UploadId is the handle."""
        try:
            answer = self._client.create_multipart_upload(
                Bucket=self.bucket,
                Key=self.staging_key(upload_id),
                ContentType="application/octet-stream",
            )
        except _DRIVER_ERRORS as exc:
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
        except _DRIVER_ERRORS as exc:
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
        except _DRIVER_ERRORS as exc:
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
        except _DRIVER_ERRORS as exc:
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
        except _DRIVER_ERRORS as exc:  # cleanup only: the object is unreachable anyway
            log.warning("could not delete staging object %s: %s", key, exc)

    def abort(self, upload_id: str, handle: str | None) -> None:
        """Abort the multipart upload and delete any staging object."""
        if handle is not None:
            try:
                self._client.abort_multipart_upload(
                    Bucket=self.bucket, Key=self.staging_key(upload_id), UploadId=handle
                )
            except _DRIVER_ERRORS as exc:
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
        except _DRIVER_ERRORS as exc:
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
        except _DRIVER_ERRORS as exc:
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
        except _DRIVER_ERRORS as exc:
            raise _backend_error(f"bucket {self.bucket} is not usable", exc) from exc

    def ensure_bucket(self, region: str) -> None:
        """Create the bucket if it does not exist (another worker may race us to it)."""
        try:
            self._client.head_bucket(Bucket=self.bucket)
            return
        except _DRIVER_ERRORS as exc:
            if _error_code(exc) not in {"404", "NoSuchBucket", "NotFound"}:
                raise _backend_error(f"bucket {self.bucket} is not usable", exc) from exc
        request: dict[str, Any] = {"Bucket": self.bucket}
        if region != "us-east-1":
            request["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            self._client.create_bucket(**request)
        except _DRIVER_ERRORS as exc:
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
