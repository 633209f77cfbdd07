"""`intent_decisions`: one row per intent the server has decided.

Its primary key is the intent's id (the client-made UUIDv7 that is also the idempotency
key), so an intent delivered twice (a replayed bundle, a retried push, a second route)
cannot be decided twice: the second insert fails inside the same transaction as the
decision document, and the push that carried it rolls back whole.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from sync_server.db import Base, Id, UTCDateTime, utcnow

__all__ = ["IntentDecision"]


class IntentDecision(Base):
    """The server's decision on one intent (the document is `crdt.decision_id`)."""

    __tablename__ = "intent_decisions"

    intent_id: Mapped[str] = mapped_column(Id, primary_key=True)
    clinic_id: Mapped[str] = mapped_column(ForeignKey("clinics.id"), index=True)
    kind: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(30))
    device_id: Mapped[str | None] = mapped_column(Id)  # the device that delivered it
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
