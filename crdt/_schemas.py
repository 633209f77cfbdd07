"""Typed schemas of the replicated clinical records.

Each record is one Automerge document. A schema class says which fields a record has,
how each is stored (`FieldKind`) and which cannot change once written. The metadata
fields of `Record` are written by `RecordDocument`, never by callers.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import date, datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from crdt._errors import RecordValidationError
from crdt._ids import uuid7
from crdt._protocol import SHA256_PATTERN

__all__ = [
    "COLLECTIONS",
    "INTENT_DETAILS",
    "AllergyCategory",
    "AllergyCriticality",
    "AllergyIntolerance",
    "AllergyStatus",
    "AllergyType",
    "AppointmentCancel",
    "AppointmentRequest",
    "AppointmentReschedule",
    "Availability",
    "BlobReference",
    "CarePlan",
    "CarePlanStatus",
    "Catalogue",
    "CatalogueProduct",
    "ClinicalNote",
    "Code",
    "Condition",
    "ConditionStatus",
    "Contact",
    "ContactKind",
    "Decision",
    "DecisionStatus",
    "DeliverTo",
    "Directory",
    "DirectoryClinic",
    "DirectoryProvider",
    "DirectoryService",
    "EmergencyContact",
    "Etiology",
    "FieldKind",
    "FreeSlot",
    "Insurance",
    "Intent",
    "IntentKind",
    "Invoice",
    "InvoiceLineView",
    "InvoiceStatus",
    "KitComponent",
    "Measurements",
    "MedicationStatement",
    "MedicationStatus",
    "ModelOutput",
    "Notice",
    "OrderCancel",
    "OrderLine",
    "OrderPlace",
    "Patient",
    "PaymentPay",
    "PaymentView",
    "ProductCategory",
    "ProviderKind",
    "Record",
    "Sex",
    "VisitRequest",
    "VisitReview",
    "Wound",
    "WoundAssessment",
    "WoundStatus",
    "availability_id",
    "catalogue_id",
    "decision_id",
    "directory_id",
    "format_money",
    "invoice_record_id",
    "new_record_id",
    "notice_id",
    "schema_for",
]

ShortText = Annotated[str, Field(min_length=1, max_length=200)]
Id = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[0-9a-zA-Z._:-]+$")]


def new_record_id() -> str:
    """Return a new UUIDv7 string: time-ordered, so ids sort by creation."""
    return uuid7()


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
    # The request could not be met as asked, and the intent allowed the server to
    # take the nearest fit instead (`Decision.outcome` says what was taken).
    ACCEPTED_ALTERNATIVE = "accepted_alternative"
    REJECTED = "rejected"


class IntentKind(enum.StrEnum):
    """What a device asks the server to decide."""

    APPOINTMENT_REQUEST = "appointment.request"
    APPOINTMENT_RESCHEDULE = "appointment.reschedule"
    APPOINTMENT_CANCEL = "appointment.cancel"
    VISIT_REQUEST = "visit.request"
    VISIT_REVIEW = "visit.review"
    ORDER_PLACE = "order.place"
    ORDER_CANCEL = "order.cancel"
    PAYMENT_PAY = "payment.pay"


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
    # Since assessments v2: how `area_cm2` was obtained. "measured": traced on the scan
    # (or entered as measured); "ellipse": estimated as pi/4 x length x width, which is
    # how a ruler-only assessment's area is read (a rectangle overstates it by ~27%).
    area_method: Literal["measured", "ellipse"] | None = None


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
    # True for intents: nothing may change once the record is written (every field is
    # immutable and a merge refuses any later change).
    frozen: ClassVar[bool] = False
    text_fields: ClassVar[frozenset[str]] = frozenset()
    # Fields that decide where a record lives or what it belongs to: changing them
    # after creation would move patient data between scopes, so merges refuse it.
    immutable_fields: ClassVar[frozenset[str]] = frozenset({"id", "clinic_id"})
    # False for server-owned collections: the server refuses any device change to them.
    device_writable: ClassVar[bool] = True
    # The version of this collection's record schema that this code writes and reads.
    # A bump comes with a migration from the version before (`crdt.migrate`).
    schema_version: ClassVar[int] = 1

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


class EmergencyContact(_Value):
    """Someone to call about the patient in an emergency."""

    name: ShortText
    relationship: ShortText | None = None  # as said: "daughter", "carer", "neighbour"
    phone: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    email: Annotated[str, Field(min_length=1, max_length=320)] | None = None


class Insurance(_Value):
    """One payer that covers the patient's care (an insurer, a health fund, a scheme)."""

    payer: ShortText  # the payer's name, as on the card
    member_id: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    plan: ShortText | None = None
    group: ShortText | None = None
    subscriber: ShortText | None = None  # the policy holder, when not the patient
    relationship: ShortText | None = None  # the patient's relation to the subscriber
    valid_from: date | None = None
    valid_until: date | None = None

    @model_validator(mode="after")
    def _period_in_order(self) -> Insurance:
        if self.valid_from and self.valid_until and self.valid_until < self.valid_from:
            raise ValueError("valid_until is before valid_from")
        return self


