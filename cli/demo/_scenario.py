"""What the demo's parts share: the steps they say, the checks that fail them, timing,
the plaintext check, and the embedded defaults (clinic, passphrase, folder).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from cli._app import EXIT_OTHER, CliError
from edge_sdk import Argon2Params, PassphraseKeyProvider

__all__ = [
    "CLINIC",
    "DEMO_PASSPHRASE",
    "DemoFailedError",
    "Say",
    "Scenario",
    "check",
    "demo_folder",
    "demo_kdf",
    "demo_key_provider",
    "plaintext_leaks",
    "timed",
]

T = TypeVar("T")

Say = Callable[[str], None]
"""Called with each line of the demo as it happens (a no-op for ``--json``)."""

CLINIC = "clinic-riverside"
# Embedded defaults: a demo passphrase (never use one like it for real data).
DEMO_PASSPHRASE = "demo: not for patient data"


class DemoFailedError(CliError):
    """A demo step did not produce what it should have (one line, exit status 1)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_OTHER)


def check(condition: bool, what: str) -> None:
    """Fail the demo unless `condition` holds; `what` says what should have."""
    if not condition:
        raise DemoFailedError(f"demo step failed: {what}")


class Scenario:
    """One part of the demo: says each step as it completes and keeps it in `steps`."""

    def __init__(self, steps: list[str], say: Say) -> None:
        self.steps = steps
        self.say = say

    def step(self, line: str) -> None:
        """Record and say one completed step."""
        self.steps.append(line)
        self.say(line)


def timed(work: Callable[[], T]) -> tuple[T, float, float]:
    """`work()`, its duration in seconds and the `perf_counter` time it finished."""
    started = time.perf_counter()
    result = work()
    done = time.perf_counter()
    return result, done - started, done


def demo_folder(workdir: str | os.PathLike[str] | None) -> Path:
    """`workdir`, created if needed, or a new temporary folder if None."""
    root = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="coherency-"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def demo_kdf(fast: bool) -> Argon2Params | None:
    """Cheap Argon2 costs if `fast` (the demo's data is made up), else the defaults."""
    return Argon2Params.fast() if fast else None


def demo_key_provider(kdf: Argon2Params | None) -> PassphraseKeyProvider:
    """The key provider of every demo store: the demo passphrase."""
    return PassphraseKeyProvider(DEMO_PASSPHRASE, params=kdf)


def plaintext_leaks(root: Path, needles: Iterable[bytes]) -> list[str]:
    """The files under `root` (relative paths, sorted) that hold any of `needles`."""
    wanted = tuple(needles)
    return [
        str(path.relative_to(root))
        for path in sorted(root.rglob("*"))
        if path.is_file() and any(needle in path.read_bytes() for needle in wanted)
    ]
