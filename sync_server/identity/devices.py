"""Enrolled devices: logging one in with a signed assertion, listing and revoking them.

A device that lost its refresh token proves possession of its key with a fresh,
timestamped, single-use assertion (`device_login`, checked by
`sync_server.identity.assertions`). A failed assertion is audited and counted towards
throttling even though it is refused (committed before raising: call it in a
transaction of its own). A revoked device is refused from its very next request, and
its refresh tokens stop working.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import NoReturn

from sqlalchemy import select
from sqlalchemy.orm import Session

from crdt import device_login_message, verify_ed25519
from sync_server.audit.events import Actor, DeviceLogin, DeviceRevoked
from sync_server.audit.services import record_event
from sync_server.db import commit_then_raise, utcnow
from sync_server.errors import Forbidden, NotFound, ServerError, Unauthorized
from sync_server.identity import throttling
from sync_server.identity.assertions import check_nonce, claim_nonce, is_fresh
from sync_server.identity.keyring import TokenKeyring
from sync_server.identity.principals import Principal
from sync_server.identity.sessions import TokenPair, issue_tokens, revoke_device_tokens
from sync_server.identity.tables import Clinic, Device
from sync_server.identity.tenancy import clinic_ids_in_scope, visible_clinic
from sync_server.settings import Settings

__all__ = [
    "DeviceProfile",
    "device_account",
    "device_login",
    "device_profile",
    "list_devices",
    "revoke_device",
]


def device_account(device_id: str) -> str:
    """The throttling account of a device id (whether or not it is enrolled)."""
    return throttling.account_of_name(device_id, scope="device")


@dataclass(frozen=True, slots=True)
class DeviceProfile:
    """An enrolled device as it sees itself."""

    device_id: str
    clinic_id: str
    organisation_id: str
    name: str
    enrolled_at: datetime


def device_login(
    *,
    session: Session,
    device_id: str,
    issued_at: int,
    nonce: str,
    signature: bytes,
    signing_key: TokenKeyring,
    settings: Settings,
    client: str,
) -> TokenPair:
    """A new token family for an enrolled device that proves possession of its key.

    For a device that lost its refresh token (for example, the connection dropped after
    the server rotated it). `signature` signs `device_login_message(device_id,
    issued_at, nonce)`; `issued_at` (unix seconds) must be within 5 minutes of the
    server's clock and each nonce is accepted once. Failures count towards the
    throttling of `client` (its address, `throttling.client_of`) and of the device.

    Raises:
        Invalid: ``invalid_nonce``: not 16 to 64 URL-safe characters.
        TooManyRequests: `client` has failed too often on this device.
        Unauthorized: ``device_assertion_invalid`` (unknown device or bad signature),
            ``device_assertion_stale`` or ``nonce_reused``.
        Forbidden: ``device_revoked``.
    """
    check_nonce(nonce)
    account = device_account(device_id)
    throttling.check_account(
        session=session, action="device-login", account=account, client=client, settings=settings
    )
    device = session.get(Device, device_id)

    def refuse(error: ServerError) -> NoReturn:
        record_event(
            session=session,
            event=DeviceLogin(
                actor=Actor.device(None if device is None else device_id),
                clinic_id=None if device is None else device.clinic_id,
                accepted=False,
            ),
        )
        throttling.record_failure(
            session=session,
            action="device-login",
            account=account,
            client=client,
            settings=settings,
        )
        commit_then_raise(session, error)

    if not is_fresh(issued_at):
        refuse(
            Unauthorized(
                "issued_at is more than 5 minutes from the server's clock",
                code="device_assertion_stale",
            )
        )
    if device is None or not verify_ed25519(
        device.public_key, device_login_message(device_id, issued_at, nonce), signature
    ):
        refuse(Unauthorized("device assertion does not verify", code="device_assertion_invalid"))
    if device.revoked_at is not None:
        raise Forbidden("this device has been revoked", code="device_revoked")
    if not claim_nonce(session=session, nonce=nonce, device_id=device_id, issued_at=issued_at):
        refuse(Unauthorized("this nonce was already used", code="nonce_reused"))
    clinic = session.get(Clinic, device.clinic_id)
    assert clinic is not None  # foreign key
    device.last_seen_at = utcnow()
    throttling.record_success(
        session=session, action="device-login", account=account, client=client
    )
    tokens = issue_tokens(
        session=session,
        subject_kind="device",
        subject_id=device.id,
        clinic_id=device.clinic_id,
        organisation_id=clinic.organisation_id,
        role=device.kind,
        signing_key=signing_key,
        settings=settings,
    )
    record_event(
        session=session,
        event=DeviceLogin(actor=Actor.device(device.id), clinic_id=device.clinic_id, accepted=True),
    )
    return tokens


def device_profile(*, session: Session, principal: Principal) -> DeviceProfile:
    """The calling device as the server knows it.

    Raises:
        NotFound: ``device_not_found``.
    """
    device = session.get(Device, principal.id) if principal.kind == "device" else None
    if device is None:
        raise NotFound("no such device", code="device_not_found")
    return DeviceProfile(
        device_id=device.id,
        clinic_id=device.clinic_id,
        organisation_id=principal.organisation_id,
        name=device.name,
        enrolled_at=device.enrolled_at,
    )


def list_devices(
    *,
    session: Session,
    principal: Principal,
    clinic_id: str | None = None,
    limit: int,
    offset: int,
) -> list[Device]:
    """Enrolled devices (revoked ones too) of one clinic, or of every clinic `principal`
    may see, oldest enrolment first.

    Raises:
        NotFound: ``clinic_not_found``: a clinic `principal` may not see.
    """
    query = select(Device)
    if clinic_id is not None:
        clinic = visible_clinic(session=session, principal=principal, clinic_id=clinic_id)
        query = query.where(Device.clinic_id == clinic.id)
    else:
        query = query.where(Device.clinic_id.in_(clinic_ids_in_scope(principal)))
    query = query.order_by(Device.enrolled_at, Device.id).limit(limit).offset(offset)
    return list(session.scalars(query))


def revoke_device(*, session: Session, device_id: str, actor: Principal | None = None) -> Device:
    """Revoke a device and every refresh token it holds; it is refused from its next
    request. Revoking a revoked device changes nothing.

    Args:
        session: The transaction.
        device_id: The device.
        actor: The admin revoking it (None: an operator), who must see its clinic.

    Raises:
        NotFound: ``device_not_found``: no such device (or not one `actor` may see).
    """
    device = session.get(Device, device_id)
    if device is None:
        raise NotFound("no such device", code="device_not_found")
    if actor is not None:
        try:
            visible_clinic(session=session, principal=actor, clinic_id=device.clinic_id)
        except NotFound:
            raise NotFound("no such device", code="device_not_found") from None
    now = utcnow()
    if device.revoked_at is None:
        device.revoked_at = now
    revoke_device_tokens(session=session, device_id=device_id, at=now)
    record_event(
        session=session,
        event=DeviceRevoked(
            actor=Actor.user_or_system(None if actor is None else actor.id),
            clinic_id=device.clinic_id,
            device_id=device_id,
        ),
    )
    session.flush()
    return device
