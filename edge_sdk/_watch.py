"""`watch_sync`: the background sync loop, as an iterator of what it moved."""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from edge_sdk._errors import ServerUnreachableError
from edge_sdk._sync_status import SyncStatus
from edge_sdk._sync_types import RetryPolicy, SyncResult
from edge_sdk._transport import SyncTransport

if TYPE_CHECKING:
    from edge_sdk._client import EdgeClient

__all__ = ["watch_sync"]

_ENDED = None  # put on the queue when the loop ends by itself


def watch_sync(
    client: EdgeClient,
    *,
    wait: float = 25.0,
    blobs: bool = True,
    pause: float = 5.0,
    on_unreachable: Callable[[ServerUnreachableError], None] | None = None,
    retry: RetryPolicy | None = None,
    transport: SyncTransport | None = None,
) -> Iterator[SyncResult]:
    """Sync `client` again and again in its background loop (`EdgeClient.start_sync`),
    each pull long-polling up to `wait` seconds; yield each sync that moved or refused
    something.

    Stop by leaving the loop (or Ctrl-C): the loop is stopped at once, a long poll in
    flight abandoned, nothing lost. An outage is waited out, not raised:
    `on_unreachable` is told (in the loop's thread) and the next round starts `pause`
    seconds later. `blobs`, `retry` and `transport` are as for `EdgeClient.sync`.

        for result in watch_sync(client, on_unreachable=print):
            show(result)

    Raises:
        NotEnrolledError: No `transport` and the store was never enrolled.
        DeviceRevokedError: The server revoked this device (or any error retrying
            cannot fix, which ended the loop).
    """
    results: queue.SimpleQueue[SyncResult | None] = queue.SimpleQueue()
    loop = client.start_sync(wait=wait, blobs=blobs, pause=pause, retry=retry, transport=transport)
    try:
        loop.on_result(results.put)
        if on_unreachable is not None:
            loop.on_unreachable(on_unreachable)

        def ended(status: SyncStatus) -> None:
            if not status.running:
                results.put(_ENDED)

        with client.on_sync_status(ended):
            if not loop.running:  # it ended before the subscription
                results.put(_ENDED)
            while True:
                result = results.get()
                if result is _ENDED:
                    if not loop.running or loop.join(0.5):
                        break
                    continue
                yield result
    finally:
        loop.stop()  # raises the error that ended the loop, if one did
