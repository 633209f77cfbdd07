"""Typed schemas of the replicated clinical records.

Each record is one Automerge document. A schema class says which fields a record has,
how each is stored (`FieldKind`) and which cannot change once written. The metadata
fields of `Record` are written by `RecordDocument`, never by callers.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import date, datetime
from typing import Annotated, Any, ClassVar

import uuid6
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from crdt._errors import RecordValidationError
from crdt._protocol import SHA256_PATTERN

__all__ = [
    "COLLECTIONS",
    "BlobReference",
    "ClinicalNote",
    "Contact",
    "ContactKind",
    "Decision",
    "DecisionStatus",
    "Etiology",
    "FieldKind",
    "Measurements",
    "ModelOutput",
    "Patient",
    "Record",
    "Sex",
    "Wound",
    "WoundAssessment",
    "WoundStatus",
    "new_record_id",
    "schema_for",
]

ShortText = Annotated[str, Field(min_length=1, max_length=200)]
Id = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[0-9a-zA-Z._:-]+$")]


def new_record_id() -> str:
    """Return a new UUIDv7 string: time-ordered, so ids sort by creation."""
    return str(uuid6.uuid7())


class FieldKind(enum.Enum):
    """How a field is stored in its Automerge document."""

    SCALAR = "scalar"  # one Automerge scalar; concurrent writes are a conflict
    JSON = "json"  # a structured value written whole, as canonical JSON text
    TEXT = "text"  # Automerge text: concurrent edits merge character by character


class Sex(enum.StrEnum):
    """Administrative sex as recorded at registration."""

    FEMALE = "female"
    MALE = "male"
    OTHER = "other"
    UNKNOWN = "unknown"


class ContactKind(enum.StrEnum):
    """What a contact entry is."""

    PHONE = "phone"
    EMAIL = "email"
    ADDRESS = "address"
    NEXT_OF_KIN = "next_of_kin"


class Etiology(enum.StrEnum):
    """The wound's cause, as classified by the clinician."""

    PRESSURE = "pressure"
    VENOUS = "venous"
    ARTERIAL = "arterial"
    DIABETIC = "diabetic"
    SURGICAL = "surgical"
    TRAUMATIC = "traumatic"
    BURN = "burn"
    OTHER = "other"
    UNKNOWN = "unknown"


class WoundStatus(enum.StrEnum):
    """Where the wound is in its course."""

    ACTIVE = "active"
    HEALING = "healing"
    DETERIORATING = "deteriorating"
    HEALED = "healed"
    CLOSED = "closed"


class DecisionStatus(enum.StrEnum):
    """The server's answer to a device's intent."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"


class _Value(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Contact(_Value):
    """One way to reach a patient or their next of kin."""

    kind: ContactKind
    value: Annotated[str, Field(min_length=1, max_length=500)]
    label: Annotated[str, Field(max_length=100)] | None = None


class Measurements(_Value):
    """Wound dimensions from a scan: cm, cm², cm³ and mm, as clinicians read them."""

    area_cm2: Annotated[float, Field(ge=0)] | None = None
    perimeter_cm: Annotated[float, Field(ge=0)] | None = None
    length_cm: Annotated[float, Field(ge=0)] | None = None
    width_cm: Annotated[float, Field(ge=0)] | None = None
    max_depth_mm: Annotated[float, Field(ge=0)] | None = None
    mean_depth_mm: Annotated[float, Field(ge=0)] | None = None
    volume_cm3: Annotated[float, Field(ge=0)] | None = None
    ruler_area_cm2: Annotated[float, Field(ge=0)] | None = None


class ModelOutput(_Value):
    """What the on-device wound model said about a scan."""

    model_id: ShortText
    model_version: ShortText
    tissue_composition: dict[str, Annotated[float, Field(ge=0, le=100)]] = {}
    confidence: Annotated[float, Field(ge=0, le=1)] | None = None


class BlobReference(_Value):
    """A content-addressed, encrypted blob (point cloud, image) an assessment refers to."""

    sha256: Annotated[str, Field(pattern=SHA256_PATTERN)]
    size: Annotated[int, Field(ge=0)]
    kind: ShortText
    media_type: ShortText = "application/octet-stream"


class Record(BaseModel):
    """Fields every record has. The metadata is written by `RecordDocument`."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=False)

    collection: ClassVar[str] = ""
    json_fields: ClassVar[frozenset[str]] = frozenset()
    text_fields: ClassVar[frozenset[str]] = frozenset()
    # Fields that decide where a record lives or what it belongs to: changing them
    # after creation would move patient data between scopes, so merges refuse it.
    immutable_fields: ClassVar[frozenset[str]] = frozenset({"id", "clinic_id"})
    # False for server-owned collections: the server refuses any device change to them.
    device_writable: ClassVar[bool] = True

    id: Id
    clinic_id: Id
    created_at: datetime
    created_by: Id
    updated_at: datetime
    updated_by: Id
    deleted: bool = False

    @classmethod
    def field_kind(cls, name: str) -> FieldKind:
        """How field `name` is stored."""
        if name in cls.text_fields:
            return FieldKind.TEXT
        if name in cls.json_fields:
            return FieldKind.JSON
        return FieldKind.SCALAR

    @classmethod
    def data_fields(cls) -> list[str]:
        """The fields callers write (everything but the metadata)."""
        return [name for name in cls.model_fields if name not in META_FIELDS]

    @classmethod
    def validate_values(cls, values: Mapping[str, Any]) -> Record:
        """Build a record from stored values, or raise `RecordValidationError`.

        Text may not hold a NUL character anywhere (PostgreSQL cannot store one, and
        no clinical value needs it): such a record is refused on every replica.
        """
        nul = sorted(name for name, value in values.items() if _holds_nul(value))
        if nul:
            raise RecordValidationError(
                cls.collection, [f"{name}: text may not contain a NUL character" for name in nul]
            )
        try:
            return cls.model_validate(dict(values))
        except ValidationError as exc:
            raise RecordValidationError(cls.collection, _error_lines(exc)) from None


