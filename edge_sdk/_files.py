"""Crash-safe file moves shared by the keyring, the blob store and bundles."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["fsync_dir", "replace_durably", "unlink_quietly"]


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Make renames in `directory` durable (POSIX; directories cannot be opened on Windows)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_durably(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """Atomically move a fully written (and fsynced) file into place, durably."""
    os.replace(source, target)
    fsync_dir(Path(target).parent)


def unlink_quietly(path: str | os.PathLike[str]) -> None:
    """Remove a file if it exists."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
