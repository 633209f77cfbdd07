"""`coherency server ...` end to end: the real command line in a subprocess.

Migrates a fresh data folder, creates an admin (who then logs in with the printed TOTP
secret), issues enrolment tokens, serves on a free port until SIGTERM, and serves
PostgreSQL with two workers. Error paths are one ``error:`` line and an exit code.
Refusals of bad input that never reach a server or configure logging run in-process
(`CliRunner`), which is much faster than a subprocess; `server run` always runs in a
subprocess, since it configures the process's logging.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pyotp
import pytest
from click.testing import CliRunner
from sqlalchemy import select

from cli.main import cli
from sync_server import Settings
from sync_server.audit.tables import AuditEvent
from sync_server.db import Database
from sync_server.identity.sealing import SecretBox
from sync_server.identity.tables import Clinic, EnrolmentToken, User
from sync_server.identity.tokens import hash_token
from sync_server.identity.users import authenticate_user
from sync_server.migrating import head_revision

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery staple"
PG_ADMIN_URL = os.environ.get(
    "COHERENCY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
REQUIRE_POSTGRES = os.environ.get("COHERENCY_REQUIRE_POSTGRES") == "1"


def environment(**extra: str) -> dict[str, str]:
    """The environment of a `coherency` subprocess: nothing from the caller's
    COHERENCY_* variables, the checkout importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COHERENCY_")}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def coherency(
    *args: str, input: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``coherency ARGS...`` as a subprocess; never raises on failure."""
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        input=input,
        env=env or environment(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def ok(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Any:
    """Run a command with ``--json``; check it succeeded; return its parsed output."""
    done = coherency(*args, "--json", input=input, env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def failed(done: subprocess.CompletedProcess[str], code: int) -> str:
    """Check the command failed with `code` and one ``error:`` line; return it."""
    assert done.returncode == code, (done.stdout, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in done.stderr
    return lines[0]


def failed_in_process(code: int, *args: str, input: str | None = None) -> str:
    """Run ``coherency ARGS...`` in-process; check it fails like `failed`."""
    result = CliRunner().invoke(cli, list(args), input=input)
    assert result.exit_code == code, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    return lines[0]


@pytest.fixture(autouse=True)
def no_coherency_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process commands see none of the caller's COHERENCY_* variables."""
    for name in list(os.environ):
        if name.startswith("COHERENCY_"):
            monkeypatch.delenv(name)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def database(data_dir: Path) -> Database:
    return Database(Settings(data_dir=data_dir).resolved_database_url)


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder that `coherency server migrate` has set up (tests share it and
    keep apart by names of their own)."""
    data_dir = tmp_path_factory.mktemp("cli") / "server"
    result = ok("server", "migrate", "--data-dir", str(data_dir))
    assert result["revision"] == head_revision()
    assert result["previous_revision"] is None
    assert result["changed"] is True
    assert (data_dir / "server.db").is_file()
    return data_dir


# -------------------------------------------------------------------------- migrate
def test_migrate_twice_changes_nothing_the_second_time(migrated: Path) -> None:
    again = ok("server", "migrate", "--data-dir", str(migrated))
    assert again == {
        "database": f"sqlite:///{(migrated / 'server.db').resolve()}",
        "previous_revision": head_revision(),
        "revision": head_revision(),
        "changed": False,
    }
    human = CliRunner().invoke(cli, ["server", "migrate", "--data-dir", str(migrated)])
    assert human.exit_code == 0, human.output
    assert f"schema already at {head_revision()}" in human.stdout


def test_migrate_an_unreachable_database_is_one_line(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://postgres:pw-secret@127.0.0.1:{free_port()}/nothing"
    line = failed(coherency("server", "migrate", "--database-url", url), 1)
    assert "127.0.0.1" in line
    assert "pw-secret" not in line


# --------------------------------------------------------------------- create-admin
def test_create_admin_prints_a_totp_secret_that_logs_in(migrated: Path) -> None:
    args = ["server", "create-admin", "--data-dir", str(migrated), "--username", "root-admin"]
    admin = ok(*args, "--password-stdin", input=PASSWORD + "\n")
    assert admin["username"] == "root-admin"
    assert admin["role"] == "admin"
    assert admin["totp_uri"].startswith("otpauth://totp/")
    assert admin["totp_secret"] in admin["totp_uri"]

    db = database(migrated)
    try:
        with db.write() as session:
            code = pyotp.TOTP(admin["totp_secret"]).now()
            user = authenticate_user(
                session=session,
                username="root-admin",
                password=PASSWORD,
                totp_code=code,
                secret_box=SecretBox.load_or_create(migrated / "secret-key"),
                settings=Settings(data_dir=migrated),
                client="198.51.100.1",
            )
            assert user.id == admin["user_id"]
            # Sealed at rest: the secret itself is nowhere in the row.
            assert user.totp_secret is not None
            assert admin["totp_secret"] not in user.totp_secret
            assert user.clinic_id is None
            assert user.organisation_id == admin["organisation_id"]
    finally:
        db.dispose()

    taken = failed_in_process(5, *args, "--password-stdin", input=PASSWORD + "\n")
    assert "taken" in taken


def test_create_admin_without_totp_and_with_the_environment(migrated: Path) -> None:
    admin = ok(
        "server",
        "create-admin",
        "--username",
        "plain-admin",
        "--password-stdin",
        "--no-totp",
        input=PASSWORD + "\n",
        env=environment(COHERENCY_SERVER_DATA_DIR=str(migrated)),
    )
    assert admin["totp_secret"] is None
    assert admin["totp_uri"] is None
    db = database(migrated)
    try:
        with db.read() as session:
            user = session.scalars(select(User).where(User.username == "plain-admin")).one()
            assert user.totp_secret is None
            assert user.role == "admin"
    finally:
        db.dispose()


def test_create_admin_prompts_twice_without_password_stdin(migrated: Path) -> None:
    args = ["server", "create-admin", "--data-dir", str(migrated), "--username", "typed"]
    result = CliRunner().invoke(cli, [*args, "--json"], input=f"{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["username"] == "typed"
    assert "Repeat for confirmation" in result.stderr
    mismatch = CliRunner().invoke(cli, [*args, "--json"], input=f"{PASSWORD}\nother\n")
    assert mismatch.exit_code != 0


def test_create_admin_refuses_a_short_password(migrated: Path) -> None:
    args = ["server", "create-admin", "--data-dir", str(migrated), "--username", "weak"]
    assert "12 characters" in failed_in_process(5, *args, "--password-stdin", input="short\n")
    assert "no password" in failed_in_process(2, *args, "--password-stdin", input="")


# ----------------------------------------------------------------------------- user
def in_process(*args: str, input: str | None = None) -> Any:
    """Run ``coherency ARGS... --json`` in-process; check it succeeded; its output."""
    result = CliRunner().invoke(cli, [*args, "--json"], input=input)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_user_first_aid_for_a_staff_account(migrated: Path) -> None:
    base = ["server", "user", "--data-dir", str(migrated), "--username", "aid-admin"]
    created = in_process(
        "server", "create-admin", "--data-dir", str(migrated), "--username", "aid-admin",
        "--password-stdin", input=PASSWORD + "\n",
    )  # fmt: skip
    reset = in_process(*base[:2], "reset-totp", *base[2:])
    assert reset["user_id"] == created["user_id"] and reset["action"] == "reset-totp"
    assert reset["totp_secret"] not in (None, created["totp_secret"])
    assert reset["totp_uri"].startswith("otpauth://totp/")
    assert in_process(*base[:2], "deactivate", *base[2:])["active"] is False
    assert in_process(*base[:2], "reactivate", *base[2:])["active"] is True
    assert in_process(*base[:2], "unlock", *base[2:])["count"] == 0
    assert in_process(*base[:2], "revoke-sessions", *base[2:])["count"] == 0
    db = database(migrated)
    try:
        with db.read() as session:
            actions = session.scalars(
                select(AuditEvent.action).where(AuditEvent.target == created["user_id"])
            ).all()
    finally:
        db.dispose()
    assert list(actions) == [
        "user-create",
        "user-totp-reset",
        "user-deactivate",
        "user-reactivate",
        "user-unlock",
        "user-sessions-revoke",
    ]
    unknown = ["server", "user", "unlock", "--data-dir", str(migrated), "--username", "nobody"]
    assert "no such user" in failed_in_process(4, *unknown)


# --------------------------------------------------------------------- enroll-token
def test_enroll_token_creates_the_clinic_once(migrated: Path) -> None:
    args = ["server", "enroll-token", "--data-dir", str(migrated), "--clinic", "North Ward"]
    before = datetime.now(UTC)
    first = ok(*args)
    second = ok(*args, "--ttl", "2h")
    assert first["clinic_id"] == second["clinic_id"]
    assert first["clinic_name"] == "North Ward"
    assert first["token"] != second["token"]
    # The default lifetime is a day; --ttl 2h gives two hours.
    first_lifetime = datetime.fromisoformat(first["expires_at"]) - before
    second_lifetime = datetime.fromisoformat(second["expires_at"]) - before
    assert timedelta(hours=23, minutes=59) < first_lifetime < timedelta(hours=24, minutes=1)
    assert timedelta(hours=1, minutes=59) < second_lifetime < timedelta(hours=2, minutes=1)

    db = database(migrated)
    try:
        with db.read() as session:
            clinics = session.scalars(select(Clinic).where(Clinic.name == "North Ward")).all()
            assert [c.id for c in clinics] == [first["clinic_id"]]
            by_hash = EnrolmentToken.token_hash == hash_token(first["token"])
            stored = session.scalars(select(EnrolmentToken).where(by_hash)).one()
            assert stored.id == first["token_id"]
            assert stored.clinic_id == first["clinic_id"]
            assert stored.used_at is None
    finally:
        db.dispose()

    human = CliRunner().invoke(
        cli, ["server", "enroll-token", "--data-dir", str(migrated), "--clinic", "South"]
    )
    assert human.exit_code == 0, human.output
    assert "clinic South" in human.stdout
    token_line = human.stdout.splitlines()[-1]
    assert len(token_line) >= 40 and " " not in token_line


def test_enroll_token_for_an_edge_box(migrated: Path) -> None:
    args = ["server", "enroll-token", "--data-dir", str(migrated), "--clinic", "Edge Ward"]
    edge, plain = ok(*args, "--edge"), ok(*args)
    assert edge["kind"] == "edge" and plain["kind"] == "device"
    db = database(migrated)
    try:
        with db.read() as session:
            kinds = {
                row.id: row.kind
                for row in session.scalars(
                    select(EnrolmentToken).where(
                        EnrolmentToken.id.in_([edge["token_id"], plain["token_id"]])
                    )
                )
            }
    finally:
        db.dispose()
    assert kinds == {edge["token_id"]: "edge", plain["token_id"]: "device"}
    human = CliRunner().invoke(cli, [*args, "--edge"])
    assert human.exit_code == 0, human.output
    assert "edge box enrolment token" in human.stdout


def test_enroll_token_errors_are_one_line(migrated: Path, tmp_path: Path) -> None:
    absent = tmp_path / "absent"
    nowhere = coherency("server", "enroll-token", "--data-dir", str(absent), "--clinic", "X")
    assert "coherency server migrate" in failed(nowhere, 4)
    assert not (absent / "server.db").exists()
    args = ["server", "enroll-token", "--data-dir", str(migrated), "--clinic", "X"]
    assert "--ttl" in failed_in_process(2, *args, "--ttl", "soon")
    assert "30 days" in failed_in_process(2, *args, "--ttl", "365d")


# ------------------------------------------------------------------------------ run
class Running:
    """A `coherency server run` subprocess."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cli.main",
                "server",
                "run",
                "--port",
                str(self.port),
                "--json",
                *args,
            ],
            env=env or environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def wait_until_up(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                out, err = self.process.communicate()
                raise AssertionError(f"server exited {self.process.returncode}:\n{out}\n{err}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("server did not answer /healthz in time")
            time.sleep(0.1)

    def stop(self) -> tuple[int, str, str]:
        """SIGTERM, then wait: (exit status, stdout, stderr)."""
        self.process.send_signal(signal.SIGTERM)
        try:
            out, err = self.process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, err = self.process.communicate()
            raise AssertionError(f"server ignored SIGTERM:\n{err}") from None
        return self.process.returncode, out, err

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


@pytest.fixture
def running() -> Iterator[list[Running]]:
    """Servers a test starts; any still running at the end are killed."""
    started: list[Running] = []
    yield started
    for server in started:
        server.kill()


def check_serving(server: Running) -> None:
    server.wait_until_up()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["failing"] == []
        echoed = client.get("/healthz", headers={"X-Request-ID": "cli-run-1"})
        assert echoed.headers["x-request-id"] == "cli-run-1"
        assert "coherency_http_requests_total" in client.get("/metrics").text


def check_json_logs(stderr: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in stderr.splitlines()]
    assert lines, "no log lines"
    assert all({"level", "logger", "message", "time"} <= set(line) for line in lines)
    return lines


def test_run_serves_until_sigterm(tmp_path: Path, running: list[Running]) -> None:
    server = Running("--data-dir", str(tmp_path / "server"))
    running.append(server)
    check_serving(server)
    status, out, err = server.stop()
    assert status == 0, err
    start = json.loads(out)
    assert start["url"] == server.url
    assert start["revision"] == head_revision()
    assert start["migrated"] is True
    assert start["workers"] == 1
    logs = check_json_logs(err)
    assert any(line["message"] == "Application shutdown complete." for line in logs)
    assert "Traceback" not in err


def test_run_without_migrating_refuses_an_empty_database(tmp_path: Path) -> None:
    data_dir = tmp_path / "server"
    data_dir.mkdir()
    done = coherency("server", "run", "--data-dir", str(data_dir), "--no-migrate")
    assert "coherency server migrate" in failed(done, 4)


def test_run_on_a_busy_port_is_one_line(migrated: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = coherency("server", "run", "--data-dir", str(migrated), "--port", str(port))
    assert f"cannot listen on 127.0.0.1:{port}" in failed(done, 1)


@pytest.fixture
def fresh_postgres() -> Iterator[str]:
    """A new, empty PostgreSQL database, dropped afterwards."""
    name = f"coherency_cli_{os.getpid()}_{secrets.token_hex(3)}"
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        if REQUIRE_POSTGRES:
            pytest.fail(f"PostgreSQL is required (COHERENCY_REQUIRE_POSTGRES=1): {exc}")
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
            yield f"{base}/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.slow
def test_run_postgres_with_two_workers(
    tmp_path: Path, fresh_postgres: str, running: list[Running]
) -> None:
    server = Running(
        "--data-dir",
        str(tmp_path / "server"),
        "--database-url",
        fresh_postgres,
        "--workers",
        "2",
    )
    running.append(server)
    check_serving(server)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for _ in range(6):  # whichever worker answers, it is ready
            assert client.get("/readyz").status_code == 200
    status, out, err = server.stop()
    assert status == 0, err
    assert json.loads(out)["workers"] == 2
    logs = check_json_logs(err)
    workers = {line["message"] for line in logs if line["message"].startswith("Started server")}
    assert len(workers) == 2, workers  # two worker processes, each with its own pid
    assert "Traceback" not in err


# ------------------------------------------------------------------ payments refund
def test_payments_refund_gives_back_once_per_key_and_never_too_much(migrated: Path) -> None:
    from sync_server.identity.tenancy import ensure_clinic
    from sync_server.payments.charging import pay
    from sync_server.payments.desk import make_payments
    from sync_server.payments.invoices import Charge, bill
    from sync_server.payments.ledger import verify_ledger
    from sync_server.payments.sandbox import SandboxGateway
    from sync_server.payments.tables import Refund

    settings = Settings(data_dir=migrated)
    now = datetime.now(UTC)
    db = database(migrated)
    try:
        with db.write() as session:
            clinic = ensure_clinic(session=session, name=f"refunds-{secrets.token_hex(3)}")
            invoice = bill(
                session=session,
                organisation_id=clinic.organisation_id,
                clinic_id=clinic.id,
                patient_id="patient-refund-cli",
                charges=[Charge("order", "order-cli", "Foam dressing 10x10 cm", 2, 2450, "EUR")],
                now=now,
            )
            paid = pay(
                session=session,
                payments=make_payments(settings),
                organisation_id=clinic.organisation_id,
                invoice_id=invoice.id,
                amount=4900,
                currency="EUR",
                payment_method="tok_success",
                idempotency_key=f"pay-{secrets.token_hex(4)}",
                now=now,
            )
            payment_id, organisation_id = paid.payment.id, clinic.organisation_id
        assert paid.payment.status == "succeeded"
        key = f"refund-{secrets.token_hex(4)}"
        refund = ("payments", "refund", payment_id, "--data-dir", str(migrated))
        first = ok(*refund, "--amount", "1200", "--idempotency-key", key, "--reason", "damaged")
        again = ok(*refund, "--amount", "1200", "--idempotency-key", key)
        assert first == again  # the retry answers the first refund
        assert (first["amount"], first["status"]) == (1200, "succeeded")
        error = failed(coherency(*refund, "--amount", "3701"), 5)
        assert "3,700" in error or "37.00" in error, error  # says what is left
        rest = ok(*refund, "--amount", "3700")
        assert rest["idempotency_key"].startswith("cli-refund-")  # a fresh key, shown
        failed(
            coherency(
                "payments",
                "refund",
                "no-such-payment",
                "--amount",
                "1",
                "--data-dir",
                str(migrated),
            ),
            4,
        )
        with db.read() as session:
            refunds = session.scalars(select(Refund).where(Refund.payment_id == payment_id))
            assert sorted(r.amount for r in refunds) == [1200, 3700]
            assert verify_ledger(session=session, organisation_id=organisation_id) == []
        gateway = make_payments(settings).gateway
        assert isinstance(gateway, SandboxGateway)
        given_back = [
            r["amount"]
            for r in gateway.refunds()
            if r["charge_id"] == paid.payment.gateway_charge_id
        ]
        assert sorted(given_back) == [1200, 3700]  # the gateway's own record agrees
    finally:
        db.dispose()
