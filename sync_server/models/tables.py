"""`published_models`: the wound models the server signed and published, per organisation."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    LargeBinary,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from sync_server.db import Base, Id, UTCDateTime, utcnow

__all__ = ["PublishedModel"]


class PublishedModel(Base):
    """A wound model an admin published for an organisation's devices, signed by the server.

    `manifest` is the canonical manifest exactly as signed (`ModelManifest.to_bytes()`)
    and `signature` its detached Ed25519 signature by the server's key; the model bytes
    are in the blob backend, content-addressed by `sha256`. At most one row per
    organisation is `active`: the model its devices install.
    """

    __tablename__ = "published_models"
    __table_args__ = (
        UniqueConstraint("organisation_id", "sha256", name="uq_published_models_org_sha256"),
        Index(
            "uq_published_models_active",
            "organisation_id",
            unique=True,
            sqlite_where=text("active"),
            postgresql_where=text("active"),
        ),
    )

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    organisation_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"))
    model_id: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(64))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    manifest: Mapped[bytes] = mapped_column(LargeBinary)
    signature: Mapped[bytes] = mapped_column(LargeBinary)
    published_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    published_by: Mapped[str | None] = mapped_column(Id)  # the admin's user id
    active: Mapped[bool] = mapped_column(Boolean, default=False)
