"""Where a device's sync stands, as a value and as a stream: `SyncStatus`.

`StatusTracker` (one per `EdgeClient`) keeps the current `SyncStatus` and tells the
app's callbacks (an `edge_sdk._notify.Listeners`) each time it changes: a sync starts,
ends or fails, or a committed local write changes what is waiting to go up (at most
once per committed transaction: it listens to `Store.add_commit_listener`). Every
`EdgeClient.sync` goes through it, so a foreground sync, `watch_sync`, the background
loop and the CLI's ``sync --watch`` report the same object.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from crdt import COLLECTIONS
from edge_sdk._errors import ServerUnreachableError, SyncCancelledError
from edge_sdk._notify import Deliver, Listeners, Subscription
from edge_sdk._replica import Replica
from edge_sdk._sync import unsent_blobs
from edge_sdk._sync_types import server_peer_id
from edge_sdk._transport import SyncTransport

__all__ = ["StatusTracker", "SyncStatus", "describe_peer"]

_log = logging.getLogger("edge_sdk.sync")

# What a device pushes (the server-owned collections only ever come down).
_DEVICE_WRITABLE = tuple(sorted(name for name, s in COLLECTIONS.items() if s.device_writable))


@dataclass(frozen=True, slots=True)
class SyncStatus:
    """Where this device's sync stands.

    Attributes:
        peer: What the device syncs with, for people: the server's URL, an edge box
            and its URL, a memory hub; None before the first sync of a store that
            was never enrolled.
        connected: The last attempt reached the peer (False before any, and after
            an outage).
        syncing: A sync is running now.
        last_synced_at: When the last successful sync ended (UTC), or None.
        pending_records: Records written here the peer has not acknowledged yet.
        pending_blobs: Scan blobs held here the peer does not hold yet.
        last_error: The last failure as ``"TypeName: message"``; None after a success.
        last_error_type: Its type's name (``"ServerUnreachableError"``), or None.
        running: A background sync loop is running (`EdgeClient.start_sync`).
    """

    peer: str | None = None
    connected: bool = False
    syncing: bool = False
    last_synced_at: datetime | None = None
    pending_records: int = 0
    pending_blobs: int = 0
    last_error: str | None = None
    last_error_type: str | None = None
    running: bool = False

    def line(self) -> str:
        """The status as one line for people (what ``coherency sync --watch`` prints)."""
        where = self.peer or "no server"
        state = (
            "syncing with"
            if self.syncing
            else "connected to"
            if self.connected
            else "not connected to"
        )
        text = (
            f"{state} {where}; {self.pending_records} record(s), "
            f"{self.pending_blobs} blob(s) to upload"
        )
        if self.last_synced_at is not None:
            text += f"; last synced {self.last_synced_at.isoformat(timespec='seconds')}"
        if self.last_error is not None:
            text += f"; last error {self.last_error}"
        return text


def describe_peer(transport: SyncTransport) -> str:
    """What `transport` talks to, for people (its ``description``, else its peer id)."""
    description = getattr(transport, "description", None)
    return str(description) if description else transport.peer_id


class StatusTracker:
    """The current `SyncStatus` of one client, and the callbacks told of changes."""

    def __init__(self, replica: Replica) -> None:
        self._replica = replica
        self._listeners: Listeners[SyncStatus] = Listeners("sync status")
        self._lock = threading.Lock()
        enrollment = replica.enrollment
        self._peer_id: str | None = None  # whose acknowledgements count as sent
        self._status = SyncStatus(peer=None if enrollment is None else enrollment.server_url)
        self._counted = False  # pending counts are computed on first need
        replica.store.add_commit_listener(self._committed)

    # ------------------------------------------------------------ reading
    def current(self) -> SyncStatus:
        """The status now (pending counts as of the last committed transaction)."""
        if not self._counted:
            # Counted outside the lock: reading the store may commit (a record
            # verified first), and the commit comes back here through `_committed`.
            records, blobs = self._pending()
            with self._lock:
                self._status = dataclasses.replace(
                    self._status, pending_records=records, pending_blobs=blobs
                )
                self._counted = True
        return self._status

    def subscribe(
        self, callback: Callable[[SyncStatus], None], deliver: Deliver | None
    ) -> Subscription:
        """Tell `callback` of each new status."""
        return self._listeners.add(callback, deliver=deliver)

    # ------------------------------------------------------------ changes
    def started(self, transport: SyncTransport) -> None:
        """A sync through `transport` starts."""
        self._peer_id = transport.peer_id
        self._change(peer=describe_peer(transport), syncing=True)

    def succeeded(self) -> None:
        """The sync that started ended well."""
        self._change(
            connected=True,
            syncing=False,
            last_synced_at=datetime.now(UTC),
            last_error=None,
            last_error_type=None,
            count=True,
        )

    def failed(self, exc: BaseException) -> None:
        """The sync that started failed with `exc` (an interruption is no failure)."""
        if isinstance(exc, SyncCancelledError):
            self._change(syncing=False, count=True)
            return
        self._change(
            # An outage did not reach the peer; any other failure is its answer (a
            # refusal, a revocation) or ours, after reaching it.
            connected=not isinstance(exc, ServerUnreachableError) and self._status.connected,
            syncing=False,
            last_error=f"{type(exc).__name__}: {exc}",
            last_error_type=type(exc).__name__,
            count=True,
        )

    def loop_running(self, running: bool, error: BaseException | None = None) -> None:
        """The background loop started or stopped (with the error that ended it)."""
        if error is None:
            self._change(running=running)
            return
        self._change(
            running=running,
            syncing=False,
            last_error=f"{type(error).__name__}: {error}",
            last_error_type=type(error).__name__,
        )

    def _committed(self, collections: frozenset[str]) -> None:
        if not self._listeners:
            self._counted = False  # nobody is told: counted again on the next `current`
            return
        try:
            self._change(count=True, blobs="assessments" in collections)
        except Exception:  # the write committed; a status that cannot be read waits
            _log.exception("could not update the sync status after a commit")

    def _change(self, *, count: bool = False, blobs: bool = True, **fields: object) -> None:
        if count:  # outside the lock, as in `current`
            fields["pending_records"], fields["pending_blobs"] = self._pending(blobs=blobs)
        with self._lock:
            if count:
                self._counted = True
            new = dataclasses.replace(self._status, **fields)  # type: ignore[arg-type]
            if new == self._status:
                return
            self._status = new
        self._listeners.notify(new)

    def _pending(self, *, blobs: bool = True) -> tuple[int, int]:
        """Records and blobs the peer has not acknowledged (the blob count is kept
        when `blobs` is False: only a write of assessments changes it)."""
        replica = self._replica
        if replica.store.locked:
            return self._status.pending_records, self._status.pending_blobs
        enrollment = replica.enrollment
        # Never synced here: the enrolled server's acknowledgements count, or none.
        peer = self._peer_id or ("" if enrollment is None else server_peer_id(enrollment))
        records = replica.store.count_unsent(peer, _DEVICE_WRITABLE)
        if not blobs and self._counted:
            return records, self._status.pending_blobs
        return records, len(unsent_blobs(replica, peer))
