"""The SDK's shape: its modules import each other without cycles (every import counted,
deferred and TYPE_CHECKING ones too), none reaches into a client's private state, and
`import edge_sdk` loads no HTTP library."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SDK = ROOT / "edge_sdk"


def sdk_imports() -> dict[str, set[str]]:
    """Each edge_sdk module and the edge_sdk modules it imports, anywhere in its body."""
    graph: dict[str, set[str]] = {}
    for path in sorted(SDK.glob("*.py")):
        name = "edge_sdk" if path.stem == "__init__" else f"edge_sdk.{path.stem}"
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("edge_sdk."):
                found.add(str(node.module))
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("edge_sdk.")}
        graph[name] = found
    return graph


def test_sdk_modules_import_each_other_without_cycles() -> None:
    graph = sdk_imports()
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            cycle = [*path[path.index(module) :], module]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if module in done:
            return
        for imported in sorted(graph.get(module, ())):
            visit(imported, [*path, module])
        done.add(module)

    for module in graph:
        visit(module, [])


def test_no_module_reaches_into_a_clients_private_state() -> None:
    reach_in = re.compile(r"\bclient\._[a-z]")
    offenders = [
        f"{path.name}:{number}: {line.strip()}"
        for path in sorted(SDK.glob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if reach_in.search(line)
    ]
    assert offenders == []


def test_importing_the_sdk_loads_no_http_library() -> None:
    probe = "import sys, edge_sdk; print(sorted({'httpx', 'fastapi'} & set(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
