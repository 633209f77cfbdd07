"""The server's shape, checked from its source: services know nothing of HTTP.

Only the HTTP layer (the app factory, dependencies, body reading, serving, routes and
the observability middleware) may import FastAPI or Starlette; services, tables,
schemas, backends and the core below them may not. Services take their session (or
database) as a keyword-only argument.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import sync_server

ROOT = Path(sync_server.__file__).parent
HTTP_FRAMEWORKS = ("fastapi", "starlette")
HTTP_LAYER = {
    "__init__.py",  # the public surface re-exports the app factory and serving
    "app.py",
    "bodies.py",
    "deps.py",
    "embedded.py",
    "openapi.py",  # the OpenAPI document, derived from the routes' dependencies
    "serving.py",
    "ops/middleware.py",
    "ops/limits.py",  # body caps and deadlines: ASGI middleware and the HTTP protocol
    "dashboard/web.py",  # the dashboard's cookie, CSRF, headers and templates
}


def _is_http_layer(relative: str) -> bool:
    name = relative.rsplit("/", 1)[-1]
    return relative in HTTP_LAYER or name == "routes.py" or name.endswith("_routes.py")


def _modules() -> list[tuple[str, ast.Module]]:
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        if relative.startswith("migrations/"):
            continue
        found.append((relative, ast.parse(path.read_text(encoding="utf-8"))))
    return found


MODULES = _modules()
BELOW_HTTP = [(name, tree) for name, tree in MODULES if not _is_http_layer(name)]


def _imported(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_the_check_sees_services_and_routes() -> None:
    below = {name for name, _ in BELOW_HTTP}
    assert {"identity/users.py", "blobs/uploads.py", "blobs/backends/s3.py"} <= below
    assert "sync/tables.py" in below and "errors.py" in below
    assert "blobs/routes.py" not in below and "identity/admin_routes.py" not in below


@pytest.mark.parametrize("name,tree", BELOW_HTTP, ids=[name for name, _ in BELOW_HTTP])
def test_no_http_below_the_http_layer(name: str, tree: ast.Module) -> None:
    http = sorted(m for m in _imported(tree) if m.split(".")[0] in HTTP_FRAMEWORKS)
    assert not http, f"sync_server/{name} imports {http}: only routes and the app know HTTP"


@pytest.mark.parametrize("name,tree", BELOW_HTTP, ids=[name for name, _ in BELOW_HTTP])
def test_below_the_http_layer_nothing_imports_a_route(name: str, tree: ast.Module) -> None:
    routes = sorted(
        m
        for m in _imported(tree)
        if m.startswith("sync_server.")
        and _is_http_layer(m.removeprefix("sync_server.").replace(".", "/") + ".py")
    )
    assert not routes, f"sync_server/{name} imports the HTTP layer: {routes}"


DOMAIN_SERVICES = [
    (name, tree)
    for name, tree in BELOW_HTTP
    if "/" in name and not name.endswith(("tables.py", "schemas.py", "__init__.py"))
]


@pytest.mark.parametrize("name,tree", DOMAIN_SERVICES, ids=[name for name, _ in DOMAIN_SERVICES])
def test_services_take_their_session_by_keyword(name: str, tree: ast.Module) -> None:
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef) or node.name.startswith("_"):
            continue
        positional = [a.arg for a in node.args.posonlyargs + node.args.args]
        for transactional in ("session", "database"):
            assert transactional not in positional, (
                f"sync_server/{name}: {node.name}() takes {transactional} positionally; "
                f"services take it keyword-only (`def {node.name}(*, {transactional}: ...)`)"
            )
