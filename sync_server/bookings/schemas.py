"""Request and response bodies of the booking routes (directory, schedules, bookings,
quality flags, calendar feeds).

Create and Update schemas bound what a client may send (the services check the rest:
time zones, windows, service codes); Public schemas are built from rows with
`model_validate` (``from_attributes``) and never carry a feed's token hash.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sync_server.bookings.directory import MAX_SERVICE_MINUTES

__all__ = [
    "BookingPublic",
    "CalendarFeedCreate",
    "CalendarFeedCreated",
    "CalendarFeedPublic",
    "CaregiverRatingPublic",
    "ClinicTimezone",
    "ClinicTimezonePublic",
    "ExceptionCreate",
    "ExceptionPublic",
    "FreeSlotPublic",
    "ProviderCreate",
    "ProviderPublic",
    "ProviderUpdate",
    "QualityFlagPublic",
    "ServiceCreate",
    "ServicePublic",
    "StateChange",
    "WeeklyHoursPublic",
    "WeeklyHoursSet",
    "WeeklyWindow",
]

Tag = Annotated[str, Field(min_length=1, max_length=100)]
Tags = Annotated[list[Tag], Field(max_length=50)]
HHMM = Annotated[str, Field(pattern=r"^\d{2}:\d{2}$", examples=["09:00"])]
Id = Annotated[str, Field(min_length=1, max_length=64)]


def _holds_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list):
        return any(_holds_nul(v) for v in value)
    return False


class _Request(BaseModel):
    """A request body. No text in it may hold a NUL character: the published
    reference records (and PostgreSQL) cannot carry one."""

    @model_validator(mode="after")
    def _no_nul(self) -> _Request:
        bad = sorted(name for name, value in self if _holds_nul(value))
        if bad:
            raise ValueError(f"text may not contain a NUL character: {', '.join(bad)}")
        return self


class _Public(BaseModel):
    """A response built from a row or a service result."""

    model_config = ConfigDict(from_attributes=True)


# ---------------------------------------------------------------- directory
class ClinicTimezone(_Request):
    """The IANA time zone a clinic's schedules are in."""

    timezone: str = Field(min_length=1, max_length=64, examples=["Europe/Berlin"])


class ClinicTimezonePublic(_Public):
    """A clinic's time zone."""

    id: str
    name: str
    timezone: str


class ProviderCreate(_Request):
    """A doctor or nurse (at a clinic) or a caregiver (organisation-wide: no clinic)."""

    name: str = Field(min_length=1, max_length=200)
    kind: Literal["doctor", "nurse", "caregiver"]
    clinic_id: Id | None = None
    specialisations: Tags = []
    skills: Tags = Field(default=[], description="Caregivers: e.g. wound dressing, NPWT.")
    languages: Tags = []
    areas: Tags = Field(default=[], description="Caregivers: the areas they visit.")
    services: Tags = Field(default=[], description="Codes of the services offered.")


class ProviderUpdate(_Request):
    """Fields to change (each given replaces the stored one); ``active: false``
    deactivates the provider."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    specialisations: Tags | None = None
    skills: Tags | None = None
    languages: Tags | None = None
    areas: Tags | None = None
    services: Tags | None = None
    active: bool | None = None


class ProviderPublic(_Public):
    """A bookable provider."""

    id: str
    organisation_id: str
    clinic_id: str | None
    name: str
    kind: str
    specialisations: list[str]
    skills: list[str]
    languages: list[str]
    areas: list[str]
    services: list[str]
    active: bool
    created_at: datetime

    @field_validator("specialisations", "skills", "languages", "areas", "services", mode="before")
    @classmethod
    def _decoded(cls, value: object) -> object:
        return json.loads(value) if isinstance(value, str) else value


class ServiceCreate(_Request):
    """A bookable service and how long one slot of it lasts."""

    code: str = Field(min_length=1, max_length=60, pattern=r"^[A-Za-z0-9._-]+$")
    name: str = Field(min_length=1, max_length=200)
    duration_minutes: int = Field(ge=5, le=MAX_SERVICE_MINUTES, multiple_of=5)
    specialisation: str | None = Field(default=None, min_length=1, max_length=200)
    kind: Literal["appointment", "visit"] = "appointment"


class ServicePublic(_Public):
    """A bookable service."""

    id: str
    code: str
    name: str
    duration_minutes: int
    specialisation: str | None
    kind: str


class WeeklyWindow(_Request):
    """One weekly working window, local time."""

    weekday: int = Field(ge=0, le=6, description="Monday 0 to Sunday 6.")
    start: HHMM
    end: HHMM = Field(description="HH:MM; 24:00 is the end of the day.")


class WeeklyHoursSet(_Request):
    """A provider's whole week (replaces what was there)."""

    hours: list[WeeklyWindow] = Field(max_length=100)
    timezone: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="IANA zone; default the provider's clinic's (UTC for caregivers).",
    )
    valid_from: date | None = None
    valid_until: date | None = None


