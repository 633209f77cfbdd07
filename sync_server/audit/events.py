"""Audit events as types: one frozen dataclass per kind of event.

Every event names who did it (`Actor`: a device, a staff user or the system), the
clinic it concerns, what it was about (ids only: never names, free text or secrets)
and how it ended. `name` is the event kind, stored as the audit row's ``action``.
`record_event` (`sync_server.audit.services`) writes one to the audit log::

    record_event(session=session, event=BlobUploaded(actor=Actor.of(caller),
                 clinic_id=clinic_id, sha256=digest), request_id=request_id)

A new kind of event is a new class here, never a new string at a call site.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal, Protocol

__all__ = [
    "BREAK_GLASS",
    "OPERATIONS",
    "TREATMENT",
    "Actor",
    "AuditSearched",
    "BlobDownloaded",
    "BlobUploaded",
    "BookingStateChanged",
    "BreakGlassGranted",
    "BreakGlassReviewed",
    "CalendarFeedCreated",
    "CalendarFeedRead",
    "CalendarFeedRevoked",
    "Caller",
    "ClinicCreated",
    "ClinicTimezoneSet",
    "DeviceAuditReceived",
    "DeviceEnrolment",
    "DeviceLogin",
    "DeviceRevoked",
    "DocumentsPulled",
    "DocumentsPushed",
    "EdgeCertificateReplaced",
    "EnrolmentOutcome",
    "EnrolmentTokenCreated",
    "Event",
    "IntentsDecided",
    "InvoiceIssued",
    "InvoiceVoided",
    "LoggedIn",
    "LoggedOut",
    "LoginFailed",
    "ModelChecked",
    "ModelDownloaded",
    "ModelPublished",
    "Operation",
    "OrderStateChanged",
    "PaymentRecorded",
    "PaymentRefunded",
    "PrescriptionIssued",
    "PrescriptionRevoked",
    "ProductCreated",
    "ProductUpdated",
    "ProviderCreated",
    "ProviderUpdated",
    "QualityFlagResolved",
    "RecordsExported",
    "RecordsRead",
    "RefreshTokenReused",
    "ScheduleExceptionAdded",
    "ScheduleExceptionRemoved",
    "ServiceCreated",
    "SessionIdleExpired",
    "SigningKeyRotated",
    "StockAdjusted",
    "StockLocationCreated",
    "StockReceived",
    "TotpReset",
    "UserCreated",
    "UserDeactivated",
    "UserReactivated",
    "UserSessionsRevoked",
    "UserUnlocked",
    "WeeklyHoursSet",
    "purpose_of",
]

ActorKind = Literal["device", "user", "system", "feed"]


class Caller(Protocol):
    """Anything that names an authenticated caller (a `Principal`): who, in what role,
    of which clinic (None: organisation-wide)."""

    @property
    def kind(self) -> Literal["device", "user"]: ...

    @property
    def id(self) -> str: ...

    @property
    def role(self) -> str: ...

    @property
    def clinic_id(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Actor:
    """Who did it: a device, a staff user (by id), the system (an operator command), or
    the holder of a calendar feed's secret URL (by the feed's id); `role` when known
    (device, clinician, staff, admin)."""

    kind: ActorKind
    id: str | None = None
    role: str | None = None

    @classmethod
    def of(cls, caller: Caller) -> Actor:
        """The actor of an authenticated caller (with its role)."""
        return cls(caller.kind, caller.id, caller.role)

    @classmethod
    def user_or_system(cls, user_id: str | None) -> Actor:
        """A staff user, or the system when there is none (a command line operator)."""
        return cls("user", user_id) if user_id else cls("system")

    @classmethod
    def device(cls, device_id: str | None) -> Actor:
        """A device (None when it could not even be identified)."""
        return cls("device", device_id)

    @classmethod
    def user(cls, user_id: str | None) -> Actor:
        """A staff user (None when the account is unknown)."""
        return cls("user", user_id)

    @classmethod
    def feed(cls, feed_id: str) -> Actor:
        """Whoever holds a calendar feed's secret URL (a calendar app, usually)."""
        return cls("feed", feed_id)


