"""Operations: health and readiness probes, Prometheus metrics, request ids, JSON access
logs that never hold a patient's name, the 500 catch-all, and the OpenAPI document.

Most tests run against the live `server` (SQLite and PostgreSQL). Apps that must be
broken on purpose (an unreachable database, a route that raises) are built here and
called in-process through httpx's ASGI transport.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.routing import APIRoute, iter_route_contexts
from prometheus_client.parser import text_string_to_metric_families

from sync_server import Settings, create_app, migrate
from sync_server.identity.tenancy import ensure_clinic
from sync_server.identity.users import create_user
from sync_server.migrating import head_revision
from sync_server.ops.logs import json_log_handler
from sync_server.ops.metrics import Metrics

PASSWORD = "a long enough password"


# --------------------------------------------------------------------------- helpers
class LogCapture:
    """JSON log lines of the ``sync_server`` loggers, as the server writes them."""

    def __init__(self) -> None:
        self.stream = io.StringIO()

    def lines(self) -> list[dict[str, Any]]:
        """Every line so far, parsed."""
        return [json.loads(line) for line in self.stream.getvalue().splitlines() if line]

    def text(self) -> str:
        """Everything written so far."""
        return self.stream.getvalue()

    def wait_for(
        self, match: Callable[[dict[str, Any]], bool], timeout: float = 10
    ) -> dict[str, Any]:
        """The first line `match` accepts, waiting for it (access lines are written
        just after the response is sent)."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines():
                if match(line):
                    return line
            if time.monotonic() > deadline:
                raise AssertionError(f"no such log line in:\n{self.text()}")
            time.sleep(0.02)


@pytest.fixture
def logs() -> Iterator[LogCapture]:
    """Capture the server's JSON logs (DEBUG and up) for one test."""
    capture = LogCapture()
    handler = json_log_handler(capture.stream)
    logger = logging.getLogger("sync_server")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield capture
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def call(app: FastAPI, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One request to `app` in-process (no lifespan: nothing is started)."""

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(go())


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Prometheus text as {(sample name, labels): value}."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(
    metrics: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    """One sample's value (0 when the series does not exist yet)."""
    return metrics.get((name, frozenset(labels.items())), 0.0)


def scrape(server: Any) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with server.http() as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture
def make_app() -> Iterator[Callable[..., FastAPI]]:
    """`create_app` for this test's own apps (their databases are closed afterwards)."""
    apps: list[FastAPI] = []

    def make(data_dir: Path, **settings: Any) -> FastAPI:
        app = create_app(Settings(data_dir=data_dir, **settings))
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.state.db.dispose()


@pytest.fixture
def own_app(tmp_path: Path, make_app: Callable[..., FastAPI]) -> FastAPI:
    """A migrated SQLite app of this test's own, to add test-only routes to."""
    migrate(Settings(data_dir=tmp_path / "server"))
    return make_app(tmp_path / "server")


def staff_token(server: Any) -> tuple[str, str]:
    """A staff user in a fresh clinic and an access token for it: (user id, token)."""
    with server.db.write() as session:
        clinic = ensure_clinic(
            session=session,
            name=f"ops-{uuid.uuid4().hex[:12]}",
            organisation_id=server.organisation_id,
        )
        user, _ = create_user(
            session=session,
            username=f"ops-staff-{uuid.uuid4().hex[:12]}",
            password=PASSWORD,
            role="staff",
            organisation_id=server.organisation_id,
            clinic_id=clinic.id,
            with_totp=False,
        )
    token, _ = server.app.state.signing_key.issue_access_token(
        subject=user.id,
        kind="user",
        clinic_id=clinic.id,
        organisation_id=server.organisation_id,
        role="staff",
        ttl=timedelta(minutes=5),
    )
    return user.id, token


# ------------------------------------------------------------------- health, ready
def test_healthz(server: Any) -> None:
    with server.http() as client:
        response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_reports_every_check(server: Any) -> None:
    with server.http() as client:
        response = client.get("/readyz")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ready"
    assert body["failing"] == []
    checks = body["checks"]
    assert checks["database"]["status"] == "ok"
    assert checks["schema"] == {
        "status": "ok",
        "detail": f"at {head_revision()}, this server's own revision",
    }
    assert checks["blobs"]["status"] == "ok"
    assert checks["feed"]["status"] == "ok"


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_readyz_is_503_when_the_database_is_unreachable(
    tmp_path: Path, backend: str, make_app: Callable[..., FastAPI]
) -> None:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'removed' / 'server.db'}"  # the folder does not exist
    else:
        url = f"postgresql+psycopg://postgres:pw-secret@127.0.0.1:{free_port()}/nothing"
    app = make_app(tmp_path / "server", database_url=url)  # only built: no migration

    response = call(app, "GET", "/readyz")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert "database" in body["failing"]
    assert body["checks"]["database"]["status"] == "failed"
    assert body["checks"]["schema"]["status"] == "skipped"
    assert "pw-secret" not in response.text  # no connection details leak to a probe
    assert "Traceback" not in response.text


