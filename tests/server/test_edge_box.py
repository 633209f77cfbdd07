"""Device ↔ edge box ↔ central on loopback, SQLite and PostgreSQL.

The box runs for real (`BoxService`: HTTPS with its self-signed certificate, the relay
thread), enrolled through an uplink the test cuts and restores; the tablets are real
SDK stores that reach the box with the certificate central pinned for them.
"""

from __future__ import annotations

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