TREATMENT = "treatment"
"""Purpose of use: care of the patient (devices and clinicians, by default)."""
OPERATIONS = "operations"
"""Purpose of use: the back office (staff and admins: bookings, orders, billing)."""
BREAK_GLASS = "break-glass"
"""Purpose of use: emergency access to a patient outside the caller's clinic, under a
break-glass grant."""


def purpose_of(who: Actor | Caller) -> str:
    """The default purpose of use of an access to patient data by a caller (or actor):
    treatment for devices and clinicians, operations for anyone else (staff, admins,
    the system)."""
    return TREATMENT if who.kind == "device" or who.role == "clinician" else OPERATIONS


Operation = Literal["C", "R", "U", "D", "E"]
"""What an event did to data, as FHIR AuditEvent.action codes: create, read, update,
delete, execute (anything else: a login, a decision)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """One thing that happened, by `actor`, concerning `clinic_id` (None: organisation
    or server wide), the patients it touched (`patient_ids`) and why (`purpose`:
    treatment, break-glass, operations; None when not known)."""

    name: ClassVar[str]
    operation: ClassVar[Operation] = "E"
    actor: Actor
    clinic_id: str | None = None
    patient_ids: tuple[str, ...] = ()
    purpose: str | None = None

    def target(self) -> str | None:
        """What the event was about, as stored (ids only); None for nothing."""
        return None

    def outcome(self) -> str:
        """How it ended, as stored."""
        return "ok"


# ---------------------------------------------------------------- identity
@dataclass(frozen=True, slots=True, kw_only=True)
class UserCreated(Event):
    """A staff account was created (by an admin, or by the system for the first one)."""

    name: ClassVar[str] = "user-create"
    operation: ClassVar[Operation] = "C"
    user_id: str

    def target(self) -> str | None:
        return self.user_id


@dataclass(frozen=True, slots=True, kw_only=True)
class LoggedIn(Event):
    """A staff user logged in."""

    name: ClassVar[str] = "login"


@dataclass(frozen=True, slots=True, kw_only=True)
class LoginFailed(Event):
    """A staff login failed (the actor's id is None when no single account was named)."""

    name: ClassVar[str] = "login-failed"

    def outcome(self) -> str:
        return "denied"


@dataclass(frozen=True, slots=True, kw_only=True)
class _UserAdministered(Event):
    """An admin (or an operator: the system) acted on a staff account."""

    user_id: str

    def target(self) -> str | None:
        return self.user_id


@dataclass(frozen=True, slots=True, kw_only=True)
class UserUnlocked(_UserAdministered):
    """The failed logins held against an account were forgotten."""

    name: ClassVar[str] = "user-unlock"
    operation: ClassVar[Operation] = "U"


@dataclass(frozen=True, slots=True, kw_only=True)
class UserDeactivated(_UserAdministered):
    """An account was deactivated (its sessions revoked with it)."""

    name: ClassVar[str] = "user-deactivate"
    operation: ClassVar[Operation] = "U"


@dataclass(frozen=True, slots=True, kw_only=True)
class UserReactivated(_UserAdministered):
    """A deactivated account was made active again."""

    name: ClassVar[str] = "user-reactivate"
    operation: ClassVar[Operation] = "U"


@dataclass(frozen=True, slots=True, kw_only=True)
class TotpReset(_UserAdministered):
    """An account was given a new TOTP secret (the old one stops working)."""

    name: ClassVar[str] = "user-totp-reset"
    operation: ClassVar[Operation] = "U"


@dataclass(frozen=True, slots=True, kw_only=True)
class UserSessionsRevoked(_UserAdministered):
    """Every refresh-token family of an account was revoked."""

    name: ClassVar[str] = "user-sessions-revoke"
    families: int

    def outcome(self) -> str:
        return f"revoked={self.families}"


@dataclass(frozen=True, slots=True, kw_only=True)
class LoggedOut(Event):
    """A refresh-token family was revoked on request (logout)."""

    name: ClassVar[str] = "logout"
    family_id: str

    def target(self) -> str | None:
        return self.family_id


@dataclass(frozen=True, slots=True, kw_only=True)
class RefreshTokenReused(Event):
    """A spent refresh token was presented again: its whole family was revoked."""

    name: ClassVar[str] = "refresh-reuse"
    family_id: str

    def target(self) -> str | None:
        return self.family_id

    def outcome(self) -> str:
        return "family-revoked"


@dataclass(frozen=True, slots=True, kw_only=True)
class ClinicCreated(Event):
    """A clinic was added to the organisation (by an admin, or an operator: the system)."""

    name: ClassVar[str] = "clinic-create"
    operation: ClassVar[Operation] = "C"

    def target(self) -> str | None:
        return self.clinic_id


@dataclass(frozen=True, slots=True, kw_only=True)
class EnrolmentTokenCreated(Event):
    """A one-time enrolment token was issued for a clinic."""

    name: ClassVar[str] = "enrolment-token-create"
    operation: ClassVar[Operation] = "C"
    token_id: str

    def target(self) -> str | None:
        return self.token_id


EnrolmentOutcome = Literal[
    "ok",
    "repeated",
    "token-invalid",
    "proof-invalid",
    "proof-stale",
    "replay",
    "clinic-mismatch",
    "exists",
    "certificate-required",
    "certificate-refused",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceEnrolment(Event):
    """A device's enrolment: done, repeated (its answer was lost: its earlier sessions
    were revoked), or refused and why."""

    name: ClassVar[str] = "enrol"
    token_id: str | None
    result: EnrolmentOutcome

    def target(self) -> str | None:
        return self.token_id

    def outcome(self) -> str:
        return self.result


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceLogin(Event):
    """A device logged in with a signed assertion, or failed to."""

    name: ClassVar[str] = "device-login"
    accepted: bool

    def outcome(self) -> str:
        return "ok" if self.accepted else "denied"


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceRevoked(Event):
    """A device was revoked (with every refresh token it held)."""

    name: ClassVar[str] = "device-revoke"
    operation: ClassVar[Operation] = "D"
    device_id: str

    def target(self) -> str | None:
        return self.device_id


@dataclass(frozen=True, slots=True, kw_only=True)
class EdgeCertificateReplaced(Event):
    """An edge box replaced its TLS certificate: devices pin `fingerprint` from now on."""

    name: ClassVar[str] = "edge-certificate-replace"
    operation: ClassVar[Operation] = "U"
    box_id: str
    fingerprint: str  # lowercase hex SHA-256 of the certificate's DER

    def target(self) -> str | None:
        return f"{self.box_id}:{self.fingerprint}"


@dataclass(frozen=True, slots=True, kw_only=True)
class SigningKeyRotated(Event):
    """An operator rotated the deployment's token signing key: `new_kid` signs from
    now on, `old_kid` verifies until its tokens have expired."""

    name: ClassVar[str] = "signing-key-rotate"
    operation: ClassVar[Operation] = "U"
    old_kid: str
    new_kid: str

    def target(self) -> str | None:
        return f"{self.old_kid}:{self.new_kid}"


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionIdleExpired(Event):
    """A staff session was used after its idle time: refused, and its refresh-token
    family revoked (automatic logoff)."""

    name: ClassVar[str] = "session-idle-expired"
    family_id: str

    def target(self) -> str | None:
        return self.family_id

    def outcome(self) -> str:
        return "expired"


# ---------------------------------------------------------------- sync
def _joined(ids: Sequence[str]) -> str:
    return ",".join(ids)


@dataclass(frozen=True, slots=True, kw_only=True)
class DocumentsPushed(Event):
    """A device pushed documents: which were stored, which the server had, which refused."""

    name: ClassVar[str] = "sync-push"
    operation: ClassVar[Operation] = "U"
    accepted: tuple[str, ...]
    unchanged: tuple[str, ...]
    rejected: tuple[str, ...]

    def target(self) -> str | None:
        return _joined(self.accepted + self.rejected)

    def outcome(self) -> str:
        return (
            f"accepted={len(self.accepted)} unchanged={len(self.unchanged)} "
            f"rejected={len(self.rejected)}"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceAuditReceived(Event):
    """A device pushed its audit chain up to `head_seq`, whose hash is `head_hash`: the
    device's head enters the server's log (the device checks the leaf names it)."""

    name: ClassVar[str] = "device-audit-push"
    operation: ClassVar[Operation] = "C"
    device_id: str
    head_seq: int
    head_hash: str  # hex
    received: int  # events new to the server in this push

    def target(self) -> str | None:
        return f"{self.device_id}:{self.head_seq}:{self.head_hash}"

    def outcome(self) -> str:
        return f"ok received={self.received}"


@dataclass(frozen=True, slots=True, kw_only=True)
class DocumentsPulled(Event):
    """A pull sent these documents to a device."""

    name: ClassVar[str] = "sync-pull"
    operation: ClassVar[Operation] = "R"
    doc_ids: tuple[str, ...]

    def target(self) -> str | None:
        return _joined(self.doc_ids)


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordsRead(Event):
    """Staff read records of a collection (`found` False: the one asked for was not
    there, or not theirs to see; `record_ids` then holds the id asked for, if it was
    one)."""

    name: ClassVar[str] = "read"
    operation: ClassVar[Operation] = "R"
    collection: str
    record_ids: tuple[str, ...]
    found: bool = True

    def target(self) -> str | None:
        return json.dumps({self.collection: list(self.record_ids)})

    def outcome(self) -> str:
        return "ok" if self.found else "not_found"


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordsExported(Event):
    """Staff (or an operator, as the system) exported a clinic's records of `kind` as
    `format`, with these filters: once when the export starts (`rows` None), before
    the first byte, and once when it ends, with the rows written and the patients
    they belong to (`complete` False: the reader went away before the end)."""

    name: ClassVar[str] = "export"
    operation: ClassVar[Operation] = "R"
    kind: str
    format: str
    filters: tuple[tuple[str, str], ...] = ()  # (name, value): ids, times, numbers only
    rows: int | None = None
    complete: bool = True

    def target(self) -> str | None:
        return json.dumps(
            {"kind": self.kind, "format": self.format, **dict(self.filters)}, sort_keys=True
        )

    def outcome(self) -> str:
        if self.rows is None:
            return "started"
        return f"{'ok' if self.complete else 'aborted'} rows={self.rows}"


@dataclass(frozen=True, slots=True, kw_only=True)
class IntentsDecided(Event):
    """The server decided intents a device delivered (ids and statuses, no details)."""

    name: ClassVar[str] = "intents-decided"
    decided: tuple[tuple[str, str], ...]  # (intent id, decision status)

    def target(self) -> str | None:
        return _joined(tuple(intent_id for intent_id, _ in self.decided))

    def outcome(self) -> str:
        # Short names: the column holds 40 characters (three 4-digit counts fit).
        short = {"accepted": "accepted", "accepted_alternative": "alt", "rejected": "rejected"}
        counts: dict[str, int] = {}
        for _, status in self.decided:
            name = short.get(status, status)
            counts[name] = counts.get(name, 0) + 1
        return " ".join(f"{name}={n}" for name, n in sorted(counts.items()))


# ---------------------------------------------------------------- blobs and models
@dataclass(frozen=True, slots=True, kw_only=True)
class BlobUploaded(Event):
    """A blob upload completed and verified."""

    name: ClassVar[str] = "blob-upload"
    operation: ClassVar[Operation] = "C"
    sha256: str

    def target(self) -> str | None:
        return self.sha256


@dataclass(frozen=True, slots=True, kw_only=True)
class BlobDownloaded(Event):
    """A blob (or a range of it) was sent."""

    name: ClassVar[str] = "blob-download"
    operation: ClassVar[Operation] = "R"
    sha256: str

    def target(self) -> str | None:
        return self.sha256


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelPublished(Event):
    """An admin published (or re-activated) a model for the organisation."""

    name: ClassVar[str] = "model-publish"
    operation: ClassVar[Operation] = "C"
    sha256: str

    def target(self) -> str | None:
        return self.sha256


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelChecked(Event):
    """A device asked which model is current."""

    name: ClassVar[str] = "model-check"
    operation: ClassVar[Operation] = "R"
    sha256: str

    def target(self) -> str | None:
        return self.sha256


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelDownloaded(Event):
    """A device downloaded a model file."""

    name: ClassVar[str] = "model-download"
    operation: ClassVar[Operation] = "R"
    sha256: str

    def target(self) -> str | None:
        return self.sha256


# ---------------------------------------------------------------- bookings
@dataclass(frozen=True, slots=True, kw_only=True)
class ClinicTimezoneSet(Event):
    """Staff set the time zone a clinic's schedules are in."""

    name: ClassVar[str] = "clinic-timezone-set"
    operation: ClassVar[Operation] = "U"
    timezone: str

    def target(self) -> str | None:
        return self.timezone


@dataclass(frozen=True, slots=True, kw_only=True)
class _ProviderChanged(Event):
    """Staff changed a bookable provider (doctor, nurse, caregiver)."""

    provider_id: str

    def target(self) -> str | None:
        return self.provider_id


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderCreated(_ProviderChanged):
    """A provider was added to the directory."""

    name: ClassVar[str] = "provider-create"
    operation: ClassVar[Operation] = "C"


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderUpdated(_ProviderChanged):
    """A provider's entry changed (`fields`: which), deactivation included."""

    name: ClassVar[str] = "provider-update"
    operation: ClassVar[Operation] = "U"
    fields: tuple[str, ...]

    def outcome(self) -> str:
        return "changed=" + ",".join(self.fields)


@dataclass(frozen=True, slots=True, kw_only=True)
class WeeklyHoursSet(_ProviderChanged):
    """A provider's weekly hours were replaced (`windows`: how many now)."""

    name: ClassVar[str] = "weekly-hours-set"
    operation: ClassVar[Operation] = "U"
    windows: int

    def outcome(self) -> str:
        return f"windows={self.windows}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceCreated(Event):
    """A bookable service was added to the organisation."""

    name: ClassVar[str] = "service-create"
    operation: ClassVar[Operation] = "C"
    service_id: str

    def target(self) -> str | None:
        return self.service_id


@dataclass(frozen=True, slots=True, kw_only=True)
class _ExceptionChanged(Event):
    """A schedule exception (holiday, closure, extra hours)."""

    exception_id: str

    def target(self) -> str | None:
        return self.exception_id


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleExceptionAdded(_ExceptionChanged):
    """A holiday, closure or extra hours were added."""

    name: ClassVar[str] = "schedule-exception-add"
    operation: ClassVar[Operation] = "C"


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleExceptionRemoved(_ExceptionChanged):
    """A holiday, closure or extra hours were removed."""

    name: ClassVar[str] = "schedule-exception-remove"
    operation: ClassVar[Operation] = "D"


@dataclass(frozen=True, slots=True, kw_only=True)
class BookingStateChanged(Event):
    """Staff moved a booking (confirm, cancel, no-show, a visit's progress)."""

    name: ClassVar[str] = "booking-state"
    operation: ClassVar[Operation] = "U"
    booking_id: str
    state: str

    def target(self) -> str | None:
        return self.booking_id

    def outcome(self) -> str:
        return self.state


@dataclass(frozen=True, slots=True, kw_only=True)
class QualityFlagResolved(Event):
    """Staff resolved a quality flag."""

    name: ClassVar[str] = "quality-flag-resolve"
    operation: ClassVar[Operation] = "U"
    flag_id: str

    def target(self) -> str | None:
        return self.flag_id


@dataclass(frozen=True, slots=True, kw_only=True)
class _FeedEvent(Event):
    """Something about one calendar feed (never its token)."""

    feed_id: str

    def target(self) -> str | None:
        return self.feed_id


@dataclass(frozen=True, slots=True, kw_only=True)
class CalendarFeedCreated(_FeedEvent):
    """Staff created a secret calendar feed URL for a provider or a patient."""

    name: ClassVar[str] = "calendar-feed-create"
    operation: ClassVar[Operation] = "C"


@dataclass(frozen=True, slots=True, kw_only=True)
class CalendarFeedRevoked(_FeedEvent):
    """Staff revoked a calendar feed: its URL answers 404 from now on."""

    name: ClassVar[str] = "calendar-feed-revoke"
    operation: ClassVar[Operation] = "D"


@dataclass(frozen=True, slots=True, kw_only=True)
class CalendarFeedRead(_FeedEvent):
    """A calendar feed was fetched with its secret URL (`events`: how many it held)."""

    name: ClassVar[str] = "calendar-feed-read"
    operation: ClassVar[Operation] = "R"
    events: int

    def outcome(self) -> str:
        return f"events={self.events}"


# ---------------------------------------------------------------- commerce
@dataclass(frozen=True, slots=True, kw_only=True)
class _ProductChanged(Event):
    """Something about one catalogue product."""

    product_id: str

    def target(self) -> str | None:
        return self.product_id


@dataclass(frozen=True, slots=True, kw_only=True)
class ProductCreated(_ProductChanged):
    """Staff added a product (or kit) to the catalogue."""

    name: ClassVar[str] = "product-create"
    operation: ClassVar[Operation] = "C"


@dataclass(frozen=True, slots=True, kw_only=True)
class ProductUpdated(_ProductChanged):
    """Staff changed a product (`fields`: which ones, never their values)."""

    name: ClassVar[str] = "product-update"
    operation: ClassVar[Operation] = "U"
    fields: tuple[str, ...]

    def outcome(self) -> str:
        return ",".join(self.fields)[:40] or "ok"


@dataclass(frozen=True, slots=True, kw_only=True)
class StockLocationCreated(Event):
    """Staff added a stock location (warehouse, clinic store, shelf)."""

    name: ClassVar[str] = "stock-location-create"
    operation: ClassVar[Operation] = "C"
    location_id: str

    def target(self) -> str | None:
        return self.location_id


@dataclass(frozen=True, slots=True, kw_only=True)
class StockReceived(Event):
    """Stock arrived: `quantity` more on hand in a lot."""

    name: ClassVar[str] = "stock-receive"
    operation: ClassVar[Operation] = "C"
    lot_id: str
    quantity: int

    def target(self) -> str | None:
        return self.lot_id

    def outcome(self) -> str:
        return f"quantity={self.quantity}"


@dataclass(frozen=True, slots=True, kw_only=True)
class StockAdjusted(Event):
    """Staff corrected a lot's on-hand count by `delta` (a count, damage, loss)."""

    name: ClassVar[str] = "stock-adjust"
    operation: ClassVar[Operation] = "U"
    lot_id: str
    delta: int

    def target(self) -> str | None:
        return self.lot_id

    def outcome(self) -> str:
        return f"delta={self.delta}"


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderStateChanged(Event):
    """An order moved (picked, shipped, delivered, cancelled, its hold expired) by
    staff, a device's cancel, or the system's hold sweep."""

    name: ClassVar[str] = "order-state"
    operation: ClassVar[Operation] = "U"
    order_id: str
    state: str

    def target(self) -> str | None:
        return self.order_id

    def outcome(self) -> str:
        return self.state


@dataclass(frozen=True, slots=True, kw_only=True)
class _PrescriptionChanged(Event):
    """Something about one prescription (never its signature)."""

    prescription_id: str

    def target(self) -> str | None:
        return self.prescription_id


@dataclass(frozen=True, slots=True, kw_only=True)
class PrescriptionIssued(_PrescriptionChanged):
    """Staff recorded a doctor's prescription."""

    name: ClassVar[str] = "prescription-issue"
    operation: ClassVar[Operation] = "C"


@dataclass(frozen=True, slots=True, kw_only=True)
class PrescriptionRevoked(_PrescriptionChanged):
    """Staff revoked a prescription: nothing more is accepted against it."""

    name: ClassVar[str] = "prescription-revoke"
    operation: ClassVar[Operation] = "D"


# ---------------------------------------------------------------- payments
@dataclass(frozen=True, slots=True, kw_only=True)
class InvoiceIssued(Event):
    """An invoice was issued (numbered, posted to the ledger); `total` in minor units."""

    name: ClassVar[str] = "invoice-issue"
    operation: ClassVar[Operation] = "C"
    invoice_id: str
    total: int

    def target(self) -> str | None:
        return self.invoice_id

    def outcome(self) -> str:
        return f"total={self.total}"


@dataclass(frozen=True, slots=True, kw_only=True)
class InvoiceVoided(Event):
    """An open invoice nothing was paid on was voided (its ledger entry reversed)."""

    name: ClassVar[str] = "invoice-void"
    operation: ClassVar[Operation] = "D"
    invoice_id: str

    def target(self) -> str | None:
        return self.invoice_id


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentRecorded(Event):
    """A payment was charged through the gateway: succeeded, failed or processing."""

    name: ClassVar[str] = "payment"
    payment_id: str
    amount: int
    status: str

    def target(self) -> str | None:
        return self.payment_id

    def outcome(self) -> str:
        return f"{self.status} amount={self.amount}"[:40]


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentRefunded(Event):
    """Money was refunded from a payment."""

    name: ClassVar[str] = "payment-refund"
    payment_id: str
    refund_id: str
    amount: int

    def target(self) -> str | None:
        return self.refund_id

    def outcome(self) -> str:
        return f"amount={self.amount}"


# ---------------------------------------------------------------- audit access
@dataclass(frozen=True, slots=True, kw_only=True)
class BreakGlassGranted(Event):
    """A clinician was granted emergency access to a patient of another clinic (the
    reason they gave is kept with the grant, never here)."""

    name: ClassVar[str] = "break-glass-grant"
    operation: ClassVar[Operation] = "C"
    grant_id: str

    def target(self) -> str | None:
        return self.grant_id


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakGlassReviewed(Event):
    """An admin reviewed a break-glass grant (the note is kept with the grant)."""

    name: ClassVar[str] = "break-glass-review"
    operation: ClassVar[Operation] = "U"
    grant_id: str

    def target(self) -> str | None:
        return self.grant_id


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditSearched(Event):
    """Staff read the audit log: a patient's accounting of disclosures (`scope`
    ``disclosures``), a search of events (``events``) or the break-glass grants
    (``break-glass``), with the ids they filtered by and how many rows they got."""

    name: ClassVar[str] = "audit-search"
    operation: ClassVar[Operation] = "R"
    scope: Literal["disclosures", "events", "break-glass"]
    filters: tuple[tuple[str, str], ...] = ()  # (name, id): ids only, never free text
    rows: int

    def target(self) -> str | None:
        return json.dumps({"scope": self.scope, **dict(self.filters)}, sort_keys=True)

    def outcome(self) -> str:
        return f"rows={self.rows}"
