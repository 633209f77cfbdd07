"""Response bodies of the model routes, built from `PublishedModel` rows."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator

__all__ = ["CurrentModel", "ModelPublished"]


def _base64(value: Any) -> Any:
    return base64.b64encode(value).decode("ascii") if isinstance(value, bytes) else value


class ModelPublished(BaseModel):
    """A published model, as its publisher sees it."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    model_id: str
    version: str
    sha256: str = Field(description="SHA-256 of the model file, hex.")
    size: int = Field(description="The model file's size in bytes.")
    manifest: dict[str, JsonValue] = Field(
        description="The manifest; the signature covers its canonical JSON (sorted keys, "
        "no spaces, ASCII), which is what devices receive."
    )
    signature: str = Field(
        description="The server's artifact key's Ed25519 signature of the manifest, bound "
        "to the organisation, base64."
    )
    published_at: datetime
    active: bool = Field(description="Whether devices of the organisation install this model.")

    @field_validator("manifest", mode="before")
    @classmethod
    def _parsed(cls, value: Any) -> Any:
        """The row holds the manifest's canonical JSON bytes."""
        return json.loads(value) if isinstance(value, bytes | str) else value

    _signature = field_validator("signature", mode="before")(_base64)


class CurrentModel(BaseModel):
    """The model a device should have: verify `signature` over
    ``b"coherency-model\\n" + organisation_id + b"\\n" + manifest`` (the decoded
    `manifest` bytes) with the artifact key pinned at enrolment, then the file against
    the manifest."""

    model_config = ConfigDict(from_attributes=True)

    manifest: str = Field(description="The canonical manifest bytes exactly as signed, base64.")
    signature: str = Field(
        description="The artifact key's Ed25519 signature of the organisation-bound "
        "payload, base64."
    )
    sha256: str = Field(description="SHA-256 of the model file: GET /v1/models/{sha256}.")
    size: int = Field(description="The model file's size in bytes.")
    artifact_public_key: str = Field(
        description="The server's artifact key (raw Ed25519, base64): devices pinned it at "
        "enrolment; one enrolled before artifact keys existed pins it once "
        "`artifact_key_signature` verifies."
    )
    artifact_key_signature: str = Field(
        description="The token key's Ed25519 signature of b'coherency-artifact-key\\n' + "
        "the artifact key, base64."
    )

    _base64 = field_validator(
        "manifest", "signature", "artifact_public_key", "artifact_key_signature", mode="before"
    )(_base64)
