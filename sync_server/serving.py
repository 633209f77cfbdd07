"""Serving the app with uvicorn: what ``coherency server run`` does.

`serve` checks everything a user can get wrong (settings, database, schema, the
deployment's signing key, blob storage, port) before it listens, so each failure is one
line of the server's error tree, never a traceback. Several workers (``workers > 1``)
need an import string: uvicorn starts each worker with `app_from_env`, which rebuilds
the settings from the ``COHERENCY_SERVER_*`` variables `serve` exports. Their metrics
meet in ``<data_dir>/metrics`` (emptied at start, mode 0700; see
`sync_server.ops.metrics`), where each worker also holds the slot that numbers its log
lines (``worker_index``).
"""

from __future__ import annotations

import fcntl
import gc
import logging
import os
import shutil
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

import uvicorn
from fastapi import FastAPI

from sync_server.app import create_app
from sync_server.blobs.backends import BlobBackendError
from sync_server.db import database_label, open_database
from sync_server.errors import Invalid, Unavailable, Unprocessable
from sync_server.migrating import migrate as migrate_schema
from sync_server.migrating import require_schema
from sync_server.ops.limits import GuardedH11Protocol
from sync_server.ops.logs import configure_logging, set_worker_index
from sync_server.ops.metrics import MULTIPROC_ENV, multiprocess_dir, prepare_multiprocess_dir
from sync_server.settings import Settings, export_settings_env

__all__ = ["Serving", "app_from_env", "serve"]

log = logging.getLogger("sync_server.serving")

METRICS_DIR: Final = "metrics"
"""The folder under ``data_dir`` where several workers' metrics meet."""
_MAX_WORKER_SLOTS: Final = 1024


@dataclass(frozen=True, slots=True)
class Serving:
    """What `serve` is about to serve, for the start-up line."""

    url: str
    database: str
    revision: str
    workers: int
    blob_backend: str
    migrated: bool


def _check_port(host: str, port: int) -> None:
    """Fail early, with one line, if uvicorn could not listen on `host`:`port`."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise Invalid(
            f"cannot listen on {host}:{port}: {exc.strerror}", code="invalid_host"
        ) from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise Unavailable(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}", code="port_unavailable"
            ) from None


def _build_app(settings: Settings) -> FastAPI:
    """`create_app`, with its start-up failures as `Unavailable` or `Unprocessable`, and
    the deployment's signing key checked (`Conflict` ``signing_key_mismatch``)."""
    try:
        app = create_app(settings)
    except BlobBackendError as exc:
        raise Unavailable(f"blob storage unusable: {exc}", code="storage_unavailable") from None
    except (OSError, ValueError) as exc:
        raise Unprocessable(f"cannot start the server: {exc}", code="cannot_start") from None
    try:
        app.state.signing_key.establish()  # refuses a key the deployment does not use
    except BaseException:
        app.state.db.dispose()
        raise
    return app


