"""Response bodies of the notification routes: a delivery as staff see it (never the
event's detail, which holds clinical values and is read in-app)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

__all__ = ["DeliveryPublic"]


class DeliveryPublic(BaseModel):
    """One delivery: to whom, through which channel, how it stands."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    event_id: str
    clinic_id: str
    channel: str
    recipient: str
    state: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    provider_message_id: str | None
    created_at: datetime
    sent_at: datetime | None
