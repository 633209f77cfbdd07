"""A notification queue worker in a subprocess, for the queue tests and nothing else.

Run as a script (``python tests/server/queue_world.py``), it is ``coherency server
notification-worker`` with one difference: its push channel is `LoggedPush`, which
writes a line to ``QUEUE_TEST_LOG`` when a send starts (``start <key> <pid>``), sleeps
``QUEUE_TEST_SLEEP`` seconds (the window a test kills the process in), then writes
``sent <key> <pid>``: the provider's record of every request, shared by all the
processes, that the test reads. Settings come from the ``COHERENCY_SERVER_*``
environment as the command's do.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from sync_server.db import Database
from sync_server.notifications.channels import Channel, Message
from sync_server.notifications.queue import run_worker
from sync_server.settings import Settings


class LoggedPush:
    """A push provider whose every request is a line in a file shared by processes
    (appended with one ``write``, so lines of several processes do not interleave)."""

    name = "push"

    def __init__(self, log: Path, sleep: float) -> None:
        self._log = log
        self._sleep = sleep

    def _line(self, text: str) -> None:
        fd = os.open(self._log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{text}\n".encode())
        finally:
            os.close(fd)

    def send(self, message: Message, *, idempotency_key: str) -> str:
        """Log the start, sleep, log the send; return a provider id."""
        self._line(f"start {idempotency_key} {os.getpid()}")
        time.sleep(self._sleep)
        self._line(f"sent {idempotency_key} {os.getpid()}")
        return f"push-{idempotency_key}"


def read_log(log: Path) -> list[tuple[str, str, int]]:
    """The log's lines as (``start`` or ``sent``, delivery id, pid)."""
    if not log.exists():
        return []
    lines = []
    for line in log.read_text().splitlines():
        what, key, pid = line.split()
        lines.append((what, key, int(pid)))
    return lines


def main() -> None:
    """Run the worker until SIGTERM (or killed)."""
    settings = Settings()
    log = Path(os.environ["QUEUE_TEST_LOG"])
    sleep = float(os.environ.get("QUEUE_TEST_SLEEP", "0"))

    def channels(db: Database) -> dict[str, Channel]:
        return {"push": LoggedPush(log, sleep)}

    run_worker(settings, channels=channels)


if __name__ == "__main__":
    main()
