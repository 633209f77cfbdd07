"""Request and response bodies of the blob routes."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from crdt import SHA256_PATTERN

__all__ = ["MissingBlobs", "UploadCreate", "UploadState"]


class UploadCreate(BaseModel):
    """The blob a device is about to upload."""

    model_config = ConfigDict(extra="forbid")

    sha256: str = Field(pattern=SHA256_PATTERN, description="SHA-256 of the whole blob, hex.")
    size: int = Field(ge=0, description="The blob's size in bytes.")


class UploadState(BaseModel):
    """Where an upload stands, and how to send the rest of it."""

    model_config = ConfigDict(from_attributes=True)

    upload_id: str | None = Field(description="Upload id for PATCH; null once complete.")
    sha256: str
    size: int = Field(description="Declared size of the blob in bytes.")
    offset: int = Field(description="Bytes the server holds; send the next chunk from here.")
    complete: bool = Field(description="True when the server holds the whole, verified blob.")
    chunk_size: int = Field(description="Suggested chunk size in bytes.")
    min_chunk_size: int = Field(
        description="Smallest chunk accepted for any chunk but the last (0: no minimum)."
    )
    max_chunk_size: int = Field(description="Largest chunk accepted (a bigger one gets 413).")


class MissingBlobs(BaseModel):
    """A page of the clinic's blobs the storage lost."""

    sha256: list[str] = Field(description="The missing blobs' SHA-256, in order.")
    next_after: str | None = Field(
        description="Pass as `after` for the next page; null on the last page."
    )
