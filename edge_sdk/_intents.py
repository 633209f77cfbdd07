"""Intents and the server's decisions on them, as a device sees them.

A device writes an intent (`Intent`: book, move, cancel, review, order, pay) and shows it
``pending`` until the server's `Decision` on it arrives, in the same sync that
delivered the intent when the server is reachable. `IntentStatus` pairs the two.
`DecisionNotices` reports each decision once, whichever way it arrived (sync, bundle,
session): the store queues a decision it did not hold before in the transaction that
stores it, and the queue is emptied as its decisions are reported.
"""

from __future__ import annotations

import builtins
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from crdt import Decision, DecisionStatus, Intent, IntentKind
from edge_sdk._collections import Collection
from edge_sdk._errors import InvalidArgumentError, RecordNotFoundError
from edge_sdk._notify import Deliver, Listeners, Subscription
from edge_sdk._replica import Replica

__all__ = [
    "PENDING",
    "DecisionCallback",
    "DecisionNotices",
    "DecisionsCollection",
    "IntentStatus",
    "IntentsCollection",
]


PENDING = "pending"
"""The state of an intent the server has not decided yet (as far as this device knows)."""

DecisionCallback = Callable[[Decision], None]
"""Called with each decision this store receives (see `EdgeClient.on_decision`)."""

_STATES = frozenset({PENDING, *(status.value for status in DecisionStatus)})
_FAMILIES = frozenset(kind.value.partition(".")[0] for kind in IntentKind)


@dataclass(frozen=True, slots=True)
class IntentStatus:
    """An intent and where it stands.

    Attributes:
        intent: The intent as written.
        state: ``"pending"`` until the server's decision is on this device, then the
            decision's status: ``"accepted"``, ``"accepted_alternative"`` or
            ``"rejected"``.
        decision: The server's decision (its `reason`, `outcome` and `alternative`),
            or None while pending.
    """

    intent: Intent
    state: str
    decision: Decision | None

    @classmethod
    def of(cls, intent: Intent, decision: Decision | None) -> IntentStatus:
        """The status of `intent` given the decision on it (None: none yet)."""
        return cls(intent, PENDING if decision is None else decision.status.value, decision)

    @property
    def id(self) -> str:
        """The intent's id (also its idempotency key)."""
        return self.intent.id


class DecisionsCollection(Collection[Decision]):
    """The server's decisions on this clinic's intents (read-only on a device)."""

    def for_intents(self, intent_ids: Sequence[str]) -> dict[str, Decision]:
        """The decision on each of `intent_ids` that has one, by intent id."""
        found: dict[str, Decision] = {}
        for start in range(0, len(intent_ids), 500):
            chunk = intent_ids[start : start + 500]
            marks = ",".join("?" for _ in chunk)
            for decision in self._query(
                "list", [f"intent_id IN ({marks})", "deleted = 0"], chunk, order_by="id"
            ):
                found[decision.intent_id] = decision
        return found

    def for_booking(self, booking_id: str) -> Decision | None:
        """The latest decision whose outcome is booking `booking_id`, or None."""
        return self._for_outcome("booking_id", booking_id)

    def for_order(self, order_id: str) -> Decision | None:
        """The latest decision whose outcome is order `order_id`, or None."""
        return self._for_outcome("order_id", order_id)

    def _for_outcome(self, key: str, value: str) -> Decision | None:
        found = self._query(
            "list",
            [f"json_extract(record, '$.outcome.{key}') = ?", "deleted = 0"],
            [value],
            order_by="id DESC",
            limit=1,
        )
        return found[0] if found else None


