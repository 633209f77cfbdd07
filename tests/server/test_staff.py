"""Staff reads of the projections: clinic scoping, search, ordering and audit.

Rows are put straight into the projection tables (the sync push path fills them in
production). Every test runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from sync_server.audit.tables import AuditEvent
from sync_server.identity.tables import User
from sync_server.identity.tenancy import ensure_clinic, ensure_organisation
from sync_server.identity.users import create_user
from sync_server.sync.tables import AssessmentRow, PatientRow, WoundRow

PASSWORD = "correct horse battery staple"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@dataclass
class Tenancy:
    """A fresh organisation with two clinics, its staff, and helpers to add records."""

    server: Any
    organisation_id: str = ""
    clinic_a: str = ""
    clinic_b: str = ""
    users: dict[str, User] = field(default_factory=dict)

    def setup(self) -> Tenancy:
        with self.server.db.write() as session:
            self.organisation_id = ensure_organisation(session=session, name=unique("org")).id
            self.clinic_a = ensure_clinic(
                session=session, name=unique("a"), organisation_id=self.organisation_id
            ).id
            self.clinic_b = ensure_clinic(
                session=session, name=unique("b"), organisation_id=self.organisation_id
            ).id
        return self

    def user(self, role: str, clinic_id: str | None) -> User:
        with self.server.db.write() as session:
            user, _ = create_user(
                session=session,
                username=unique(role),
                password=PASSWORD,
                role=role,
                organisation_id=self.organisation_id,
                clinic_id=clinic_id,
                with_totp=False,
            )
        return user

    def client(self, user: User) -> httpx.Client:
        token, _ = self.server.app.state.signing_key.issue_access_token(
            subject=user.id,
            kind="user",
            clinic_id=user.clinic_id,
            organisation_id=user.organisation_id,
            role=user.role,
            ttl=timedelta(minutes=5),
        )
        return self.server.http(token)

    def patient(
        self,
        clinic_id: str,
        given: str,
        family: str,
        *,
        mrn: str | None = None,
        deleted: bool = False,
        conflicted: bool = False,
    ) -> str:
        pid = str(uuid.uuid4())
        record = {
            "id": pid,
            "given_name": given,
            "family_name": family,
            "birth_date": "1950-01-02",
            "sex": "female",
            "mrn": mrn,
        }
        with self.server.db.write() as session:
            session.add(
                PatientRow(
                    id=pid,
                    clinic_id=clinic_id,
                    deleted=deleted,
                    conflicted=conflicted,
                    updated_at="2024-05-01T10:00:00Z",
                    record=json.dumps(record),
                    given_name=given,
                    family_name=family,
                    birth_date="1950-01-02",
                    sex="female",
                    mrn=mrn,
                )
            )
        return pid

    def wound(self, clinic_id: str, patient_id: str, site: str, *, deleted: bool = False) -> str:
        wid = str(uuid.uuid4())
        record = {"id": wid, "patient_id": patient_id, "body_site": site}
        with self.server.db.write() as session:
            session.add(
                WoundRow(
                    id=wid,
                    clinic_id=clinic_id,
                    deleted=deleted,
                    conflicted=False,
                    updated_at="2024-05-01T10:00:00Z",
                    record=json.dumps(record),
                    patient_id=patient_id,
                    body_site=site,
                    etiology="pressure",
                    status="open",
                    onset="2024-04-01",
                )
            )
        return wid

    def assessment(self, clinic_id: str, patient_id: str, wound_id: str, captured_at: str) -> str:
        aid = str(uuid.uuid4())
        record = {"id": aid, "wound_id": wound_id, "captured_at": captured_at, "area_cm2": 4.2}
        with self.server.db.write() as session:
            session.add(
                AssessmentRow(
                    id=aid,
                    clinic_id=clinic_id,
                    deleted=False,
                    conflicted=True,
                    updated_at=captured_at,
                    record=json.dumps(record),
                    wound_id=wound_id,
                    patient_id=patient_id,
                    captured_at=captured_at,
                    device_id=str(uuid.uuid4()),
                    area_cm2=4.2,
                )
            )
        return aid


@pytest.fixture
def tenancy(server: Any) -> Tenancy:
    return Tenancy(server).setup()


def ids(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


def test_clinicians_see_only_their_clinic_and_admins_see_all(tenancy: Tenancy, server: Any) -> None:
    in_a = tenancy.patient(tenancy.clinic_a, "Ada", "Lovelace")
    in_b = tenancy.patient(tenancy.clinic_b, "Grace", "Hopper")
    wound_b = tenancy.wound(tenancy.clinic_b, in_b, "sacrum")
    clinician_a = tenancy.user("clinician", tenancy.clinic_a)
    with tenancy.client(clinician_a) as c:
        assert ids(c.get("/v1/patients")) == [in_a]
        own = c.get(f"/v1/patients/{in_a}")
        assert own.status_code == 200
        assert own.json()["record"]["family_name"] == "Lovelace"
        assert own.json()["conflicted"] is False
        for path in (
            f"/v1/patients/{in_b}",
            f"/v1/patients/{in_b}/wounds",
            f"/v1/wounds/{wound_b}/assessments",
            f"/v1/patients/{uuid.uuid4()}",
        ):
            hidden = c.get(path)
            assert hidden.status_code == 404, path
            assert hidden.json()["error"]["code"] == "not_found"
        assert c.get("/v1/patients", params={"clinic_id": tenancy.clinic_b}).status_code == 404

    admin = tenancy.user("admin", None)
    with tenancy.client(admin) as c:
        assert sorted(ids(c.get("/v1/patients"))) == sorted([in_a, in_b])
        assert ids(c.get("/v1/patients", params={"clinic_id": tenancy.clinic_b})) == [in_b]
        assert c.get(f"/v1/patients/{in_b}").status_code == 200
        assert ids(c.get(f"/v1/patients/{in_b}/wounds")) == [wound_b]

    stranger = Tenancy(server).setup().user("admin", None)  # another organisation
    with tenancy.client(stranger) as c:
        assert ids(c.get("/v1/patients")) == []
        assert c.get(f"/v1/patients/{in_a}").status_code == 404
        assert c.get("/v1/patients", params={"clinic_id": tenancy.clinic_a}).status_code == 404


def test_devices_and_anonymous_callers_cannot_use_staff_routes(
    tenancy: Tenancy, server: Any
) -> None:
    patient = tenancy.patient(tenancy.clinic_a, "Ada", "Lovelace")
    _, device_token = server.device_token(server.new_clinic())
    with server.http(device_token) as c:
        for path in ("/v1/patients", f"/v1/patients/{patient}"):
            r = c.get(path)
            assert r.status_code == 403
            assert r.json()["error"]["code"] == "staff_only"
    with server.http() as c:
        assert c.get("/v1/patients").status_code == 401


def test_search_by_name_prefix_and_mrn(tenancy: Tenancy) -> None:
    lovelace = tenancy.patient(tenancy.clinic_a, "Ada", "Lovelace", mrn="MRN-001")
    lovell = tenancy.patient(tenancy.clinic_a, "James", "Lovell")
    hopper = tenancy.patient(tenancy.clinic_a, "Grace", "Hopper", mrn="MRN-002")
    gone = tenancy.patient(tenancy.clinic_a, "Lorna", "Gone", deleted=True)
    odd = tenancy.patient(tenancy.clinic_a, "Zed", "100%_Real")
    with tenancy.client(tenancy.user("staff", tenancy.clinic_a)) as c:

        def search(q: str, **params: Any) -> list[str]:
            return ids(c.get("/v1/patients", params={"q": q, **params}))

        assert search("LOV") == [lovelace, lovell]
        assert search("lovel") == [lovelace, lovell]
        assert search("lovela") == [lovelace]
        assert search("ada") == [lovelace]  # given name
        assert search("ada lov") == [lovelace]  # every word must match
        assert search("grace lov") == []
        assert search("MRN-002") == [hopper]
        assert search("lo") == [lovelace, lovell]  # the deleted patient is left out
        assert search("lo", include_deleted="true") == [gone, lovelace, lovell]
        assert search("%") == []  # wildcards are literal
        assert search("100%_") == [odd]
        assert search("1_0") == []
        everyone = ids(c.get("/v1/patients"))
        assert everyone == [odd, hopper, lovelace, lovell]  # by family name
        page = ids(c.get("/v1/patients", params={"limit": 2, "offset": 1}))
        assert page == [hopper, lovelace]
        assert c.get("/v1/patients", params={"limit": 0}).status_code == 422
        assert c.get("/v1/patients", params={"limit": 10_000}).status_code == 422


def test_wounds_and_assessments_in_capture_order(tenancy: Tenancy) -> None:
    patient = tenancy.patient(tenancy.clinic_a, "Ada", "Lovelace")
    other_patient = tenancy.patient(tenancy.clinic_a, "James", "Lovell")
    heel = tenancy.wound(tenancy.clinic_a, patient, "left heel")
    healed = tenancy.wound(tenancy.clinic_a, patient, "sacrum", deleted=True)
    tenancy.wound(tenancy.clinic_a, other_patient, "elbow")
    later = tenancy.assessment(tenancy.clinic_a, patient, heel, "2024-05-03T09:00:00.000Z")
    earlier = tenancy.assessment(tenancy.clinic_a, patient, heel, "2024-05-01T09:00:00.000Z")
    middle = tenancy.assessment(tenancy.clinic_a, patient, heel, "2024-05-02T09:00:00.000Z")
    with tenancy.client(tenancy.user("clinician", tenancy.clinic_a)) as c:
        assert ids(c.get(f"/v1/patients/{patient}/wounds")) == [heel]
        with_deleted = c.get(f"/v1/patients/{patient}/wounds", params={"include_deleted": True})
        assert sorted(ids(with_deleted)) == sorted([heel, healed])
        r = c.get(f"/v1/wounds/{heel}/assessments")
        assert ids(r) == [earlier, middle, later]
        first = r.json()["items"][0]
        assert first["conflicted"] is True
        assert first["record"]["area_cm2"] == 4.2
        assert ids(c.get(f"/v1/wounds/{healed}/assessments")) == []


def test_reads_are_audited_without_names(tenancy: Tenancy, server: Any) -> None:
    patient = tenancy.patient(tenancy.clinic_a, "Ada", "Lovelace", mrn="MRN-777")
    hidden = tenancy.patient(tenancy.clinic_b, "Grace", "Hopper")
    user = tenancy.user("clinician", tenancy.clinic_a)
    with tenancy.client(user) as c:
        assert ids(c.get("/v1/patients", params={"q": "Lovel"})) == [patient]
        assert c.get(f"/v1/patients/{patient}").status_code == 200
        assert c.get(f"/v1/patients/{hidden}").status_code == 404
        assert c.get("/v1/patients/Grace%20Hopper").status_code == 404
    with server.db.read() as session:
        events = session.scalars(
            select(AuditEvent).where(AuditEvent.actor_id == user.id).order_by(AuditEvent.id)
        ).all()
    reads = [e for e in events if e.action == "read"]
    assert [(e.outcome, json.loads(e.target or "{}")) for e in reads] == [
        ("ok", {"patients": [patient]}),
        ("ok", {"patients": [patient]}),
        ("not_found", {"patients": [hidden]}),
        ("not_found", {"patients": []}),
    ]
    assert all(e.actor_kind == "user" for e in reads)
    assert reads[1].clinic_id == tenancy.clinic_a
    stored = " ".join(f"{e.target} {e.action} {e.outcome} {e.request_id}" for e in events)
    for secret in ("Ada", "Lovelace", "Lovel", "Grace", "Hopper", "MRN-777"):
        assert secret not in stored
