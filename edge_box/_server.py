"""The box's local sync server: central's device sync API, served from the box's replica.

Routes (the same paths, bodies and answers as central's, so the SDK's `HttpTransport`
talks to either):

- ``POST /v1/auth/device``: a device login signed with the device key (`BoxTokens`);
- ``POST /v1/sync/push``, ``GET /v1/sync/pull`` (long-poll with ``wait``),
  ``GET /v1/sync/directory``;
- ``POST /v1/blobs/uploads``, ``PATCH /v1/blobs/uploads/{id}``, ``GET /v1/blobs/{sha}``
  (``Range`` resumes);
- ``POST /v1/audit/device-events``: the device's audit chain, held at the box and
  relayed; the answer is central's signed receipt when the box could relay it at once,
  else 202 with the seq the box holds;
- ``GET /v1/health`` and ``GET /v1/edge/status`` (the status, for `coherency edge
  status --url`; a device token is required).

Work that touches the store runs in the thread pool, never on the event loop: one
large push does not hold up other devices' requests.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import re
from collections.abc import AsyncIterator
from typing import Any

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from crdt import DEFAULT_MAX_MESSAGE_SIZE, SYNC_MEDIA_TYPE
from edge_box._auth import BoxAuthError, BoxTokens
from edge_box._box import CHUNK_MAX, BoxInputError, EdgeBox, EdgeStatus
from edge_sdk import ChainedEvent

__all__ = ["box_app"]

_MAX_JSON = 8 * 1024 * 1024
_RANGE = re.compile(r"bytes=(\d+)-")
LONG_POLL_MAX_SECONDS = 60.0


def _error(status: int, code: str, message: str, **details: Any) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message}, **details}, status_code=status
    )


async def _body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) past `limit` bytes without reading the rest."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BoxInputError(f"the body may be at most {limit} bytes", status=413, code="too_large")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BoxInputError(
                f"the body may be at most {limit} bytes", status=413, code="too_large"
            )
        chunks.append(chunk)
    return b"".join(chunks)


async def _json(request: Request) -> dict[str, Any]:
    import json

    raw = await _body(request, _MAX_JSON)
    try:
        value = json.loads(raw)
    except ValueError:
        raise BoxInputError("the body is not JSON", code="bad_json") from None
    if not isinstance(value, dict):
        raise BoxInputError("the body must be a JSON object", code="bad_json")
    return value


WORKER_THREADS = 8
"""Threads that run store work for requests (anyio's default is 40): the box is a
small machine, and each thread holds its own buffers."""
CONCURRENT_PUSHES = 2
"""Pushes read and merged at once; the others wait before their bodies are read, so 20
devices pushing together hold two messages in memory, not twenty."""
CONCURRENT_PULL_PAGES = 2
"""Pull pages built at once (each holds up to a few MB of documents while encoded)."""


def box_app(box: EdgeBox, *, relay: Any = None) -> FastAPI:
    """The box's FastAPI app over `box` (enrolled). `relay`, when given, is woken
    after each device push and asked to carry audit chains at once."""
    tokens: BoxTokens = box.authenticator()
    pushes: asyncio.Semaphore | None = None
    pages: asyncio.Semaphore | None = None
    waiting: set[asyncio.Event] = set()  # the long polls waiting for a change
    loop_of: list[asyncio.AbstractEventLoop] = []

    def wake_all() -> None:
        for event in list(waiting):
            event.set()

    def changed() -> None:  # called by whichever thread wrote to the box's feed
        if loop_of and not loop_of[0].is_closed():
            loop_of[0].call_soon_threadsafe(wake_all)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        nonlocal pushes, pages
        anyio.to_thread.current_default_thread_limiter().total_tokens = WORKER_THREADS
        pushes = asyncio.Semaphore(CONCURRENT_PUSHES)
        pages = asyncio.Semaphore(CONCURRENT_PULL_PAGES)
        loop_of[:] = [asyncio.get_running_loop()]
        box.add_feed_listener(changed)
        try:
            yield
        finally:
            box.remove_feed_listener(changed)
            loop_of.clear()

    app = FastAPI(
        title="Coherency edge box",
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.box = box

    @app.exception_handler(BoxInputError)
    async def _input(_request: Request, exc: BoxInputError) -> JSONResponse:
        return _error(exc.status, exc.code, str(exc), **exc.details)

    @app.exception_handler(BoxAuthError)
    async def _auth(_request: Request, exc: BoxAuthError) -> JSONResponse:
        return _error(exc.status, exc.code, str(exc))

    async def caller(request: Request) -> str:
        # In the thread pool: checking a device may read the store, or fetch central's
        # directory when the device is new to the box.
        header = request.headers.get("authorization")
        device_id: str = await run_in_threadpool(tokens.caller, header)
        return device_id

    @app.get("/v1/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "box_id": box.box_id,
            "clinic_id": box.clinic_id,
            "relay_rounds": relay.rounds if relay is not None else 0,
        }

    @app.post("/v1/auth/device")
    async def device_login(request: Request) -> dict[str, Any]:
        body = await _json(request)
        try:
            device_id = str(body["device_id"])
            issued_at = int(body["issued_at"])
            nonce = str(body["nonce"])
            signature = base64.b64decode(str(body["signature"]), validate=True)
        except (KeyError, TypeError, ValueError, binascii.Error):
            raise BoxInputError(
                "a device login needs device_id, issued_at, nonce and a base64 signature",
                code="bad_login",
            ) from None
        answer = await run_in_threadpool(
            tokens.login, device_id=device_id, issued_at=issued_at, nonce=nonce, signature=signature
        )
        await run_in_threadpool(box.saw, device_id)
        return answer

    @app.post("/v1/auth/refresh")
    async def refresh() -> JSONResponse:
        # The box never issues refresh tokens: a device logs in with its key.
        return _error(401, "refresh_not_supported", "log in at the box with the device key")

    @app.post("/v1/sync/push")
    async def push(request: Request) -> dict[str, Any]:
        device_id = await caller(request)
        assert pushes is not None  # set when the app starts
        async with pushes:
            body = await _body(request, DEFAULT_MAX_MESSAGE_SIZE)
            answer = await run_in_threadpool(box.push, device_id, body)
            del body
        if relay is not None and answer["accepted"]:
            relay.wake()
        return answer

    @app.get("/v1/sync/pull")
    async def pull(
        request: Request, cursor: int = 0, limit: int = 1000, wait: float = 0
    ) -> Response:
        device_id = await caller(request)
        if cursor < 0 or limit < 1 or wait < 0:
            raise BoxInputError("cursor and wait must be >= 0, limit >= 1", code="bad_query")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(wait, LONG_POLL_MAX_SECONDS)
        while True:
            version = box.feed_version
            assert pages is not None  # set when the app starts
            async with pages:
                message, next_cursor, more = await run_in_threadpool(
                    box.pull, device_id, cursor=cursor, limit=limit
                )
            remaining = deadline - loop.time()
            if next_cursor != cursor or remaining <= 0:
                break
            if await request.is_disconnected():
                break
            # Wait on the event loop, not in a worker thread: twenty tablets long-polling
            # must not take the threads pushes need.
            woken = asyncio.Event()
            waiting.add(woken)
            try:
                if box.feed_version == version:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(woken.wait(), timeout=min(remaining, 5.0))
            finally:
                waiting.discard(woken)
        return Response(
            message,
            media_type=SYNC_MEDIA_TYPE,
            headers={"X-Coherency-Cursor": str(next_cursor), "X-Coherency-More": str(more)},
        )

    @app.get("/v1/sync/directory")
    async def directory(request: Request) -> dict[str, Any]:
        await caller(request)
        keys = await run_in_threadpool(box.directory)
        return {
            "devices": [
                {"device_id": device, "public_key": base64.b64encode(key).decode()}
                for device, key in sorted(keys.items())
            ]
        }

    @app.post("/v1/blobs/uploads")
    async def declare_upload(request: Request) -> JSONResponse:
        device_id = await caller(request)
        body = await _json(request)
        try:
            sha256, size = str(body["sha256"]), int(body["size"])
        except (KeyError, TypeError, ValueError):
            raise BoxInputError("an upload needs sha256 and size", code="bad_upload") from None
        state = await run_in_threadpool(box.declare_upload, device_id, sha256=sha256, size=size)
        return JSONResponse(state, status_code=200 if state["complete"] else 201)

    @app.patch("/v1/blobs/uploads/{upload_id}")
    async def send_chunk(upload_id: str, request: Request) -> JSONResponse:
        device_id = await caller(request)
        try:
            offset = int(request.headers.get("upload-offset", ""))
        except ValueError:
            raise BoxInputError("Upload-Offset is required", code="bad_offset") from None
        data = await _body(request, CHUNK_MAX)
        checksum = request.headers.get("upload-checksum", "")
        if checksum:
            algorithm, _, digest = checksum.partition(" ")
            expected = base64.b64encode(hashlib.sha256(data).digest()).decode()
            if algorithm != "sha256" or digest != expected:
                raise BoxInputError("the chunk does not match its checksum", code="bad_checksum")
        state = await run_in_threadpool(
            box.send_chunk, device_id, upload_id=upload_id, offset=offset, data=data
        )
        if state is None:
            return _error(409, "offset_mismatch", "the upload is gone or stands elsewhere")
        if state["complete"] and relay is not None:
            relay.wake()
        return JSONResponse(state)

    @app.get("/v1/blobs/{sha256}")
    async def download(sha256: str, request: Request) -> Response:
        device_id = await caller(request)
        size = await run_in_threadpool(box.blob_size, sha256)
        if size is None:
            return _error(404, "blob_not_found", "the box does not hold this blob (yet)")
        start = 0
        match = _RANGE.fullmatch(request.headers.get("range", ""))
        if match:
            start = int(match[1])
            if start >= size:
                return _error(416, "range_not_satisfiable", "the blob ends before that byte")
        chunks = box.blob_chunks(device_id, sha256, start)
        headers = {"Content-Length": str(size - start)}
        if match:
            headers["Content-Range"] = f"bytes {start}-{size - 1}/{size}"
        return StreamingResponse(
            chunks,
            status_code=206 if match else 200,
            media_type="application/octet-stream",
            headers=headers,
        )

    @app.post("/v1/audit/device-events")
    async def device_events(request: Request) -> JSONResponse:
        device_id = await caller(request)
        body = await _json(request)
        try:
            events = [
                ChainedEvent(
                    int(e["seq"]),
                    base64.b64decode(str(e["canonical"]), validate=True),
                    bytes.fromhex(str(e["hash"])),
                )
                for e in body["events"]
            ]
        except (KeyError, TypeError, ValueError, binascii.Error):
            raise BoxInputError(
                "events must be a list of {seq, canonical (base64), hash (hex)}",
                code="bad_events",
            ) from None
        if not events or any(e.seq < 1 or len(e.hash) != 32 for e in events):
            raise BoxInputError(
                "events must be numbered from 1 with 32-byte hashes", code="bad_events"
            )
        held = await run_in_threadpool(box.hold_audit, device_id, events)
        if relay is not None:
            await run_in_threadpool(relay.relay_audit, device_id)
        receipt = await run_in_threadpool(box.audit_receipt, device_id, events[-1].seq)
        if receipt is not None:
            return JSONResponse(receipt)
        return JSONResponse(
            {
                "status": "held",
                "held_seq": held,
                "message": "the box holds the chain; central has not acknowledged it yet",
            },
            status_code=202,
        )

    @app.get("/v1/edge/status")
    async def status(request: Request) -> dict[str, Any]:
        await caller(request)
        found: EdgeStatus = await run_in_threadpool(relay.status if relay else box.status)
        return found.to_json()

    return app
