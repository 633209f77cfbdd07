"""Deciding intents inside the push that delivers them.

A device cannot decide who gets a slot, a lot of stock or a charge: it writes an
`crdt.Intent` offline, and the server decides it in the transaction of the push that
delivers it (`IntentDesk.decide`, called by `sync_server.sync` once the pushed
documents are merged). Each domain registers one `Handler` per intent kind; a
handler reads the intent, changes the domain's tables and returns a `Verdict`. The
desk writes the verdict as a server-signed `crdt.Decision` (id `crdt.decision_id`)
into the clinic's feed, so the device pulls it in the same sync.

Exactly once: `intent_decisions` has the intent's id as its primary key and is
written in the same transaction as the decision, so a replayed bundle, a retried push
or an intent arriving through two routes finds it decided and nothing happens again.
Each handler runs in a savepoint: a verdict never leaves half of a domain change
behind.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from crdt import (
    Decision,
    DecisionStatus,
    Intent,
    IntentKind,
    RecordDocument,
    decision_id,
)
from sync_server.audit.events import TREATMENT, Actor, IntentsDecided
from sync_server.audit.services import record_event
from sync_server.db import utcnow
from sync_server.intents.tables import IntentDecision
from sync_server.notifications.events import NoticeKind, notify, patient_recipients
from sync_server.sync.authorship import ServerSigner
from sync_server.sync.documents import write_documents
from sync_server.sync.tables import Document

__all__ = ["AfterDecisions", "Handler", "IntentContext", "IntentDesk", "Verdict"]

log = logging.getLogger("sync_server.intents")


@dataclass(frozen=True, slots=True)
class Verdict:
    """A handler's answer: what the device sees in its `crdt.Decision`."""

    status: DecisionStatus
    reason: str | None = None  # for a person to read
    outcome: dict[str, Any] | None = None  # what was done (e.g. the booking)
    alternative: dict[str, Any] | None = None  # on a rejection: what could be asked for
    # Whom the decision concerns when the intent names no patient (a payment: the
    # invoice's): they are notified of it.
    patient_id: str | None = None

    @classmethod
    def accepted(cls, outcome: dict[str, Any], *, reason: str | None = None) -> Verdict:
        """Done as asked."""
        return cls(DecisionStatus.ACCEPTED, reason, outcome)

    @classmethod
    def accepted_alternative(cls, outcome: dict[str, Any], reason: str) -> Verdict:
        """Not possible as asked; the nearest fit was done instead (the intent allowed it)."""
        return cls(DecisionStatus.ACCEPTED_ALTERNATIVE, reason, outcome)

    @classmethod
    def rejected(
        cls,
        reason: str,
        *,
        alternative: dict[str, Any] | None = None,
        patient_id: str | None = None,
    ) -> Verdict:
        """Not done; `alternative` is what the device could ask for instead;
        `patient_id`: whom it concerns, if the intent names nobody."""
        return cls(DecisionStatus.REJECTED, reason, None, alternative, patient_id)


@dataclass(slots=True)
class IntentContext:
    """What a handler decides with: the intent and where it comes from."""

    session: Session
    intent: Intent
    organisation_id: str
    clinic_id: str
    device_id: str | None
    now: datetime
    # Keys of what the batch changed (e.g. (clinic, day) whose availability moved),
    # for the domains' `AfterDecisions` hooks.
    touched: set[tuple[str, ...]] = field(default_factory=set)

    def patient_problem(self, patient_id: str) -> str | None:
        """Why `patient_id` cannot be named by this clinic's intent (it is not one of
        the clinic's patients), or None. Looked up once per patient and transaction:
        a push decides many intents naming the same patients, and patients are only
        ever added."""
        known: dict[tuple[str, str], bool] = self.session.info.setdefault(_PATIENTS, {})
        key = (self.clinic_id, patient_id)
        if key not in known:
            known[key] = (
                self.session.scalar(
                    select(Document.id).where(
                        Document.id == patient_id,
                        Document.clinic_id == self.clinic_id,
                        Document.collection == "patients",
                    )
                )
                is not None
            )
        return None if known[key] else f"patient {patient_id} is not a patient of this clinic"


_PATIENTS = "coherency.intents.patients"  # session.info: patients known per clinic

Handler = Callable[[IntentContext], Verdict]
"""Decides one kind of intent; raises nothing for a bad request (it rejects it)."""


class AfterDecisions(Protocol):
    """Run once after a batch of decisions: the server documents to write with them
    (e.g. refreshed availability). `touched` holds what the handlers recorded in
    `IntentContext.touched`; `author` is the server's device id to write as."""

    def __call__(
        self,
        *,
        session: Session,
        clinic_id: str,
        touched: set[tuple[str, ...]],
        now: datetime,
        author: str,
    ) -> list[RecordDocument]: ...


