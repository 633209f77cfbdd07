"""Readiness checks: the database answers, this server can serve its schema (its own
revision, or a newer one declared compatible: `schema_status`), the
blob storage is usable and (on PostgreSQL) the change-feed listener is connected.

Each check runs in a worker thread with a time limit, so a hung connection attempt
cannot hold a probe. Details stay generic (a probe is unauthenticated); the full error
goes to the log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anyio
from sqlalchemy import text

from sync_server.db import Database
from sync_server.migrating import schema_status
from sync_server.ops.schemas import CheckResult

__all__ = ["CHECK_TIMEOUT_SECONDS", "readiness"]

log = logging.getLogger("sync_server.ops")

CHECK_TIMEOUT_SECONDS = 5.0
"""A check that takes longer than this fails (an unreachable host must not hang probes)."""


class _CheckFailed(Exception):
    """A check's own, client-safe explanation of a failure."""


async def _run(name: str, check: Callable[[], str | None]) -> CheckResult:
    """Run a blocking check in a worker thread, with a time limit.

    A check that overruns is abandoned (its thread finishes on its own), so a hung
    connection attempt cannot hold the probe.
    """
    try:
        with anyio.fail_after(CHECK_TIMEOUT_SECONDS):
            detail = await anyio.to_thread.run_sync(check, abandon_on_cancel=True)
    except TimeoutError:
        log.warning("readiness check %s timed out after %ss", name, CHECK_TIMEOUT_SECONDS)
        return CheckResult(status="failed", detail=f"no answer within {CHECK_TIMEOUT_SECONDS}s")
    except _CheckFailed as exc:
        log.warning("readiness check %s failed: %s", name, exc)
        return CheckResult(status="failed", detail=str(exc))
    except Exception as exc:
        log.warning("readiness check %s failed", name, exc_info=exc)
        return CheckResult(status="failed", detail=f"{name} unavailable ({type(exc).__name__})")
    return CheckResult(status="ok", detail=detail)


def _database_check(db: Database) -> Callable[[], str | None]:
    def check() -> str | None:
        with db.engine.connect() as connection:
            connection.execute(text("SELECT 1")).scalar_one()
        return None

    return check


def _schema_check(db: Database) -> Callable[[], str | None]:
    def check() -> str | None:
        status = schema_status(db)
        if not status.servable:
            raise _CheckFailed(f"{status.reason}: this server ({status.head}) cannot serve it")
        return status.reason

    return check


def _blobs_check(blobs: Any) -> Callable[[], str | None]:
    def check() -> str | None:
        blobs.check()
        return None

    return check


async def readiness(*, db: Database, blobs: Any, feed: Any) -> dict[str, CheckResult]:
    """Every readiness check by name (database, schema, blobs, feed).

    `blobs` is checked if it has a ``check()`` method and `feed` if it reports
    ``healthy``; otherwise their checks are skipped.
    """
    checks: dict[str, CheckResult] = {"database": await _run("database", _database_check(db))}
    if checks["database"].status == "ok":
        checks["schema"] = await _run("schema", _schema_check(db))
    else:
        checks["schema"] = CheckResult(status="skipped", detail="the database is unavailable")
    if callable(getattr(blobs, "check", None)):
        checks["blobs"] = await _run("blobs", _blobs_check(blobs))
    else:
        checks["blobs"] = CheckResult(status="skipped", detail="no blob backend check")
    healthy = getattr(feed, "healthy", None)
    if healthy is None:
        checks["feed"] = CheckResult(status="skipped", detail="the feed reports no health")
    elif healthy:
        checks["feed"] = CheckResult(status="ok")
    else:
        checks["feed"] = CheckResult(status="failed", detail="change-feed listener disconnected")
    return checks