def serve(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 8700,
    workers: int = 1,
    migrate: bool = True,
    on_start: Callable[[Serving], None] | None = None,
) -> None:
    """Run the server with uvicorn until it is stopped (SIGINT or SIGTERM).

    Migrates the database first unless `migrate` is False (then the schema must
    already be at the newest revision). Logs are JSON lines on stderr. With several
    workers, the settings are exported as ``COHERENCY_SERVER_*`` variables and each
    worker builds its app with `app_from_env`.

    Args:
        settings: The server settings.
        host: The address to listen on.
        port: The TCP port.
        workers: Worker processes (more than 1 needs PostgreSQL and shared blobs for
            anything but reading; SQLite serialises writers).
        migrate: Migrate the schema before serving.
        on_start: Called once everything is checked, just before serving.

    Raises:
        Invalid: Bad settings or a host that cannot be resolved.
        NotFound: ``migrate=False`` and no database.
        Conflict: ``migrate=False`` and the schema is not the newest; or
            ``signing_key_mismatch``: this instance's token signing key is not the
            deployment's active key (`sync_server.identity.keyring`).
        Unavailable: The database, blob storage or port cannot be used.
    """
    if workers < 1:
        raise Invalid("--workers must be at least 1", code="invalid_setting")
    try:
        configure_logging(settings.log_level)
    except ValueError as exc:
        raise Invalid(str(exc), code="invalid_setting") from None
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if migrate:
        migration = migrate_schema(settings)
        revision = migration.revision
    else:
        with open_database(settings, must_exist=True) as database:
            revision = require_schema(database)
    _check_port(host, port)
    # Built here even for several workers: configuration errors surface as one line
    # before any worker starts, and the signing key and bucket exist before they race.
    app = _build_app(settings)
    if workers > 1 and app.state.db.sqlite:
        log.warning(
            "%d workers on SQLite: writes queue on one file lock and a long poll wakes "
            "only for pushes to its own worker (others answer at its timeout); use "
            "PostgreSQL for several workers",
            workers,
        )
    if on_start is not None:
        on_start(
            Serving(
                url=f"http://{host}:{port}",
                database=database_label(settings.resolved_database_url),
                revision=revision,
                workers=workers,
                blob_backend=settings.blob_backend,
                migrated=migrate,
            )
        )
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_config": None,  # configure_logging's JSON handlers stay in charge
        "access_log": False,  # the app writes its own access lines
        "server_header": False,
        "lifespan": "on",
        # Request headers must arrive within the deadline (see ops/limits.py); with
        # several workers each worker sets the class's deadline from its settings.
        "http": "sync_server.ops.limits:GuardedH11Protocol",
        "timeout_keep_alive": 5,
    }
    GuardedH11Protocol.header_timeout = settings.header_timeout_seconds
    with _sigterm_exits_cleanly():
        try:
            if workers == 1:
                _settle_heap()
                uvicorn.run(app, **options)
            else:
                app.state.db.dispose()
                os.environ.update(export_settings_env(settings))
                # Set before any worker imports prometheus_client: the workers' values
                # then go to files there, and a scrape of any worker sums them all.
                metrics_dir = prepare_multiprocess_dir(settings.data_dir / METRICS_DIR)
                os.environ[MULTIPROC_ENV] = str(metrics_dir)
                try:
                    uvicorn.run(
                        "sync_server.serving:app_from_env",
                        factory=True,
                        workers=workers,
                        **options,
                    )
                finally:
                    shutil.rmtree(metrics_dir, ignore_errors=True)
        except SystemExit as exc:
            if exc.code not in (0, None):
                raise Unavailable(
                    "the server failed to start (see the log above)", code="cannot_start"
                ) from None


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


@contextmanager
def _sigterm_exits_cleanly() -> Iterator[None]:
    """Make SIGTERM a clean stop (status 0), as for Ctrl-C.

    uvicorn shuts down gracefully on SIGTERM, then raises the signal again under the
    handler it found; the default one would kill the process with status 143. Under
    this handler, a SIGTERM before uvicorn listens stops the command at once, and
    the one uvicorn raises again after its graceful shutdown ends it with status 0.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _exit_cleanly)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def app_from_env() -> FastAPI:
    """The app of one worker, from ``COHERENCY_SERVER_*`` variables (uvicorn factory)."""
    settings = Settings()
    folder = multiprocess_dir()
    if folder is not None:
        set_worker_index(_claim_worker_slot(folder))
    configure_logging(settings.log_level)
    GuardedH11Protocol.header_timeout = settings.header_timeout_seconds
    app = create_app(settings)
    _settle_heap()
    return app


_slot: IO[bytes] | None = None  # held open (and locked) for the life of the worker


def _claim_worker_slot(folder: Path) -> int | None:
    """The lowest worker number no live worker holds (an exclusive lock on
    ``worker-N.lock`` in `folder`, released by the kernel when the worker dies)."""
    global _slot
    for index in range(_MAX_WORKER_SLOTS):
        handle = open(folder / f"worker-{index}.lock", "ab")  # noqa: SIM115  # held open
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        _slot = handle
        return index
    return None


def _settle_heap() -> None:
    """Move what the worker built at startup (modules, the app) out of the cyclic
    garbage collector's way: a big push keeps many objects alive at once, so full
    collections run during it, and each walked the whole startup heap again (about a
    fifth of a push's CPU time). Called once, when the worker starts serving."""
    gc.collect()
    gc.freeze()
