"""Blob tables: which clinic holds which content address, and resumable uploads in
progress. The bytes themselves are in the blob backend.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from sync_server.db import Base, Id, UTCDateTime, utcnow

__all__ = ["Blob", "Upload"]


class Blob(Base):
    """A complete, verified blob that a clinic holds (or held, while `missing_since`
    is set: the storage lost it and a device that holds it is asked to upload it again)."""

    __tablename__ = "blobs"

    clinic_id: Mapped[str] = mapped_column(ForeignKey("clinics.id"), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    uploaded_by: Mapped[str | None] = mapped_column(Id)
    # Set when the storage was found not to hold the blob (absent, another size, or
    # bytes with another SHA-256); a verified re-upload clears both.
    missing_since: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    missing_reason: Mapped[str | None] = mapped_column(String(20), default=None)


class Upload(Base):
    """A resumable upload in progress: bytes received so far, and the backend's handle."""

    __tablename__ = "uploads"
    # One upload at a time per blob and clinic: a second declaration resumes the first.
    __table_args__ = (Index("ix_uploads_clinic_sha", "clinic_id", "sha256", unique=True),)

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    clinic_id: Mapped[str] = mapped_column(ForeignKey("clinics.id"), index=True)
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    offset: Mapped[int] = mapped_column(BigInteger, default=0)
    parts: Mapped[int] = mapped_column(Integer, default=0)
    backend_ref: Mapped[str | None] = mapped_column(String(300))
    part_etags: Mapped[str] = mapped_column(Text, default="[]")  # JSON, for S3
    created_by: Mapped[str | None] = mapped_column(Id)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
