"""One clear line when a command needs an optional extra that is not installed.

`coherency` installs with the base dependencies only; scanning needs ``[capture]``,
running the wound model ``[inference]`` and the model recipe ``[train]``. The libraries
import those packages when a function needs them, so a missing one surfaces as a
`ModuleNotFoundError` from inside the command: `needs_extras` turns it into the extra
to install.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from cli._app import EXIT_OTHER, CliError

__all__ = ["needs_extras"]

# A missing module of our own is a bug in the install, not an extra to add: let it surface.
_OUR_PACKAGES = {"cli", "crdt", "edge_sdk", "lidar_capture", "models", "sync_server"}


@contextmanager
def needs_extras(*extras: str) -> Iterator[None]:
    """Report a third-party module missing inside the block as the extras to install.

    For example ``this command needs the [capture] extra (open3d is missing): pip
    install 'coherency[capture]'``, exit code 1.
    """
    try:
        yield
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] in _OUR_PACKAGES:
            raise
        raise _missing(exc, extras) from None


def _missing(exc: ModuleNotFoundError, extras: tuple[str, ...]) -> CliError:
    names = ",".join(extras)
    noun = "extra" if len(extras) == 1 else "extras"
    return CliError(
        f"this command needs the [{names}] {noun} ({exc.name} is missing): "
        f"pip install 'coherency[{names}]'",
        EXIT_OTHER,
    )
