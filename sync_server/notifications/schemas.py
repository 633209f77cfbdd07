"""Response bodies of the notification routes: a delivery as staff see it (never the
event's detail, which holds clinical values and is read in-app)."""

from __future__ import annotations

from datetime import datetime, time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["DeliveryPublic", "PreferencesIn", "PreferencesPublic"]


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


class PreferencesIn(BaseModel):
    """How a recipient at a clinic wants to be told (in-app has no switch: it is always
    on). Times are local wall times ("HH:MM") in `time_zone`, an IANA zone name."""

    model_config = ConfigDict(extra="forbid")

    clinic_id: str = Field(min_length=1, max_length=64)
    recipient: str = Field(min_length=1, max_length=200)
    email: bool = True
    sms: bool = True
    push: bool = True
    time_zone: str = Field(default="UTC", min_length=1, max_length=64)
    quiet_start: time | None = None
    quiet_end: time | None = None
    digest: Literal["none", "hourly", "daily"] = "none"
    digest_at: time | None = None


class PreferencesPublic(BaseModel):
    """A recipient's preferences as stored (or the defaults, `stored` false)."""

    clinic_id: str
    recipient: str
    in_app: bool = True
    email: bool
    sms: bool
    push: bool
    time_zone: str
    quiet_start: str | None
    quiet_end: str | None
    digest: str
    digest_at: str | None
    stored: bool
