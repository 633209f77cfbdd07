"""Response bodies of the sync routes (push answers) and the staff reads."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sync_server.edge.schemas import EdgeBoxPublic

__all__ = [
    "ClinicTotalsOut",
    "KeysetPage",
    "NoteOut",
    "NotePage",
    "PushResponse",
    "RecordOut",
    "RecordPage",
    "RefusedDocument",
]


class RefusedDocument(BaseModel):
    """A pushed document the server did not store, and why."""

    model_config = ConfigDict(from_attributes=True)

    doc_id: str
    reason: str


class PushResponse(BaseModel):
    """The outcome of a push, document by document."""

    model_config = ConfigDict(from_attributes=True)

    accepted: list[str] = Field(description="Stored new or changed.")
    unchanged: list[str] = Field(description="The server already held all of it.")
    rejected: list[RefusedDocument] = Field(description="Not stored at all.")
    cursor: int = Field(description="The clinic's change-feed sequence after the push.")


class RecordOut(BaseModel):
    """A record as projected from its replicated document."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    clinic_id: str
    updated_at: str
    deleted: bool
    conflicted: bool = Field(description="True while the record has unresolved conflicts.")
    record: dict[str, Any] = Field(description="The record's fields as the document holds them.")

    @field_validator("record", mode="before")
    @classmethod
    def _parsed(cls, value: Any) -> Any:
        """A projection row holds the record as JSON text."""
        if isinstance(value, str | bytes):
            value = json.loads(value)
            return value if isinstance(value, dict) else {"value": value}
        return value


class RecordPage(BaseModel):
    """A page of records."""

    items: list[RecordOut]
    limit: int
    offset: int


class KeysetPage(BaseModel):
    """A page of records, and the cursor of the next page (None: the last page)."""

    items: list[RecordOut]
    limit: int
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page."
    )


class NoteOut(BaseModel):
    """A clinical note, as its document holds it."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    clinic_id: str
    patient_id: str | None
    wound_id: str | None
    author: str | None
    text: str
    deleted: bool
    created_at: str | None
    updated_at: str | None


class NotePage(BaseModel):
    """A page of notes, and the cursor of the next page (None: the last page)."""

    items: list[NoteOut]
    limit: int
    next_cursor: str | None


class ClinicTotalsOut(BaseModel):
    """How many live (not deleted) records a clinic holds, by kind."""

    model_config = ConfigDict(from_attributes=True)

    clinic_id: str
    patients: int
    wounds: int
    assessments: int
    notes: int


class DirectoryEntry(BaseModel):
    """One enrolled device of the clinic."""

    device_id: str
    public_key: str = Field(description="Raw 32-byte Ed25519 public key, base64.")


class DeviceDirectory(BaseModel):
    """The devices that may author the clinic's records, the clinic's edge boxes (they
    author none: devices pin their certificates) and the clinic's revoked devices."""

    devices: list[DirectoryEntry]
    edge_boxes: list[EdgeBoxPublic] = Field(
        default_factory=list,
        description="The clinic's enrolled, unrevoked edge boxes, by box_id.",
    )
    revoked: list[str] = Field(
        default_factory=list,
        description="Ids of the clinic's revoked devices (and boxes), sorted: an edge box "
        "refuses them.",
    )
