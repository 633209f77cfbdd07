"""A real uvicorn server in a background thread on a free loopback port.

For the demo, examples and tests, and for app developers who want a real server in
their own tests: the same app and HTTP stack `coherency server run` serves, without a
separate process.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from types import TracebackType

import uvicorn
from fastapi import FastAPI

from sync_server.ops.limits import HEADER_TIMEOUT_SECONDS, guarded_protocol

__all__ = ["ThreadedServer"]


class ThreadedServer:
    """uvicorn serving `app` in a daemon thread on 127.0.0.1 (a free port by default;
    another `host`, and TLS with `ssl_certfile`/`ssl_keyfile`, for an edge box).

    Use as a context manager, or call `start()` and `stop()`::

        with ThreadedServer(create_app(settings)) as server:
            client.enroll(server.url, token)
    """

    def __init__(
        self,
        app: FastAPI,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None,
        ssl_keyfile_password: str | None = None,
    ) -> None:
        self.app = app
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.port: int = self._sock.getsockname()[1]
        scheme = "https" if ssl_certfile else "http"
        shown = "127.0.0.1" if host in {"0.0.0.0", ""} else host
        shown = f"[{shown}]" if ":" in shown else shown
        self.url = f"{scheme}://{shown}:{self.port}"
        settings = getattr(app.state, "settings", None)
        header_timeout = getattr(settings, "header_timeout_seconds", HEADER_TIMEOUT_SECONDS)
        config = uvicorn.Config(
            app,
            http=guarded_protocol(header_timeout),
            log_level="warning",
            log_config=None,  # leave the process's logging configuration alone
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=2,
            ssl_certfile=ssl_certfile,
            ssl_keyfile=ssl_keyfile,
            ssl_keyfile_password=ssl_keyfile_password,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._sock]},
            name="coherency-sync-server",
            daemon=True,
        )

    def start(self, *, timeout: float = 30.0) -> None:
        """Start serving; returns once the server accepts connections.

        Raises:
            RuntimeError: The server did not start within `timeout` seconds.
        """
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the sync server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop serving (open requests get 2 s to finish) and free the port.

        A long poll still waiting at that point is cut; uvicorn would log that as an
        error with a traceback, which says nothing useful here, so it is muted.
        """
        self._server.should_exit = True
        errors = logging.getLogger("uvicorn.error")
        level = errors.level
        errors.setLevel(logging.CRITICAL)
        try:
            if self._thread.is_alive():
                self._thread.join(timeout=30)
        finally:
            errors.setLevel(level)
        self._sock.close()

    def __enter__(self) -> ThreadedServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