class Code(_Value):
    """A concept in a code system (SNOMED CT, ICD-10, RxNorm, ...), as FHIR codes it."""

    system: Annotated[str, Field(min_length=1, max_length=200)]  # the system's URI
    code: Annotated[str, Field(min_length=1, max_length=100)]
    display: Annotated[str, Field(max_length=500)] | None = None


class Patient(Record):
    """A person under the service's care."""

    collection: ClassVar[str] = "patients"
    schema_version: ClassVar[int] = 2  # v2: emergency_contacts and insurance
    json_fields: ClassVar[frozenset[str]] = frozenset(
        {"contacts", "emergency_contacts", "insurance"}
    )

    given_name: Annotated[str, Field(min_length=1, max_length=200)]
    family_name: Annotated[str, Field(min_length=1, max_length=200)]
    birth_date: date
    sex: Sex = Sex.UNKNOWN
    mrn: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    contacts: tuple[Contact, ...] = ()
    emergency_contacts: Annotated[tuple[EmergencyContact, ...], Field(max_length=20)] = ()
    insurance: Annotated[tuple[Insurance, ...], Field(max_length=10)] = ()

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
    schema_version: ClassVar[int] = 2  # v2: measurements.area_method (see crdt._migrations)
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


class ConditionStatus(enum.StrEnum):
    """Whether a condition is present now (FHIR's condition clinical status)."""

    ACTIVE = "active"
    RECURRENCE = "recurrence"
    RELAPSE = "relapse"
    INACTIVE = "inactive"
    REMISSION = "remission"
    RESOLVED = "resolved"


class Condition(Record):
    """One entry of a patient's medical history: a diagnosis, with its course.

    A wound is a `Wound`, not a condition; conditions are what else the patient has
    (diabetes, peripheral arterial disease, ...), which decide how a wound heals.
    """

    collection: ClassVar[str] = "conditions"
    json_fields: ClassVar[frozenset[str]] = frozenset({"code"})
    immutable_fields: ClassVar[frozenset[str]] = Record.immutable_fields | {"patient_id"}

    patient_id: Id
    description: ShortText  # the diagnosis as the clinician wrote it
    code: Code | None = None  # SNOMED CT or ICD-10, when coded
    clinical_status: ConditionStatus = ConditionStatus.ACTIVE
    onset: date | None = None
    abatement: date | None = None  # when it resolved or went into remission
    note: Annotated[str, Field(max_length=2000)] | None = None

    @model_validator(mode="after")
    def _course_in_order(self) -> Condition:
        if self.onset and self.abatement and self.abatement < self.onset:
            raise ValueError("abatement is before onset")
        return self


class AllergyType(enum.StrEnum):
    """An immune reaction, or an intolerance that is not one."""

    ALLERGY = "allergy"
    INTOLERANCE = "intolerance"


class AllergyCategory(enum.StrEnum):
    """What kind of substance the patient reacts to."""

    FOOD = "food"
    MEDICATION = "medication"
    ENVIRONMENT = "environment"  # latex, adhesives, dressings' materials
    BIOLOGIC = "biologic"


class AllergyCriticality(enum.StrEnum):
    """How bad a future reaction could be."""

    LOW = "low"
    HIGH = "high"
    UNABLE_TO_ASSESS = "unable-to-assess"


class AllergyStatus(enum.StrEnum):
    """Whether the allergy still holds."""

    ACTIVE = "active"
    INACTIVE = "inactive"
    RESOLVED = "resolved"


