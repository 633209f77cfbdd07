"""The upstream relay: the box's replica synced with central whenever it is reachable.

One loop in a thread: `sync_replica(box replica, central)` (push what central lacks,
the devices' intents last so central decides them in that push; then pull the
clinic's feed from the saved cursor, decisions included; then blobs both ways,
resumably), then the devices' audit chains the box holds. Each step resumes where the
last stopped (the cursor, what central holds, the blob offsets are kept in the box's
store), so a box killed at any point starts again without losing or repeating
anything. Central unreachable: the loop backs off (1 s doubling to 30 s) and tries
again; a device push wakes it at once. After every pull that brought something, the
box's feed wakes the devices' long polls.
"""

from __future__ import annotations

import base64
import binascii
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from edge_box._box import EdgeBox, EdgeStatus
from edge_sdk import (
    AuditPushError,
    AuditReceipt,
    DeviceRevokedError,
    HttpTransport,
    RetryPolicy,
    ServerUnreachableError,
    SyncError,
    SyncResult,
    SyncTransport,
    sync_replica,
)

__all__ = ["Relay"]

log = logging.getLogger("edge_box.relay")

RELAY_RETRY = RetryPolicy(attempts=2, base_seconds=0.2, cap_seconds=1.0, timeout_seconds=30.0)
"""Each exchange with central is tried twice: the loop itself retries, with backoff."""


def receipt_json(receipt: AuditReceipt) -> dict[str, Any]:
    """An audit receipt as central's route answers it (what the device checks)."""
    return {
        "head_seq": receipt.head_seq,
        "head_hash": receipt.head_hash.hex(),
        "checkpoint": receipt.checkpoint.to_json(),
        "leaf_index": receipt.leaf_index,
        "leaf": base64.b64encode(receipt.leaf).decode(),
        "inclusion": [p.hex() for p in receipt.inclusion],
        "public_key": receipt.public_key.hex(),
    }


