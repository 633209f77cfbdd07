"""Bodies of the device audit route: a push of a device's chain, and the receipt."""

from __future__ import annotations

import base64
import binascii

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["ChainedEventIn", "CheckpointOut", "DeviceAuditPush", "DeviceAuditReceipt"]

MAX_EVENTS = 5000
"""Most events one push may carry."""


class ChainedEventIn(BaseModel):
    """One event of the device's hash chain."""

    model_config = ConfigDict(extra="forbid")

    seq: int = Field(ge=1, le=2**62, description="The event's number in the chain (1, 2, ...).")
    canonical: str = Field(description="Base64 of the event's canonical JSON bytes.")
    hash: str = Field(description="Hex SHA-256 chain hash (crdt.chain_hash).")

    @field_validator("canonical")
    @classmethod
    def _base64(cls, value: str) -> str:
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("not base64") from None
        return value

    @field_validator("hash")
    @classmethod
    def _hex32(cls, value: str) -> str:
        try:
            if len(bytes.fromhex(value)) != 32:
                raise ValueError
        except ValueError:
            raise ValueError("not 32 bytes of hex") from None
        return value


class DeviceAuditPush(BaseModel):
    """The events of the device's chain after the last one the server acknowledged."""

    model_config = ConfigDict(extra="forbid")

    events: list[ChainedEventIn] = Field(min_length=1, max_length=MAX_EVENTS)
    device_id: str | None = Field(
        default=None,
        max_length=64,
        description="Whose chain this is: an edge box relays a device of its clinic's "
        "chain; a device may name only itself (default: the caller).",
    )


class CheckpointOut(BaseModel):
    """A signed checkpoint of the server's audit log (`crdt.Checkpoint.to_json`)."""

    origin: str
    size: int
    root: str = Field(description="Hex root hash.")
    at: str
    signature: str = Field(description="Hex Ed25519 signature over Checkpoint.message().")


class DeviceAuditReceipt(BaseModel):
    """The server holds the chain up to `head_seq`; leaf `leaf_index` of its log names
    that head, and `checkpoint` covers the leaf (`inclusion`: RFC 9162 audit path)."""

    head_seq: int
    head_hash: str = Field(description="Hex hash of the device's head event.")
    leaf_index: int
    leaf: str = Field(description="Base64 of the leaf's canonical bytes.")
    inclusion: list[str] = Field(description="Hex hashes, bottom up.")
    checkpoint: CheckpointOut
    public_key: str = Field(description="Hex Ed25519 key the checkpoint is signed with.")
