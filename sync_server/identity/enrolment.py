"""Device enrolment: one-time enrolment tokens, and a device trading one for its place
in a clinic, its Ed25519 key bound and its first session.

An enrolment token is a bearer secret until used: it lives at most 30 days
(`MAX_ENROLMENT_TOKEN_LIFETIME`, whoever issues it: an admin through the API or an
operator through ``coherency server enroll-token``) and only its hash is stored.

The device's proof of possession signs the token, its id, the time and a random nonce
(`crdt.enrolment_message`); it is accepted within 5 minutes of the server's clock and
each nonce once (`sync_server.identity.assertions`), so a captured enrolment request
cannot be replayed for a session of its own. A device whose answer was lost retries
with a fresh proof: the server then revokes every session the device held and answers
with one new token family, so the device never holds a family it does not know about.

An enrolment token has a kind: ``device`` (a tablet) or ``edge`` (a clinic's edge box,
`sync_server.edge`). A box enrols exactly like a device, with its self-signed TLS
certificate (required with an edge token, refused with a device token); it becomes a
device of kind ``edge`` whose principal has the role ``edge``. Every enrolment answer
carries the clinic's edge boxes and their certificates, for the device to pin.

A refused enrolment never spends the token (a spent token stays spent), and is
audited, and counted towards throttling when its credentials were wrong, even though
it is refused: `enrol_device` commits its refusals before raising, so call it in a
transaction of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Literal, NoReturn

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from crdt import enrolment_message, is_uuid, verify_ed25519
from sync_server.audit.events import (
    Actor,
    DeviceEnrolment,
    EnrolmentOutcome,
    EnrolmentTokenCreated,
)
from sync_server.audit.services import record_event
from sync_server.db import commit_then_raise, new_id, rowcount, utcnow
from sync_server.edge.certificates import (
    EDGE_KIND,
    EdgeBoxEntry,
    check_certificate,
    clinic_edge_boxes,
    register_edge_box,
)
from sync_server.errors import Conflict, Invalid, NotFound, ServerError, Unauthorized
from sync_server.identity import throttling
from sync_server.identity.assertions import check_nonce, claim_nonce, is_fresh
from sync_server.identity.devices import device_account
from sync_server.identity.keyring import TokenKeyring
from sync_server.identity.principals import Principal
from sync_server.identity.sessions import TokenPair, issue_tokens, revoke_device_tokens
from sync_server.identity.tables import Clinic, Device, EnrolmentToken
from sync_server.identity.tenancy import MAX_NAME_LENGTH, visible_clinic
from sync_server.identity.tokens import (
    ED25519_KEY_SIZE,
    hash_token,
    new_bearer_token,
)
from sync_server.settings import Settings

__all__ = [
    "MAX_ENROLMENT_TOKEN_LIFETIME",
    "EnrolResult",
    "EnrolmentKind",
    "create_enrolment_token",
    "enrol_device",
]

MAX_ENROLMENT_TOKEN_LIFETIME = timedelta(days=30)
"""The longest an enrolment token may live: it is a bearer secret until used."""

EnrolmentKind = Literal["device", "edge"]
"""What an enrolment token enrols: a device (a tablet) or a clinic's edge box."""

# How long after its token expires a device may still repeat its own enrolment.
_ENROL_REPLAY_GRACE = timedelta(hours=1)


@dataclass(frozen=True, slots=True, kw_only=True)
class EnrolResult(TokenPair):
    """An enrolled device's first session, its scope, and the server keys to pin."""

    device_id: str
    clinic_id: str
    organisation_id: str
    server_public_key: bytes
    artifact_public_key: bytes
    edge_boxes: tuple[EdgeBoxEntry, ...] = ()


def create_enrolment_token(
    *,
    session: Session,
    clinic_id: str,
    ttl: timedelta,
    actor: Principal | None = None,
    kind: EnrolmentKind = "device",
) -> tuple[str, EnrolmentToken]:
    """A one-time token that enrols one device into `clinic_id`; only its hash is kept.

    Args:
        session: The transaction.
        clinic_id: The clinic the token enrols into.
        ttl: How long the token stays usable: more than 0, at most 30 days.
        actor: The admin issuing it (None: an operator), who must see the clinic.
        kind: ``device`` (default) or ``edge``: the token enrols an edge box.

    Raises:
        Invalid: ``invalid_lifetime``: `ttl` is not more than 0 and at most 30 days;
            ``invalid_kind``: neither ``device`` nor ``edge``.
        NotFound: ``clinic_not_found``: no such clinic (or not one `actor` may see).
    """
    if kind not in ("device", EDGE_KIND):
        raise Invalid("an enrolment token is of kind device or edge", code="invalid_kind")
    if ttl <= timedelta(0) or ttl > MAX_ENROLMENT_TOKEN_LIFETIME:
        raise Invalid(
            "an enrolment token lives more than 0 and at most "
            f"{MAX_ENROLMENT_TOKEN_LIFETIME.days} days",
            code="invalid_lifetime",
        )
    if actor is not None:
        visible_clinic(session=session, principal=actor, clinic_id=clinic_id)
    elif session.get(Clinic, clinic_id) is None:
        raise NotFound("no such clinic", code="clinic_not_found")
    token, token_hash = new_bearer_token()
    now = utcnow()
    row = EnrolmentToken(
        id=new_id(),
        token_hash=token_hash,
        clinic_id=clinic_id,
        kind=kind,
        created_by=None if actor is None else actor.id,
        created_at=now,
        expires_at=now + ttl,
    )
    session.add(row)
    session.flush()
    record_event(
        session=session,
        event=EnrolmentTokenCreated(
            actor=Actor.user_or_system(row.created_by), clinic_id=clinic_id, token_id=row.id
        ),
    )
    return token, row


