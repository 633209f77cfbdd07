"""Routes: push and pull of replicated records (binary crdt/ sync messages).

- ``POST /v1/sync/push``: the body is one `crdt` wire message of DOC entries (whole
  saved documents). Each is validated and merged; the answer lists what was accepted,
  what the server already had, and what was refused and why. Pushing the same
  documents again changes nothing (CRDT merges are idempotent).
- ``GET /v1/sync/pull?cursor=N``: one wire message of DOC entries, the caller's
  clinic's documents changed after sequence N, with the next cursor in its control
  fields. ``wait=S`` long-polls: the answer comes as soon as something changes, or
  empty after S seconds.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from functools import partial
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from crdt import SYNC_MEDIA_TYPE, RecordDocument, schema_versions
from sync_server.bodies import read_body
from sync_server.deps import (
    ArtifactKeyDep,
    DbDep,
    DeviceCaller,
    FeedDep,
    IntentDeskDep,
    MetricsDep,
    RequestIdDep,
    SettingsDep,
)
from sync_server.edge.certificates import clinic_edge_boxes
from sync_server.edge.schemas import EdgeBoxPublic
from sync_server.errors import Invalid, PayloadTooLarge
from sync_server.intents.desk import IntentDesk
from sync_server.sync.authorship import ServerSigner, clinic_directory, revoked_devices
from sync_server.sync.documents import (
    PullPage,
    PushResult,
    decode_push,
    encode_pull,
    pull_page,
    push_documents,
    record_pull,
)
from sync_server.sync.schemas import DeviceDirectory, DirectoryEntry, PushResponse

__all__ = ["router"]

MEDIA_TYPE = SYNC_MEDIA_TYPE
router = APIRouter(prefix="/v1/sync", tags=["sync"])


_BINARY_BODY = {
    "requestBody": {
        "required": True,
        "content": {MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
    }
}


@router.post(
    "/push",
    summary="Push whole documents to the server",
    description="Body: one crdt wire message (magic CHSY, versioned, CRC-checked) of DOC "
    "entries. Every document is checked for scope (the device's clinic), collection "
    "permission (server-owned collections are refused) and schema validity after the "
    "merge; a refused document is reported and nothing of it is stored. Idempotent.",
    response_model=PushResponse,
    openapi_extra=_BINARY_BODY,
    responses={400: {"description": "Malformed message"}, 413: {"description": "Too large"}},
)
async def push(
    request: Request,
    caller: DeviceCaller,
    db: DbDep,
    settings: SettingsDep,
    feed: FeedDep,
    metrics: MetricsDep,
    request_id: RequestIdDep,
    artifact_key: ArtifactKeyDep,
    desk: IntentDeskDep,
) -> PushResponse:
    """Merge a device's documents into its clinic's replicas."""
    cap = settings.max_message_size
    body = await read_body(
        request,
        limit=cap,
        too_large=PayloadTooLarge(f"a sync message may be at most {cap} bytes"),
        incomplete=Invalid("the message body ended early", code="incomplete_body"),
    )
    clinic_id = caller.clinic_id
    assert clinic_id is not None  # a device always belongs to a clinic
    limits = settings.document_limits
    decide = partial(
        _decide,
        desk,
        organisation_id=caller.organisation_id,
        clinic_id=clinic_id,
        device_id=caller.id,
        signer=ServerSigner(artifact_key),
    )

    def work() -> PushResponse:
        # Decoding and merging are CPU work: off the event loop, so one big push
        # cannot hold up every other request.
        incoming = decode_push(
            body,
            max_message_size=cap,
            max_documents=settings.push_max_documents,
            max_changes=settings.push_max_changes,
            limits=limits,
        )

        def transaction(session: Session) -> PushResult:
            result = push_documents(
                session=session,
                principal=caller,
                incoming=incoming,
                max_message_size=cap,
                server_key=artifact_key.public_key_bytes,
                limits=limits,
                request_id=request_id,
                decide=decide,
                max_intents=settings.push_max_intents,
            )
            if result.accepted:
                feed.notify_in(session, clinic_id)
            return result

        result = db.write_retrying(transaction)
        if result.accepted:
            feed.published(clinic_id)
        return PushResponse.model_validate(result)

    response = await run_in_threadpool(work)
    metrics.count_documents("push", "accepted", len(response.accepted))
    metrics.count_documents("push", "unchanged", len(response.unchanged))
    metrics.count_documents("push", "rejected", len(response.rejected))
    return response


@router.get(
    "/pull",
    summary="Pull the clinic's changes since a cursor (long-poll with wait)",
    description="Answers one crdt wire message of DOC entries: the caller's clinic's "
    "documents changed after `cursor`, oldest change first. Its control fields carry "
    "`cursor` (send it next time), `more` (another page is ready) and `feed` (the "
    "clinic's newest sequence). With `wait` > 0 and nothing new, the answer waits up to "
    "that many seconds for a change. Headers X-Coherency-Cursor and X-Coherency-More "
    "repeat the control fields.",
    response_class=Response,
    responses={
        200: {"content": {MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}}},
        409: {"description": "The cursor is ahead of the clinic's feed (start again at 0)."},
    },
)
async def pull(
    request: Request,
    caller: DeviceCaller,
    db: DbDep,
    settings: SettingsDep,
    feed: FeedDep,
    metrics: MetricsDep,
    request_id: RequestIdDep,
    cursor: Annotated[
        int, Query(ge=0, le=2**63 - 1, description="Last cursor received; 0 at first.")
    ] = 0,
    limit: Annotated[int | None, Query(ge=1, le=10_000)] = None,
    wait: Annotated[float, Query(ge=0, le=300, description="Long-poll seconds.")] = 0,
    records: Annotated[
        bool,
        Query(
            description="Follow each document that has a projection with a RECORD entry "
            "(its collection, heads and record JSON: a claim the device verifies later), "
            "when `schemas` is the server's own."
        ),
    ] = False,
    schemas: Annotated[
        str | None,
        Query(
            max_length=4096,
            description="The device's record schemas (`crdt.schema_versions()`): hints "
            "are sent only to a device that reads records as the server does.",
        ),
    ] = None,
) -> Response:
    """Documents of the caller's clinic changed after `cursor`."""
    # A device whose schemas differ would read a record to other values than the
    # server's projection holds, and quarantine a true claim: it gets documents alone.
    records = records and schemas == schema_versions()
    page_size = min(limit or settings.pull_page_size, settings.pull_page_size)
    wait = min(wait, settings.long_poll_max_seconds)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    clinic_id = caller.clinic_id
    assert clinic_id is not None  # a device always belongs to a clinic

    def read() -> tuple[PullPage, bytes]:
        with db.read() as session:
            page = pull_page(
                session=session,
                principal=caller,
                cursor=cursor,
                limit=page_size,
                max_message_size=settings.max_message_size,
                records=records,
            )
        if page.entries:
            with db.write() as session:
                record_pull(session=session, principal=caller, page=page, request_id=request_id)
        return page, encode_pull(page, max_message_size=settings.max_message_size)

    waiting_since: float | None = None
    while True:
        # Subscribe before reading, so a change committed in between still wakes us.
        woken = feed.subscribe(clinic_id) if wait else None
        page, encoded = await run_in_threadpool(read)
        remaining = deadline - loop.time()
        if page.entries or page.cursor != cursor or woken is None or remaining <= 0:
            break
        if await request.is_disconnected():
            break
        if waiting_since is None:
            waiting_since = loop.time()
            # Its time goes to the long-poll histogram, not the HTTP latency one.
            request.state.long_poll = True
        with metrics.long_poll(), contextlib.suppress(TimeoutError):
            await asyncio.wait_for(woken.wait(), timeout=min(remaining, 5.0))
    if waiting_since is not None:
        metrics.observe_long_poll(
            loop.time() - waiting_since, woke=bool(page.entries) or page.cursor != cursor
        )
    metrics.count_documents("pull", "accepted", len(page.entries))
    return Response(
        encoded,
        media_type=MEDIA_TYPE,
        headers={"X-Coherency-Cursor": str(page.cursor), "X-Coherency-More": str(page.more)},
    )


