"""Throttling of the credential routes (login, enrolment, device login, token refresh),
per client address and per account, in the database so every worker shares it.

Two kinds of counter, rows of `throttles` updated only by conditional upserts:

- **Rate limits** count requests in fixed windows (`Settings.rate_window_seconds`):
  per client address on every credential route (`admit`), and per device or user on
  token refresh (`count_subject_request`). Over the limit: 429 until the window ends.
- **Failure limits** count failed credentials (`record_failure`) per client address,
  per account (a staff account, or the device an enrolment or assertion names) and per
  account and client together. After the free failures, each failure holds its subject
  back for a delay that doubles per failure (`failure_backoff_seconds`, up to
  `failure_backoff_max_seconds`); failures are forgotten `failure_memory_seconds` after
  the last one. A client held back is refused before its credentials are looked at.
  An account held back refuses only the clients that have themselves failed on it
  (`failures_free_per_account_client` times): the real user, from a client that has
  not been failing, still gets in while an attacker is slowed down. No account is ever
  locked.

A refusal is `TooManyRequests` (429, ``Retry-After``), decided before any credential is
checked, so it says nothing about whether they were right. Accounts that do not exist
are counted under a hash of the name asked for, exactly like accounts that do.
`prune` drops expired counters (hourly housekeeping).
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, cast

from sqlalchemy import Table, case, delete, literal, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from sync_server.db import UTCDateTime, rowcount, utcnow
from sync_server.errors import TooManyRequests
from sync_server.identity.tables import Throttle
from sync_server.settings import Settings

__all__ = [
    "Action",
    "account_of_name",
    "account_of_user",
    "admit",
    "check_account",
    "clear_account",
    "client_of",
    "count_subject_request",
    "prune",
    "record_failure",
    "record_success",
]

Action = Literal["login", "enrol", "device-login", "refresh"]
"""A throttled operation; each has counters of its own."""

_TOO_MANY = "too many attempts; try again in {seconds} seconds"


def client_of(host: str | None) -> str:
    """The client an address counts as: an IPv4 address, or an IPv6 /64 (one subscriber's
    whole prefix, which a single attacker can otherwise walk through)."""
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host[:64]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{address}/64", strict=False).network_address) + "/64"
    return str(address)


def account_of_user(user_id: str) -> str:
    """The account key of an existing staff account."""
    return f"user:{user_id}"


def account_of_name(name: str, *, scope: str = "") -> str:
    """The account key of a name that names no single account (unknown, ambiguous) or
    of a device id: bounded in length, the same shape whether or not it exists."""
    digest = hashlib.sha256(f"{scope}\n{name}".encode()).hexdigest()[:40]
    return f"name:{digest}"


@dataclass(frozen=True, slots=True)
class _Counter:
    hits: int
    expires_at: datetime
    blocked_until: datetime | None


def _insert(session: Session) -> type[postgresql.Insert] | type[sqlite.Insert]:
    return postgresql.Insert if session.get_bind().dialect.name == "postgresql" else sqlite.Insert


def _bump(session: Session, key: str, *, now: datetime, expires_at: datetime, extend: bool) -> int:
    """Count one more hit on `key` (a fresh count once it expired); the new count.

    One conditional upsert, so concurrent workers never lose a hit. `extend` moves the
    expiry to `expires_at` on every hit (failures are forgotten after the last one);
    otherwise a window keeps the end it started with.
    """
    table = cast(Table, Throttle.__table__)
    now_ = literal(now, UTCDateTime)
    end = literal(expires_at, UTCDateTime)
    expired = table.c.expires_at <= now_
    insert = _insert(session)(table).values(
        key=key, hits=1, expires_at=expires_at, blocked_until=None
    )
    statement = insert.on_conflict_do_update(
        index_elements=[table.c.key],
        set_={
            "hits": case((expired, 1), else_=table.c.hits + 1),
            "expires_at": end if extend else case((expired, end), else_=table.c.expires_at),
            "blocked_until": case((expired, None), else_=table.c.blocked_until),
        },
    ).returning(table.c.hits)
    return int(session.execute(statement).scalar_one())


def _counters(session: Session, keys: Iterable[str], now: datetime) -> dict[str, _Counter]:
    rows = session.execute(
        select(Throttle.key, Throttle.hits, Throttle.expires_at, Throttle.blocked_until).where(
            Throttle.key.in_(list(keys)), Throttle.expires_at > now
        )
    )
    return {key: _Counter(hits, expires, blocked) for key, hits, expires, blocked in rows}


def _refuse(until: datetime, now: datetime) -> TooManyRequests:
    seconds = max(1, math.ceil((until - now).total_seconds()))
    return TooManyRequests(_TOO_MANY.format(seconds=seconds), retry_after=seconds)


def _rate(session: Session, key: str, limit: int, settings: Settings, now: datetime) -> None:
    window_end = now + timedelta(seconds=settings.rate_window_seconds)
    hits = _bump(session, key, now=now, expires_at=window_end, extend=False)
    if hits > limit:
        counter = _counters(session, [key], now).get(key)
        raise _refuse(counter.expires_at if counter else window_end, now)


def _held_back(counter: _Counter | None, now: datetime) -> bool:
    return counter is not None and counter.blocked_until is not None and counter.blocked_until > now


def admit(
    *,
    session: Session,
    action: Action,
    client: str,
    settings: Settings,
    now: datetime | None = None,
) -> None:
    """Count a request of `action` from `client` against its rate limit, and refuse it
    if the client is over that limit or held back by its own failures.

    Call it in a transaction of its own before the operation: the count must stay
    even when the operation then fails.

    Raises:
        TooManyRequests: The client must wait.
    """
    now = now or utcnow()
    limit = {
        "login": settings.rate_login_per_client,
        "enrol": settings.rate_enrol_per_client,
        "device-login": settings.rate_device_login_per_client,
        "refresh": settings.rate_refresh_per_client,
    }[action]
    _rate(session, f"{action}:rate:client:{client}", limit, settings, now)
    key = f"{action}:fail:client:{client}"
    counter = _counters(session, [key], now).get(key)
    if _held_back(counter, now):
        assert counter is not None and counter.blocked_until is not None
        raise _refuse(counter.blocked_until, now)


def count_subject_request(
    *, session: Session, subject: str, settings: Settings, now: datetime | None = None
) -> None:
    """Count a token refresh of one device or user (``device:<id>``, ``user:<id>``).

    Raises:
        TooManyRequests: More than ``rate_refresh_per_subject`` in the window.
    """
    now = now or utcnow()
    _rate(session, f"refresh:rate:{subject}", settings.rate_refresh_per_subject, settings, now)


def check_account(
    *,
    session: Session,
    action: Action,
    account: str,
    client: str,
    settings: Settings,
    now: datetime | None = None,
) -> None:
    """Refuse `client` while `account` is held back by its failures, if the client has
    itself failed on that account ``failures_free_per_account_client`` times.

    Raises:
        TooManyRequests: The client must wait until the account's delay ends.
    """
    now = now or utcnow()
    account_key = f"{action}:fail:account:{account}"
    pair_key = f"{action}:fail:pair:{account}:{client}"
    counters = _counters(session, [account_key, pair_key], now)
    held = counters.get(account_key)
    pair = counters.get(pair_key)
    if (
        _held_back(held, now)
        and pair is not None
        and pair.hits >= settings.failures_free_per_account_client
    ):
        assert held is not None and held.blocked_until is not None
        raise _refuse(held.blocked_until, now)


def _backoff(session: Session, key: str, free: int, settings: Settings, now: datetime) -> None:
    memory = timedelta(seconds=settings.failure_memory_seconds)
    failures = _bump(session, key, now=now, expires_at=now + memory, extend=True)
    if failures <= free:
        return
    delay = min(
        settings.failure_backoff_max_seconds,
        settings.failure_backoff_seconds * 2.0 ** min(failures - free - 1, 62),
    )
    until = now + timedelta(seconds=delay)
    session.execute(
        update(Throttle)
        .where(
            Throttle.key == key,
            or_(Throttle.blocked_until.is_(None), Throttle.blocked_until < until),
        )
        .values(blocked_until=until, expires_at=max(until, now + memory))
        .execution_options(synchronize_session=False)
    )


def record_failure(
    *,
    session: Session,
    action: Action,
    account: str | None,
    client: str,
    settings: Settings,
    now: datetime | None = None,
) -> None:
    """Count failed credentials from `client` on `account` (None: no account named)."""
    now = now or utcnow()
    _backoff(
        session, f"{action}:fail:client:{client}", settings.failures_free_per_client, settings, now
    )
    if account is None:
        return
    _backoff(
        session,
        f"{action}:fail:account:{account}",
        settings.failures_free_per_account,
        settings,
        now,
    )
    memory = timedelta(seconds=settings.failure_memory_seconds)
    _bump(
        session,
        f"{action}:fail:pair:{account}:{client}",
        now=now,
        expires_at=now + memory,
        extend=True,
    )


def record_success(*, session: Session, action: Action, account: str, client: str) -> None:
    """Forget `client`'s failures (it proved itself), on `account` and overall.

    The account's own failures stay: a success must not hand an attacker a fresh set
    of free attempts.
    """
    session.execute(
        delete(Throttle)
        .where(
            Throttle.key.in_(
                [f"{action}:fail:client:{client}", f"{action}:fail:pair:{account}:{client}"]
            )
        )
        .execution_options(synchronize_session=False)
    )


def clear_account(*, session: Session, action: Action, account: str) -> int:
    """Forget every failure on `account` (an admin's unlock); how many counters went."""
    prefix = f"{action}:fail:pair:{account}:"
    result = session.execute(
        delete(Throttle)
        .where(
            or_(
                Throttle.key == f"{action}:fail:account:{account}",
                Throttle.key.startswith(prefix, autoescape=True),
            )
        )
        .execution_options(synchronize_session=False)
    )
    return rowcount(result)


def prune(*, session: Session, now: datetime | None = None) -> int:
    """Drop the counters that expired; how many."""
    result = session.execute(
        delete(Throttle)
        .where(Throttle.expires_at <= (now or utcnow()))
        .execution_options(synchronize_session=False)
    )
    return rowcount(result)
