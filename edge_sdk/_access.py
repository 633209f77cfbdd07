"""The access gate: one `AccessEvent` for every read and write of patient data.

Whatever path an operation takes (a collection, the blob store, a sync session, a
bundle, a sync with the server), it runs inside the gate::

    with gate("read", "patients") as access:
        access.record_ids.append(record_id)
        ...

and the gate writes the access to its journal (the device's audit log,
`edge_sdk._audit`) and tells every listener what happened, with the outcome: "ok", or
the class name of the error that ended it. Listeners hear of an access after it is
journalled (and its write committed): one that raises is logged and never reaches the
caller, whose write stands (a caller who retried would write it twice).

The gate is also where `crdt`'s errors become the SDK's (`translated_errors`): every
operation on patient data runs in it.

No unaudited access: a write (`WRITE_ACTIONS`) runs in one store transaction with its
journal entry, so a crash keeps both or neither; any other access is journalled in its
own transaction before the gate lets its result out, and if that fails the access
raises instead. An access that failed is journalled with its error, if the journal
can still be written.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from edge_sdk._errors import translated_errors
from edge_sdk._notify import Deliver, Listeners, Subscription

__all__ = [
    "WRITE_ACTIONS",
    "AccessEvent",
    "AccessGate",
    "AccessJournal",
    "AccessListener",
    "PendingAccess",
]

WRITE_ACTIONS = frozenset(
    {
        "create",
        "update",
        "delete",
        "restore",
        "resolve",
        "sync-write",
        "import",
        "quarantine",
        "migrate",
    }
)
"""Actions that write documents: journalled in the same transaction as the write."""


@dataclass(frozen=True, slots=True)
class AccessEvent:
    """One read or write of patient data, as the audit log will record it."""

    action: str  # read | list | create | update | delete | restore | resolve | history | ...
    collection: str
    record_ids: tuple[str, ...]
    device_id: str
    at: datetime
    outcome: str  # "ok", or the error's class name
    user: str | None = None  # the app's user, when the app said who it is
    purpose: str = "treatment"  # purpose of use (treatment, break-glass, operations)


AccessListener = Callable[[AccessEvent], None]


class AccessJournal(Protocol):
    """Where the gate writes every access before letting its result out."""

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        """The store transaction a write and its journal entry share."""
        ...

    def record(self, event: AccessEvent) -> None:
        """Write `event` durably (in the open transaction, if any)."""
        ...


@dataclass(slots=True)
class PendingAccess:
    """An access in progress: the operation adds the ids it touches."""

    action: str
    collection: str
    record_ids: list[str] = field(default_factory=list)


class AccessGate:
    """Emits an `AccessEvent` to its listeners around every operation on patient data.

    Call it around the operation: ``with gate(action, collection) as access: ...``.
    """

    def __init__(self, device_id: str, *, journal: AccessJournal | None = None) -> None:
        self._device_id = device_id
        self._journal = journal
        self._listeners: Listeners[AccessEvent] = Listeners("access")
        self.user: str | None = None
        """The app's signed-in user (an id), recorded with every access."""
        self.purpose = "treatment"
        """The purpose of use recorded with every access."""

    def add_listener(
        self, listener: AccessListener, *, deliver: Deliver | None = None
    ) -> Subscription:
        """Call `listener` with an `AccessEvent` after every operation (through
        `deliver`, if given); cancel the returned subscription to stop it."""
        return self._listeners.add(listener, deliver=deliver)

    @contextlib.contextmanager
    def __call__(self, action: str, collection: str) -> Iterator[PendingAccess]:
        """Run the body as one access, journalled; listeners hear of it however it ends."""
        access = PendingAccess(action, collection)
        journal = self._journal
        shared = journal.transaction() if journal is not None and action in WRITE_ACTIONS else None
        event: AccessEvent | None = None
        try:
            with shared if shared is not None else contextlib.nullcontext():
                with translated_errors():
                    yield access
                event = self._event(access, "ok")
                if journal is not None:
                    journal.record(event)  # in the write's transaction, or its own
        except BaseException as exc:
            failed = self._event(access, type(exc).__name__)
            if journal is not None and event is None:
                # The access failed (and its write, if any, rolled back): journal the
                # attempt if the journal still works; the access's own error matters more.
                with contextlib.suppress(Exception):
                    journal.record(failed)
            self._notify(failed)
            raise
        self._notify(event)

    def _event(self, access: PendingAccess, outcome: str) -> AccessEvent:
        return AccessEvent(
            action=access.action,
            collection=access.collection,
            record_ids=tuple(access.record_ids),
            device_id=self._device_id,
            at=datetime.now(UTC),
            outcome=outcome,
            user=self.user,
            purpose=self.purpose,
        )

    def _notify(self, event: AccessEvent) -> None:
        self._listeners.notify(event)  # a failing listener is logged, never raised