class Relay:
    """Carries the box's replica to central and back, in a thread.

    Args:
        box: The enrolled box.
        transport: Makes the transport to central (an `HttpTransport` over the box's
            enrolment by default; tests may pass their own).
        long_poll: Seconds a pull from central waits for news when nothing is pending.
        max_backoff: The longest pause between attempts while central is unreachable.
    """

    def __init__(
        self,
        box: EdgeBox,
        *,
        transport: Callable[[], SyncTransport] | None = None,
        long_poll: float = 10.0,
        max_backoff: float = 30.0,
    ) -> None:
        self.box = box
        self._make = transport or (lambda: HttpTransport(box.replica, retry=RELAY_RETRY))
        self._transport: SyncTransport | None = None
        self.long_poll = long_poll
        self.max_backoff = max_backoff
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._sync_lock = threading.Lock()  # one round at a time
        # Audit chains go up under their own lock: a device's push must not wait for a
        # round that is long-polling central.
        self._audit_lock = threading.Lock()
        self._connect_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.last_contact: str | None = box.store.get_meta("edge.last_contact")
        self.last_error: str | None = None
        self.reachable = False
        self.revoked = False
        self.rounds = 0

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Run the loop in a daemon thread."""
        self._thread = threading.Thread(target=self._loop, name="edge-relay", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the loop (a long poll in flight is abandoned) and close the transport."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=self.long_poll + 35)
        with self._sync_lock:
            if self._transport is not None and hasattr(self._transport, "close"):
                self._transport.close()
            self._transport = None

    def __enter__(self) -> Relay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wake(self) -> None:
        """Sync soon: a device pushed something central lacks."""
        self._wake.set()

    # ---------------------------------------------------------------- one round
    def sync_once(self, *, wait: float = 0.0) -> SyncResult:
        """One round with central: documents and blobs both ways, then audit chains.

        Raises:
            ServerUnreachableError: Central did not answer.
            DeviceRevokedError: Central revoked the box.
            SyncError: Central refused an exchange.
        """
        with self._sync_lock:
            transport = self._connected()
            before = self.box.feed_seq()
            try:
                result = sync_replica(self.box.replica, transport, wait=wait)
                self._learn_directory(transport)
                with self._audit_lock:
                    self._relay_all_audit(transport)
            except (ServerUnreachableError, SyncError) as exc:
                self._failed(exc)
                raise
            finally:
                if self.box.feed_seq() != before:
                    self.box.notify()  # pulled decisions and records: wake the devices
            self._contact()
            self.rounds += 1
            return result

    def relay_audit(self, device_id: str) -> None:
        """Carry one device's held audit chain to central now, if central is reachable
        (called as a device pushes it, so the device can get central's receipt)."""
        if not self.reachable or self.revoked:
            return
        if not self._audit_lock.acquire(timeout=5.0):
            return  # another relay of chains is under way: the next round carries it
        try:
            events = self.box.audit_backlog().get(device_id)
            if events:
                self._relay_audit_of(self._connected(), device_id, events)
        except (ServerUnreachableError, SyncError) as exc:
            self._failed(exc)
        finally:
            self._audit_lock.release()

    def refresh_directory(self) -> None:
        """Fetch central's directory now, if central is reachable (a device the box
        does not know may have been enrolled since the last round)."""
        if self.revoked:
            return
        try:
            self._learn_directory(self._connected())
        except (ServerUnreachableError, SyncError) as exc:
            log.info("could not refresh the directory from central: %s", exc)

    def status(self) -> EdgeStatus:
        """The box's status as this relay sees it."""
        return self.box.status(last_contact=self.last_contact, last_error=self.last_error or "")

    # ---------------------------------------------------------------- internals
    def _connected(self) -> SyncTransport:
        with self._connect_lock:
            if self._transport is None:
                self._transport = self._make()
            return self._transport

    def _learn_directory(self, transport: SyncTransport) -> None:
        """Central's directory of the clinic, with the devices it revoked, into the box."""
        request = getattr(transport, "request", None)
        if request is None:  # a transport without HTTP: its directory, no revocations
            self.box.learn_directory(transport.directory(), [])
            return
        response = request("GET", "/v1/sync/directory")
        if response.status_code >= 400:
            raise SyncError(f"central refused the directory request (HTTP {response.status_code})")
        try:
            answer = response.json()
            keys = {
                str(entry["device_id"]): base64.b64decode(entry["public_key"], validate=True)
                for entry in answer["devices"]
            }
            revoked = [str(device) for device in answer.get("revoked", [])]
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise SyncError("central sent an unusable device directory") from None
        self.box.learn_directory(keys, revoked)

    def _relay_all_audit(self, transport: SyncTransport) -> None:
        enrolled = self.box.directory()
        for device_id, events in self.box.audit_backlog().items():
            # A device revoked since: central refuses its chain; the box keeps what it
            # holds (evidence of what the device did), and `edge status` counts it.
            if device_id in enrolled:
                self._relay_audit_of(transport, device_id, events)

    def _relay_audit_of(self, transport: Any, device_id: str, events: list[Any]) -> None:
        try:
            receipt = transport.push_audit(events, device_id=device_id)
        except DeviceRevokedError:
            # The device, not the box (the box's own calls went through this round).
            log.warning("central refused device %s's audit chain: it was revoked", device_id)
            return
        except AuditPushError as exc:
            # Central holds this chain differently (the device pushed it there directly
            # meanwhile): drop what central already holds and keep the rest.
            log.warning("central refused device %s's audit chain: %s", device_id, exc)
            if exc.server_seq is not None:
                self.box.audit_forget(device_id, exc.server_seq)
            return
        self.box.audit_relayed(device_id, receipt_json(receipt))

    def _contact(self) -> None:
        now = datetime.now(UTC).isoformat(timespec="seconds")
        self.last_contact, self.last_error, self.reachable = now, None, True
        with self.box.store.transaction():
            self.box.store.set_meta("edge.last_contact", now)
            self.box.store.delete_meta("edge.last_error")

    def _failed(self, exc: Exception) -> None:
        self.reachable = False
        self.last_error = str(exc)
        if isinstance(exc, DeviceRevokedError):
            self.revoked = True
        with self.box.store.transaction():
            self.box.store.set_meta("edge.last_error", str(exc))

    def _loop(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            pending = self._wake.is_set()
            self._wake.clear()
            try:
                self.sync_once(wait=0.0 if pending else self.long_poll)
            except DeviceRevokedError:
                log.error("central revoked this box; the relay stops")
                return
            except (ServerUnreachableError, SyncError) as exc:
                log.warning("central unreachable or refusing (%s); again in %.0f s", exc, backoff)
                self._wake.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff)
                continue
            except Exception:  # a bug must not stop the relay for good
                log.exception("the relay round failed")
                self._wake.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff)
                continue
            backoff = 1.0
