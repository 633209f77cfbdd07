"""The server's tables (SQLAlchemy 2). Alembic migrations in `migrations/` create them.

Three groups:

- tenancy and identity: organisations, clinics, staff users, devices, enrolment and
  refresh tokens, used device-assertion nonces;
- replicated records: `documents` (Automerge bytes, the source of truth, with a
  per-clinic change-feed sequence) and the relational projections staff query
  (patients, wounds, assessments), written in the same transaction as the document;
- blobs: which clinic holds which content address, and resumable uploads in progress;
- `published_models`: the wound models the server signed and published, per organisation;
- `audit_events`: who read or wrote what, when, from which device, with what outcome.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "AssessmentRow",
    "AuditEvent",
    "Base",
    "Blob",
    "Clinic",
    "Device",
    "Document",
    "EnrolmentToken",
    "Organisation",
    "PatientRow",
    "PublishedModel",
    "RefreshToken",
    "Upload",
    "UsedNonce",
    "User",
    "WoundRow",
    "utcnow",
]


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC and always read back timezone-aware (SQLite too)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


Id = String(64)


class Base(DeclarativeBase):
    """Declarative base of every server table."""


# ---------------------------------------------------------------- tenancy, identity
class Organisation(Base):
    __tablename__ = "organisations"

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Clinic(Base):
    __tablename__ = "clinics"

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    organisation_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"), index=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    # The clinic's change feed: the last sequence number given to a document write.
    # Taken with a row lock inside the writing transaction, so numbers commit in order.
    feed_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class User(Base):
    """A staff account: clinician, staff or admin."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    organisation_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"), index=True)
    # None for an organisation-wide account (admins); else the clinic it works in.
    clinic_id: Mapped[str | None] = mapped_column(ForeignKey("clinics.id"), index=True)
    username: Mapped[str] = mapped_column(String(200), unique=True)
    password_hash: Mapped[str] = mapped_column(String(300))
    role: Mapped[str] = mapped_column(String(20))
    totp_secret: Mapped[str | None] = mapped_column(String(64))
    # The last TOTP time step accepted, so one code cannot be used twice.
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Device(Base):
    """An enrolled device: its id (also its Automerge actor) and Ed25519 public key."""

    __tablename__ = "devices"

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    clinic_id: Mapped[str] = mapped_column(ForeignKey("clinics.id"), index=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary(32))
    name: Mapped[str] = mapped_column(String(200), default="")
    enrolled_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    enrolled_with: Mapped[str | None] = mapped_column(Id)  # the enrolment token's id
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class EnrolmentToken(Base):
    """A one-time, expiring token that lets one device enrol into one clinic."""

    __tablename__ = "enrolment_tokens"

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # SHA-256 hex
    clinic_id: Mapped[str] = mapped_column(ForeignKey("clinics.id"), index=True)
    created_by: Mapped[str | None] = mapped_column(Id)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    device_id: Mapped[str | None] = mapped_column(Id)


class RefreshToken(Base):
    """One refresh token of a rotation chain (`family_id`).

    Using a token marks it used and issues its successor; presenting a used token
    again is reuse, and revokes every token of its family.
    """

    __tablename__ = "refresh_tokens"

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    family_id: Mapped[str] = mapped_column(Id, index=True)
    subject_kind: Mapped[str] = mapped_column(String(10))  # "device" or "user"
    subject_id: Mapped[str] = mapped_column(Id, index=True)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class UsedNonce(Base):
    """A device-assertion nonce already seen (replay protection until it expires)."""

    __tablename__ = "used_nonces"

    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    device_id: Mapped[str] = mapped_column(Id)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


# ---------------------------------------------------------------- replicated records
class Document(Base):
    """One record's Automerge document, and where it sits in its clinic's feed."""

    __tablename__ = "documents"
    __table_args__ = (Index("ix_documents_clinic_seq", "clinic_id", "seq", unique=True),)

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    clinic_id: Mapped[str] = mapped_column(ForeignKey("clinics.id"))
    collection: Mapped[str] = mapped_column(String(40))
    heads: Mapped[bytes] = mapped_column(LargeBinary)  # sorted 32-byte hashes, joined
    data: Mapped[bytes] = mapped_column(LargeBinary)  # Automerge saved bytes
    seq: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_by: Mapped[str | None] = mapped_column(Id)  # device or user id
    # The device whose push is exactly this version: it need not be sent back to it.
    # None when the server merged changes from elsewhere into it.
    origin_device: Mapped[str | None] = mapped_column(Id)


class _Projection:
    id: Mapped[str] = mapped_column(Id, primary_key=True)
    clinic_id: Mapped[str] = mapped_column(ForeignKey("clinics.id"), index=True)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    conflicted: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[str] = mapped_column(String(40))
    record: Mapped[str] = mapped_column(Text)  # the record as JSON


class PatientRow(_Projection, Base):
    __tablename__ = "patients"
    __table_args__ = (Index("ix_patients_clinic_name", "clinic_id", "family_name", "given_name"),)

    given_name: Mapped[str] = mapped_column(String(200))
    family_name: Mapped[str] = mapped_column(String(200))
    birth_date: Mapped[str] = mapped_column(String(10))
    sex: Mapped[str] = mapped_column(String(20))
    mrn: Mapped[str | None] = mapped_column(String(64), index=True)


class WoundRow(_Projection, Base):
    __tablename__ = "wounds"

    patient_id: Mapped[str] = mapped_column(Id, index=True)
    body_site: Mapped[str] = mapped_column(String(200))
    etiology: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(40))
    onset: Mapped[str | None] = mapped_column(String(10))


class AssessmentRow(_Projection, Base):
    __tablename__ = "assessments"
    __table_args__ = (Index("ix_assessments_wound_time", "wound_id", "captured_at"),)

    wound_id: Mapped[str] = mapped_column(Id)
    patient_id: Mapped[str] = mapped_column(Id, index=True)
    captured_at: Mapped[str] = mapped_column(String(40))  # sortable UTC text
    device_id: Mapped[str] = mapped_column(Id)
    clinician: Mapped[str | None] = mapped_column(String(200))
    area_cm2: Mapped[float | None] = mapped_column(Float)
    perimeter_cm: Mapped[float | None] = mapped_column(Float)
    length_cm: Mapped[float | None] = mapped_column(Float)
    width_cm: Mapped[float | None] = mapped_column(Float)
    max_depth_mm: Mapped[float | None] = mapped_column(Float)
    mean_depth_mm: Mapped[float | None] = mapped_column(Float)
    volume_cm3: Mapped[float | None] = mapped_column(Float)
    model_id: Mapped[str | None] = mapped_column(String(200))


# ---------------------------------------------------------------- blobs
class Blob(Base):
    """A complete, verified blob that a clinic holds."""

    __tablename__ = "blobs"

    clinic_id: Mapped[str] = mapped_column(ForeignKey("clinics.id"), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    uploaded_by: Mapped[str | None] = mapped_column(Id)


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


# ---------------------------------------------------------------- models
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


# ---------------------------------------------------------------- audit
class AuditEvent(Base):
    """One read or write of patient data (or an identity event) on the server."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    actor_kind: Mapped[str] = mapped_column(String(10))  # device, user, system
    actor_id: Mapped[str | None] = mapped_column(Id)
    clinic_id: Mapped[str | None] = mapped_column(Id, index=True)
    action: Mapped[str] = mapped_column(String(40))
    target: Mapped[str | None] = mapped_column(Text)  # record ids / blob address, no names
    outcome: Mapped[str] = mapped_column(String(40))
    request_id: Mapped[str | None] = mapped_column(String(64))
