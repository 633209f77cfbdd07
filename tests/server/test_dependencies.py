"""The routes' dependencies cost no thread hop they do not need.

FastAPI runs a plain ``def`` dependency in its thread pool: on every request that uses
it, a hop from the event loop to a worker thread and back. Only a dependency that
waits on the database is worth that; one that reads the request or ``app.state`` is
``async def`` and runs on the event loop. Up to nine such hops per device request
cost about a fifth of the server's CPU on a small request (benchmarks/README.md).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import iter_route_contexts

from sync_server import create_app

from .conftest import make_settings

IN_THE_THREAD_POOL = {
    "sync_server.deps.current_principal",  # reads the device or user, and the session
    "sync_server.dashboard.web._page",  # reads and renews the browser session
}
"""The dependencies that wait on the database, and so run in the thread pool."""


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for sub in dependant.dependencies:
        if sub.call is not None:
            yield sub.call
        yield from _calls(sub)


def test_only_dependencies_that_wait_on_the_database_run_in_the_thread_pool(
    tmp_path: Path,
) -> None:
    app = create_app(make_settings(tmp_path, None))
    routes = [route for route in iter_route_contexts(app.routes) if hasattr(route, "dependant")]
    assert len(routes) > 20  # the whole API
    in_the_pool = {
        f"{call.__module__}.{call.__qualname__}"
        for route in routes
        for call in _calls(route.dependant)
        if not inspect.iscoroutinefunction(call)
    }
    assert in_the_pool == IN_THE_THREAD_POOL
