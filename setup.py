"""Builds the one compiled module: `crdt._columnar_native`, the saved-document reader
(`crdt/_columnar.py`) compiled by mypyc.

Reading a document's operations is pure-Python integer work on the hot path of every
push, merge and first-sync verification; compiled, it takes about half the time. The
source stays the one Python file: it is copied with its "native build" block cut off
and its SHA-256 appended, and `crdt._columnar` uses the compiled copy only while that
hash matches its own source (an edited module is never shadowed by a stale build).
A machine that cannot compile it (no C compiler) installs without it, reading in
Python with the same results (`crdt._columnar.backend()` says which); set
``COHERENCY_PURE_PYTHON=1`` to skip it on purpose. Everything else is in pyproject.toml.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, CompileError, ExecError, PlatformError

_CANNOT_COMPILE = (CCompilerError, CompileError, ExecError, PlatformError, OSError)

SOURCE = Path("crdt/_columnar.py")
MARKER = "# ---------------------------------------------------------------- native build"
NATIVE = Path("build/native/crdt")


def native_modules() -> list:
    if os.environ.get("COHERENCY_PURE_PYTHON") == "1":
        return []
    from mypyc.build import mypycify

    source = SOURCE.read_bytes()
    body, found, _ = source.decode("utf-8").partition(MARKER)
    if not found:
        raise SystemExit(f"{SOURCE} lost its '{MARKER}' line")
    digest = hashlib.sha256(source).hexdigest()
    NATIVE.mkdir(parents=True, exist_ok=True)
    (NATIVE / "__init__.py").write_text("", encoding="utf-8")
    target = NATIVE / "_columnar_native.py"
    target.write_text(f'{body}\nSOURCE_SHA256 = "{digest}"\n', encoding="utf-8")
    config = NATIVE.parent / "mypy.ini"  # not the project's [tool.mypy]: this one file only
    config.write_text("[mypy]\n", encoding="utf-8")
    return mypycify(["--config-file", str(config), str(target)], opt_level="3")


class OptionalBuildExt(build_ext):
    """Builds the compiled reader where this machine can, and installs without it
    (saying so) where it cannot: markupsafe's pattern for optional speedups."""

    def run(self) -> None:
        try:
            super().run()
        except _CANNOT_COMPILE as exc:
            self.extensions = []  # nothing of it is installed (nor looked for)
            print(
                f"warning: the compiled document reader was not built ({exc}); "
                "documents are read in Python (same results, about half the speed)",
                file=sys.stderr,
            )


setup(ext_modules=native_modules(), cmdclass={"build_ext": OptionalBuildExt})