class AllergyIntolerance(Record):
    """A substance the patient must not be given (a drug, latex, an adhesive)."""

    collection: ClassVar[str] = "allergies"
    json_fields: ClassVar[frozenset[str]] = frozenset({"code"})
    immutable_fields: ClassVar[frozenset[str]] = Record.immutable_fields | {"patient_id"}

    patient_id: Id
    substance: ShortText  # as written: "penicillin", "zinc oxide tape"
    code: Code | None = None
    type: AllergyType | None = None
    category: AllergyCategory | None = None
    criticality: AllergyCriticality | None = None
    clinical_status: AllergyStatus = AllergyStatus.ACTIVE
    reaction: ShortText | None = None  # the manifestation: "rash", "anaphylaxis"
    onset: date | None = None
    note: Annotated[str, Field(max_length=2000)] | None = None


class MedicationStatus(enum.StrEnum):
    """Whether the patient takes the medication (FHIR's MedicationStatement status)."""

    ACTIVE = "active"
    COMPLETED = "completed"
    STOPPED = "stopped"
    ON_HOLD = "on-hold"
    INTENDED = "intended"
    NOT_TAKEN = "not-taken"
    UNKNOWN = "unknown"


class MedicationStatement(Record):
    """A medication the patient takes or took (current and past)."""

    collection: ClassVar[str] = "medications"
    json_fields: ClassVar[frozenset[str]] = frozenset({"code"})
    immutable_fields: ClassVar[frozenset[str]] = Record.immutable_fields | {"patient_id"}

    patient_id: Id
    medication: ShortText  # as written: "metformin 500 mg tablets"
    code: Code | None = None  # RxNorm, SNOMED CT or a national code, when coded
    status: MedicationStatus = MedicationStatus.ACTIVE
    dosage: Annotated[str, Field(max_length=500)] | None = None  # "500 mg twice daily"
    route: ShortText | None = None  # "oral", "topical"
    started: date | None = None
    ended: date | None = None
    reason: ShortText | None = None
    note: Annotated[str, Field(max_length=2000)] | None = None

    @model_validator(mode="after")
    def _period_in_order(self) -> MedicationStatement:
        if self.started and self.ended and self.ended < self.started:
            raise ValueError("ended is before started")
        return self


class CarePlanStatus(enum.StrEnum):
    """Where a care plan is in its life (FHIR's request status)."""

    DRAFT = "draft"
    ACTIVE = "active"
    ON_HOLD = "on-hold"
    COMPLETED = "completed"
    REVOKED = "revoked"


class CarePlan(Record):
    """How one wound is to be treated: goals, dressing regime, offloading, next review."""

    collection: ClassVar[str] = "care_plans"
    json_fields: ClassVar[frozenset[str]] = frozenset({"goals"})
    immutable_fields: ClassVar[frozenset[str]] = Record.immutable_fields | {
        "patient_id",
        "wound_id",
    }

    patient_id: Id
    wound_id: Id
    status: CarePlanStatus = CarePlanStatus.ACTIVE
    title: ShortText | None = None
    goals: Annotated[tuple[ShortText, ...], Field(max_length=20)] = ()
    dressing: Annotated[str, Field(max_length=500)] | None = None  # the regime
    dressing_every_days: Annotated[int, Field(ge=1, le=90)] | None = None  # changed every
    offloading: Annotated[str, Field(max_length=500)] | None = None
    review_on: date | None = None
    starts_on: date | None = None
    ends_on: date | None = None
    note: Annotated[str, Field(max_length=2000)] | None = None

    @model_validator(mode="after")
    def _period_in_order(self) -> CarePlan:
        if self.starts_on and self.ends_on and self.ends_on < self.starts_on:
            raise ValueError("ends_on is before starts_on")
        return self


