"""`watch_sync`: keep a device in sync, long-polling, until the caller stops."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from edge_sdk._errors import ServerUnreachableError
from edge_sdk._sync_types import SyncResult
from edge_sdk._transport import SyncTransport

if TYPE_CHECKING:
    from edge_sdk._client import EdgeClient

__all__ = ["watch_sync"]


def watch_sync(
    client: EdgeClient,
    *,
    wait: float = 25.0,
    blobs: bool = True,
    pause: float = 5.0,
    on_unreachable: Callable[[ServerUnreachableError], None] | None = None,
    transport: SyncTransport | None = None,
) -> Iterator[SyncResult]:
    """Sync `client` again and again, each pull long-polling up to `wait` seconds.

    Yields each sync that moved or refused something (quiet rounds are not yielded);
    stop by leaving the loop. An outage is waited out, not raised: `on_unreachable`
    is told and the next round starts `pause` seconds later. `blobs` and `transport`
    are as for `EdgeClient.sync`.

        for result in watch_sync(client, on_unreachable=print):
            show(result)

    Raises:
        NotEnrolledError: No `transport` and the store was never enrolled.
        DeviceRevokedError: The server revoked this device.
    """
    while True:
        try:
            result = client.sync(wait=wait, blobs=blobs, transport=transport)
        except ServerUnreachableError as exc:
            if on_unreachable is not None:
                on_unreachable(exc)
            time.sleep(pause)
            continue
        if result.pushed or result.pulled or result.refused_by_server or result.rejected:
            yield result
