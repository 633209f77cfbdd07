"""`audit_events`: who read or wrote what, when, from which device, with what outcome.

Rows are written only through `sync_server.audit.record_event`, from typed events
(`sync_server.audit.events`).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from sync_server.db import Base, Id, UTCDateTime, utcnow

__all__ = ["AuditEvent"]


class AuditEvent(Base):
    """One read or write of patient data (or an identity event) on the server."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    actor_kind: Mapped[str] = mapped_column(String(10))  # device, user, system
    actor_id: Mapped[str | None] = mapped_column(Id)
    clinic_id: Mapped[str | None] = mapped_column(Id, index=True)
    action: Mapped[str] = mapped_column(String(40))
    target: Mapped[str | None] = mapped_column(Text)  # record ids / blob address, no names
    outcome: Mapped[str] = mapped_column(String(40))
    request_id: Mapped[str | None] = mapped_column(String(64))