def enrol_device(
    *,
    session: Session,
    token: str,
    device_id: str,
    public_key: bytes,
    name: str,
    expected_clinic_id: str | None,
    issued_at: int,
    nonce: str,
    signature: bytes,
    signing_key: TokenKeyring,
    artifact_public_key: bytes,
    settings: Settings,
    client: str,
    tls_certificate: str | None = None,
) -> EnrolResult:
    """Enrol a device with a one-time token, binding its Ed25519 public key.

    `signature` is the device key's signature of `enrolment_message(token, device_id,
    issued_at, nonce)`, proving the caller holds the private key now: `issued_at` must be
    within 5 minutes of the server's clock and the nonce new. The same device repeating
    its own enrolment (its answer was lost on the way) with the same key and a fresh
    proof gets the answer again: every session it held is revoked and one new token
    family issued. Failed proofs count towards the throttling of `client` and the device.

    With a token of kind ``edge`` the caller is an edge box: `tls_certificate` (the PEM
    of its self-signed certificate) is required, and stored with its fingerprint; with
    a device token it is refused.

    Raises:
        Invalid: ``invalid_device_id`` (not a UUID), ``invalid_public_key`` (not 32
            bytes), ``invalid_name`` (over 200 characters), ``invalid_nonce``,
            ``bad_certificate`` (`tls_certificate` does not parse, is over 8 KiB or is
            not valid now), ``certificate_required`` (an edge token without one) or
            ``certificate_refused`` (a device token with one).
        TooManyRequests: `client` has failed too often on this device.
        Unauthorized: ``enrolment_token_invalid`` (unknown, expired or used),
            ``enrolment_proof_invalid`` (bad signature), ``enrolment_proof_stale``
            (signed more than 5 minutes from the server's clock) or ``nonce_reused``
            (a replayed proof).
        Conflict: ``clinic_mismatch`` (the token is for another clinic than expected) or
            ``device_exists`` (the device id is already enrolled).
    """
    if not is_uuid(device_id):
        raise Invalid("device_id must be a lowercase hyphenated UUID", code="invalid_device_id")
    if len(public_key) != ED25519_KEY_SIZE:
        raise Invalid("public_key must be a raw 32-byte Ed25519 key", code="invalid_public_key")
    name = name.strip()
    if len(name) > MAX_NAME_LENGTH:
        raise Invalid(f"a device name is at most {MAX_NAME_LENGTH} characters", code="invalid_name")
    check_nonce(nonce)
    certificate = None if tls_certificate is None else check_certificate(tls_certificate)
    account = device_account(device_id)
    throttling.check_account(
        session=session, action="enrol", account=account, client=client, settings=settings
    )
    now = utcnow()
    row = session.scalars(
        select(EnrolmentToken).where(EnrolmentToken.token_hash == hash_token(token))
    ).one_or_none()

    def refuse(error: ServerError, outcome: EnrolmentOutcome, *, failed: bool = True) -> NoReturn:
        record_event(
            session=session,
            event=DeviceEnrolment(
                actor=Actor.device(device_id),
                clinic_id=None if row is None else row.clinic_id,
                token_id=None if row is None else row.id,
                result=outcome,
            ),
        )
        if failed:
            throttling.record_failure(
                session=session, action="enrol", account=account, client=client, settings=settings
            )
        commit_then_raise(session, error)

    def claim() -> None:
        if not claim_nonce(session=session, nonce=nonce, device_id=device_id, issued_at=issued_at):
            refuse(
                Unauthorized(
                    "this enrolment proof was already used: sign a new one", code="nonce_reused"
                ),
                "replay",
            )

    if not is_fresh(issued_at):
        refuse(
            Unauthorized(
                "the enrolment proof was signed more than 5 minutes from the server's clock",
                code="enrolment_proof_stale",
            ),
            "proof-stale",
        )
    proof = enrolment_message(token, device_id, issued_at, nonce)
    if (
        row is not None
        and row.used_at is not None
        and row.device_id == device_id
        and row.expires_at > now - _ENROL_REPLAY_GRACE
    ):
        device = session.get(Device, device_id)
        if (
            device is not None
            and device.revoked_at is None
            and device.public_key == public_key
            and verify_ed25519(public_key, proof, signature)
        ):
            claim()
            # Never a second family beside one the device may not know it holds.
            revoke_device_tokens(session=session, device_id=device_id, at=now)
            clinic = session.get(Clinic, device.clinic_id)
            assert clinic is not None  # foreign key
            return _enrolled(
                session,
                device,
                clinic,
                row.id,
                "repeated",
                signing_key,
                artifact_public_key,
                settings,
                (account, client),
            )
    if row is None or row.used_at is not None or row.expires_at <= now:
        refuse(
            Unauthorized(
                "enrolment token is unknown, expired or already used",
                code="enrolment_token_invalid",
            ),
            "token-invalid",
        )
    if not verify_ed25519(public_key, proof, signature):
        refuse(
            Unauthorized(
                "the enrolment signature does not verify with the device's public key",
                code="enrolment_proof_invalid",
            ),
            "proof-invalid",
        )
    claim()
    if expected_clinic_id is not None and expected_clinic_id != row.clinic_id:
        refuse(
            Conflict(
                "this enrolment token is for another clinic than expected",
                code="clinic_mismatch",
            ),
            "clinic-mismatch",
            failed=False,
        )
    if session.get(Device, device_id) is not None:
        refuse(
            Conflict("this device id is already enrolled", code="device_exists"),
            "exists",
            failed=False,
        )
    if row.kind == EDGE_KIND and certificate is None:
        refuse(
            Invalid(
                "an edge box enrols with its TLS certificate (tls_certificate)",
                code="certificate_required",
            ),
            "certificate-required",
            failed=False,
        )
    if row.kind != EDGE_KIND and certificate is not None:
        refuse(
            Invalid(
                "a device enrolment token takes no TLS certificate (only edge boxes have one)",
                code="certificate_refused",
            ),
            "certificate-refused",
            failed=False,
        )
    clinic = session.get(Clinic, row.clinic_id)
    assert clinic is not None  # foreign key
    # Conditional, so two requests racing with one token cannot both enrol.
    spent = session.execute(
        update(EnrolmentToken)
        .where(
            EnrolmentToken.id == row.id,
            EnrolmentToken.used_at.is_(None),
            EnrolmentToken.expires_at > now,
        )
        .values(used_at=now, device_id=device_id)
        .execution_options(synchronize_session=False)
    )
    if rowcount(spent) != 1:
        refuse(
            Unauthorized(
                "enrolment token is unknown, expired or already used",
                code="enrolment_token_invalid",
            ),
            "token-invalid",
        )
    device = Device(
        id=device_id,
        clinic_id=clinic.id,
        kind=row.kind,
        public_key=public_key,
        name=name,
        enrolled_at=now,
        enrolled_with=row.id,
        last_seen_at=now,
    )
    session.add(device)
    try:
        session.flush()
    except IntegrityError:
        # A concurrent enrolment of the same device id won; this transaction (and its
        # spending of the token) is rolled back by the caller.
        raise Conflict("this device id is already enrolled", code="device_exists") from None
    if certificate is not None:
        register_edge_box(session=session, device=device, certificate=certificate)
    return _enrolled(
        session,
        device,
        clinic,
        row.id,
        "ok",
        signing_key,
        artifact_public_key,
        settings,
        (account, client),
    )