class WeeklyHoursPublic(BaseModel):
    """A provider's weekly hours."""

    provider_id: str
    hours: list[WeeklyWindow]
    timezone: str | None
    valid_from: date | None
    valid_until: date | None


class ExceptionCreate(_Request):
    """A holiday or closure (of a provider, a clinic, or with neither the whole
    organisation) or a provider's extra hours, on one local day."""

    day: date
    kind: Literal["closed", "holiday", "extra"]
    clinic_id: Id | None = None
    provider_id: Id | None = None
    start: HHMM | None = Field(default=None, description="Closed or extra from (local).")
    end: HHMM | None = None
    note: str | None = Field(default=None, max_length=200)


class ExceptionPublic(_Public):
    """A schedule exception."""

    id: str
    day: date
    kind: str
    clinic_id: str | None
    provider_id: str | None
    start_time: str | None
    end_time: str | None
    note: str | None


# ---------------------------------------------------------------- bookings
class FreeSlotPublic(_Public):
    """A free slot of a service with one provider."""

    provider_id: str
    provider_name: str
    service: str
    starts_at: datetime
    ends_at: datetime


class BookingPublic(_Public):
    """An appointment or a caregiver's visit (the patient by id only)."""

    id: str
    clinic_id: str
    kind: str
    provider_id: str
    patient_id: str
    service: str
    starts_at: datetime
    ends_at: datetime
    state: str
    intent_id: str
    area: str | None
    language: str | None
    late_cancellation: bool
    cancel_reason: str | None
    rating: int | None
    reviewed_at: datetime | None
    created_at: datetime
    updated_at: datetime


class StateChange(_Request):
    """A staff action on a booking: confirm, cancel, no-show or complete an
    appointment; move a visit en route, started, completed or missed."""

    state: Literal[
        "confirmed", "cancelled", "no_show", "completed", "en_route", "started", "missed"
    ]
    reason: str | None = Field(default=None, max_length=500)


class QualityFlagPublic(_Public):
    """Something staff should look at (a missed visit, a low rating)."""

    id: str
    provider_id: str
    booking_id: str
    reason: str
    created_at: datetime
    resolved_at: datetime | None


class CaregiverRatingPublic(_Public):
    """How a caregiver's visits went."""

    provider_id: str
    reviews: int
    average: float | None = Field(description="Mean rating, 1 to 5; null without reviews.")
    low_ratings: int
    completed_visits: int
    missed_visits: int


# ---------------------------------------------------------------- calendar feeds
class CalendarFeedCreate(_Request):
    """A calendar feed of one provider's or one patient's bookings."""

    subject_kind: Literal["provider", "patient"]
    subject_id: Id


class CalendarFeedPublic(_Public):
    """A calendar feed (its secret URL is shown only when it is created)."""

    id: str
    subject_kind: str
    subject_id: str
    clinic_id: str | None
    created_at: datetime
    revoked_at: datetime | None


class CalendarFeedCreated(CalendarFeedPublic):
    """A new calendar feed with its secret URL, shown this once."""

    token: str
    path: str = Field(description="The feed's path on this server.")
    url: str = Field(description="The feed's URL, to subscribe to in a calendar app.")
