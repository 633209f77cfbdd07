"""The central-server half of `coherency demo`: its report, its clean-up, and the command.

The demo runs its own server (embedded SQLite and blobs in a temp folder, real uvicorn
on loopback), so these tests do not use the shared `server` fixture.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from cli.demo import DEMO_PASSPHRASE, DemoFailedError
from cli.demo._central import answers
from cli.demo.edge import LAKESIDE, run_edge_demo
from cli.demo.server import HILLSIDE, RIVERSIDE, _Scenario, run_server_demo
from cli.main import cli
from edge_box import EdgeBox
from edge_sdk import Argon2Params, EdgeClient, PassphraseKeyProvider
from sync_server import Settings, document_heads
from sync_server.db import Database
from sync_server.identity.tables import Clinic, Device
from sync_server.payments.tables import Payment

# Each test runs the demo's server (and most the whole demo): many seconds each.
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def demo_server_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "coherency-demo-server"]


def test_the_server_demo_syncs_converges_and_keeps_clinics_apart(tmp_path: Path) -> None:
    lines: list[str] = []
    report = run_server_demo(tmp_path, say=lines.append)

    assert lines == report.steps and len(lines) >= 15
    assert report.server_url.startswith("http://127.0.0.1:")
    assert not answers(report.server_url)  # stopped at the end
    assert not demo_server_threads()
    assert report.data_dir == tmp_path / "server"
    assert (report.data_dir / "server.db").is_file()
    assert report.database.startswith("sqlite:///")
    assert set(report.clinics) == {RIVERSIDE, HILLSIDE}
    assert report.records_on_server == {RIVERSIDE: 3, HILLSIDE: 1}
    # The scan travelled: uploaded by the ward tablet, fetched by the home-visit tablet.
    assert report.scan_fetched and report.scan_bytes == 32 * 1024
    assert re.fullmatch(r"[0-9a-f]{64}", report.scan_sha256)
    uploads = [s for s in report.syncs if s.blobs_uploaded]
    downloads = [s for s in report.syncs if s.blobs_downloaded]
    assert [s.tablet for s in uploads] == ["riverside-ward"]
    assert [s.tablet for s in downloads] == ["riverside-home-visit"]
    # The waiting tablet was woken by the push, long before its 10 s wait ran out.
    assert report.long_poll_wake_seconds is not None
    assert 0 < report.long_poll_wake_seconds < 5
    long_polls = {s.tablet: s for s in report.syncs if s.what == "long poll"}
    assert long_polls["riverside-home-visit"].pulled == 3
    assert long_polls["hillside"].pulled == 0 and long_polls["hillside"].seconds >= 1.4
    assert report.converged_rounds == 2
    assert report.other_clinic_received == 0
    assert all(s.pulled == 0 for s in report.syncs if s.tablet == "hillside")
    assert all(s.seconds > 0 for s in report.syncs)
    refusals = "\n".join(report.refusals)
    assert "already used" in refusals
    assert f"record belongs to clinic {report.clinics[RIVERSIDE]}" in refusals
    assert "blob_not_found" in refusals and "staff_only" in refusals
    assert report.seconds > 0  # speed is for benchmarks, not tests

    # The server's database outlives it: three devices, in the clinics they enrolled in.
    database = Database(f"sqlite:///{report.data_dir / 'server.db'}")
    try:
        with database.read() as session:
            devices = {d.id: d.clinic_id for d in session.query(Device)}
    finally:
        database.dispose()
    berlin = report.bookings["clinic_id"]
    assert devices == {
        report.devices["riverside-ward"]: report.clinics[RIVERSIDE],
        report.devices["riverside-home-visit"]: report.clinics[RIVERSIDE],
        report.devices["hillside"]: report.clinics[HILLSIDE],
        report.devices["berlin-a"]: berlin,
        report.devices["berlin-b"]: berlin,
    }
    # Bookings: one tablet got the slot, the other the reason and an alternative.
    bookings = report.bookings
    assert (bookings["winner"], bookings["loser"]) == ("accepted", "rejected")
    assert bookings["provider"] in bookings["reason"]
    assert bookings["alternative"]["starts_at"] != bookings["slot"]
    assert bookings["visit"] in ("accepted", "accepted_alternative") and bookings["caregiver"]
    # Supplies: refused without a prescription, picked first expiry first (never the
    # expired lot), paid once through a gateway timeout, part refunded, ledger balanced.
    supplies = report.supplies
    assert "needs a prescription" in supplies["refused"]
    assert supplies["lots"] == ["F10-BER", "F10-A"] and supplies["expired_lots"] == ["F10-EXPIRED"]
    assert supplies["ledger_problems"] == [] and supplies["paid"] > supplies["refunded"] > 0
    # The audit log verified, an edited row was caught, and the demo put it back: the
    # command line agrees afterwards.
    audit = report.audit
    assert audit["events"] > 20 and audit["checkpoints"] >= 1 and audit["restored_ok"]
    assert 0 < audit["witness_size"] <= audit["events"]
    assert audit["tablet_events"] > 0 and audit["tablet_checkpoints"] > 0
    assert audit["witnessed"] == 1 + audit["tablet_checkpoints"]
    edited = f"event {audit['edited_seq']}: its contents no longer match its leaf hash"
    assert any(line.startswith(edited) for line in audit["caught"])
    verified = CliRunner().invoke(cli, ["audit", "verify", "--data-dir", str(report.data_dir)])
    assert verified.exit_code == 0, verified.output
    assert verified.output.rstrip().endswith(": verified")
    database = Database(f"sqlite:///{report.data_dir / 'server.db'}")
    try:
        with database.read() as session:
            [payment] = session.scalars(select(Payment))  # one payment, captured once
            assert (payment.status, payment.captured) == ("succeeded", supplies["paid"])
            assert payment.refunded == supplies["refunded"]
    finally:
        database.dispose()
    provider = PassphraseKeyProvider(DEMO_PASSPHRASE, params=Argon2Params.fast())
    with EdgeClient.open(report.stores["berlin-b"], provider) as tablet:
        [refused] = [s for s in tablet.list_intents("appointment") if s.state == "rejected"]
        assert refused.decision is not None and refused.decision.alternative is not None
    # So do the tablets' stores, with the converged records.
    provider = PassphraseKeyProvider(DEMO_PASSPHRASE, params=Argon2Params.fast())
    with EdgeClient.open(report.stores["riverside-home-visit"], provider) as home:
        [patient] = home.patients.list()
        assert patient.mrn == "RVS-000452-B" and len(patient.contacts) == 1
        assert home.blobs.exists(report.scan_sha256)
    with EdgeClient.open(report.stores["hillside"], provider) as hillside:
        assert [p.family_name for p in hillside.patients.list()] == ["Halvorsen-Demo"]


def test_the_server_demo_will_not_reuse_a_folder(tmp_path: Path) -> None:
    (tmp_path / "server").mkdir()
    (tmp_path / "server" / "server.db").write_bytes(b"someone's data")
    with pytest.raises(DemoFailedError, match="not empty"):
        run_server_demo(tmp_path)
    assert (tmp_path / "server" / "server.db").read_bytes() == b"someone's data"
    assert not (tmp_path / "online-tablets").exists()


class Interrupted(Exception):
    pass


def test_the_server_is_stopped_when_a_step_fails(tmp_path: Path) -> None:
    urls: list[str] = []

    def say(line: str) -> None:
        found = re.search(r"http://127\.0\.0\.1:\d+", line)
        if found:
            urls.append(found.group())
        if "tablets enrolled" in line:
            assert answers(urls[0])  # still serving mid-demo
            raise Interrupted

    with pytest.raises(Interrupted):
        run_server_demo(tmp_path, say=say)
    assert urls and not answers(urls[0])
    assert not demo_server_threads()


def test_a_failure_while_long_polls_wait_still_cleans_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fault injection: the ward tablet's sync fails while two tablets long-poll.
    real_sync = _Scenario._sync

    def failing_sync(self: _Scenario, client: Any, tablet: str, what: str, *args: Any) -> Any:
        if what == "records and scan":
            raise Interrupted
        return real_sync(self, client, tablet, what, *args)

    monkeypatch.setattr(_Scenario, "_sync", failing_sync)
    lines: list[str] = []
    with pytest.raises(Interrupted):
        run_server_demo(tmp_path, say=lines.append)
    # The server stopped first and cut the waiting polls; nothing of the demo is left.
    url = re.search(r"http://127\.0\.0\.1:\d+", lines[0])
    assert url is not None and not answers(url.group())
    assert not demo_server_threads()
    assert not [t for t in threading.enumerate() if t.name.startswith("demo-long-poll")]


def test_the_edge_demo_keeps_the_clinic_syncing_while_central_is_down(tmp_path: Path) -> None:
    lines: list[str] = []
    report = run_edge_demo(tmp_path, say=lines.append)

    assert lines == report.steps and len(lines) == 7
    assert report.central_url.startswith("http://127.0.0.1:")
    assert report.box_url.startswith("https://127.0.0.1:")
    assert not answers(report.central_url) and not answers(report.box_url)  # both stopped
    assert not [t for t in threading.enumerate() if t.name == "edge-relay"]
    assert report.central_dir == tmp_path / "edge-central"
    assert report.box_dir == tmp_path / "edge-box" and report.key_file == tmp_path / "edge-box.key"
    assert re.fullmatch(r"[0-9a-f]{64}", report.fingerprint)
    assert report.fingerprint in lines[1]  # said when the box enrolled
    assert "central stopped" in lines[3] and report.central_url in lines[3]
    assert "the box holds 4 records for central" in lines[4]
    assert "by itself" in lines[5] and "head for head" in lines[5]
    assert report.backlog == 4 and report.records_delivered == 4
    assert report.converged_documents == 4
    assert report.catch_up_seconds > 0  # timed by the demo; speed is the benchmark's
    assert set(report.devices) == set(report.records) == {"lakeside-a", "lakeside-b"}
    assert report.seconds > 0

    # The box's store outlives it: enrolled in Lakeside, nothing left for central, the
    # records it relayed, with the heads central holds.
    written = {i for ids in report.records.values() for i in ids}
    with EdgeBox.open(report.box_dir, report.key_file) as box:
        assert box.box_id == report.box_id and box.fingerprint == report.fingerprint
        assert box.clinic_id == report.clinic_id
        status = box.status()
        assert status.upstream_documents == 0 and not status.last_error
        assert {d.device_id for d in status.devices} == set(report.devices.values())
        box_heads = box.replica.document_heads()
    settings = Settings(data_dir=report.central_dir)
    central = document_heads(settings, clinic_id=report.clinic_id)
    assert set(central) == written
    assert {k: sorted(v) for k, v in box_heads.items()} == central
    database = Database(f"sqlite:///{report.central_dir / 'server.db'}")
    try:
        with database.read() as session:
            kinds = {d.id: d.kind for d in session.query(Device)}
            clinic = session.get(Clinic, report.clinic_id)
            assert clinic is not None and clinic.name == LAKESIDE
    finally:
        database.dispose()
    assert kinds == {report.box_id: "edge", **dict.fromkeys(report.devices.values(), "device")}
    # Each tablet holds both tablets' patients, in the converged form.
    provider = PassphraseKeyProvider(DEMO_PASSPHRASE, params=Argon2Params.fast())
    for name, store in report.stores.items():
        with EdgeClient.open(store, provider) as tablet:
            assert tablet.device_id == report.devices[name]
            names = sorted(p.family_name for p in tablet.patients.list())
            assert names == ["Laine-Demo", "Yusuf-Demo"]
            assert {k: sorted(v) for k, v in tablet.replica.document_heads().items()} == central


def test_the_edge_demo_will_not_reuse_a_folder(tmp_path: Path) -> None:
    (tmp_path / "edge-box.key").write_bytes(b"someone's key")
    with pytest.raises(DemoFailedError, match="exists"):
        run_edge_demo(tmp_path)
    assert (tmp_path / "edge-box.key").read_bytes() == b"someone's key"
    assert not (tmp_path / "edge-central").exists() and not (tmp_path / "edge-box").exists()


def test_the_box_and_central_are_stopped_when_an_edge_step_fails(tmp_path: Path) -> None:
    urls: list[str] = []

    def say(line: str) -> None:
        urls.extend(re.findall(r"https?://127\.0\.0\.1:\d+", line))
        if line.startswith("2 tablets enrolled"):
            assert all(answers(url) for url in urls)  # central and the box, mid-demo
            raise Interrupted

    with pytest.raises(Interrupted):
        run_edge_demo(tmp_path, say=say)
    assert len(set(urls)) == 2 and not any(answers(url) for url in urls)
    assert not [t for t in threading.enumerate() if t.name == "edge-relay"]


def test_coherency_demo_prints_both_parts(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["demo", "--workdir", str(tmp_path / "demo")])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "no plaintext patient name anywhere" in out  # the bundle part
    assert "\n\ncentral sync server up on embedded defaults at http://127.0.0.1:" in out
    assert "Hillside tablet synced again: received none of Riverside's 3 records" in out
    assert "sync server stopped" in out
    # The edge part, after the server part.
    assert out.index("sync server stopped") < out.index("clinic 'Lakeside' and a one-time edge")
    assert "the box's relay delivered its 4 records by itself" in out
    assert "edge box and central stopped" in out
    assert re.search(r"\n\nedge box [0-9a-f]{8}: 4 records written while central was down", out)
    assert re.search(r"\n\ndemo finished in [\d.]+ s; everything is in .*demo\n$", out)
    assert '"logger"' not in out and "INFO" not in out  # no log lines in the demo


def test_coherency_demo_json_has_both_reports(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "demo", "--workdir", str(workdir), "--json"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # quiet: no access lines, no warnings
    report = json.loads(done.stdout)
    assert report["workdir"] == str(workdir)
    assert len(report["steps"]) >= 5  # the offline bundle part
    assert report["server_skipped"] is None
    server = report["server"]
    assert server["data_dir"] == str(workdir / "server")
    assert server["server_url"].startswith("http://127.0.0.1:")
    assert server["converged_rounds"] == 2
    assert server["scan_fetched"] is True
    assert server["other_clinic_received"] == 0
    assert server["records_on_server"] == {RIVERSIDE: 3, HILLSIDE: 1}
    assert len(server["refusals"]) == 4
    assert {s["tablet"] for s in server["syncs"]} == {
        "riverside-ward",
        "riverside-home-visit",
        "hillside",
        "berlin-a",
        "berlin-b",
    }
    assert (server["bookings"]["winner"], server["bookings"]["loser"]) == (
        "accepted",
        "rejected",
    )
    assert all(isinstance(s["seconds"], float) for s in server["syncs"])
    assert report["edge_skipped"] is None
    edge = report["edge"]
    assert edge["box_dir"] == str(workdir / "edge-box")
    assert edge["central_dir"] == str(workdir / "edge-central")
    assert re.fullmatch(r"[0-9a-f]{64}", edge["fingerprint"])
    assert edge["records_delivered"] == edge["backlog"] == 4
    assert isinstance(edge["catch_up_seconds"], float) and edge["catch_up_seconds"] > 0
    assert len(edge["steps"]) == 7
    assert 0 < report["seconds"] < 60


def test_coherency_demo_skips_the_server_part_without_the_extra(tmp_path: Path) -> None:
    # As on a device-only install: FastAPI cannot be imported.
    script = (
        "import sys; sys.modules['fastapi'] = None; "
        "from cli.main import main; "
        f"sys.argv = ['coherency', 'demo', '--workdir', {str(tmp_path / 'demo')!r}, '--json']; "
        "main()"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert len(report["steps"]) >= 5
    assert report["server"] is None
    assert "fastapi" in report["server_skipped"] and "coherency[server]" in report["server_skipped"]
    assert not (tmp_path / "demo" / "server").exists()
    assert report["edge"] is None
    assert "fastapi" in report["edge_skipped"] and "coherency[edge]" in report["edge_skipped"]
    assert not (tmp_path / "demo" / "edge-box").exists()


def test_the_edge_part_is_skipped_without_zeroconf() -> None:
    # As on a server install without the [edge] extra: the box's discovery is missing.
    script = (
        "import sys; sys.modules['zeroconf'] = None; "
        "from cli._extras import missing_extra; "
        "print(missing_extra('server')); print(missing_extra('edge'))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "None",
        "needs the [edge] extra (zeroconf is missing): pip install 'coherency[edge]'",
    ]
