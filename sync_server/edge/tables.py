"""Edge tables: the TLS certificate of each enrolled edge box.

An edge box is a row of ``devices`` of kind ``edge``; ``edge_boxes`` holds what only a
box has: the self-signed certificate it serves its clinic's LAN with, and that
certificate's fingerprint (lowercase hex SHA-256 of its DER), which the clinic's
devices pin.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from sync_server.db import Base, UTCDateTime, utcnow

__all__ = ["EdgeBox"]


class EdgeBox(Base):
    """An enrolled edge box's certificate (the box itself is its ``devices`` row)."""

    __tablename__ = "edge_boxes"

    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), primary_key=True)
    clinic_id: Mapped[str] = mapped_column(ForeignKey("clinics.id"), index=True)
    certificate: Mapped[str] = mapped_column(Text)  # PEM
    fingerprint: Mapped[str] = mapped_column(String(64))  # SHA-256 of the DER, hex
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
