"""The access gate: one `AccessEvent` for every read and write of patient data.

Whatever path an operation takes (a collection, the blob store, a sync session, a
bundle, a sync with the server), it runs inside the gate::

    with gate("read", "patients") as access:
        access.record_ids.append(record_id)
        ...

and the gate tells every listener (the audit log plugs in there) what happened, with
the outcome: "ok", or the class name of the error that ended it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

__all__ = ["AccessEvent", "AccessGate", "AccessListener", "PendingAccess"]


@dataclass(frozen=True, slots=True)
class AccessEvent:
    """One read or write of patient data, as the audit log will record it."""

    action: str  # read | list | create | update | delete | restore | resolve | history | ...
    collection: str
    record_ids: tuple[str, ...]
    device_id: str
    at: datetime
    outcome: str  # "ok", or the error's class name


AccessListener = Callable[[AccessEvent], None]


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

    def __init__(self, device_id: str) -> None:
        self._device_id = device_id
        self._listeners: list[AccessListener] = []

    def add_listener(self, listener: AccessListener) -> None:
        """Call `listener` with an `AccessEvent` after every operation."""
        self._listeners.append(listener)

    @contextlib.contextmanager
    def __call__(self, action: str, collection: str) -> Iterator[PendingAccess]:
        """Run the body as one access; listeners hear of it however it ends."""
        access = PendingAccess(action, collection)
        outcome = "ok"
        try:
            yield access
        except BaseException as exc:
            outcome = type(exc).__name__
            raise
        finally:
            event = AccessEvent(
                action=access.action,
                collection=access.collection,
                record_ids=tuple(access.record_ids),
                device_id=self._device_id,
                at=datetime.now(UTC),
                outcome=outcome,
            )
            for listener in self._listeners:
                listener(event)
