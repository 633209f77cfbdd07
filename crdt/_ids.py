"""Device ids and Automerge actors: a device writes as the 16 bytes of its UUID."""

from __future__ import annotations

import uuid
from functools import lru_cache

from crdt._errors import DocumentError

__all__ = ["actor_for_device", "device_for_actor"]


@lru_cache(maxsize=4096)  # a replica sees few devices, each many times
def actor_for_device(device_id: str) -> bytes:
    """Return the Automerge actor id of a device: the 16 bytes of its UUID."""
    try:
        return uuid.UUID(device_id).bytes
    except ValueError:
        raise DocumentError(f"device id {device_id!r} is not a UUID") from None


@lru_cache(maxsize=4096)
def device_for_actor(actor: bytes) -> str:
    """Return the device id that writes as Automerge actor `actor`."""
    return str(uuid.UUID(bytes=actor)) if len(actor) == 16 else actor.hex()
