"""Device ↔ edge box ↔ central on loopback, SQLite and PostgreSQL.

The box runs for real (`BoxService`: HTTPS with its self-signed certificate, the relay
thread), enrolled through an uplink the test cuts and restores; the tablets are real
SDK stores that reach the box with the certificate central pinned for them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest

from crdt import DecisionStatus
from edge_box import BoxService, EdgeBox
from edge_sdk import DeviceRevokedError, EdgeClient, UntrustedEdgeBoxError
from sync_server.identity.devices import revoke_device
from sync_server.sync.tables import Document

from .bookings_world import BookingWorld, build_world, local
from .edge_world import Clinic, clinic_with_box, token, until


@pytest.fixture
def world(server: Any) -> Iterator[BookingWorld]:
    built = build_world(server)
    built.publish()
    yield built
    built.close()


@pytest.fixture
def clinic(server: Any, world: BookingWorld, tmp_path: Path) -> Iterator[Clinic]:
    with clinic_with_box(server, tmp_path, clinic_id=world.clinic_id) as made:
        yield made


def central_heads(server: Any, clinic_id: str) -> dict[str, int]:
    """How many documents central holds for the clinic, by collection."""
    with server.db.read() as session:
        rows = session.query(Document.collection).filter(Document.clinic_id == clinic_id).all()
    counts: dict[str, int] = {}
    for (collection,) in rows:
        counts[collection] = counts.get(collection, 0) + 1
    return counts


def test_two_tablets_work_through_the_box_while_central_is_away(
    clinic: Clinic, world: BookingWorld, server: Any
) -> None:
    box = clinic.box
    until(lambda: clinic.service.relay.rounds > 0, what="the box's first round with central")
    a, b = clinic.tablet("ward-a"), clinic.tablet("ward-b")
    assert [pin.box_id for pin in a.replica.edge_boxes] == [box.box_id]
    clinic.via_box(a)  # reference data (slots) from the box
    clinic.via_box(b)
    assert a.bookings.free_slots(day=world.monday, service=world.review)

    clinic.uplink.cut()  # the clinic's uplink goes down
    nine = local(world.monday, 9)
    ada = a.patients.add(given_name="Ada", family_name="Ames", birth_date=date(1950, 1, 1)).id
    bo = b.patients.add(given_name="Bo", family_name="Brook", birth_date=date(1960, 1, 1)).id
    mine = a.bookings.request_appointment(ada, world.review, nine, provider_id=world.doctors[0])
    theirs = b.bookings.request_appointment(bo, world.review, nine, provider_id=world.doctors[0])
    pushed_a = clinic.via_box(a)
    pushed_b = clinic.via_box(b)
    assert ada in pushed_a.pushed and bo in pushed_b.pushed
    clinic.via_box(a)
    # Each sees the other's records through the box; the intents wait there.
    assert a.patients.get(bo).family_name == "Brook"
    assert b.patients.get(ada).family_name == "Ames"
    assert a.intent_status(mine.id).state == "pending"
    status = box.status()
    assert status.upstream_intents == 2 and status.upstream_documents >= 4
    assert {d.device_id for d in status.devices} == {a.device_id, b.device_id}
    assert central_heads(server, clinic.clinic_id).get("patients", 0) == 0

    clinic.uplink.restore()  # the uplink comes back: the box catches up by itself
    until(lambda: box.status().upstream_documents == 0, what="the box's catch-up")
    until(
        lambda: central_heads(server, clinic.clinic_id).get("decisions", 0) >= 2,
        what="central's decisions",
    )
    until(
        lambda: len(box.replica.store.query_records("decisions", [], [])) >= 2,
        what="the decisions to reach the box",
    )
    clinic.via_box(a)
    clinic.via_box(b)
    states = {a.intent_status(mine.id).state, b.intent_status(theirs.id).state}
    assert states == {DecisionStatus.ACCEPTED.value, DecisionStatus.REJECTED.value}

    # Every replica converged: the tablets, the box, and central (seen by a tablet
    # that syncs with central directly).
    witness = clinic.tablet("witness")
    witness.sync()
    clinic.via_box(a)
    clinic.via_box(b)
    heads = a.replica.document_heads()
    assert b.replica.document_heads() == heads
    assert box.replica.document_heads() == heads
    assert witness.replica.document_heads() == heads
    assert witness.patients.get(ada).family_name == "Ames"

    # Each intent was decided exactly once, however it travelled.
    with server.db.read() as session:
        from sync_server.intents.tables import IntentDecision

        decided = (
            session.query(IntentDecision.intent_id)
            .filter(IntentDecision.intent_id.in_([mine.id, theirs.id]))
            .all()
        )
    assert sorted(i for (i,) in decided) == sorted([mine.id, theirs.id])


def test_a_tablet_switching_between_box_and_central_loses_and_duplicates_nothing(
    clinic: Clinic, server: Any
) -> None:
    a = clinic.tablet("ward-a")
    clinic.relay_now()  # the box hears of the new tablet before the uplink goes
    clinic.uplink.cut()
    first = [
        a.patients.add(given_name="P", family_name=f"F{n}", birth_date="1950-01-01").id
        for n in range(30)
    ]
    clinic.via_box(a)
    more = [
        a.patients.add(given_name="Q", family_name=f"G{n}", birth_date="1950-01-01").id
        for n in range(10)
    ]
    a.sync()  # now straight to central, with the box still cut off
    assert central_heads(server, clinic.clinic_id)["patients"] == 40
    a.patients.update(first[0], family_name="Changed")
    clinic.via_box(a)
    clinic.uplink.restore()
    until(lambda: clinic.box.status().upstream_documents == 0, what="the box's catch-up")
    a.sync()
    clinic.via_box(a)
    assert central_heads(server, clinic.clinic_id)["patients"] == 40
    witness = clinic.tablet("witness")
    witness.sync()
    assert witness.patients.get(first[0]).family_name == "Changed"
    assert {p.id for p in witness.patients.list()} == set(first + more)
    assert witness.replica.document_heads() == a.replica.document_heads()
    # Each feed kept its own cursor: the device resumed where it stood with each.
    assert a.replica.cursor(f"edge:{clinic.box.box_id}") > 0
    assert a.replica.cursor(_server_peer(a)) > 0


def _server_peer(client: EdgeClient) -> str:
    enrollment = client.replica.enrollment
    assert enrollment is not None
    return "server:" + enrollment.server_public_key.hex()[:32]


def test_a_rogue_box_with_the_right_name_and_the_wrong_certificate_gets_nothing(
    clinic: Clinic, server: Any, tmp_path: Path
) -> None:
    a = clinic.tablet("ward-a")
    secret = a.patients.add(given_name="Secret", family_name="S", birth_date="1950-01-01").id
    # A machine on the LAN that serves the box API with a certificate of its own: a
    # box enrolled elsewhere (another clinic), posing as this clinic's box.
    other = server.new_clinic()
    rogue = EdgeBox.init(tmp_path / "rogue", tmp_path / "rogue.key")
    rogue.enroll(server.url, token(server, other, kind="edge"), name="rogue")
    with rogue, BoxService(rogue, relay=False) as service:
        with (
            pytest.raises(UntrustedEdgeBoxError),
            a.edge_transport(service.url, clinic.box.box_id) as transport,
        ):
            a.sync(transport=transport)
        assert rogue.status().devices == []  # no request reached it: no login, no push
        assert rogue.replica.store.get_document(secret) is None


def test_a_device_revoked_while_the_uplink_is_down_is_refused_once_the_box_learns_it(
    clinic: Clinic, server: Any
) -> None:
    a, b = clinic.tablet("ward-a"), clinic.tablet("ward-b")
    until(lambda: clinic.service.relay.rounds > 0, what="the box's first round")
    clinic.relay_now()
    clinic.via_box(b)
    clinic.uplink.cut()
    with server.db.write() as session:
        revoke_device(session=session, device_id=b.device_id)
    clinic.via_box(b)  # the box has not heard yet: it still serves b
    clinic.uplink.restore()
    clinic.relay_now()
    with pytest.raises(DeviceRevokedError):
        clinic.via_box(b)
    clinic.via_box(a)  # the others go on


def test_hostile_requests_get_clear_errors_and_change_nothing(clinic: Clinic) -> None:
    a = clinic.tablet("ward-a")
    clinic.via_box(a)
    before = clinic.box.feed_seq()
    verify = False  # the checks below are about answers, not about pinning
    with httpx.Client(base_url=clinic.service.url, verify=verify, timeout=30) as http:
        assert http.get("/v1/sync/pull").status_code == 401
        assert http.post("/v1/sync/push", content=b"x").status_code == 401
        bad = http.get("/v1/sync/pull", headers={"authorization": "Bearer nonsense"})
        assert bad.status_code == 401 and bad.json()["error"]["code"] == "invalid_token"
        login = http.post("/v1/auth/device", json={"device_id": a.device_id})
        assert login.status_code == 400
        assert http.post("/v1/auth/device", content=b"[").status_code == 400
    with a.edge_transport(clinic.service.url, clinic.box.box_id) as transport:
        http2 = transport
        for body in (b"", b"garbage", b"CHSY" + bytes(100)):
            answer = http2.request(
                "POST", "/v1/sync/push", content=body, headers={"content-type": "x"}
            )
            assert answer.status_code == 400, answer.text
            assert answer.json()["error"]["code"] == "bad_message"
        assert http2.request("GET", "/v1/sync/pull", params={"cursor": -1}).status_code == 400
        assert http2.request("GET", "/v1/sync/pull", params={"cursor": 10**9}).status_code == 409
        bad_blob = http2.request("POST", "/v1/blobs/uploads", json={"sha256": "x", "size": 3})
        assert bad_blob.status_code == 400
        assert http2.request("GET", "/v1/blobs/" + "0" * 64).status_code == 404
        events = http2.request("POST", "/v1/audit/device-events", json={"events": "no"})
        assert events.status_code == 400
    assert clinic.box.feed_seq() == before


def test_a_tablets_audit_chain_travels_through_the_box_to_central(clinic: Clinic) -> None:
    a = clinic.tablet("ward-a")
    clinic.relay_now()
    a.patients.add(given_name="Ada", family_name="Ames", birth_date="1950-01-01")
    # Central reachable: the box relays the chain at once; the tablet gets central's
    # own signed receipt, as if it had pushed there.
    direct = clinic.via_box(a)
    assert direct.audit_error is None and direct.audit_acknowledged
    clinic.uplink.cut()
    a.patients.add(given_name="Bo", family_name="Brook", birth_date="1950-01-01")
    held = clinic.via_box(a)
    assert held.audit_error is not None and "holds the audit chain" in held.audit_error
    assert clinic.box.status().upstream_audit_events > 0
    clinic.uplink.restore()
    clinic.relay_now()
    assert clinic.box.status().upstream_audit_events == 0
    # Central holds the whole chain: the tablet's own push continues it untroubled,
    # and its audit log verifies against what central signed.
    after = a.sync()
    assert after.audit_error is None
    assert a.verify_audit(server=True).ok


def test_the_command_line_syncs_through_the_box_and_shows_its_status(
    clinic: Clinic, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from cli.main import cli

    a = clinic.tablet("ward-a")
    clinic.relay_now()
    patient = a.patients.add(given_name="Ada", family_name="Ames", birth_date="1950-01-01").id
    store = a.replica.path
    a.close()
    clinic.tablets.remove(a)
    monkeypatch.setenv("COHERENCY_PASSPHRASE", "pass phrase")
    runner = CliRunner()
    synced = runner.invoke(
        cli, ["--store", str(store), "sync", "--edge", clinic.service.url, "--no-blobs", "--json"]
    )
    assert synced.exit_code == 0, synced.output
    assert patient in json.loads(synced.output)["pushed"]
    both = runner.invoke(cli, ["--store", str(store), "sync", "--edge", "auto", "--watch"])
    assert both.exit_code == 2 and "do not go together" in both.output

    folder = clinic.folder
    status = runner.invoke(
        cli,
        [
            "edge",
            "status",
            "--data-dir",
            str(folder / "box"),
            "--key-file",
            str(folder / "box.key"),
            "--json",
        ],
    )
    assert status.exit_code == 0, status.output
    shown = json.loads(status.output)
    assert shown["box_id"] == clinic.box.box_id
    assert [d["device_id"] for d in shown["devices"]] == [a.device_id]
    assert shown["devices"][0]["documents_pushed"] >= 1
    missing = runner.invoke(
        cli,
        [
            "edge",
            "status",
            "--data-dir",
            str(folder / "nowhere"),
            "--key-file",
            str(folder / "box.key"),
        ],
    )
    assert missing.exit_code == 4 and "no edge box here" in missing.output


def test_box_logins_are_signed_fresh_and_single_use(clinic: Clinic) -> None:
    import base64
    import secrets
    import time

    from crdt import device_login_message

    a = clinic.tablet("ward-a")
    clinic.relay_now()

    def login(device: str, issued_at: int, nonce: str, signer: Any = a.identity) -> Any:
        signature = signer.sign(device_login_message(device, issued_at, nonce))
        body = {
            "device_id": device,
            "issued_at": issued_at,
            "nonce": nonce,
            "signature": base64.b64encode(signature).decode(),
        }
        with httpx.Client(base_url=clinic.service.url, verify=False, timeout=30) as http:
            return http.post("/v1/auth/device", json=body)

    now, nonce = int(time.time()), secrets.token_hex(16)
    first = login(a.device_id, now, nonce)
    assert first.status_code == 200 and first.json()["refresh_token"] is None
    token = first.json()["access_token"]
    replay = login(a.device_id, now, nonce)
    assert replay.status_code == 401 and replay.json()["error"]["code"] == "replayed_assertion"
    stale = login(a.device_id, now - 3600, secrets.token_hex(16))
    assert stale.json()["error"]["code"] == "stale_assertion"
    b = clinic.tablet("ward-b")  # signs as a: a's key does not verify b's signature
    forged = login(a.device_id, now, secrets.token_hex(16), signer=b.identity)
    assert forged.json()["error"]["code"] == "bad_signature"
    stranger = login("00000000-0000-4000-8000-000000000000", now, secrets.token_hex(16))
    assert stranger.status_code == 401 and stranger.json()["error"]["code"] == "unknown_device"
    with httpx.Client(base_url=clinic.service.url, verify=False, timeout=30) as http:
        pulled = http.get("/v1/sync/pull", headers={"authorization": f"Bearer {token}"})
    assert pulled.status_code == 200


class _CutAfter:
    """A transport that loses the connection before its `n`-th blob chunk."""

    def __init__(self, inner: Any, n: int) -> None:
        self._inner, self._n, self.offsets = inner, n, []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def send_chunk(self, *, upload_id: str, offset: int, data: bytes) -> Any:
        from edge_sdk import ServerUnreachableError

        self.offsets.append(offset)
        if len(self.offsets) == self._n:
            raise ServerUnreachableError("the LAN dropped")
        return self._inner.send_chunk(upload_id=upload_id, offset=offset, data=data)


def test_a_scan_goes_through_the_box_resumably_and_on_to_central(clinic: Clinic) -> None:
    import hashlib
    import os
    from datetime import UTC, datetime

    from edge_sdk import ServerUnreachableError

    a, b = clinic.tablet("ward-a"), clinic.tablet("ward-b")
    clinic.relay_now()
    clinic.uplink.cut()
    scan = os.urandom(5 * 1024 * 1024 + 3)
    ref = a.blobs.put_bytes(scan)
    patient = a.patients.add(given_name="Ada", family_name="Ames", birth_date="1950-01-01").id
    wound = a.wounds.add(patient_id=patient, body_site="left heel")
    a.assessments.add(
        wound_id=wound.id,
        patient_id=patient,
        captured_at=datetime(2026, 1, 1, tzinfo=UTC),
        device_id=a.device_id,
        blobs=[{"sha256": ref.sha256, "size": ref.size, "kind": "point-cloud"}],
    )
    with a.edge_transport(clinic.service.url) as inner:
        cut = _CutAfter(inner, 2)
        with pytest.raises(ServerUnreachableError):
            a.sync(transport=cut)
        resumed = _CutAfter(inner, 0)
        result = a.sync(transport=resumed)
    assert result.blobs_uploaded == [ref.sha256]
    assert cut.offsets[0] == 0 and cut.offsets[1] > 0
    assert resumed.offsets[0] == cut.offsets[1]  # the box kept the first chunk
    through_box = clinic.via_box(b)  # another tablet gets the scan from the box
    assert through_box.blobs_downloaded == [ref.sha256]
    assert hashlib.sha256(b.blobs.read_bytes(ref.sha256)).hexdigest() == ref.sha256

    clinic.uplink.restore()
    clinic.relay_now()  # the box uploads it to central
    assert clinic.box.status().upstream_blobs == 0
    witness = clinic.tablet("witness")
    direct = witness.sync()
    assert direct.blobs_downloaded == [ref.sha256]
    assert witness.blobs.read_bytes(ref.sha256) == scan
