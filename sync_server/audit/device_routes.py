"""Route: a device pushes its hash-chained audit log, append-only.

- ``POST /v1/audit/device-events``: the events after the last one the server
  acknowledged (ones it holds already may come again, unchanged). A break in the chain
  is refused whole with 409 ``audit_chain_broken`` naming the event (``seq``) and the
  server's last event (``server_seq``). The answer is a signed checkpoint of the
  server's log covering the event that names the device's new head, and its proof.
  An edge box relays a device of its clinic's chain by naming it (``device_id``).
"""

from __future__ import annotations

import base64

from fastapi import APIRouter, Request
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from sync_server.audit.device_chains import (
    DeviceReceipt,
    PushedEvent,
    chain_owner,
    device_receipt,
    receive_device_events,
)
from sync_server.audit.device_schemas import CheckpointOut, DeviceAuditPush, DeviceAuditReceipt
from sync_server.bodies import read_body
from sync_server.deps import ArtifactKeyDep, DbDep, DeviceCaller, SettingsDep
from sync_server.errors import Conflict, Invalid, PayloadTooLarge

__all__ = ["router"]

router = APIRouter(prefix="/v1/audit", tags=["audit"])


@router.post(
    "/device-events",
    summary="Push the device's audit chain (append-only)",
    response_model=DeviceAuditReceipt,
    responses={
        403: {"description": "not_your_chain: a device named another device's chain."},
        404: {"description": "An edge box named no device of its clinic."},
        409: {"description": "The events do not continue the chain the server holds."},
        413: {"description": "Too large"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    },
)
async def push_device_events(
    request: Request,
    caller: DeviceCaller,
    db: DbDep,
    settings: SettingsDep,
    artifact_key: ArtifactKeyDep,
) -> DeviceAuditReceipt:
    """Append the device's audit events to the server's copy of its chain, put its new
    head in the server's Merkle log, and answer with a signed checkpoint covering it.

    An edge box relays a device's chain by naming it in ``device_id`` (an enrolled,
    unrevoked device of its clinic; 404 otherwise): the events go to that device's
    chain exactly as if it had pushed them. A device naming another device gets 403
    ``not_your_chain``."""
    cap = settings.max_message_size
    body = await read_body(
        request,
        limit=cap,
        too_large=PayloadTooLarge(f"an audit push may be at most {cap} bytes"),
        incomplete=Invalid("the request body ended early", code="incomplete_body"),
    )
    try:
        push = DeviceAuditPush.model_validate_json(body)
    except ValidationError as exc:
        raise Invalid(f"not an audit push: {exc.errors()[0]['msg']}") from None
    events = [
        PushedEvent(e.seq, base64.b64decode(e.canonical), bytes.fromhex(e.hash))
        for e in push.events
    ]
    clinic_id = caller.clinic_id
    assert clinic_id is not None  # a device always belongs to a clinic

    def transaction(session: Session) -> DeviceReceipt:
        owner = chain_owner(session=session, principal=caller, device_id=push.device_id)
        head = receive_device_events(
            session=session,
            device_id=owner,
            clinic_id=clinic_id,
            events=events,
            relayed_by=None if owner == caller.id else caller,
        )
        return device_receipt(session=session, head=head, signer=artifact_key)

    def work() -> DeviceReceipt:
        try:
            return db.write_retrying(transaction)
        except Conflict as exc:
            if exc.code != "audit_push_busy":
                raise
            # The other push has committed: ours is found held.
            return db.write_retrying(transaction)

    receipt = await run_in_threadpool(work)
    checkpoint = receipt.checkpoint.to_json()
    return DeviceAuditReceipt(
        head_seq=receipt.head_seq,
        head_hash=receipt.head_hash.hex(),
        leaf_index=receipt.leaf_index,
        leaf=base64.b64encode(receipt.leaf).decode(),
        inclusion=[p.hex() for p in receipt.inclusion],
        checkpoint=CheckpointOut.model_validate(checkpoint),
        public_key=receipt.public_key.hex(),
    )