def test_readyz_is_503_on_an_unmigrated_schema(
    tmp_path: Path, make_app: Callable[..., FastAPI]
) -> None:
    app = make_app(tmp_path / "server")  # never migrated
    response = call(app, "GET", "/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["schema"]
    assert body["checks"]["database"]["status"] == "ok"
    assert head_revision() in body["checks"]["schema"]["detail"]


def test_readyz_is_503_when_blob_storage_is_gone(own_app: FastAPI) -> None:
    assert call(own_app, "GET", "/readyz").status_code == 200
    shutil.rmtree(own_app.state.settings.resolved_blob_dir)
    response = call(own_app, "GET", "/readyz")
    assert response.status_code == 503
    assert response.json()["failing"] == ["blobs"]


# -------------------------------------------------------------------------- metrics
def test_metrics_count_requests_by_route_template(server: Any) -> None:
    before = scrape(server)
    with server.http() as client:
        for _ in range(3):
            assert client.get("/healthz").status_code == 200
        assert client.get(f"/v1/patients/{uuid.uuid4()}").status_code == 401
    after = scrape(server)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    healthz = {"method": "GET", "route": "/healthz"}
    assert delta("coherency_http_requests_total", **healthz, status="200") == 3
    assert delta("coherency_http_request_duration_seconds_count", **healthz) == 3
    patient = {"method": "GET", "route": "/v1/patients/{patient_id}"}
    assert delta("coherency_http_requests_total", **patient, status="401") == 1
    # The scrape itself is in flight while it is answered.
    assert value(after, "coherency_http_requests_in_flight") >= 1


def test_sync_metrics_helpers_show_in_metrics(server: Any) -> None:
    metrics: Metrics = server.app.state.metrics
    labels = {"direction": "push", "outcome": "accepted"}
    before = value(scrape(server), "coherency_sync_documents_total", **labels)
    metrics.count_documents("push", "accepted", 10)
    metrics.count_documents("push", "accepted", 0)
    assert value(scrape(server), "coherency_sync_documents_total", **labels) == before + 10

    waiting = value(scrape(server), "coherency_sync_long_polls_waiting")
    with metrics.long_poll():
        assert value(scrape(server), "coherency_sync_long_polls_waiting") == waiting + 1
    assert value(scrape(server), "coherency_sync_long_polls_waiting") == waiting

    metrics.observe_long_poll(2.0, woke=True)
    woke = value(scrape(server), "coherency_long_poll_duration_seconds_count", outcome="woke")
    assert woke >= 1

    with pytest.raises(ValueError, match="direction"):
        metrics.count_documents("sideways", "accepted", 1)
    with pytest.raises(ValueError, match="outcome"):
        metrics.count_documents("pull", "lost", 1)
    with pytest.raises(ValueError, match="negative"):
        metrics.count_documents("pull", "accepted", -1)


def test_long_polls_have_a_histogram_of_their_own(server: Any, logs: LogCapture) -> None:
    clinic_id = server.new_clinic()
    _, token = server.device_token(clinic_id)
    pull = {"method": "GET", "route": "/v1/sync/pull"}
    before = scrape(server)
    with server.http(token) as client:
        # Nothing in the new clinic: the pull waits its half second and times out.
        waited = client.get("/v1/sync/pull", params={"cursor": 0, "wait": 0.5})
        quick = client.get("/v1/sync/pull", params={"cursor": 0})
    assert waited.status_code == quick.status_code == 200
    after = scrape(server)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    long_polls = "coherency_long_poll_duration_seconds"
    assert delta(f"{long_polls}_count", outcome="timeout") == 1
    assert delta(f"{long_polls}_sum", outcome="timeout") > 0
    assert delta("coherency_http_requests_total", **pull, status="200") == 2
    # Only the pull that did not wait is in the HTTP latency histogram.
    assert delta("coherency_http_request_duration_seconds_count", **pull) == 1
    # The access lines say which one waited.
    logs.wait_for(lambda line: line.get("route") == "/v1/sync/pull" and not line["long_poll"])
    lines = [line for line in logs.lines() if line.get("route") == "/v1/sync/pull"]
    assert [line["long_poll"] for line in lines] == [True, False]


def test_apps_have_registries_of_their_own(
    tmp_path: Path, make_app: Callable[..., FastAPI]
) -> None:
    one, two = make_app(tmp_path / "one"), make_app(tmp_path / "two")
    assert one.state.metrics.registry is not two.state.metrics.registry
    call(one, "GET", "/healthz")

    def healthz_count(app: FastAPI) -> float:
        counted = samples(call(app, "GET", "/metrics").text)
        labels = {"method": "GET", "route": "/healthz", "status": "200"}
        return value(counted, "coherency_http_requests_total", **labels)

    assert healthz_count(one) == 1
    assert healthz_count(two) == 0


# ---------------------------------------------------------------------- request ids
def test_a_sane_request_id_is_echoed(server: Any) -> None:
    with server.http() as client:
        response = client.get("/healthz", headers={"X-Request-ID": "client-1.A_b"})
        refused = client.get("/v1/sync/pull", headers={"X-Request-ID": "client-2"})
    assert response.headers["x-request-id"] == "client-1.A_b"
    assert refused.status_code == 401
    assert refused.headers["x-request-id"] == "client-2"


@pytest.mark.parametrize("given", ["has space", "semi;colon", "x" * 65, "", "a/b"])
def test_a_bad_request_id_is_replaced(server: Any, given: str) -> None:
    with server.http() as client:
        response = client.get("/healthz", headers={"X-Request-ID": given})
    assert response.status_code == 200
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])