@router.get(
    "/directory",
    summary="The devices that may author the clinic's records, and its edge boxes",
    response_model=DeviceDirectory,
)
def directory(caller: DeviceCaller, db: DbDep) -> DeviceDirectory:
    """The caller's clinic's enrolled, unrevoked devices and their Ed25519 public keys;
    its enrolled, unrevoked edge boxes and their TLS certificates (``edge_boxes``); and
    the ids of its revoked devices (``revoked``).

    Devices check every change they receive (pulled, from a bundle, from an edge box)
    against it; a device revoked since drops out. Edge boxes author no records, so they
    are not in ``devices``; a device trusts a box only if its certificate's fingerprint
    is the one listed here. A box refuses the devices in ``revoked``. The server signs
    the documents it writes itself with its artifact key, under
    `crdt.server_device_id` of that key.
    """
    assert caller.clinic_id is not None  # a device always belongs to a clinic
    with db.read() as session:
        keys = clinic_directory(session=session, clinic_id=caller.clinic_id)
        boxes = clinic_edge_boxes(session=session, clinic_id=caller.clinic_id)
        revoked = revoked_devices(session=session, clinic_id=caller.clinic_id)
    return DeviceDirectory(
        devices=[
            DirectoryEntry(device_id=device, public_key=base64.b64encode(key).decode())
            for device, key in sorted(keys.items())
        ],
        edge_boxes=[EdgeBoxPublic.model_validate(box) for box in boxes],
        revoked=revoked,
    )


def _decide(
    desk: IntentDesk,
    session: Session,
    intents: list[RecordDocument],
    *,
    organisation_id: str,
    clinic_id: str,
    device_id: str,
    signer: ServerSigner,
) -> None:
    desk.decide(
        session=session,
        organisation_id=organisation_id,
        clinic_id=clinic_id,
        device_id=device_id,
        intents=intents,
        signer=signer,
    )
