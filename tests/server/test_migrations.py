"""Migrations as operators run them: under a database lock, up and down with ``--to``,
``migrate current``, offline ``--sql``, and rolling upgrades (a server keeps serving a
newer schema that declares itself compatible, and the previous release serves ours).

Runs on SQLite and PostgreSQL (a fresh database per test, `empty_database`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from cli.main import cli
from sync_server import Conflict, Settings, create_app, migrate
from sync_server.db import Base, Database
from sync_server.migrating import (
    VERSION_TABLE,
    current_revision,
    head_revision,
    require_schema,
    schema_status,
)
from tests.server.test_server_cli import REPO, Running, environment, free_port
from tests.server.test_server_cli import running as running  # a fixture

PREVIOUS_RELEASE = "0b80910"  # the last landed stop; its schema head is 0010
PREVIOUS_HEAD = "0010_edge_boxes"
PASSPHRASE = "a long test passphrase"


def invoke(*args: str) -> Any:
    """``coherency ARGS... --json`` in-process; checks it succeeded."""
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def one_line_error(code: int, *args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == code, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def tables_and_versions(url: str) -> tuple[list[str], list[str], list[str]]:
    database = Database(url)
    try:
        with database.engine.connect() as conn:
            tables = sa.inspect(conn).get_table_names()
            ours = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars()
            legacy = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars()
            return tables, list(ours), list(legacy)
    finally:
        database.dispose()


# ------------------------------------------------------------------------- the lock
@pytest.mark.slow
def test_migrators_and_servers_started_at_once_leave_one_schema(
    empty_database: str, tmp_path: Path, running: list[Running]
) -> None:
    args = ["--data-dir", str(tmp_path / "server"), "--database-url", empty_database]
    command = [sys.executable, "-m", "cli.main", "server", "migrate", *args, "--json"]
    migrators = [
        subprocess.Popen(
            command, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    servers = [Running(*args) for _ in range(2)]
    running.extend(servers)
    results = []
    for migrator in migrators:
        out, err = migrator.communicate(timeout=120)
        assert migrator.returncode == 0, err
        assert err == ""  # no raw database error, no traceback
        results.append(json.loads(out))
    for server in servers:
        server.wait_until_up()
        ready = httpx.get(f"{server.url}/readyz", timeout=30)
        assert ready.status_code == 200, ready.text
    assert {r["revision"] for r in results} == {head_revision()}
    assert sum(r["changed"] for r in results) <= 1  # at most one of them migrated
    for server in servers:
        status, out, err = server.stop()
        assert status == 0, err
        assert json.loads(out)["revision"] == head_revision()
        assert "Traceback" not in err
    tables, ours, legacy = tables_and_versions(empty_database)
    assert sorted(tables) == sorted({*Base.metadata.tables, VERSION_TABLE})
    assert ours == [head_revision()]
    assert legacy == [PREVIOUS_HEAD]  # 0011 declares servers from 0010 on compatible


# ------------------------------------------------------------------- --to, current
def test_migrate_to_a_revision_down_and_up_again(empty_database: str, tmp_path: Path) -> None:
    args = ["--data-dir", str(tmp_path / "server"), "--database-url", empty_database]
    first = invoke("server", "migrate", *args, "--to", "0009")
    assert (first["previous_revision"], first["revision"]) == (None, "0009_audit_access")
    now = invoke("server", "migrate", "current", *args)
    assert now["revision"] == "0009_audit_access" and now["head"] == head_revision()
    assert now["servable"] is False and "older than" in now["reason"]
    up = invoke("server", "migrate", *args)
    assert (up["previous_revision"], up["revision"]) == ("0009_audit_access", head_revision())
    down = invoke("server", "migrate", *args, "--to", "0007")
    assert (down["previous_revision"], down["revision"]) == (head_revision(), "0007_audit_log")
    _, ours, legacy = tables_and_versions(empty_database)
    assert ours == legacy == ["0007_audit_log"]  # a release of that time serves it
    assert invoke("server", "migrate", *args)["revision"] == head_revision()
    now = invoke("server", "migrate", "current", *args)
    assert now["servable"] is True and now["oldest_servable"] == PREVIOUS_HEAD
    human = CliRunner().invoke(cli, ["server", "migrate", "current", *args])
    assert human.exit_code == 0 and "servable" in human.stdout


def test_migrate_refusals_are_one_line(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path / "server")]
    assert "unknown schema revision 'nope'" in one_line_error(
        2, "server", "migrate", *data, "--to", "nope"
    )
    assert "not to base" in one_line_error(2, "server", "migrate", *data, "--to", "base")
    assert "--from goes with --sql" in one_line_error(
        2, "server", "migrate", *data, "--from", "0010"
    )
    assert "coherency server migrate" in one_line_error(4, "server", "migrate", "current", *data)
    assert "SQLite's batch steps need the live database" in one_line_error(
        2, "server", "migrate", *data, "--sql"
    )
    assert not (tmp_path / "server" / "server.db").exists()


# --------------------------------------------------------------------------- --sql
def test_migrate_sql_prints_the_script_without_touching_a_database(tmp_path: Path) -> None:
    nowhere = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nothing"
    args = ["server", "migrate", "--data-dir", str(tmp_path / "s"), "--database-url", nowhere]
    script = invoke(*args, "--sql")["sql"]
    assert script.startswith("BEGIN;") and script.rstrip().endswith("COMMIT;")
    assert f"CREATE TABLE {VERSION_TABLE}" in script
    assert "CREATE TABLE edge_boxes" in script and "CREATE TABLE schema_compatibility" in script
    step = CliRunner().invoke(cli, [*args, "--sql", "--from", "0010"])
    assert step.exit_code == 0, step.output
    assert "CREATE TABLE edge_boxes" not in step.stdout
    assert f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE}" in step.stdout
    assert f"INSERT INTO {VERSION_TABLE} (version_num) SELECT '0010_edge_boxes'" in step.stdout
    assert "Running upgrade 0010_edge_boxes -> 0011_schema_compatibility" in step.stdout
    assert not (tmp_path / "s").exists()


def test_migrate_sql_script_builds_the_schema(empty_database: str, tmp_path: Path) -> None:
    args = ["--data-dir", str(tmp_path / "s"), "--database-url", empty_database]
    if empty_database.startswith("sqlite"):
        # SQLite's batch steps need the live database: the script covers 0010 -> head.
        invoke("server", "migrate", *args, "--to", "0010")
        script = invoke("server", "migrate", *args, "--sql", "--from", "0010")["sql"]
    else:
        script = invoke("server", "migrate", *args, "--sql")["sql"]
    database = Database(empty_database)
    try:
        with database.engine.connect() as conn:
            if database.sqlite:
                conn.connection.driver_connection.executescript(script)  # type: ignore[union-attr]
            else:
                conn.exec_driver_sql(script)
        assert current_revision(database) == head_revision()
    finally:
        database.dispose()
    assert invoke("server", "migrate", *args)["changed"] is False


# --------------------------------------------------------------- rolling upgrades
def _pretend_newer(url: str, revision: str, oldest: str | None) -> None:
    """Put the database at a revision this server does not ship, as a newer release's
    migration would (its compatibility row, if `oldest`)."""
    database = Database(url)
    try:
        with database.engine.begin() as conn:
            conn.execute(sa.text(f"UPDATE {VERSION_TABLE} SET version_num = :r"), {"r": revision})
            if oldest is not None:
                conn.execute(
                    sa.text("INSERT INTO schema_compatibility VALUES (:r, :o)"),
                    {"r": revision, "o": oldest},
                )
    finally:
        database.dispose()


def test_a_newer_compatible_schema_is_served_and_an_incompatible_one_is_not(
    empty_database: str, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path / "server", database_url=empty_database)
    migrate(settings)
    _pretend_newer(empty_database, "0012_expand", oldest=head_revision())
    app = create_app(settings)
    try:
        db = app.state.db
        status = schema_status(db)
        assert status.servable and status.revision == "0012_expand"
        assert require_schema(db) == "0012_expand"
        assert "declares compatible" in status.reason
        # `server run` migrates first: a newer schema it can serve is left as it is.
        again = migrate(settings)
        assert (again.previous_revision, again.revision) == ("0012_expand", "0012_expand")

        _pretend_newer(empty_database, "0013_contract", oldest="0013_contract")
        status = schema_status(db)
        assert not status.servable
        assert "needs servers from 0013_contract on" in status.reason
        with pytest.raises(Conflict, match="upgrade this server"):
            require_schema(db)
        with pytest.raises(Conflict, match="upgrade this server"):
            migrate(settings)
        _pretend_newer(empty_database, "0014_silent", oldest=None)
        assert "declares no compatibility" in schema_status(db).reason
    finally:
        app.state.db.dispose()


def test_readiness_says_why_a_newer_schema_is_served_or_not(
    empty_database: str, tmp_path: Path
) -> None:
    import asyncio

    from sync_server.ops.readiness import readiness

    settings = Settings(data_dir=tmp_path / "server", database_url=empty_database)
    migrate(settings)
    database = Database(empty_database)
    try:
        _pretend_newer(empty_database, "0012_expand", oldest=PREVIOUS_HEAD)
        checks = asyncio.run(readiness(db=database, blobs=None, feed=None))
        assert checks["schema"].status == "ok"
        assert checks["schema"].detail == (
            f"at 0012_expand, newer than {head_revision()}, which it declares compatible "
            f"(from {PREVIOUS_HEAD} on)"
        )
        _pretend_newer(empty_database, "0013_contract", oldest="0013_contract")
        checks = asyncio.run(readiness(db=database, blobs=None, feed=None))
        assert checks["schema"].status == "failed"
        assert checks["schema"].detail == (
            f"at 0013_contract, newer than {head_revision()}: it needs servers from "
            f"0013_contract on: this server ({head_revision()}) cannot serve it"
        )
    finally:
        database.dispose()


# ------------------------------------------------------- the previous release serves
def _previous_release(into: Path) -> Path:
    """The previous release's server, CLI and SDK, extracted from git."""
    archive = into / "release.tar"
    subprocess.run(
        [
            *("git", "-C", str(REPO), "archive", "-o", str(archive), PREVIOUS_RELEASE),
            *("sync_server", "crdt", "edge_sdk", "cli", "lidar_capture", "models"),
        ],
        check=True,
    )
    root = into / "release"
    with tarfile.open(archive) as tar:
        tar.extractall(root, filter="data")
    return root