def test_every_request_gets_a_fresh_id(server: Any) -> None:
    with server.http() as client:
        ids = {client.get("/healthz").headers["x-request-id"] for _ in range(5)}
    assert len(ids) == 5


# ----------------------------------------------------------------------------- logs
def test_access_lines_hold_the_route_template_never_the_query(
    server: Any, logs: LogCapture
) -> None:
    user_id, token = staff_token(server)
    with server.http(token) as client:
        search = client.get(
            "/v1/patients", params={"q": "Zebulon"}, headers={"X-Request-ID": "search-1"}
        )
        read = client.get(
            "/v1/patients/Zebulon-Quartermaine",
            params={"q": "Zebulon"},
            headers={"X-Request-ID": "read-1"},
        )
    assert search.status_code == 200, search.text
    assert read.status_code == 404, read.text

    line = logs.wait_for(lambda line: line.get("request_id") == "search-1")
    assert line["logger"] == "sync_server.access"
    assert line["level"] == "INFO"
    assert line["method"] == "GET"
    assert line["route"] == "/v1/patients"
    assert line["status"] == 200
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    assert line["principal_kind"] == "user"
    assert line["principal_id"] == user_id

    line = logs.wait_for(lambda line: line.get("request_id") == "read-1")
    assert line["route"] == "/v1/patients/{patient_id}"
    assert line["status"] == 404

    assert "Zebulon" not in logs.text()
    assert "Quartermaine" not in logs.text()


def test_access_lines_name_the_device(server: Any, logs: LogCapture) -> None:
    clinic_id = server.new_clinic()
    device_id, token = server.device_token(clinic_id)
    with server.http(token) as client:
        response = client.get(
            "/v1/sync/pull", params={"cursor": 0}, headers={"X-Request-ID": "pull-1"}
        )
    assert response.status_code == 200, response.text
    line = logs.wait_for(lambda line: line.get("request_id") == "pull-1")
    assert line["route"] == "/v1/sync/pull"
    assert (line["principal_kind"], line["principal_id"]) == ("device", device_id)