class IntentDesk:
    """The handlers of every intent kind, and the one way intents get decided."""

    def __init__(self) -> None:
        self._handlers: dict[IntentKind, Handler] = {}
        self._after: list[AfterDecisions] = []

    def register(self, kind: IntentKind, handler: Handler) -> None:
        """Decide intents of `kind` with `handler` (one handler per kind)."""
        if kind in self._handlers:
            raise ValueError(f"{kind} intents already have a handler")
        self._handlers[kind] = handler

    def after_decisions(self, hook: AfterDecisions) -> None:
        """Call `hook` once after each batch of decisions."""
        self._after.append(hook)

    @property
    def kinds(self) -> frozenset[IntentKind]:
        """The intent kinds this server decides."""
        return frozenset(self._handlers)

    def decide(
        self,
        *,
        session: Session,
        organisation_id: str,
        clinic_id: str,
        device_id: str | None,
        intents: Iterable[RecordDocument],
        signer: ServerSigner,
        now: datetime | None = None,
    ) -> list[str]:
        """Decide every intent in `intents` that has no decision yet, in `session`'s
        transaction, oldest first (UUIDv7 ids sort by creation), and write the
        decisions (and whatever the domains' hooks add) into the clinic's feed.

        Returns the ids of the intents decided now.
        """
        pending = self._undecided(session, [d for d in intents if d.collection == "intents"])
        if not pending:
            return []
        at = now or utcnow()
        touched: set[tuple[str, ...]] = set()
        documents: list[RecordDocument] = []
        decided: list[tuple[str, str]] = []
        verdicts: list[tuple[Intent, Verdict]] = []
        patients: dict[str, None] = {}
        for document in pending:
            intent = document.read()
            assert isinstance(intent, Intent)
            context = IntentContext(
                session, intent, organisation_id, clinic_id, device_id, at, touched
            )
            verdict = self._verdict(context)
            session.add(
                IntentDecision(
                    intent_id=intent.id,
                    clinic_id=clinic_id,
                    kind=str(intent.kind),
                    status=str(verdict.status),
                    device_id=device_id,
                    decided_at=at,
                )
            )
            documents.append(_decision_document(intent, verdict, signer, at))
            decided.append((intent.id, str(verdict.status)))
            verdicts.append((intent, verdict))
            if intent.patient_id is not None:
                patients[intent.patient_id] = None
        session.flush()  # the primary key: a second decision of one intent fails here
        for intent, verdict in verdicts:
            _notify_decision(session, clinic_id, intent, verdict)
        record_event(
            session=session,
            event=IntentsDecided(
                actor=Actor.device(device_id),
                clinic_id=clinic_id,
                patient_ids=tuple(patients),
                purpose=TREATMENT,
                decided=tuple(decided),
            ),
        )
        for hook in self._after:
            documents += hook(
                session=session,
                clinic_id=clinic_id,
                touched=touched,
                now=at,
                author=signer.device_id,
            )
        write_documents(session=session, clinic_id=clinic_id, documents=documents, signer=signer)
        return [d.id for d in pending]

    def _verdict(self, context: IntentContext) -> Verdict:
        handler = self._handlers.get(context.intent.kind)
        if handler is None:
            return Verdict.rejected(f"this server does not decide {context.intent.kind} requests")
        savepoint = context.session.begin_nested()
        try:
            verdict = handler(context)
        except BaseException:
            savepoint.rollback()
            raise
        if verdict.status is DecisionStatus.REJECTED:
            savepoint.rollback()  # a refusal changes nothing, whatever was tried
        else:
            savepoint.commit()
        return verdict

    @staticmethod
    def _undecided(session: Session, documents: Sequence[RecordDocument]) -> list[RecordDocument]:
        if not documents:
            return []
        ids = [d.id for d in documents]
        done = set(
            session.scalars(
                select(IntentDecision.intent_id).where(IntentDecision.intent_id.in_(ids))
            )
        )
        unique = {d.id: d for d in documents if d.id not in done}
        return [unique[doc_id] for doc_id in sorted(unique)]


_NOTICES = {
    (IntentKind.APPOINTMENT_REQUEST, False): NoticeKind.BOOKING_DECIDED,
    (IntentKind.APPOINTMENT_RESCHEDULE, False): NoticeKind.BOOKING_DECIDED,
    (IntentKind.VISIT_REQUEST, False): NoticeKind.BOOKING_DECIDED,
    (IntentKind.APPOINTMENT_REQUEST, True): NoticeKind.BOOKING_DECIDED,
    (IntentKind.APPOINTMENT_RESCHEDULE, True): NoticeKind.BOOKING_DECIDED,
    (IntentKind.VISIT_REQUEST, True): NoticeKind.BOOKING_DECIDED,
    (IntentKind.APPOINTMENT_CANCEL, False): NoticeKind.BOOKING_CANCELLED,
    (IntentKind.ORDER_PLACE, False): NoticeKind.ORDER_ACCEPTED,
    (IntentKind.ORDER_PLACE, True): NoticeKind.ORDER_REFUSED,
    # A refused payment intent rolls its failed payment back: the decision tells it.
    (IntentKind.PAYMENT_PAY, True): NoticeKind.PAYMENT_FAILED,
}
"""What a patient is told of a decided intent, by (kind, rejected); others (a payment:
the gateway's outcome; a cancel refused: nothing changed) tell nothing."""


def _notify_decision(
    session: Session,
    clinic_id: str,
    intent: Intent,
    verdict: Verdict,
) -> None:
    kind = _NOTICES.get((intent.kind, verdict.status is DecisionStatus.REJECTED))
    patient_id = intent.patient_id or verdict.patient_id
    if kind is None or patient_id is None:
        return
    notify(
        session=session,
        clinic_id=clinic_id,
        kind=kind,
        dedupe_key=f"intent:{intent.id}",
        recipients=patient_recipients(patient_id),
        detail={
            "intent_id": intent.id,
            "intent_kind": str(intent.kind),
            "status": str(verdict.status),
            "reason": verdict.reason,
            "outcome": verdict.outcome,
        },
    )


def _decision_document(
    intent: Intent, verdict: Verdict, signer: ServerSigner, at: datetime
) -> RecordDocument:
    return RecordDocument.create(
        Decision,
        {
            "intent_id": intent.id,
            "kind": intent.kind,
            "status": verdict.status,
            "reason": verdict.reason,
            "outcome": verdict.outcome,
            "alternative": verdict.alternative,
        },
        device_id=signer.device_id,
        clinic_id=intent.clinic_id,
        record_id=decision_id(intent.id),
        now=at,
    )