class Decision(Record):
    """The server's decision on a device's intent (a server-owned record).

    Devices record intents (book a slot, pay an invoice) under a client-made id; the
    server decides and syncs this record down. Devices read it and never write it.
    """

    collection: ClassVar[str] = "decisions"
    device_writable: ClassVar[bool] = False
    immutable_fields: ClassVar[frozenset[str]] = Record.immutable_fields | {"intent_id"}
    json_fields: ClassVar[frozenset[str]] = frozenset({"outcome", "alternative"})

    intent_id: Id
    kind: IntentKind | None = None
    status: DecisionStatus
    reason: Annotated[str, Field(max_length=2000)] | None = None  # for a person to read
    # What the server did (e.g. the booking it made), and on a rejection the nearest
    # fit it could offer instead (ask again for it).
    outcome: dict[str, Any] | None = None
    alternative: dict[str, Any] | None = None


class AppointmentRequest(_Value):
    """Book a slot: a service at a time, with one doctor or any doctor of a
    specialisation. `flexible` lets the server book the nearest free fit instead."""

    service: ShortText
    starts_at: datetime
    provider_id: Id | None = None
    specialisation: ShortText | None = None
    flexible: bool = False

    @field_validator("starts_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return _aware_time(value)


class AppointmentReschedule(_Value):
    """Move a booked appointment (`Intent.subject_id`) to another time (and doctor)."""

    starts_at: datetime
    provider_id: Id | None = None
    flexible: bool = False

    @field_validator("starts_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return _aware_time(value)


class AppointmentCancel(_Value):
    """Cancel a booked appointment (`Intent.subject_id`)."""

    reason: Annotated[str, Field(max_length=500)] | None = None


class VisitRequest(_Value):
    """Book a caregiver visit at the patient's home: a skill, an area, a time, and
    either a named caregiver or the best free one."""

    skill: ShortText
    area: ShortText
    starts_at: datetime
    duration_minutes: Annotated[int, Field(ge=5, le=480, multiple_of=5)] = 60
    caregiver_id: Id | None = None
    language: ShortText | None = None
    flexible: bool = False

    @field_validator("starts_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return _aware_time(value)


class VisitReview(_Value):
    """Review a completed visit (`Intent.subject_id`), once."""

    rating: Annotated[int, Field(ge=1, le=5)]
    comment: Annotated[str, Field(max_length=2000)] | None = None


class DeliverTo(enum.StrEnum):
    """Where an order goes."""

    CLINIC = "clinic"  # the clinic the order was placed from
    HOME = "home"  # the patient's address


Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
"""An ISO 4217 currency code; amounts are integers in its minor unit (cents)."""


# ISO 4217 currencies whose minor unit is not a hundredth.
_EXPONENTS = {
    **dict.fromkeys(("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW"), 0),
    **dict.fromkeys(("PYG", "RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF"), 0),
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
}


def currency_exponent(currency: str) -> int:
    """How many decimal places the minor unit of `currency` has (ISO 4217): 2 for most
    (EUR cents), 0 for JPY or XOF, 3 for KWD or BHD. ``amount / 10**exponent`` is the
    amount in major units."""
    return _EXPONENTS.get(currency, 2)


def format_money(amount: int, currency: str) -> str:
    """`amount` minor units of `currency` as people read it: ``3100`` EUR is
    ``"31.00 EUR"``, ``500`` JPY is ``"500 JPY"``."""
    exponent = currency_exponent(currency)
    if exponent == 0:
        return f"{amount} {currency}"
    sign = "-" if amount < 0 else ""
    major, minor = divmod(abs(amount), 10**exponent)
    return f"{sign}{major}.{minor:0{exponent}d} {currency}"


class OrderLine(_Value):
    """One line of an order: a catalogue product (or kit) and how many."""

    product_id: Id
    quantity: Annotated[int, Field(ge=1, le=10_000)]


class OrderPlace(_Value):
    """Order supplies for `Intent.patient_id`: each line is accepted with a reservation
    or rejected with its reason; `partial` accepts the lines that can be had when
    others cannot (otherwise one refused line refuses the order)."""

    lines: Annotated[tuple[OrderLine, ...], Field(min_length=1, max_length=100)]
    deliver_to: DeliverTo = DeliverTo.CLINIC
    address: Annotated[str, Field(max_length=1000)] | None = None  # for home delivery
    partial: bool = False

    @model_validator(mode="after")
    def _home_has_an_address(self) -> OrderPlace:
        if self.deliver_to is DeliverTo.HOME and not self.address:
            raise ValueError("a home delivery needs an address")
        return self


class OrderCancel(_Value):
    """Cancel an order (`Intent.subject_id`) that has not shipped; its stock is released."""

    reason: Annotated[str, Field(max_length=500)] | None = None


class PaymentPay(_Value):
    """Pay `amount` of an invoice (`Intent.subject_id`) with a gateway payment method
    token; the intent's id is the payment's idempotency key."""

    amount: Annotated[int, Field(ge=1, le=100_000_000)]  # minor units
    currency: Currency
    payment_method: Annotated[str, Field(min_length=1, max_length=200)]


INTENT_DETAILS: Mapping[IntentKind, type[_Value]] = {
    IntentKind.APPOINTMENT_REQUEST: AppointmentRequest,
    IntentKind.APPOINTMENT_RESCHEDULE: AppointmentReschedule,
    IntentKind.APPOINTMENT_CANCEL: AppointmentCancel,
    IntentKind.VISIT_REQUEST: VisitRequest,
    IntentKind.VISIT_REVIEW: VisitReview,
    IntentKind.ORDER_PLACE: OrderPlace,
    IntentKind.ORDER_CANCEL: OrderCancel,
    IntentKind.PAYMENT_PAY: PaymentPay,
}
_NEEDS_SUBJECT = frozenset(
    {
        IntentKind.APPOINTMENT_RESCHEDULE,
        IntentKind.APPOINTMENT_CANCEL,
        IntentKind.VISIT_REVIEW,
        IntentKind.ORDER_CANCEL,
        IntentKind.PAYMENT_PAY,
    }
)
_NEEDS_PATIENT = frozenset(
    {IntentKind.APPOINTMENT_REQUEST, IntentKind.VISIT_REQUEST, IntentKind.ORDER_PLACE}
)


class Intent(Record):
    """Something a device asks the server to decide (book, move, cancel, review).

    Immutable: written once, offline, under a client-made UUIDv7 that is also its
    idempotency key; every replica refuses any later change to it. The server decides
    it once, in the push that delivers it, and answers with a `Decision`.
    """

    collection: ClassVar[str] = "intents"
    json_fields: ClassVar[frozenset[str]] = frozenset({"details"})
    frozen: ClassVar[bool] = True

    kind: IntentKind
    patient_id: Id | None = None
    # What the intent acts on: the booking a reschedule, cancel or review names, the
    # order a cancel names, the invoice a payment pays.
    subject_id: Id | None = None
    details: dict[str, Any]

    @model_validator(mode="after")
    def _details_fit_the_kind(self) -> Intent:
        INTENT_DETAILS[self.kind].model_validate(self.details)
        if (self.kind in _NEEDS_SUBJECT) != (self.subject_id is not None):
            needs = "needs" if self.kind in _NEEDS_SUBJECT else "takes no"
            raise ValueError(f"a {self.kind} intent {needs} subject_id")
        if self.kind in _NEEDS_PATIENT and self.patient_id is None:
            raise ValueError(f"a {self.kind} intent needs patient_id")
        return self

    def parsed_details(self) -> BaseModel:
        """`details` as its kind's model (`AppointmentRequest`, `VisitReview`, ...)."""
        return INTENT_DETAILS[self.kind].model_validate(self.details)


class ProviderKind(enum.StrEnum):
    """Who a booking is with."""

    DOCTOR = "doctor"
    NURSE = "nurse"
    CAREGIVER = "caregiver"  # visits patients at home


class DirectoryClinic(_Value):
    """A hospital or clinic of the organisation."""

    id: Id
    name: ShortText
    timezone: ShortText


class DirectoryProvider(_Value):
    """A doctor, nurse or caregiver that can be booked."""

    id: Id
    name: ShortText
    kind: ProviderKind
    clinic_id: Id | None = None  # None: works across the organisation (caregivers)
    specialisations: tuple[ShortText, ...] = ()
    skills: tuple[ShortText, ...] = ()  # caregivers: wound dressing, compression, NPWT...
    languages: tuple[ShortText, ...] = ()
    areas: tuple[ShortText, ...] = ()  # caregivers: the areas they serve
    services: tuple[ShortText, ...] = ()  # codes of the services they offer


class DirectoryService(_Value):
    """Something that can be booked, and how long one slot of it lasts."""

    code: ShortText
    name: ShortText
    duration_minutes: Annotated[int, Field(ge=5, le=480, multiple_of=5)]
    specialisation: ShortText | None = None


class Directory(Record):
    """The organisation's bookable directory as one clinic's devices see it
    (server-owned reference data, synced down read-only; may be stale offline)."""

    collection: ClassVar[str] = "directory"
    device_writable: ClassVar[bool] = False
    json_fields: ClassVar[frozenset[str]] = frozenset({"clinics", "providers", "services"})

    generated_at: datetime
    clinics: tuple[DirectoryClinic, ...] = ()
    providers: tuple[DirectoryProvider, ...] = ()
    services: tuple[DirectoryService, ...] = ()


class FreeSlot(_Value):
    """A slot the server had free when it wrote the availability record."""

    provider_id: Id
    service: ShortText
    starts_at: datetime
    ends_at: datetime


class Availability(Record):
    """One clinic's free slots on one day, in the clinic's time zone (server-owned
    reference data, synced down read-only: what can be asked for, as of
    `generated_at`)."""

    collection: ClassVar[str] = "availability"
    device_writable: ClassVar[bool] = False
    json_fields: ClassVar[frozenset[str]] = frozenset({"slots"})

    day: date
    timezone: ShortText
    generated_at: datetime
    slots: tuple[FreeSlot, ...] = ()


class ProductCategory(enum.StrEnum):
    """Kinds of wound-care supplies."""

    DRESSING = "dressing"
    COMPRESSION = "compression"
    NPWT = "npwt"  # negative-pressure wound therapy kits and canisters
    CLEANSER = "cleanser"
    OTHER = "other"


class KitComponent(_Value):
    """A product inside a kit, and how many of it one kit holds."""

    product_id: Id
    quantity: Annotated[int, Field(ge=1, le=1000)]


class CatalogueProduct(_Value):
    """A supply as devices see it (prices in minor units of `currency`)."""

    id: Id
    sku: ShortText
    name: ShortText
    category: ProductCategory
    product_class: ShortText  # what a prescription names (e.g. "foam dressing")
    unit: ShortText  # "box of 10", "each", "roll"
    price: Annotated[int, Field(ge=0)]
    currency: Currency
    prescription_required: bool = False
    hcpcs: Annotated[str, Field(pattern=r"^[A-Z][0-9]{4}$")] | None = None
    components: tuple[KitComponent, ...] = ()  # a kit: its stock is its components'
    available: Annotated[int, Field(ge=0)] | None = None  # at the clinic, when written


class Catalogue(Record):
    """The organisation's supplies as one clinic's devices see them (server-owned
    reference data, synced down read-only; may be stale offline)."""

    collection: ClassVar[str] = "catalogue"
    device_writable: ClassVar[bool] = False
    json_fields: ClassVar[frozenset[str]] = frozenset({"products"})

    generated_at: datetime
    products: tuple[CatalogueProduct, ...] = ()


class InvoiceStatus(enum.StrEnum):
    """Where an invoice stands."""

    DRAFT = "draft"
    OPEN = "open"  # issued, not fully paid
    PAID = "paid"
    VOID = "void"  # cancelled before any payment
    REFUNDED = "refunded"  # paid, then refunded in full


class InvoiceLineView(_Value):
    """One line of an invoice as devices see it."""

    kind: ShortText  # "order", "appointment", "visit"
    reference_id: Id | None = None  # the order or booking it bills
    description: ShortText
    quantity: Annotated[int, Field(ge=1)]
    unit_price: Annotated[int, Field(ge=0)]
    amount: Annotated[int, Field(ge=0)]


class PaymentView(_Value):
    """A payment or refund against an invoice as devices see it."""

    id: Id
    kind: ShortText  # "payment" or "refund"
    amount: Annotated[int, Field(ge=0)]
    status: ShortText  # "processing", "succeeded", "failed"
    at: datetime


class Invoice(Record):
    """A patient's invoice (server-owned, synced down read-only): what is owed, what
    was paid and refunded. Devices pay it with a `payment.pay` intent."""

    collection: ClassVar[str] = "invoices"
    device_writable: ClassVar[bool] = False
    json_fields: ClassVar[frozenset[str]] = frozenset({"lines", "payments"})

    number: ShortText  # gapless per organisation, e.g. "INV-000042"
    patient_id: Id | None = None
    status: InvoiceStatus
    currency: Currency
    total: Annotated[int, Field(ge=0)]
    paid: Annotated[int, Field(ge=0)] = 0
    refunded: Annotated[int, Field(ge=0)] = 0
    issued_at: datetime | None = None
    due_at: datetime | None = None
    lines: tuple[InvoiceLineView, ...] = ()
    payments: tuple[PaymentView, ...] = ()


NoticeValue = Annotated[str, Field(max_length=500)] | int | float | bool | None
NoticeDetail = Annotated[
    dict[Annotated[str, Field(max_length=60)], NoticeValue], Field(max_length=40)
]


class Notice(Record):
    """An in-app notification for one recipient (a server-owned record, synced down
    read-only): what happened (`kind`, e.g. ``booking.decided``), a short `title` and a
    small `detail` (the event's ids and values; it may hold clinical values and never
    leaves the app). `recipient` is ``patient:<id>`` or ``staff:<clinic id>``;
    `patient_id` names the patient of a ``patient:`` recipient. `created_at` is when
    the event was recorded; `event_id` is the server's notification event."""

    collection: ClassVar[str] = "notices"
    device_writable: ClassVar[bool] = False
    json_fields: ClassVar[frozenset[str]] = frozenset({"detail"})
    immutable_fields: ClassVar[frozenset[str]] = Record.immutable_fields | {
        "recipient",
        "patient_id",
        "event_id",
        "kind",
    }

    recipient: Annotated[str, Field(min_length=1, max_length=200)]
    patient_id: Id | None = None
    kind: Annotated[str, Field(min_length=1, max_length=60)]
    title: ShortText
    detail: Annotated[
        dict[Annotated[str, Field(max_length=60)], NoticeValue], Field(max_length=40)
    ] = Field(default_factory=dict)
    event_id: Id

    @model_validator(mode="after")
    def _patient_matches_recipient(self) -> Notice:
        prefix, _, rest = self.recipient.partition(":")
        if prefix not in ("patient", "staff") or not rest:
            raise ValueError("recipient is patient:<id> or staff:<clinic id>")
        expected = rest if prefix == "patient" else None
        if self.patient_id != expected:
            raise ValueError("patient_id is the id of a patient: recipient, else None")
        return self


def notice_id(key: str) -> str:
    """The id of the `Notice` the in-app channel writes for delivery `key` (its
    idempotency key): a resend rewrites the same record."""
    return f"notice:{key}"


def directory_id(clinic_id: str) -> str:
    """The id of a clinic's `Directory` record (one per clinic)."""
    return f"directory:{clinic_id}"


def availability_id(clinic_id: str, day: date) -> str:
    """The id of a clinic's `Availability` record for `day`."""
    return f"availability:{clinic_id}:{day.isoformat()}"


def catalogue_id(clinic_id: str) -> str:
    """The id of a clinic's `Catalogue` record (one per clinic)."""
    return f"catalogue:{clinic_id}"


def invoice_record_id(invoice_id: str) -> str:
    """The id of the `Invoice` record of the server's invoice `invoice_id`."""
    return f"invoice:{invoice_id}"


def decision_id(intent_id: str) -> str:
    """The id of the `Decision` on `intent_id`: one per intent, whoever writes it."""
    return f"decision:{intent_id}"


COLLECTIONS: Mapping[str, type[Record]] = {
    schema.collection: schema
    for schema in (
        Patient,
        Wound,
        WoundAssessment,
        ClinicalNote,
        Condition,
        AllergyIntolerance,
        MedicationStatement,
        CarePlan,
        Decision,
        Intent,
        Directory,
        Availability,
        Catalogue,
        Invoice,
        Notice,
    )
}


def schema_for(collection: str) -> type[Record]:
    """Return the schema class of `collection`, or raise `KeyError`."""
    return COLLECTIONS[collection]


def schema_versions() -> str:
    """Every collection with the schema version this code reads and writes, as one
    string (``"allergies:1,...,wounds:1"``): replicas that give the same string read a
    record to the same values, so one can check a record another describes."""
    return ",".join(
        f"{name}:{schema.schema_version}" for name, schema in sorted(COLLECTIONS.items())
    )


def _aware_time(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("a time must say its UTC offset")
    return value


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