def test_unmatched_paths_are_not_logged_raw(server: Any, logs: LogCapture) -> None:
    with server.http() as client:
        response = client.get(
            "/v1/nothing/Zebulon", params={"q": "Zebulon"}, headers={"X-Request-ID": "lost-1"}
        )
    assert response.status_code == 404
    line = logs.wait_for(lambda line: line.get("request_id") == "lost-1")
    assert line["route"] == "<unmatched>"
    assert "Zebulon" not in logs.text()


def test_log_lines_written_during_a_request_carry_its_id(
    own_app: FastAPI, logs: LogCapture
) -> None:
    def echo(request: Request, patient_id: str, q: str | None = None) -> dict[str, str]:
        logging.getLogger("sync_server.test").info("looked something up")
        return {"request_id": request.state.request_id}

    own_app.add_api_route("/v1/test/patients/{patient_id}", echo, summary="Test route")
    response = call(
        own_app,
        "GET",
        "/v1/test/patients/Zebulon",
        params={"q": "Zebulon"},
        headers={"X-Request-ID": "inner-1"},
    )
    assert response.status_code == 200
    assert response.json() == {"request_id": "inner-1"}  # request.state.request_id
    inner = logs.wait_for(lambda line: line["logger"] == "sync_server.test")
    assert inner["request_id"] == "inner-1"
    access = logs.wait_for(lambda line: line["logger"] == "sync_server.access")
    assert access["request_id"] == "inner-1"
    # Every line names the worker process that wrote it (one process: no index).
    assert inner["worker"] == access["worker"] == os.getpid()
    assert "worker_index" not in access
    assert access["route"] == "/v1/test/patients/{patient_id}"
    assert "Zebulon" not in logs.text()


# ------------------------------------------------------------------------ catch-all
def test_an_unhandled_exception_is_a_bare_500(own_app: FastAPI, logs: LogCapture) -> None:
    def broken() -> None:
        raise RuntimeError("database password is hunter2")

    own_app.add_api_route("/v1/test/broken", broken, summary="Always fails")
    response = call(own_app, "GET", "/v1/test/broken", headers={"X-Request-ID": "boom-1"})

    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-request-id"] == "boom-1"
    assert response.json() == {
        "error": {"code": "internal", "message": "internal error", "request_id": "boom-1"}
    }
    assert "hunter2" not in response.text
    assert "Traceback" not in response.text

    error = logs.wait_for(lambda line: line["level"] == "ERROR")
    assert error["request_id"] == "boom-1"
    assert "RuntimeError" in error["exc_info"]
    assert "Traceback" in error["exc_info"]
    access = logs.wait_for(lambda line: line["logger"] == "sync_server.access")
    assert access["status"] == 500
    assert access["route"] == "/v1/test/broken"
    counted = samples(call(own_app, "GET", "/metrics").text)
    labels = {"method": "GET", "route": "/v1/test/broken", "status": "500"}
    assert value(counted, "coherency_http_requests_total", **labels) == 1


# -------------------------------------------------------------------------- openapi
def test_openapi_documents_every_route_with_a_summary(server: Any) -> None:
    with server.http() as client:
        response = client.get("/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    # Included routers are expanded lazily: iterate over the app's effective routes.
    routes = [
        context
        for context in iter_route_contexts(server.app.routes)
        if isinstance(context.original_route, APIRoute) and context.include_in_schema
    ]
    assert len(routes) > 10
    missing = []
    for context in routes:
        summary = context.original_route.summary
        if not summary:  # FastAPI would make one up from the function's name
            missing.append(f"{sorted(context.methods)} {context.path_format}: no summary")
        for method in context.methods:
            operation = paths.get(context.path_format, {}).get(method.lower())
            if operation is None:
                missing.append(f"{method} {context.path_format}: not in the OpenAPI document")
            elif operation.get("summary") != summary:
                missing.append(f"{method} {context.path_format}: summary differs")
    assert missing == []
    for path in ("/healthz", "/readyz", "/metrics"):
        assert paths[path]["get"]["tags"] == ["operations"]
    assert "503" in paths["/readyz"]["get"]["responses"]
