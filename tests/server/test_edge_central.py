"""The central server's side of a clinic edge box, on a live server (SQLite and
PostgreSQL): edge enrolment tokens, a box enrolling with its TLS certificate, the box
relaying its clinic's documents and audit chains like a device, the directory telling
devices the boxes' fingerprints and the clinic's revoked devices, and a box replacing
its certificate."""

from __future__ import annotations

import base64
import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import select

from crdt import GENESIS, Patient, RecordDocument, canonical_json, chain_hash
from edge_sdk import DeviceIdentity
from sync_server.audit.device_chains import device_chain
from sync_server.audit.tables import AuditEvent
from sync_server.edge.tables import EdgeBox
from sync_server.identity.tables import Device, EnrolmentToken

from .test_auth import Kit, error_code
from .test_sync_api import patient, pull, push


def make_certificate(
    *, not_before: datetime | None = None, not_after: datetime | None = None
) -> tuple[str, str]:
    """A self-signed certificate as a box makes one: (PEM, lowercase hex SHA-256 of DER)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "coherency-edge")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - timedelta(minutes=5))
        .not_valid_after(not_after or now + timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    der = certificate.public_bytes(Encoding.DER)
    return certificate.public_bytes(Encoding.PEM).decode(), hashlib.sha256(der).hexdigest()


@pytest.fixture
def kit(server: Any) -> Kit:
    return Kit(server)


def edge_token(kit: Kit, clinic_id: str) -> str:
    with kit.admin_client() as admin:
        r = admin.post("/v1/admin/enrolment-tokens", json={"clinic_id": clinic_id, "kind": "edge"})
    assert r.status_code == 201, r.text
    assert r.json()["kind"] == "edge"
    return str(r.json()["token"])


def enrolled_box(kit: Kit, clinic_id: str) -> tuple[DeviceIdentity, dict[str, Any], str]:
    """An edge box enrolled into the clinic: (identity, enrolment answer, fingerprint)."""
    pem, fingerprint = make_certificate()
    box = DeviceIdentity.generate()
    r = kit.enrol(edge_token(kit, clinic_id), box, tls_certificate=pem, name="clinic box")
    assert r.status_code == 201, r.text
    return box, r.json(), fingerprint


def directory(server: Any, token: str) -> dict[str, Any]:
    with server.http(token) as c:
        r = c.get("/v1/sync/directory")
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


# ---------------------------------------------------------------- enrolment
def test_an_edge_box_enrols_with_its_certificate(kit: Kit, server: Any) -> None:
    clinic = server.new_clinic()
    box, answer, fingerprint = enrolled_box(kit, clinic)
    assert answer["clinic_id"] == clinic and answer["device_id"] == box.device_id
    assert answer["edge_boxes"] == [
        {
            "box_id": box.device_id,
            "name": "clinic box",
            "fingerprint": fingerprint,
            "certificate": answer["edge_boxes"][0]["certificate"],
        }
    ]
    assert "BEGIN CERTIFICATE" in answer["edge_boxes"][0]["certificate"]
    with server.db.read() as session:
        row = session.get(EdgeBox, box.device_id)
        device = session.get(Device, box.device_id)
        token_kinds = session.scalars(
            select(EnrolmentToken.kind).where(EnrolmentToken.device_id == box.device_id)
        ).all()
    assert row is not None and row.fingerprint == fingerprint and row.clinic_id == clinic
    assert device is not None and device.kind == "edge"
    assert token_kinds == ["edge"]
    # The box's session works, and its role is edge (the access token says so too).
    assert kit.me(answer["access_token"]).status_code == 200
    claims = server.app.state.signing_key.verify_access_token(answer["access_token"])
    assert claims.role == "edge"
    # A device enrolling later in the clinic is told of the box.
    _, device_answer = kit.enrolled_device(clinic)
    assert [b["fingerprint"] for b in device_answer["edge_boxes"]] == [fingerprint]
    # The admin's device listing shows the kinds.
    with kit.admin_client() as admin:
        listed = admin.get("/v1/admin/devices", params={"clinic_id": clinic}).json()
    assert {d["id"]: d["kind"] for d in listed} == {
        box.device_id: "edge",
        device_answer["device_id"]: "device",
    }


def test_refused_box_enrolments_are_400_and_keep_the_token(kit: Kit, server: Any) -> None:
    clinic = server.new_clinic()
    token = edge_token(kit, clinic)
    box = DeviceIdentity.generate()
    missing = kit.enrol(token, box)
    assert missing.status_code == 400 and error_code(missing) == "certificate_required"
    expired, _ = make_certificate(
        not_before=datetime.now(UTC) - timedelta(days=10),
        not_after=datetime.now(UTC) - timedelta(days=1),
    )
    pem, _ = make_certificate()
    for bad in (
        "garbage",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        expired,
        pem + "#" * 9000,
        "\x00é",
    ):
        r = kit.enrol(token, box, tls_certificate=bad)
        assert r.status_code == 400, r.text
        assert error_code(r) == "bad_certificate"
    # None of that spent the token.
    assert kit.enrol(token, box, tls_certificate=pem).status_code == 201


def test_a_device_token_refuses_a_certificate(kit: Kit, server: Any) -> None:
    clinic = server.new_clinic()
    with kit.admin_client() as admin:
        token = kit.enrolment_token(admin, clinic)
    pem, _ = make_certificate()
    device = DeviceIdentity.generate()
    r = kit.enrol(token, device, tls_certificate=pem)
    assert r.status_code == 400 and error_code(r) == "certificate_refused"
    ok = kit.enrol(token, device)
    assert ok.status_code == 201 and ok.json()["edge_boxes"] == []


def test_an_unknown_token_kind_is_refused(kit: Kit, server: Any) -> None:
    clinic = server.new_clinic()
    with kit.admin_client() as admin:
        r = admin.post("/v1/admin/enrolment-tokens", json={"clinic_id": clinic, "kind": "hub"})
    assert 400 <= r.status_code < 500


# ---------------------------------------------------------------- relaying
def test_the_box_relays_its_clinics_documents_and_no_other(kit: Kit, server: Any) -> None:
    clinic, other = server.new_clinic(), server.new_clinic()
    _, answer, _ = enrolled_box(kit, clinic)
    tablet, tablet_token = server.device_token(clinic)
    stranger, _ = server.device_token(other)
    ours = patient(server, clinic, tablet)
    theirs = patient(server, clinic, stranger)  # claims our clinic, signed elsewhere
    with server.http(answer["access_token"]) as box:
        result = push(box, ours, theirs)
        assert result["accepted"] == [ours.id]
        assert [r["doc_id"] for r in result["rejected"]] == [theirs.id]
    # What the box relayed reaches the clinic's devices, and what they push reaches it.
    later = patient(server, clinic, tablet, family="Hopper")
    with server.http(tablet_token) as c:
        docs, _ = pull(c)
        assert ours.id in docs
        push(c, later)
    with server.http(answer["access_token"]) as box:
        docs, _ = pull(box)
        assert later.id in docs and theirs.id not in docs


def test_the_box_authors_nothing(kit: Kit, server: Any) -> None:
    clinic = server.new_clinic()
    box, answer, _ = enrolled_box(kit, clinic)
    own = RecordDocument.create(
        Patient,
        {"given_name": "Box", "family_name": "Made", "birth_date": datetime(1990, 1, 2).date()},
        device_id=box.device_id,
        clinic_id=clinic,
        signer=box,
    )
    with server.http(answer["access_token"]) as c:
        result = push(c, own)
    assert result["accepted"] == [] and [r["doc_id"] for r in result["rejected"]] == [own.id]


# ---------------------------------------------------------------- directory
def test_the_directory_lists_boxes_and_revoked_devices(kit: Kit, server: Any) -> None:
    clinic = server.new_clinic()
    box, answer, fingerprint = enrolled_box(kit, clinic)
    tablet, tablet_token = server.device_token(clinic)
    gone, _ = server.device_token(clinic)
    seen = directory(server, answer["access_token"])
    assert box.device_id not in {d["device_id"] for d in seen["devices"]}
    assert {d["device_id"] for d in seen["devices"]} == {tablet, gone}
    assert [(b["box_id"], b["fingerprint"]) for b in seen["edge_boxes"]] == [
        (box.device_id, fingerprint)
    ]
    assert seen["revoked"] == []
    with kit.admin_client() as admin:
        assert admin.post(f"/v1/admin/devices/{gone}/revoke").status_code == 200
    seen = directory(server, answer["access_token"])
    assert seen["revoked"] == [gone]
    assert {d["device_id"] for d in seen["devices"]} == {tablet}
    with kit.admin_client() as admin:
        assert admin.post(f"/v1/admin/devices/{box.device_id}/revoke").status_code == 200
    seen = directory(server, tablet_token)
    assert seen["edge_boxes"] == []
    assert seen["revoked"] == sorted([gone, box.device_id])


# ---------------------------------------------------------------- certificates
def test_a_box_replaces_its_certificate(kit: Kit, server: Any) -> None:
    clinic = server.new_clinic()
    box, answer, old = enrolled_box(kit, clinic)
    _, tablet_token = server.device_token(clinic)
    pem, fingerprint = make_certificate()
    assert fingerprint != old
    with server.http(answer["access_token"]) as c:
        r = c.put("/v1/edge/certificate", json={"certificate": pem})
        assert r.status_code == 200, r.text
        assert r.json()["fingerprint"] == fingerprint and r.json()["box_id"] == box.device_id
        bad = c.put("/v1/edge/certificate", json={"certificate": "not a certificate"})
        assert bad.status_code == 400 and error_code(bad) == "bad_certificate"
        assert c.put("/v1/edge/certificate", json={}).status_code == 422  # as every body
    assert [b["fingerprint"] for b in directory(server, tablet_token)["edge_boxes"]] == [
        fingerprint
    ]
    with server.http(tablet_token) as c:
        refused = c.put("/v1/edge/certificate", json={"certificate": pem})
    assert refused.status_code == 403 and error_code(refused) == "edge_only"
    with server.db.read() as session:
        targets = session.scalars(
            select(AuditEvent.target).where(
                AuditEvent.action == "edge-certificate-replace", AuditEvent.clinic_id == clinic
            )
        ).all()
    assert targets == [f"{box.device_id}:{fingerprint}"]


# ---------------------------------------------------------------- audit relay
def chain(device_id: str, start: int, count: int, previous: bytes) -> list[dict[str, Any]]:
    """`count` events of a device's audit chain from `start`, as a push carries them."""
    events = []
    for seq in range(start, start + count):
        canonical = canonical_json(
            {"seq": seq, "device_id": device_id, "action": "read", "patients": []}
        )
        previous = chain_hash(previous, canonical)
        events.append(
            {
                "seq": seq,
                "canonical": base64.b64encode(canonical).decode(),
                "hash": previous.hex(),
            }
        )
    return events


