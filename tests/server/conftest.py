"""Server fixtures: a real uvicorn server on loopback over SQLite and over PostgreSQL.

Every test that takes `server` runs twice, once per database, from the same body. The
PostgreSQL run uses a fresh database made for this test session on the local server
(127.0.0.1:5432, user postgres). Without PostgreSQL the PostgreSQL runs are skipped,
unless ``COHERENCY_REQUIRE_POSTGRES=1`` (CI), where they fail.

Servers are per session and per database; tests keep apart by working in clinics of
their own (`server.new_clinic()`).
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI

from edge_sdk import DeviceIdentity
from sync_server import Settings, ThreadedServer, create_app, migrate
from sync_server.db import Database
from sync_server.identity.tables import Clinic, Device, Organisation

PG_ADMIN_URL = os.environ.get(
    "COHERENCY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
REQUIRE_POSTGRES = os.environ.get("COHERENCY_REQUIRE_POSTGRES") == "1"


@dataclass
class ServerHandle:
    """A running server and what tests need to set up scenarios on it."""

    backend: str  # "sqlite" or "postgresql"
    url: str
    settings: Settings
    db: Database
    app: FastAPI
    organisation_id: str
    _clinics: list[str] = field(default_factory=list)
    _signers: dict[str, DeviceIdentity] = field(default_factory=dict)

    def new_clinic(self, name: str | None = None) -> str:
        """A fresh clinic of the test organisation; returns its id."""
        clinic_id = str(uuid.uuid4())
        with self.db.write() as session:
            session.add(
                Clinic(
                    id=clinic_id,
                    organisation_id=self.organisation_id,
                    name=name or f"clinic-{clinic_id[:8]}",
                    feed_seq=0,
                )
            )
        self._clinics.append(clinic_id)
        return clinic_id

    def device_token(
        self,
        clinic_id: str,
        *,
        device_id: str | None = None,
        public_key: bytes | None = None,
        ttl: timedelta = timedelta(minutes=15),
    ) -> tuple[str, str]:
        """Register a device directly in the database and mint it an access token.

        For tests of routes other than enrolment; returns (device_id, access token).
        Unless `public_key` is given, the device gets a real identity: `signer(device)`
        signs its documents (the server refuses unsigned changes, as devices do).
        """
        device_id = device_id or str(uuid.uuid4())
        if public_key is None:
            identity = DeviceIdentity(device_id, Ed25519PrivateKey.generate())
            self._signers[device_id] = identity
            public_key = identity.public_key
        with self.db.write() as session:
            if session.get(Device, device_id) is None:
                session.add(Device(id=device_id, clinic_id=clinic_id, public_key=public_key))
        token, _ = self.app.state.signing_key.issue_access_token(
            subject=device_id,
            kind="device",
            clinic_id=clinic_id,
            organisation_id=self.organisation_id,
            role="device",
            ttl=ttl,
        )
        return device_id, token

    def signer(self, device_id: str) -> DeviceIdentity:
        """The identity `device_token` made for a device: signs its changes."""
        return self._signers[device_id]

    def server_signer(self) -> Any:
        """The server as the author of its own documents (decisions)."""
        from sync_server.sync.authorship import ServerSigner

        return ServerSigner(self.app.state.artifact_key)

    def http(self, token: str | None = None) -> httpx.Client:
        """An httpx client for the server, with a bearer token if given."""
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


def _postgres_database() -> Iterator[str | None]:
    name = f"coherency_test_{os.getpid()}_{secrets.token_hex(3)}"
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        if REQUIRE_POSTGRES:
            pytest.fail(f"PostgreSQL is required (COHERENCY_REQUIRE_POSTGRES=1): {exc}")
        yield None
        return
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
            yield f"{base}/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str | None]:
    """A fresh, empty PostgreSQL database for this test session (None if unavailable)."""
    yield from _postgres_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_url: str | None
) -> Iterator[str]:
    """The URL of a database of this test's own, empty (no schema): a SQLite file, then
    a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    if postgres_url is None:
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    for url in _postgres_database():
        assert url is not None
        yield url


def make_settings(data_dir: Path, database_url: str | None, **overrides: Any) -> Settings:
    """Settings for a test server: embedded defaults unless told otherwise."""
    return Settings(data_dir=data_dir, database_url=database_url, **overrides)


SHARED_CLIENT_LIMITS = {
    "rate_login_per_client": 100_000,
    "rate_enrol_per_client": 100_000,
    "rate_device_login_per_client": 100_000,
    "rate_refresh_per_client": 100_000,
    "failures_free_per_client": 100_000,
}
"""Every test reaches the session's servers from 127.0.0.1: one client address would
trip the per-client limits meant for one device or person. Throttling tests restore
the defaults and speak through addresses of their own (``X-Forwarded-For``, which
uvicorn trusts from loopback)."""


TESTS_RUN_THE_SWEEPS: dict[str, Any] = {
    "payment_sweep_seconds": 365 * 86400.0,
    "notification_interval_seconds": 0,
    "notification_sweep_seconds": 0,
}
"""For every live server of the session on the session's databases (the `server`
fixture's, and any second instance beside it): the sweeps that act on every clinic
never run on their own. The payments sweep would settle a timed-out payment whenever
its minute came up, racing tests that look at a payment still processing; the
notification sender (`deliver_due`) would send other tests' deliveries through its own
channels, and the periodic notices (`sweep_notices`) would record other tests' notices
and hold SQLite's write lock while the concurrency tests run. The tests run each
themselves, for their own clinic (`sweep_processing`, `deliver_due`, `sweep_notices`)."""


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def server(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    postgres_url: str | None,
) -> Iterator[ServerHandle]:
    """A live server, once on SQLite and once on PostgreSQL."""
    backend = request.param
    data_dir = tmp_path_factory.mktemp(f"server-{backend}")
    if backend == "postgresql":
        if postgres_url is None:
            pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
        database_url: str | None = postgres_url
    else:
        database_url = None
    settings = make_settings(
        data_dir,
        database_url,
        long_poll_max_seconds=10,
        **TESTS_RUN_THE_SWEEPS,
        **SHARED_CLIENT_LIMITS,
    )
    migrate(settings)
    app = create_app(settings)
    live = ThreadedServer(app)
    live.start()
    db: Database = app.state.db
    organisation_id = str(uuid.uuid4())
    with db.write() as session:
        session.add(Organisation(id=organisation_id, name=f"org-{organisation_id[:8]}"))
    try:
        yield ServerHandle(backend, live.url, settings, db, app, organisation_id)
    finally:
        live.stop()


@pytest.fixture(scope="session")
def harness() -> ModuleType:
    """``benchmarks/_deployment.py`` of this checkout: server instances on one database,
    S3 on moto and nginx in front, shared with the load benchmark (``harness.Deployment
    .running(...)``). Loaded from its file: another distribution (pymerkle) installs a
    top-level ``benchmarks`` package, and the checkout is not always on ``sys.path``."""
    name = "coherency_benchmarks_deployment"
    if name in sys.modules:
        return sys.modules[name]
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "_deployment.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while it runs
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """Debian's chromium through Playwright, for the dashboard's browser tests.

    One per test module, never for the session: while Playwright's sync API is
    running, its event loop is the main thread's running loop, and every later test
    that calls `asyncio.run` (the app's lifespan in a TestClient, say) would fail."""
    from tests.server.browser_world import launch_chromium

    with launch_chromium() as browser:
        yield browser
