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
import contextlib
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from crdt import (
    SYNC_MEDIA_TYPE,
    EntryKind,
    SyncMessage,
    SyncProtocolError,
    decode_message,
    encode_message,
)
from sync_server.deps import DeviceCaller
from sync_server.errors import Conflict, Invalid, PayloadTooLarge
from sync_server.settings import Settings
from sync_server.sync.documents import PullPage, audit_pull, pull_page, push_documents

__all__ = ["router"]

MEDIA_TYPE = SYNC_MEDIA_TYPE
router = APIRouter(prefix="/v1/sync", tags=["sync"])


class RefusedDocument(BaseModel):
    """A pushed document the server did not store, and why."""

    doc_id: str
    reason: str


class PushResponse(BaseModel):
    """The outcome of a push, document by document."""

    accepted: list[str] = Field(description="Stored new or changed.")
    unchanged: list[str] = Field(description="The server already held all of it.")
    rejected: list[RefusedDocument] = Field(description="Not stored at all.")
    cursor: int = Field(description="The clinic's change-feed sequence after the push.")


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
async def push(request: Request, caller: DeviceCaller) -> PushResponse:
    """Merge a device's documents into its clinic's replicas."""
    settings: Settings = request.app.state.settings
    body = await _read_body(request, settings.max_message_size)
    try:
        message = decode_message(body, max_size=settings.max_message_size)
    except SyncProtocolError as exc:
        raise Invalid(f"unusable sync message: {exc}", code="malformed_message") from None
    if any(entry.kind is not EntryKind.DOC for entry in message.entries):
        raise Invalid("a push carries whole documents (DOC entries) only", code="bad_entry")
    if len(message.entries) > settings.push_max_documents:
        raise PayloadTooLarge(f"a push may carry at most {settings.push_max_documents} documents")
    incoming = [(entry.doc_id, entry.payload) for entry in message.entries]
    request_id = getattr(request.state, "request_id", None)

    def work() -> PushResponse:
        with request.app.state.db.write() as session:
            result = push_documents(
                session,
                caller,
                incoming,
                max_document_size=settings.max_message_size - 4096,
                request_id=request_id,
            )
            if result.accepted:
                request.app.state.feed.notify_in(session, caller.clinic_id)
        if result.accepted:
            request.app.state.feed.published(caller.clinic_id)
        return PushResponse(
            accepted=result.accepted,
            unchanged=result.unchanged,
            rejected=[RefusedDocument(doc_id=r.doc_id, reason=r.reason) for r in result.rejected],
            cursor=result.cursor,
        )

    response = await run_in_threadpool(work)
    metrics = request.app.state.metrics
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
    cursor: Annotated[
        int, Query(ge=0, le=2**63 - 1, description="Last cursor received; 0 at first.")
    ] = 0,
    limit: Annotated[int | None, Query(ge=1, le=10_000)] = None,
    wait: Annotated[float, Query(ge=0, le=300, description="Long-poll seconds.")] = 0,
) -> Response:
    """Documents of the caller's clinic changed after `cursor`."""
    settings: Settings = request.app.state.settings
    feed = request.app.state.feed
    page_size = min(limit or settings.pull_page_size, settings.pull_page_size)
    wait = min(wait, settings.long_poll_max_seconds)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    request_id = getattr(request.state, "request_id", None)

    def read() -> PullPage:
        with request.app.state.db.read() as session:
            page = pull_page(
                session,
                caller,
                cursor=cursor,
                limit=page_size,
                max_bytes=settings.max_message_size - 4096,
            )
        if page.entries:
            with request.app.state.db.write() as session:
                audit_pull(session, caller, page, request_id=request_id)
        return page

    metrics = request.app.state.metrics
    while True:
        # Subscribe before reading, so a change committed in between still wakes us.
        woken = feed.subscribe(caller.clinic_id) if wait else None
        page = await run_in_threadpool(read)
        if cursor > page.feed_seq:
            raise Conflict(
                f"cursor {cursor} is ahead of the clinic's feed ({page.feed_seq}); "
                "pull again from 0",
                code="cursor_ahead",
            )
        remaining = deadline - loop.time()
        if page.entries or page.cursor != cursor or woken is None or remaining <= 0:
            break
        if await request.is_disconnected():
            break
        with metrics.long_poll(), contextlib.suppress(TimeoutError):
            await asyncio.wait_for(woken.wait(), timeout=min(remaining, 5.0))
    metrics.count_documents("pull", "accepted", len(page.entries))
    control = {"cursor": page.cursor, "more": page.more, "feed": page.feed_seq}
    data = encode_message(
        SyncMessage(control, tuple(page.entries)), max_size=settings.max_message_size
    )
    return Response(
        data,
        media_type=MEDIA_TYPE,
        headers={"X-Coherency-Cursor": str(page.cursor), "X-Coherency-More": str(page.more)},
    )


async def _read_body(request: Request, cap: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise PayloadTooLarge(f"a sync message may be at most {cap} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > cap:
                raise PayloadTooLarge(f"a sync message may be at most {cap} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise Invalid("the message body ended early", code="incomplete_body") from None
    return b"".join(chunks)