def _enrolled(
    session: Session,
    device: Device,
    clinic: Clinic,
    token_id: str,
    outcome: EnrolmentOutcome,
    signing_key: TokenKeyring,
    artifact_public_key: bytes,
    settings: Settings,
    account_client: tuple[str, str],
) -> EnrolResult:
    """An enrolment's answer: a new token family for the device, audited; the client's
    failures are forgotten."""
    account, client = account_client
    device_id = device.id
    throttling.record_success(session=session, action="enrol", account=account, client=client)
    tokens = issue_tokens(
        session=session,
        subject_kind="device",
        subject_id=device_id,
        clinic_id=clinic.id,
        organisation_id=clinic.organisation_id,
        role=device.kind,
        signing_key=signing_key,
        settings=settings,
    )
    record_event(
        session=session,
        event=DeviceEnrolment(
            actor=Actor.device(device_id), clinic_id=clinic.id, token_id=token_id, result=outcome
        ),
    )
    return EnrolResult(
        access_token=tokens.access_token,
        access_token_expires_at=tokens.access_token_expires_at,
        refresh_token=tokens.refresh_token,
        refresh_token_expires_at=tokens.refresh_token_expires_at,
        device_id=device_id,
        clinic_id=clinic.id,
        organisation_id=clinic.organisation_id,
        server_public_key=signing_key.public_key_bytes,
        artifact_public_key=artifact_public_key,
        edge_boxes=tuple(clinic_edge_boxes(session=session, clinic_id=clinic.id)),
    )