def test_the_box_relays_a_devices_audit_chain(kit: Kit, server: Any) -> None:
    clinic, other = server.new_clinic(), server.new_clinic()
    box, answer, _ = enrolled_box(kit, clinic)
    tablet, tablet_token = server.device_token(clinic)
    neighbour, _ = server.device_token(clinic)
    stranger, _ = server.device_token(other)
    first = chain(tablet, 1, 3, GENESIS)
    with server.http(answer["access_token"]) as c:
        r = c.post("/v1/audit/device-events", json={"events": first, "device_id": tablet})
        assert r.status_code == 200, r.text
        assert r.json()["head_seq"] == 3
        hidden = c.post(
            "/v1/audit/device-events",
            json={"events": chain(stranger, 1, 1, GENESIS), "device_id": stranger},
        )
        assert hidden.status_code == 404
        unknown = c.post(
            "/v1/audit/device-events",
            json={"events": chain(tablet, 1, 1, GENESIS), "device_id": str(uuid.uuid4())},
        )
        assert unknown.status_code == 404
    # The device's own later push continues the chain the box relayed.
    second = chain(tablet, 4, 2, bytes.fromhex(first[-1]["hash"]))
    with server.http(tablet_token) as c:
        r = c.post("/v1/audit/device-events", json={"events": second})
        assert r.status_code == 200, r.text
        assert r.json()["head_seq"] == 5
        mine = c.post("/v1/audit/device-events", json={"events": second, "device_id": tablet})
        assert mine.status_code == 200  # naming itself is fine
        theirs = c.post(
            "/v1/audit/device-events",
            json={"events": chain(neighbour, 1, 1, GENESIS), "device_id": neighbour},
        )
        assert theirs.status_code == 403 and error_code(theirs) == "not_your_chain"
    with server.db.read() as session:
        held = device_chain(session=session, device_id=tablet)
        relayed_by = session.scalars(
            select(AuditEvent.actor_id).where(
                AuditEvent.action == "device-audit-push",
                AuditEvent.target.like(f"{tablet}:3:%"),
            )
        ).all()
        untouched = device_chain(session=session, device_id=neighbour)
    assert [e.seq for e in held] == [1, 2, 3, 4, 5]
    assert relayed_by == [box.device_id]
    assert untouched == []


def test_a_client_cannot_name_a_chain_it_has_no_right_to(server: Any) -> None:
    # A request with no valid token never reaches the chain check.
    clinic = server.new_clinic()
    tablet, _ = server.device_token(clinic)
    with httpx.Client(base_url=server.url) as c:
        r = c.post(
            "/v1/audit/device-events",
            json={"events": chain(tablet, 1, 1, GENESIS), "device_id": tablet},
        )
    assert r.status_code == 401
