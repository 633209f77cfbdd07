"""Ids: record ids (UUIDv7) and Automerge actors (a device writes as the 16 bytes of
its UUID)."""

from __future__ import annotations

import os
import threading
import time
import uuid
from functools import lru_cache

from crdt._errors import DocumentError

__all__ = ["actor_for_device", "device_for_actor", "uuid7"]

_RANDOM_BYTES = 10  # 80 bits drawn per id; 74 of them stay random beside version/variant
_POOL_IDS = 512  # ids' worth of randomness fetched from the OS at once
_RAND_MASK = (1 << 76) - 1
_VERSION_VARIANT_CLEAR = ~((0xF << 76) | (0x3 << 62))
_VERSION_VARIANT_SET = (0x7 << 76) | (0x2 << 62)

_lock = threading.Lock()
_pool = b""
_pool_at = 0
_last_ms = 0


def _drop_pool() -> None:
    # A forked child must not hand out the random bytes its parent will use too.
    global _pool, _pool_at, _lock
    _pool, _pool_at, _lock = b"", 0, threading.Lock()


os.register_at_fork(after_in_child=_drop_pool)


def uuid7() -> str:
    """A new UUIDv7 string: unguessable, and strictly increasing within this process.

    48 bits of Unix milliseconds, then 74 random bits from `os.urandom` (the CSPRNG
    `secrets` uses, read in bulk: one system call serves hundreds of ids). A
    millisecond already used takes the next one, so ids made here sort in the order
    they were made.
    """
    global _pool, _pool_at, _last_ms
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _last_ms:
            ms = _last_ms + 1
        _last_ms = ms
        if _pool_at >= len(_pool):
            _pool = os.urandom(_RANDOM_BYTES * _POOL_IDS)
            _pool_at = 0
        chunk = _pool[_pool_at : _pool_at + _RANDOM_BYTES]
        _pool_at += _RANDOM_BYTES
    value = ((ms & 0xFFFFFFFFFFFF) << 80) | (int.from_bytes(chunk, "big") & _RAND_MASK)
    h = f"{(value & _VERSION_VARIANT_CLEAR) | _VERSION_VARIANT_SET:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


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
