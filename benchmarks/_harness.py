"""Timing, results, the machine description, the table and the JSON file."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "Figure",
    "machine_info",
    "pin_to_one_core",
    "print_table",
    "scratch_dir",
    "timed",
    "write_json",
]


@dataclass(slots=True)
class Figure:
    """One reported number: its samples over the repeats, and its target if it has one.

    `value` is the median of the samples. A figure with a target `meets_target` when
    the median is on the right side of it (`target_op` ``"<="`` or ``">="``).
    """

    benchmark: str
    name: str
    description: str
    unit: str
    samples: list[float]
    target: float | None = None
    target_op: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def value(self) -> float:
        return statistics.median(self.samples)

    @property
    def meets_target(self) -> bool | None:
        if self.target is None:
            return None
        return self.value <= self.target if self.target_op == "<=" else self.value >= self.target

    def to_json(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "name": self.name,
            "description": self.description,
            "value": self.value,
            "unit": self.unit,
            "target": self.target,
            "target_op": self.target_op,
            "meets_target": self.meets_target,
            "median": self.value,
            "min": min(self.samples),
            "max": max(self.samples),
            "repeats": len(self.samples),
            "samples": list(self.samples),
            **self.extra,
        }


def timed(action: Callable[[], object]) -> float:
    """Seconds `action` took, by `time.perf_counter`.

    Garbage from earlier work is collected first so that it is not charged to this
    measurement; the collector stays on while timing, as it is in an app.
    """
    gc.collect()
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


@contextlib.contextmanager
def scratch_dir(root: Path, name: str) -> Iterator[Path]:
    """A fresh, empty directory under `root`, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=root))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def pin_to_one_core(enabled: bool) -> Iterator[int | None]:
    """Pin this process to one CPU while inside the block; yields the CPU, or None.

    The merge target is "on one core": pinning keeps the scheduler from spreading
    the process (and SQLite's work) over several cores while it is measured.
    """
    if not enabled or not hasattr(os, "sched_setaffinity"):
        yield None
        return
    before = os.sched_getaffinity(0)
    cpu = max(before)
    os.sched_setaffinity(0, {cpu})
    try:
        yield cpu
    finally:
        os.sched_setaffinity(0, before)


def machine_info(scratch_root: Path) -> dict[str, Any]:
    """What the numbers were measured on."""
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": _cpu_model(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "sqlite": sqlite3.sqlite_version,
        "sqlcipher": _sqlcipher_version(),
        "automerge": _version("automerge"),
        "pydantic": _version("pydantic"),
        "scratch_dir": str(scratch_root),
        "scratch_filesystem": _filesystem_of(scratch_root),
    }
    return info


def write_json(
    path: Path, machine: dict[str, Any], settings: dict[str, Any], figures: Sequence[Figure]
) -> None:
    """Write the run as ``{"machine": ..., "settings": ..., "results": [...]}``."""
    document = {
        "machine": machine,
        "settings": settings,
        "results": [f.to_json() for f in figures],
    }
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def print_table(
    figures: Sequence[Figure], machine: dict[str, Any], settings: dict[str, Any]
) -> None:
    """Print the figures as one table, grouped by benchmark."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(100, shutil.get_terminal_size((140, 20)).columns))
    pinned = settings.get("pinned_cpu")
    title = (
        f"Coherency benchmarks: scale {settings['scale']:,}, "
        f"{'pinned to CPU ' + str(pinned) if pinned is not None else 'not pinned'}, "
        f"medians of {settings['repeat_note']}"
    )
    table = Table(title=title, title_justify="left")
    table.add_column("figure", no_wrap=True)
    table.add_column("median", justify="right")
    table.add_column("min", justify="right")
    table.add_column("max", justify="right")
    table.add_column("unit")
    table.add_column("target", justify="right")
    table.add_column("ok", justify="center")
    current = None
    for figure in figures:
        if figure.benchmark != current:
            if current is not None:
                table.add_section()
            current = figure.benchmark
        ok = {True: "[green]yes[/]", False: "[red]NO[/]", None: ""}[figure.meets_target]
        target = "" if figure.target is None else f"{figure.target_op} {_fmt(figure.target)}"
        table.add_row(
            figure.name,
            _fmt(figure.value),
            _fmt(min(figure.samples)),
            _fmt(max(figure.samples)),
            figure.unit,
            target,
            ok,
        )
    console.print(table)
    console.print(
        f"[dim]{machine['processor'] or machine['machine']}, {machine['cpu_count']} CPUs, "
        f"Python {machine['python']}, SQLite {machine['sqlite']}, "
        f"SQLCipher {machine['sqlcipher']}, automerge {machine['automerge']}, "
        f"scratch on {machine['scratch_filesystem']}, "
        f"load {', '.join(f'{x:.2f}' for x in machine['load_average'] or [])}[/]"
    )


def _fmt(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}"


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _sqlcipher_version() -> str | None:
    import sqlcipher3

    conn = sqlcipher3.connect(":memory:")
    try:
        row = conn.execute("PRAGMA cipher_version").fetchone()
        return None if row is None else str(row[0])
    finally:
        conn.close()


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def _filesystem_of(path: Path) -> str | None:
    """The filesystem type holding `path` (fsync cost depends on it), where knowable."""
    with contextlib.suppress(OSError):
        best, kind = "", None
        target = str(path.resolve())
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            mount = parts[1]
            is_prefix = target == mount or target.startswith(mount.rstrip("/") + "/")
            if len(parts) > 2 and is_prefix and len(mount) > len(best):
                best, kind = mount, parts[2]
        return kind
    return None
