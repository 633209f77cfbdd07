"""One clear line when a command needs an optional extra that is not installed.

`coherency` installs with the base dependencies only; scanning needs ``[capture]``
(NumPy; ``[capture-accel]`` adds Open3D, SciPy and contourpy, which read the other
point-cloud formats and Stray Scanner folders, and ``[video]`` PyAV for their videos),
running the wound model ``[inference]`` and the model recipe ``[train]``. The libraries
import those packages when a function needs them, so a missing one surfaces as a
`ModuleNotFoundError` from inside the command: `needs_extras` turns it into the extra
to install. `missing_extra` asks before anything runs, for a part (of the demo) that
is skipped rather than failed without its extra.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from importlib.util import find_spec

from cli._app import EXIT_OTHER, CliError

__all__ = ["missing_extra", "needs_extras"]

# Modules a command may reach that come from an extra other than the one it names.
_MODULE_EXTRAS = {"open3d": "capture-accel", "scipy": "capture-accel", "av": "video"}

# A missing module of our own is a bug in the install, not an extra to add: let it surface.
_OUR_PACKAGES = {"cli", "crdt", "edge_box", "edge_sdk", "lidar_capture", "models", "sync_server"}

# What each extra brings that its code imports first (pyproject.toml's optional
# dependencies, by import name): enough to tell "not installed" before starting.
_EXTRA_MODULES = {
    "fhir": ("fhir.resources",),
    "capture": ("numpy",),
    "capture-accel": ("numpy", "scipy", "open3d", "contourpy"),
    "video": ("av",),
    "server": ("fastapi", "uvicorn", "sqlalchemy", "alembic", "pydantic_settings", "httpx"),
    # The box runs the server's code (its sync API, `ThreadedServer`): [edge] pulls in [server].
    "edge": (
        "fastapi",
        "uvicorn",
        "sqlalchemy",
        "alembic",
        "pydantic_settings",
        "httpx",
        "zeroconf",
        "ifaddr",
    ),
}


def missing_extra(extra: str) -> str | None:
    """What is missing for `extra`, as "needs the [server] extra (fastapi is missing):
    pip install 'coherency[server]'"; None when it is installed."""
    for module in _EXTRA_MODULES[extra]:
        if find_spec(module) is None:
            return _needs((extra,), module)
    return None


@contextmanager
def needs_extras(*extras: str) -> Iterator[None]:
    """Report a third-party module missing inside the block as the extras to install.

    For example ``this command needs the [capture] extra (numpy is missing): pip
    install 'coherency[capture]'``, exit code 1. A module of another extra (Open3D's,
    PyAV's) names that extra instead.
    """
    try:
        yield
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] in _OUR_PACKAGES:
            raise
        raise _missing(exc, extras) from None


def _missing(exc: ModuleNotFoundError, extras: tuple[str, ...]) -> CliError:
    other = _MODULE_EXTRAS.get((exc.name or "").split(".")[0])
    if other is not None:
        extras = (other,)
    return CliError(f"this command {_needs(extras, exc.name)}", EXIT_OTHER)


def _needs(extras: tuple[str, ...], module: str | None) -> str:
    names = ",".join(extras)
    noun = "extra" if len(extras) == 1 else "extras"
    return f"needs the [{names}] {noun} ({module} is missing): pip install 'coherency[{names}]'"
