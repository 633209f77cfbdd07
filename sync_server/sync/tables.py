"""Replicated records: `documents` (Automerge bytes, the source of truth, with a
per-clinic change-feed sequence) and the relational projections staff query
(patients, wounds, assessments), written in the same transaction as the document.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, Float, ForeignKey, Index, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from sync_server.db import Base, Id, UTCDateTime, utcnow

__all__ = ["AssessmentRow", "Document", "PatientRow", "WoundRow"]


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
    # The patient the record belongs to (a patient's own id for a patient), for the
    # audit of pulls and pushes; None for records of no one patient (directories...).
    patient_id: Mapped[str | None] = mapped_column(Id, index=True)


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
