"""The code keeps its shape: packages meet only through their public names, each
package's `__all__` is exactly what it exposes, and no module imports itself round a
cycle.

Checked on the source (AST), so imports inside functions and under TYPE_CHECKING count
too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
import importlib
import types
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LIBRARIES = [
    "crdt",
    "edge_box",
    "edge_sdk",
    "fhir_interop",
    "lidar_capture",
    "models",
    "sync_server",
]
CODE = [*LIBRARIES, "cli", "benchmarks", "examples"]


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for top in CODE:
        for path in sorted((ROOT / top).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


COMPILED = {"crdt._columnar_native": "crdt._columnar"}
"""Modules built from another module's source (setup.py): an import of one is an
import of that source module."""


MODULES = _modules()


def _imports(module: str, path: Path) -> Iterator[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every import in the file."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            yield target, [alias.name for alias in node.names], node.lineno


def test_packages_meet_only_through_their_public_names() -> None:
    """Outside tests, a package uses another only as ``from pkg import Name`` with
    ``Name`` in ``pkg.__all__`` (or ``import pkg``): never a module inside it."""
    offences = []
    for module, path in MODULES.items():
        own = module.split(".")[0]
        for target, names, line in _imports(module, path):
            top = target.split(".")[0]
            if top not in LIBRARIES or top == own:
                continue
            where = f"{path.relative_to(ROOT)}:{line}"
            if target != top:
                offences.append(f"{where} imports {target}")
                continue
            public = set(importlib.import_module(top).__all__)
            offences += [
                f"{where} imports {top}.{n} (not in __all__)" for n in names if n not in public
            ]
    assert not offences, "\n".join(offences)


@pytest.mark.parametrize("name", LIBRARIES)
def test_all_is_exactly_what_the_package_exposes(name: str) -> None:
    """httpx's test_exported_members: every public attribute is in `__all__`, and
    everything in `__all__` exists."""
    package = importlib.import_module(name)
    exposed = {
        attr
        for attr, value in vars(package).items()
        if not attr.startswith("_") and not isinstance(value, types.ModuleType)
    }
    declared = set(package.__all__)
    assert declared <= set(dir(package)), sorted(declared - set(dir(package)))
    assert exposed <= declared, f"public but not in __all__: {sorted(exposed - declared)}"


def test_no_import_cycles() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in MODULES.items():
        for target, names, _ in _imports(module, path):
            for candidate in [f"{target}.{n}" for n in names] + [target]:
                parts = COMPILED.get(candidate, candidate).split(".")
                while parts and ".".join(parts) not in MODULES:
                    parts.pop()
                if parts and ".".join(parts) != module:
                    graph[module].add(".".join(parts))
                    break
    cycles = _strongly_connected(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; groups of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(MODULES):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            advanced = False
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    found.append(sorted(group))
    return found