class IntentsCollection(Collection[Intent]):
    """Intents this clinic's devices wrote; immutable once written."""

    def __init__(self, replica: Replica, decisions: DecisionsCollection) -> None:
        super().__init__(replica, Intent)
        self._decisions = decisions

    def _check_references(self, values: Mapping[str, Any]) -> None:
        # A request or an order is for a patient this device holds; a move,
        # cancellation, review or payment names a booking, an order or an invoice,
        # whose patient may since have been deleted here.
        if values.get("kind") in (
            IntentKind.APPOINTMENT_REQUEST,
            IntentKind.VISIT_REQUEST,
            IntentKind.ORDER_PLACE,
        ):
            self._referenced("patients", "patient_id", values.get("patient_id"))

    def ask(
        self,
        kind: IntentKind,
        *,
        details: Mapping[str, Any],
        patient_id: str | None = None,
        subject_id: str | None = None,
    ) -> IntentStatus:
        """Write an intent (signed, under a new UUIDv7) and return it ``pending``."""
        intent = self.add(
            kind=kind, patient_id=patient_id, subject_id=subject_id, details=dict(details)
        )
        return IntentStatus.of(intent, None)

    def patient_of(self, decision: Decision | None) -> str | None:
        """The patient of the intent `decision` answered, if this device holds it
        (e.g. the booking or order a cancellation names)."""
        if decision is None:
            return None
        try:
            return self.get(decision.intent_id).patient_id
        except RecordNotFoundError:
            return None

    def status(self, intent_id: str) -> IntentStatus:
        """Where intent `intent_id` stands.

        Raises:
            RecordNotFoundError: No such intent on this device.
        """
        intent = self.get(intent_id)
        return IntentStatus.of(intent, self._decisions.for_intents([intent_id]).get(intent_id))

    def statuses(
        self,
        *,
        kind: str | None = None,
        state: str | None = None,
        patient_id: str | None = None,
    ) -> builtins.list[IntentStatus]:
        """Intents with where they stand, oldest first.

        Args:
            kind: One kind (``"appointment.request"``) or a family of kinds
                (``"appointment"``, ``"visit"``).
            state: ``"pending"``, ``"accepted"``, ``"accepted_alternative"`` or
                ``"rejected"``.
            patient_id: Only intents about this patient.

        Raises:
            InvalidArgumentError: An unknown kind, family or state (a ValueError).
        """
        where: builtins.list[str] = []
        params: builtins.list[Any] = []
        if kind is not None:
            if kind in _FAMILIES:
                where.append("kind LIKE ?")
                params.append(f"{kind}.%")
            elif kind in {k.value for k in IntentKind}:
                where.append("kind = ?")
                params.append(kind)
            else:
                known = ", ".join(sorted(_FAMILIES | {k.value for k in IntentKind}))
                raise InvalidArgumentError(f"no intent kind {kind!r} (known: {known})")
        if state is not None:
            if state not in _STATES:
                known = ", ".join(sorted(_STATES))
                raise InvalidArgumentError(f"no intent state {state!r} (known: {known})")
            decided = "SELECT intent_id FROM decisions WHERE deleted = 0"
            if state == PENDING:
                where.append(f"id NOT IN ({decided})")
            else:
                where.append(f"id IN ({decided} AND status = ?)")
                params.append(state)
        if patient_id is not None:
            where.append("patient_id = ?")
            params.append(patient_id)
        intents = self._query("list", where, params, order_by="id")
        decisions = self._decisions.for_intents([intent.id for intent in intents])
        return [IntentStatus.of(intent, decisions.get(intent.id)) for intent in intents]


class DecisionNotices:
    """Reports each decision the store receives to the registered callbacks, once.

    The store queues a decision it did not hold before in the transaction that stores
    it (`Store.put_documents`); after that transaction commits, the queue is taken
    (removed in its own transaction) and each decision is handed to every callback.
    So a decision is reported at most once per store, also across reopening; one
    received while no callback was registered (or by another process, such as
    `coherency sync`) waits in the queue and is reported to the next callback
    registered. A crash between taking the queue and the callbacks returning loses
    those reports (the decisions stay readable: `EdgeClient.list_intents`).
    """

    def __init__(self, replica: Replica, decisions: DecisionsCollection) -> None:
        self._replica = replica
        self._decisions = decisions
        self._listeners: Listeners[Decision] = Listeners("decision")
        self._reporting = threading.local()
        replica.store.add_commit_listener(self._committed)

    def subscribe(
        self, callback: DecisionCallback, *, deliver: Deliver | None = None
    ) -> Subscription:
        """Report decisions to `callback` from now on (and the queued ones at once)."""
        subscription = self._listeners.add(callback, deliver=deliver)
        self.report()
        return subscription

    def report(self) -> None:
        """Hand every queued decision to the callbacks (if any is registered).

        A callback that raises is logged and does not stop the others: the store has
        already kept the decision, and the sync or import that brought it succeeded.
        """
        if not self._listeners or getattr(self._reporting, "active", False):
            return
        self._reporting.active = True
        try:
            # Again until empty: a callback may itself sync and receive more.
            while queued := self._replica.store.take_decision_inbox():
                for decision_id in queued:
                    self._listeners.notify(self._decisions.get(decision_id))
        finally:
            self._reporting.active = False

    def _committed(self, collections: frozenset[str]) -> None:
        if "decisions" in collections:
            self.report()
