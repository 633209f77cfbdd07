"""What an operator does to a migrated server from outside it: the first admin account,
device enrolment tokens, first aid for staff accounts and a demo booking directory
(``coherency server create-admin``, ``enroll-token``, ``user`` and ``seed-demo``), a
clinic's records for analysts (``coherency server export``) and as a FHIR Bundle
(``coherency server fhir-export``), the deployment's token
keys (``coherency server keys list`` and ``rotate``), a
refund given by a member of staff (``coherency payments refund``), the audit log's
check and checkpoints (``coherency audit verify`` and ``checkpoint``), and a look at
what the server holds for a clinic (`document_heads`).

Each call opens the settings' database, checks its schema is the newest, does its work
in one transaction through the identity services and closes the database again.
Refusals are the server's error tree (`sync_server.errors`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from crdt import Checkpoint
from sync_server.audit.events import OPERATIONS, Actor
from sync_server.audit.log import current_checkpoint
from sync_server.audit.verify import AuditProblem, AuditReport, verify_log
from sync_server.bookings.seed import SeededDirectory, seed_demo_directory
from sync_server.commerce.seed import seed_demo_commerce
from sync_server.db import open_database, utcnow
from sync_server.errors import Invalid, NotFound
from sync_server.fhir.exporting import export_bundle
from sync_server.identity.accounts import (
    deactivate_user,
    find_user,
    reactivate_user,
    reset_totp,
    revoke_user_sessions,
    unlock_user,
)
from sync_server.identity.enrolment import create_enrolment_token
from sync_server.identity.keyring import (
    RotatedKey,
    TokenKeyInfo,
    list_keys,
    read_key_file,
    rotate_key,
)
from sync_server.identity.sealing import SecretBox
from sync_server.identity.tables import Clinic
from sync_server.identity.tenancy import ensure_clinic, ensure_organisation
from sync_server.identity.users import create_user, totp_uri
from sync_server.migrating import require_schema
from sync_server.models.signing import ArtifactKey
from sync_server.payments.charging import refund
from sync_server.payments.desk import make_payments
from sync_server.payments.invoices import publish_changed
from sync_server.settings import Settings
from sync_server.sync.authorship import ServerSigner
from sync_server.sync.exports import check_export, open_export
from sync_server.sync.listing import AssessmentFilters
from sync_server.sync.tables import Document

__all__ = [
    "AccountAction",
    "AuditProblem",
    "AuditReport",
    "CreatedAdmin",
    "IssuedEnrolmentToken",
    "IssuedRefund",
    "ManagedAccount",
    "RotatedKey",
    "SeededDirectory",
    "TokenKeyInfo",
    "audit_checkpoint",
    "audit_public_key",
    "create_admin",
    "document_heads",
    "issue_enrolment_token",
    "manage_account",
    "refund_payment",
    "rotate_signing_key",
    "seed_demo",
    "signing_keys",
    "verify_audit_log",
]

_HEAD_BYTES = 32  # an Automerge change hash


@dataclass(frozen=True, slots=True)
class CreatedAdmin:
    """A new organisation-wide admin account and its TOTP enrolment (shown once)."""

    user_id: str
    username: str
    role: str
    organisation_id: str
    totp_secret: str | None
    totp_uri: str | None


def create_admin(
    settings: Settings, *, username: str, password: str, with_totp: bool = True
) -> CreatedAdmin:
    """Create an admin of the ``default`` organisation (created if missing).

    Raises:
        Conflict: The username is taken (in that organisation), or the database is not
            migrated.
        Unprocessable: The password is too weak (at least 12 characters).
        NotFound: No database.
        Unavailable: The database cannot be used.
    """
    with open_database(settings, must_exist=True) as database:
        require_schema(database)
        with database.write() as session:
            organisation = ensure_organisation(session=session)
            user, secret = create_user(
                session=session,
                username=username,
                password=password,
                role="admin",
                organisation_id=organisation.id,
                with_totp=with_totp,
                secret_box=SecretBox.load_or_create(settings.resolved_secret_key_file),
            )
            created = CreatedAdmin(
                user_id=user.id,
                username=user.username,
                role=user.role,
                organisation_id=organisation.id,
                totp_secret=secret,
                totp_uri=totp_uri(secret, user.username) if secret else None,
            )
    return created


@dataclass(frozen=True, slots=True)
class IssuedEnrolmentToken:
    """A one-time enrolment token (the secret is shown once, only its hash is kept)."""

    token: str
    token_id: str
    clinic_id: str
    clinic_name: str
    organisation_id: str
    expires_at: datetime
    kind: str = "device"


def issue_enrolment_token(
    settings: Settings, *, clinic: str, ttl: timedelta | None = None, edge: bool = False
) -> IssuedEnrolmentToken:
    """A token that enrols one device (or, with `edge`, one edge box) into the clinic
    named `clinic` (created, in the ``default`` organisation, if missing).

    Args:
        settings: The server settings.
        clinic: The clinic's name.
        ttl: How long the token stays usable (at most 30 days); default
            ``enrolment_token_seconds``.
        edge: The token enrols a clinic edge box (which enrols with its TLS
            certificate), not a device.

    Raises:
        Invalid: The lifetime is not more than 0 and at most 30 days.
        Unprocessable: A bad clinic name.
        Conflict: The database is not migrated.
        NotFound: No database.
        Unavailable: The database cannot be used.
    """
    if ttl is None:
        ttl = timedelta(seconds=settings.enrolment_token_seconds)
    with open_database(settings, must_exist=True) as database:
        require_schema(database)
        with database.write() as session:
            found = ensure_clinic(session=session, name=clinic)
            token, row = create_enrolment_token(
                session=session, clinic_id=found.id, ttl=ttl, kind="edge" if edge else "device"
            )
            issued = IssuedEnrolmentToken(
                token=token,
                token_id=row.id,
                clinic_id=found.id,
                clinic_name=found.name,
                organisation_id=found.organisation_id,
                expires_at=row.expires_at,
                kind=row.kind,
            )
    return issued


def document_heads(settings: Settings, *, clinic_id: str) -> dict[str, list[bytes]]:
    """The heads of every document the server holds for a clinic, by document id.

    The same shape as a device's `edge_sdk.Replica.document_heads` (each list sorted):
    a device that has synced everything holds exactly these, so comparing the two
    shows it converged with the server.

    Raises:
        Conflict: The database is not migrated.
        NotFound: No database.
        Unavailable: The database cannot be used.
    """
    with open_database(settings, must_exist=True) as database:
        require_schema(database)
        with database.read() as session:
            rows = session.execute(
                select(Document.id, Document.heads).where(Document.clinic_id == clinic_id)
            ).all()
    return {
        doc_id: [bytes(heads[i : i + _HEAD_BYTES]) for i in range(0, len(heads), _HEAD_BYTES)]
        for doc_id, heads in rows
    }


AccountAction = Literal["unlock", "deactivate", "reactivate", "reset-totp", "revoke-sessions"]
"""What `manage_account` can do to a staff account."""


@dataclass(frozen=True, slots=True)
class ManagedAccount:
    """A staff account after an operator's action (`totp_secret` shown once, after a
    reset; `count`: counters cleared by an unlock, sessions revoked)."""

    user_id: str
    username: str
    organisation_id: str
    action: AccountAction
    active: bool
    count: int | None = None
    totp_secret: str | None = None
    totp_uri: str | None = None


def manage_account(
    settings: Settings,
    *,
    username: str,
    action: AccountAction,
    organisation: str | None = None,
) -> ManagedAccount:
    """Unlock, deactivate, reactivate, reset the TOTP of, or revoke the sessions of the
    staff account `username` (in `organisation`, its name or id, when the username is
    not unique on the server). Audited as done by the system.

    Raises:
        NotFound: ``user_not_found`` (or no database).
        Conflict: The database is not migrated.
        Unavailable: The database cannot be used.
    """
    with open_database(settings, must_exist=True) as database:
        require_schema(database)
        with database.write() as session:
            user = find_user(session=session, username=username, organisation=organisation)
            count: int | None = None
            secret: str | None = None
            if action == "unlock":
                count = unlock_user(session=session, user=user)
            elif action == "deactivate":
                deactivate_user(session=session, user=user)
            elif action == "reactivate":
                reactivate_user(session=session, user=user)
            elif action == "reset-totp":
                box = SecretBox.load_or_create(settings.resolved_secret_key_file)
                secret = reset_totp(session=session, user=user, secret_box=box)
            else:
                count = revoke_user_sessions(session=session, user=user)
            managed = ManagedAccount(
                user_id=user.id,
                username=user.username,
                organisation_id=user.organisation_id,
                action=action,
                active=user.active,
                count=count,
                totp_secret=secret,
                totp_uri=totp_uri(secret, user.username) if secret else None,
            )
    return managed


def seed_demo(settings: Settings, *, organisation: str = "default") -> SeededDirectory:
    """Load the demo booking directory (`sync_server.bookings.seed`) and the demo
    supplies (`sync_server.commerce.seed`: catalogue, stock in lots, prescriptions)
    into the organisation called `organisation` (created if missing) and publish its
    clinics' reference data. Running it again changes nothing (``created``,
    ``updated`` and ``records_published`` count both parts).

    Raises:
        Conflict: The database is not migrated.
        NotFound: No database.
        Unavailable: The database cannot be used.
    """
    signer = ServerSigner(ArtifactKey.load_or_create(settings.resolved_artifact_key_file))
    with open_database(settings, must_exist=True) as database:
        require_schema(database)
        with database.write() as session:
            found = ensure_organisation(session=session, name=organisation)
            now = utcnow()
            seeded = seed_demo_directory(
                session=session, organisation_id=found.id, signer=signer, now=now
            )
            supplies = seed_demo_commerce(
                session=session, organisation_id=found.id, signer=signer, now=now
            )
    return dataclasses.replace(
        seeded,
        created=seeded.created + supplies.created,
        records_published=seeded.records_published + supplies.records_published,
    )


@dataclass(frozen=True, slots=True)
class IssuedRefund:
    """A refund as the server recorded it (the first one, if the key was used before)."""

    refund_id: str
    payment_id: str
    invoice_id: str
    amount: int
    status: str
    idempotency_key: str
    created_at: datetime


def refund_payment(
    settings: Settings,
    *,
    payment_id: str,
    amount: int,
    idempotency_key: str,
    reason: str | None = None,
    organisation: str = "default",
) -> IssuedRefund:
    """Give back `amount` (minor units) of a succeeded payment through the gateway the
    settings name, under `idempotency_key`: running it again with the same key answers
    the first refund and gives nothing back twice. The invoice's synced record is
    rewritten in the same transaction.

    Raises:
        PaymentRefused: More than was captured minus what was refunded, or the payment
            has not succeeded (a `sync_server.Conflict`).
        NotFound: No such payment in the organisation, or no database.
        Conflict: The database is not migrated.
        Unavailable: The database cannot be used.
    """
    signer = ServerSigner(ArtifactKey.load_or_create(settings.resolved_artifact_key_file))
    payments = make_payments(settings)
    now = utcnow()
    with open_database(settings, must_exist=True) as database:
        require_schema(database)
        with database.write() as session:
            found = ensure_organisation(session=session, name=organisation)
            row = refund(
                session=session,
                payments=payments,
                organisation_id=found.id,
                payment_id=payment_id,
                amount=amount,
                idempotency_key=idempotency_key,
                now=now,
                reason=reason,
            )
            publish_changed(session=session, signer=signer, now=now)
            issued = IssuedRefund(
                refund_id=row.id,
                payment_id=row.payment_id,
                invoice_id=row.invoice_id,
                amount=row.amount,
                status=row.status,
                idempotency_key=row.idempotency_key,
                created_at=row.created_at,
            )
    return issued


def audit_public_key(settings: Settings) -> bytes:
    """The public half of the server's artifact key (what signs audit checkpoints),
    read from its key file; never creates one.

    Raises:
        NotFound: ``no_artifact_key``: the key file is missing.
        Invalid: The file does not hold an Ed25519 key.
    """
    path = settings.resolved_artifact_key_file
    if not path.is_file():
        raise NotFound(
            f"no artifact key at {path}: give the server's public key, or the settings "
            "(--data-dir) of the server that signed the log",
            code="no_artifact_key",
        )
    try:
        return ArtifactKey.load_or_create(path).public_key_bytes
    except ValueError as exc:
        raise Invalid(str(exc), code="invalid_artifact_key") from None


def verify_audit_log(
    settings: Settings,
    *,
    witnesses: Sequence[Checkpoint] = (),
    public_key: bytes | None = None,
) -> AuditReport:
    """Check the server's audit log (`sync_server.audit.verify.verify_log`): every event
    against its leaf, the tree against every checkpoint the server kept and those in
    `witnesses`, the head row against the events. Reads only.

    Args:
        settings: The server settings (its database, and its artifact key file).
        witnesses: Checkpoints held outside the database (devices, staff tools).
        public_key: The key checkpoints must be signed with (default: the public half
            of the settings' artifact key file).

    Raises:
        NotFound: No database, or no key given and no key file.
        Conflict: The database is not migrated.
        Unavailable: The database cannot be used.
    """
    key = public_key if public_key is not None else audit_public_key(settings)
    with open_database(settings, must_exist=True) as database:
        require_schema(database)
        with database.read() as session:
            return verify_log(session=session, public_key=key, witnesses=witnesses)


def audit_checkpoint(settings: Settings) -> Checkpoint:
    """The audit log's newest checkpoint, signed with the settings' artifact key (one
    is signed now if the log grew since the last): what a staff tool keeps as a
    witness.

    Raises:
        NotFound: No database.
        Conflict: The database is not migrated.
        Unavailable: The database cannot be used.
    """
    key = ArtifactKey.load_or_create(settings.resolved_artifact_key_file)
    with open_database(settings, must_exist=True) as database:
        require_schema(database)
        with database.write() as session:
            return current_checkpoint(session=session, signer=key)


@dataclass(frozen=True, slots=True)
class ExportedRecords:
    """What `export_records` wrote: the clinic, the kind and format, and the rows."""

    clinic_id: str
    kind: str
    format: str
    rows: int


def _clinic_named(session: Session, clinic: str) -> str:
    """The id of the clinic `clinic` (an id, or a name that names one clinic).

    Raises:
        Invalid: ``ambiguous``: several clinics have that name.
        NotFound: ``clinic_not_found``.
    """
    found = session.get(Clinic, clinic)
    named = session.scalars(select(Clinic).where(Clinic.name == clinic)).all()
    if found is None and len(named) > 1:
        raise Invalid(f"{len(named)} clinics are named {clinic!r}: give its id", code="ambiguous")
    found = found or (named[0] if named else None)
    if found is None:
        raise NotFound(f"no clinic {clinic!r}", code="clinic_not_found")
    return found.id


@dataclass(frozen=True, slots=True)
class ExportedFhir:
    """What `export_fhir` made: the Bundle (validated), its kind, the clinic, and how
    many patients and resources it holds."""

    bundle: dict[str, Any]
    kind: str
    clinic_id: str
    patients: int
    resources: int


def export_fhir(
    settings: Settings,
    *,
    patient: str | None = None,
    clinic: str | None = None,
    kind: Literal["collection", "transaction"] = "collection",
    base_url: str | None = None,
) -> ExportedFhir:
    """One live patient's records (`patient`) or every live patient's of a clinic
    (`clinic`: its id, or its name when that names one clinic) as a FHIR R4 Bundle of
    `kind`, validated with `fhir_interop.validate`; audited (actor: the system, kind
    ``fhir-<kind>``) with the patients it holds. The same gathering and mapping as the
    ``/fhir/R4`` endpoint (`sync_server.fhir`).

    Raises:
        Invalid: Neither or both of `patient` and `clinic`; an unknown kind; a clinic
            name several clinics have.
        NotFound: ``clinic_not_found``, ``patient_not_found``; or no database.
        Unprocessable: ``fhir_invalid``: the bundle does not validate.
        Conflict: The database is not migrated.
        Unavailable: The database cannot be used.
    """
    if (patient is None) == (clinic is None):
        raise Invalid("give either a patient or a clinic", code="bad_request")
    if kind not in ("collection", "transaction"):
        raise Invalid(f"unknown bundle kind {kind!r}: collection or transaction")
    with open_database(settings, must_exist=True) as database:
        require_schema(database)
        with database.write() as session:
            clinic_id = None if clinic is None else _clinic_named(session, clinic)
            made = export_bundle(
                session=session,
                clinic_id=clinic_id,
                patient_id=patient,
                kind=kind,
                actor=Actor("system"),
                purpose=OPERATIONS,
                base_url=base_url,
            )
    return ExportedFhir(made.bundle, kind, made.clinic_id, made.patients, made.resources)


def export_records(
    settings: Settings,
    *,
    clinic: str,
    kind: str,
    format: str,
    write: Callable[[bytes], object],
    filters: AssessmentFilters | None = None,
    batch_size: int = 1000,
) -> ExportedRecords:
    """Export a clinic's records of `kind` (patients, wounds, assessments, notes) as
    `format` (csv, ndjson), handing the bytes to `write` a batch at a time; the same
    columns and audit (actor: the system) as the staff route
    ``GET /v1/staff/export/{kind}`` (`sync_server.sync.exports`).

    Args:
        settings: The server settings.
        clinic: The clinic's id, or its name when that names one clinic.
        kind: What to export.
        format: ``csv`` or ``ndjson``.
        write: Where the bytes go (a file's ``write``).
        filters: Which records (default: every live one).
        batch_size: Rows read per read transaction.

    Raises:
        Invalid: An unknown kind or format, or a filter the kind has not.
        NotFound: ``clinic_not_found``; or no database.
        Conflict: The database is not migrated.
        Unavailable: The database cannot be used.
    """
    filters = filters or AssessmentFilters()
    check_export(kind, format, filters)
    with open_database(settings, must_exist=True) as database:
        require_schema(database)
        with database.read() as session:
            clinic_id = _clinic_named(session, clinic)
        stream = open_export(
            database,
            actor=Actor("system"),
            purpose=OPERATIONS,
            kind=kind,
            format=format,
            clinic_id=clinic_id,
            filters=filters,
            batch_size=batch_size,
        )
        for chunk in stream:
            write(chunk)
    return ExportedRecords(clinic_id=clinic_id, kind=kind, format=format, rows=stream.rows)


def signing_keys(settings: Settings) -> list[TokenKeyInfo]:
    """Every token signing key the deployment has had, oldest first.

    Raises:
        Conflict: The database is not migrated.
        NotFound: No database.
        Unavailable: The database cannot be used.
    """
    with open_database(settings, must_exist=True) as database:
        require_schema(database)
        with database.read() as session:
            return list_keys(session=session)


def rotate_signing_key(settings: Settings, *, key_file: str | None = None) -> RotatedKey:
    """Make a new token signing key the deployment's active key (audited): the current
    key endorses it and keeps verifying until its tokens have expired.

    With ``signing_key_source=database`` the new key is generated (or read from
    `key_file`) and stored sealed: every instance picks it up by itself. With ``file``
    or ``secret``, `key_file` is required and the operator then puts that key where
    every instance reads its key.

    Raises:
        Invalid: ``key_file_required``, or a key file that is not an Ed25519 PEM key.
        Conflict: The configured key is not the deployment's active key, the new key
            was used before, another rotation won, or the database is not migrated.
        NotFound: No database.
        Unavailable: The database cannot be used.
    """
    new_key = read_key_file(key_file) if key_file is not None else None
    with open_database(settings, must_exist=True) as database:
        require_schema(database)
        with database.write() as session:
            return rotate_key(session=session, settings=settings, new_key=new_key)
