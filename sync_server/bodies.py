"""Request bodies read with a size cap: refused as soon as they grow past it.

Every route that takes a raw body (sync messages, blob chunks, model uploads) reads it
through here: a Content-Length over the cap is refused before anything is read, a body
that grows past the cap while streaming (a client may send more than it declared) is
refused at that point, and a connection that closes early is the client's error.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from starlette.requests import ClientDisconnect, Request

from sync_server.errors import Invalid, ServerError

__all__ = ["capped_stream", "check_declared_length", "read_body"]


def check_declared_length(content_length: str | None, limit: int, too_large: ServerError) -> None:
    """Refuse a request whose Content-Length is malformed or over `limit`.

    Raises:
        Invalid: ``invalid_content_length``: not a number.
        ServerError: `too_large`, when the declared length is over `limit`.
    """
    if content_length is None:
        return
    if not content_length.strip().isdigit():
        raise Invalid("invalid Content-Length header", code="invalid_content_length")
    if int(content_length) > limit:
        raise too_large


async def capped_stream(
    request: Request, *, limit: int, too_large: ServerError
) -> AsyncGenerator[bytes, None]:
    """The request body's pieces, raising `too_large` once more than `limit` bytes came
    (or were declared)."""
    check_declared_length(request.headers.get("content-length"), limit, too_large)
    seen = 0
    async for piece in request.stream():
        seen += len(piece)
        if seen > limit:
            raise too_large
        yield piece


async def read_body(
    request: Request, *, limit: int, too_large: ServerError, incomplete: ServerError
) -> bytes:
    """The whole request body, read before anything is done with it.

    Raises:
        ServerError: `too_large` past `limit` bytes; `incomplete` when the connection
            closes before the body ends.
        Invalid: ``invalid_content_length``.
    """
    body = bytearray()
    try:
        async for piece in capped_stream(request, limit=limit, too_large=too_large):
            body += piece
    except ClientDisconnect:
        raise incomplete from None
    return bytes(body)
