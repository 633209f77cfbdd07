"""Which optional accelerators (SciPy, contourpy, Open3D) the pipeline uses.

The measurement runs with NumPy alone (iPhones and iPads, where none of the three has a
wheel); when one is importable it is used instead, for speed, and gives the same figures
within the tolerance ``docs/capture.md`` states. Decided once per process, at first use:
``COHERENCY_CAPTURE_ACCELERATORS=0`` in the environment forces NumPy everywhere (to check
the NumPy path on a machine that has the accelerators); `set_enabled` does the same from
code (tests compare both paths in one process).
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

__all__ = ["ENV_VAR", "accelerator", "set_enabled"]

#: ``0`` (or ``false``/``no``/``off``) forces the NumPy implementations.
ENV_VAR = "COHERENCY_CAPTURE_ACCELERATORS"

_enabled: bool | None = None
_modules: dict[str, ModuleType | None] = {}


def _enabled_now() -> bool:
    global _enabled
    if _enabled is None:
        value = os.environ.get(ENV_VAR, "1").strip().lower()
        _enabled = value not in ("0", "false", "no", "off")
    return _enabled


def set_enabled(enabled: bool | None) -> None:
    """Use the accelerators (True), NumPy only (False), or read the environment again
    (None) from now on."""
    global _enabled
    _enabled = enabled


def accelerator(name: str) -> ModuleType | None:
    """The module `name` (``scipy.ndimage``, ``contourpy``, ``open3d``) when accelerators
    are enabled and it imports, else None (the caller runs its NumPy implementation)."""
    if not _enabled_now():
        return None
    if name not in _modules:
        try:
            _modules[name] = importlib.import_module(name)
        except ImportError:
            _modules[name] = None
    return _modules[name]