META_FIELDS: frozenset[str] = frozenset(
    {"id", "clinic_id", "created_at", "created_by", "updated_at", "updated_by", "deleted"}
)


class Patient(Record):
    """A person under the service's care."""

    collection: ClassVar[str] = "patients"
    json_fields: ClassVar[frozenset[str]] = frozenset({"contacts"})

    given_name: Annotated[str, Field(min_length=1, max_length=200)]
    family_name: Annotated[str, Field(min_length=1, max_length=200)]
    birth_date: date
    sex: Sex = Sex.UNKNOWN
    mrn: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    contacts: tuple[Contact, ...] = ()

    @field_validator("birth_date")
    @classmethod
    def _not_in_future(cls, value: date) -> date:
        if value > date.today():
            raise ValueError("birth date is in the future")
        return value


class Wound(Record):
    """One wound of one patient, followed across assessments."""

    collection: ClassVar[str] = "wounds"
    immutable_fields: ClassVar[frozenset[str]] = Record.immutable_fields | {"patient_id"}

    patient_id: Id
    body_site: ShortText
    etiology: Etiology = Etiology.UNKNOWN
    status: WoundStatus = WoundStatus.ACTIVE
    onset: date | None = None


class WoundAssessment(Record):
    """One assessment of a wound: a scan's measurements, model output and provenance."""

    collection: ClassVar[str] = "assessments"
    json_fields: ClassVar[frozenset[str]] = frozenset(
        {"measurements", "model_output", "blobs", "quality_flags"}
    )
    immutable_fields: ClassVar[frozenset[str]] = Record.immutable_fields | {
        "wound_id",
        "patient_id",
    }

    wound_id: Id
    patient_id: Id
    captured_at: datetime
    device_id: Id
    clinician: ShortText | None = None
    measurements: Measurements = Measurements()
    model_output: ModelOutput | None = None
    blobs: tuple[BlobReference, ...] = ()
    quality_flags: tuple[ShortText, ...] = ()


class ClinicalNote(Record):
    """Free-text clinical note; two offline edits of one note both survive."""

    collection: ClassVar[str] = "notes"
    text_fields: ClassVar[frozenset[str]] = frozenset({"text"})
    immutable_fields: ClassVar[frozenset[str]] = Record.immutable_fields | {"patient_id"}

    patient_id: Id
    wound_id: Id | None = None
    author: ShortText
    text: Annotated[str, Field(max_length=100_000)] = ""


class Decision(Record):
    """The server's decision on a device's intent (a server-owned record).

    Devices record intents (book a slot, pay an invoice) under a client-made id; the
    server decides and syncs this record down. Devices read it and never write it.
    """

    collection: ClassVar[str] = "decisions"
    device_writable: ClassVar[bool] = False
    immutable_fields: ClassVar[frozenset[str]] = Record.immutable_fields | {"intent_id"}

    intent_id: Id
    status: DecisionStatus
    reason: Annotated[str, Field(max_length=2000)] | None = None


COLLECTIONS: Mapping[str, type[Record]] = {
    schema.collection: schema
    for schema in (Patient, Wound, WoundAssessment, ClinicalNote, Decision)
}


def schema_for(collection: str) -> type[Record]:
    """Return the schema class of `collection`, or raise `KeyError`."""
    return COLLECTIONS[collection]


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\0" in value
    if isinstance(value, Mapping):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(_holds_nul(item) for item in value)
    return False


def _error_lines(exc: ValidationError) -> list[str]:
    lines = []
    for err in exc.errors():
        where = ".".join(str(part) for part in err["loc"]) or "record"
        lines.append(f"{where}: {err['msg']}")
    return lines
