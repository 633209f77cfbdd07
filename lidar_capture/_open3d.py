"""Open3D, imported on first use and kept quiet.

Open3D takes about half a second to import, which every `coherency` command would
otherwise pay; and it reports a bad file by printing a warning and returning an empty
(or partly uninitialised) result, so its readers run quietly here and every caller
checks what came back.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

__all__ = ["o3d", "quiet"]


def o3d() -> ModuleType:
    """The `open3d` module."""
    import open3d

    return open3d


@contextmanager
def quiet() -> Iterator[None]:
    """Keep Open3D's warnings off stdout/stderr; failures are detected and raised instead."""
    module = o3d()
    with module.utility.VerbosityContextManager(module.utility.VerbosityLevel.Error):
        yield
