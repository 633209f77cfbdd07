"""Where blob bytes live: the `BlobBackend` protocol (`base`), a local folder
(`local`, the default) and S3-compatible object storage (`s3`).

`make_blob_backend(settings)` builds the one the settings choose.
"""

from __future__ import annotations

import logging

from sync_server.blobs.backends.base import (
    BlobBackend,
    BlobBackendError,
    BlobMissingError,
    IntegrityError,
    UploadLostError,
)
from sync_server.blobs.backends.local import LocalBlobBackend
from sync_server.blobs.backends.s3 import S3_MIN_PART_SIZE, S3BlobBackend
from sync_server.errors import Unavailable
from sync_server.settings import Settings

__all__ = [
    "BlobBackend",
    "BlobBackendError",
    "BlobMissingError",
    "IntegrityError",
    "LocalBlobBackend",
    "S3BlobBackend",
    "UploadLostError",
    "make_blob_backend",
    "storage_unavailable",
]

log = logging.getLogger("sync_server.blobs")


def storage_unavailable(exc: Exception, what: str = "blob storage") -> Unavailable:
    """The refusal a storage failure becomes (logged; the client may retry later)."""
    log.error("%s failure: %s", what, exc)
    return Unavailable(f"{what} is unavailable; try again later", code="storage_unavailable")


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