class _PreviousServer(Running):
    """`coherency server run` of the previous release (its own code only: run from its
    folder, so the checkout is not on the path)."""

    def __init__(self, release: Path, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = environment()
        env["PYTHONPATH"] = str(release)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "server", "run", "--port", str(self.port), *args],
            cwd=release,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


def _device(tmp_path: Path, name: str, clinic_id: str, server_url: str, token: str) -> Path:
    store = tmp_path / name
    invoke("--store", str(store), "init", "--clinic", clinic_id)
    invoke("--store", str(store), "device", "enroll", "--server", server_url, "--token", token)
    return store


@pytest.mark.slow
def test_the_previous_release_serves_our_schema_beside_us(
    empty_database: str,
    tmp_path: Path,
    running: list[Running],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COHERENCY_KDF", "fast")
    monkeypatch.setenv("COHERENCY_PASSPHRASE", PASSPHRASE)
    release = _previous_release(tmp_path)
    data = ["--data-dir", str(tmp_path / "server"), "--database-url", empty_database]
    assert invoke("server", "migrate", *data)["revision"] == head_revision()

    old = _PreviousServer(release, "--json", *data)  # migrates first, as `server run` does
    running.append(old)
    ours = Running(*data)
    running.append(ours)
    for server in (old, ours):
        server.wait_until_up()
        ready = httpx.get(f"{server.url}/readyz", timeout=30)
        assert ready.status_code == 200, ready.text
    assert httpx.get(f"{old.url}/readyz").json()["checks"]["schema"]["detail"] == PREVIOUS_HEAD

    enrol = ["server", "enroll-token", *data, "--clinic", "Rolling Ward"]
    first, second = invoke(*enrol), invoke(*enrol)
    a = _device(tmp_path, "a", first["clinic_id"], old.url, first["token"])
    b = _device(tmp_path, "b", second["clinic_id"], ours.url, second["token"])
    patient = invoke(
        "--store",
        str(a),
        "patients",
        "add",
        "--given",
        "Ada",
        "--family",
        "Okafor",
        "--birth-date",
        "1950-01-02",
    )
    note = invoke("--store", str(a), "notes", "add", "--patient", patient["id"],
                  "--author", "RN Patel", "--text", "Offload heel.")  # fmt: skip
    # The previous release reads patients at record schema v1; this app writes v2
    # (emergency contacts, insurance): the old server refuses the patient, saying why,
    # and takes the note, whose schema both releases share.
    pushed = invoke("--store", str(a), "sync")
    assert pushed["pushed"] == [note["id"]]  # to the old one
    [refused] = pushed["refused_by_server"]
    assert refused["doc_id"] == patient["id"] and "update the server" in refused["reason"]
    assert invoke("--store", str(b), "sync")["pulled"] == [note["id"]]  # from ours
    edited = invoke("--store", str(b), "notes", "edit", note["id"], "--text", "Offload both.")
    assert edited["text"] == "Offload both."
    assert invoke("--store", str(b), "sync")["pushed"] == [note["id"]]  # to ours
    assert invoke("--store", str(a), "sync")["pulled"] == [note["id"]]  # from the old one
    assert invoke("--store", str(a), "notes", "show", note["id"])["text"] == "Offload both."

    for server, revision in ((old, PREVIOUS_HEAD), (ours, head_revision())):
        status, out, err = server.stop()
        assert status == 0, err
        assert json.loads(out)["revision"] == revision  # each ran its own code
    assert os.path.isdir(release / "sync_server")
