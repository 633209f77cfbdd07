"""REST idempotency keys, as the IETF Idempotency-Key draft and Stripe do them.

A request that carries ``Idempotency-Key`` is run once per (caller, route, key):

- the first request claims the key (state ``running``) in a transaction of its own,
  with the fingerprint of its payload, before it executes;
- its result (status code and body, errors included) is stored with the key when it
  ends, in the transaction of the work itself where it can be, and replayed to every
  retry for `RETENTION`;
- a retry with a different payload is refused (422 ``idempotency_key_reused``), one
  while the first is still running is refused (409 ``idempotency_key_in_use``);
- a claim whose request died (the process was killed) is taken over after `STALE`.

`run_once` is the whole of it; the HTTP side (the header, the replayed response) is
in the payment routes' dependency.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from sync_server.db import Database, new_id, rowcount, utcnow
from sync_server.errors import Conflict, ServerError, Unprocessable
from sync_server.payments.tables import IdempotencyKey

__all__ = ["RETENTION", "STALE", "Stored", "fingerprint", "prune_keys", "run_once"]

RETENTION = timedelta(hours=24)
"""How long a key's first result is replayed."""
STALE = timedelta(seconds=60)
"""How long a claim may stay ``running`` before a retry takes it over."""


@dataclass(frozen=True, slots=True)
class Stored:
    """A response: its status code and JSON body; `replayed` if from an earlier run."""

    status_code: int
    body: Any
    replayed: bool = False


def fingerprint(payload: Any) -> str:
    """The SHA-256 of the request's payload as canonical JSON."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def run_once(
    *,
    database: Database,
    scope: str,
    route: str,
    key: str,
    payload: Any,
    work: Callable[[Session], Stored],
    error_response: Callable[[ServerError], Stored],
    now: datetime | None = None,
) -> Stored:
    """Run `work` in a write transaction once per (`scope`, `route`, `key`); store and
    return its result, or replay the stored one.

    `work` returns the response to store; a `ServerError` it raises is stored (as
    `error_response` renders it) after its transaction rolled back. Anything else
    releases the key (the client may retry).

    Raises:
        Unprocessable: ``idempotency_key_reused``: the key was used with another payload.
        Conflict: ``idempotency_key_in_use``: the first request is still running.
    """
    at = now or utcnow()
    digest = fingerprint(payload)
    claim = _claim(database, scope, route, key, digest, at)
    if isinstance(claim, Stored):
        return claim

    def finish(session: Session, result: Stored) -> None:
        session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.id == claim)
            .values(
                state="done",
                status_code=result.status_code,
                response=json.dumps(result.body, default=str),
            )
        )

    try:
        with database.write() as session:
            result = work(session)
            finish(session, result)
        return result
    except ServerError as error:
        result = error_response(error)
        with database.write() as session:
            finish(session, result)
        return result
    except BaseException:
        with database.write() as session:
            session.execute(delete(IdempotencyKey).where(IdempotencyKey.id == claim))
        raise


def prune_keys(*, database: Database, now: datetime) -> int:
    """Housekeeping: forget keys older than `RETENTION`; returns how many."""
    with database.write() as session:
        return rowcount(
            session.execute(
                delete(IdempotencyKey).where(IdempotencyKey.created_at < now - RETENTION)
            )
        )


def _claim(
    database: Database, scope: str, route: str, key: str, digest: str, at: datetime
) -> str | Stored:
    """The id of our claim on the key, or the stored response to replay."""
    for _ in range(3):
        try:
            with database.write() as session:
                row = session.scalar(
                    select(IdempotencyKey)
                    .where(
                        IdempotencyKey.scope == scope,
                        IdempotencyKey.route == route,
                        IdempotencyKey.key == key,
                    )
                    .with_for_update()
                )
                if row is None:
                    claim = new_id()
                    session.add(
                        IdempotencyKey(
                            id=claim,
                            scope=scope,
                            route=route,
                            key=key,
                            fingerprint=digest,
                            state="running",
                            created_at=at,
                            locked_at=at,
                        )
                    )
                    session.flush()
                    return claim
                if row.created_at < at - RETENTION:  # expired: a new request
                    session.delete(row)
                    session.flush()
                    continue
                if row.fingerprint != digest:
                    raise Unprocessable(
                        "this Idempotency-Key was used with a different request",
                        code="idempotency_key_reused",
                    )
                if row.state == "done":
                    return Stored(
                        int(row.status_code or 200), json.loads(row.response or "null"), True
                    )
                if row.locked_at > at - STALE:
                    raise Conflict(
                        "a request with this Idempotency-Key is still being processed; retry later",
                        code="idempotency_key_in_use",
                    )
                row.locked_at = at  # the first request died: take the claim over
                return row.id
        except IntegrityError:
            continue  # another request claimed it first: look again
    raise Conflict(
        "a request with this Idempotency-Key is still being processed; retry later",
        code="idempotency_key_in_use",
    )
