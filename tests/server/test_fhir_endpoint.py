"""The read-only FHIR R4 endpoint (``/fhir/R4``): metadata, read, search, ``$everything``,
clinic scope, the audit of every read, OperationOutcome refusals, and an off-the-shelf
FHIR client (fhirclient 4.4.0) reading it over a real uvicorn server. Every test runs on
SQLite and on PostgreSQL.

The clinic is seeded the way a clinic fills up: a tablet records a patient, a wound, two
scanned assessments, medical history and a care plan, and syncs them; a second clinic's
tablet records a patient of its own. A booking (server-owned) is added to the database.
"""

from __future__ import annotations

import json
import re
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

import fhir_interop
from edge_sdk import Argon2Params, EdgeClient, PassphraseKeyProvider
from sync_server.audit.tables import AuditEvent, AuditPatient
from sync_server.bookings.tables import Booking, Provider
from sync_server.identity.enrolment import create_enrolment_token
from sync_server.identity.users import create_user

FHIR = "/fhir/R4"
SNOMED = "http://snomed.info/sct"


@dataclass
class FhirWorld:
    """Two clinics of the server's organisation, their patients, and staff tokens."""

    server: Any
    clinic_a: str = ""
    clinic_b: str = ""
    patient: str = ""  # clinic A's, with every kind of record
    other: str = ""  # clinic B's
    mrn: str = ""
    assessments: list[str] = field(default_factory=list)
    booking: str = ""
    users: dict[str, str] = field(default_factory=dict)  # role name -> user id
    tokens: dict[str, str] = field(default_factory=dict)

    def http(self, who: str | None = "a") -> httpx.Client:
        return self.server.http(None if who is None else self.tokens[who])

    def staff(self, name: str, role: str, clinic_id: str | None) -> None:
        with self.server.db.write() as session:
            user, _ = create_user(
                session=session,
                username=f"fhir-{name}-{uuid.uuid4().hex[:8]}",
                password="a long enough password",
                role=role,
                organisation_id=self.server.organisation_id,
                clinic_id=clinic_id,
                with_totp=False,
            )
        token, _ = self.server.app.state.signing_key.issue_access_token(
            subject=user.id,
            kind="user",
            clinic_id=user.clinic_id,
            organisation_id=user.organisation_id,
            role=user.role,
            ttl=timedelta(minutes=30),
        )
        self.users[name], self.tokens[name] = user.id, token


def _tablet(server: Any, root: Path, clinic_id: str, name: str) -> EdgeClient:
    with server.db.write() as session:
        token, _ = create_enrolment_token(
            session=session, clinic_id=clinic_id, ttl=timedelta(minutes=10)
        )
    client = EdgeClient.init(
        root / name,
        PassphraseKeyProvider("fhir pass phrase", params=Argon2Params.fast()),
        clinic_id=clinic_id,
    )
    client.enroll(server.url, token, name=name)
    return client


def build_world(server: Any, root: Path) -> FhirWorld:
    world = FhirWorld(server)
    world.clinic_a, world.clinic_b = server.new_clinic(), server.new_clinic()
    world.mrn = f"MRN-{secrets.token_hex(4)}"
    tablet = _tablet(server, root, world.clinic_a, "fhir tablet")
    far = _tablet(server, root, world.clinic_b, "far tablet")
    try:
        patient = tablet.patients.add(
            given_name="Ada",
            family_name="Lovelace",
            birth_date=date(1950, 12, 10),
            sex="female",
            mrn=world.mrn,
            insurance=[{"payer": "Health Fund", "member_id": "HF-123"}],
            emergency_contacts=[{"name": "Mary Somerville", "phone": "+44 20 7946 0001"}],
        )
        wound = tablet.wounds.add(
            patient_id=patient.id,
            body_site="left heel",
            etiology="diabetic",
            onset=date(2026, 1, 5),
        )
        for day in (1, 20):
            scan = tablet.blobs.put_bytes(secrets.token_bytes(2048))
            assessment = tablet.assessments.add(
                wound_id=wound.id,
                patient_id=patient.id,
                captured_at=datetime(2026, 11, day, 10, 15, tzinfo=UTC),
                device_id=tablet.device_id,
                measurements={"area_cm2": 4.8, "length_cm": 3.0, "width_cm": 2.0},
                blobs=[
                    {
                        "sha256": scan.sha256,
                        "size": scan.size,
                        "kind": "scan",
                        "media_type": "application/octet-stream",
                    }
                ],
            )
            world.assessments.append(assessment.id)
        tablet.conditions.add(
            patient_id=patient.id,
            description="Type 2 diabetes mellitus",
            code={"system": SNOMED, "code": "44054006", "display": "Diabetes mellitus type 2"},
            onset=date(2010, 3, 1),
        )
        tablet.allergies.add(patient_id=patient.id, substance="penicillin", reaction="rash")
        tablet.medications.add(
            patient_id=patient.id, medication="metformin 500 mg", started=date(2010, 3, 2)
        )
        tablet.care_plans.add(
            patient_id=patient.id,
            wound_id=wound.id,
            goals=["closure in 12 weeks"],
            dressing="foam",
            dressing_every_days=2,
        )
        tablet.sync()
        other = far.patients.add(
            given_name="Grace", family_name="Hopper", birth_date=date(1906, 12, 9)
        )
        far.sync()
    finally:
        tablet.close()
        far.close()
    world.patient, world.other = patient.id, other.id
    with server.db.write() as session:
        provider = Provider(
            id=str(uuid.uuid4()),
            organisation_id=server.organisation_id,
            clinic_id=world.clinic_a,
            name="RN FHIR",
            kind="nurse",
        )
        session.add(provider)
        session.flush()
        world.booking = str(uuid.uuid4())
        session.add(
            Booking(
                id=world.booking,
                organisation_id=server.organisation_id,
                clinic_id=world.clinic_a,
                kind="appointment",
                provider_id=provider.id,
                patient_id=patient.id,
                service="wound-review",
                starts_at=datetime(2026, 12, 1, 9, 0, tzinfo=UTC),
                ends_at=datetime(2026, 12, 1, 9, 30, tzinfo=UTC),
                state="completed",
                intent_id=str(uuid.uuid4()),
            )
        )
    world.staff("a", "clinician", world.clinic_a)
    world.staff("b", "clinician", world.clinic_b)
    world.staff("admin", "admin", None)
    return world


@pytest.fixture(scope="module")
def world(server: Any, tmp_path_factory: pytest.TempPathFactory) -> FhirWorld:
    return build_world(server, tmp_path_factory.mktemp("fhir-world"))


def fhir_json(response: httpx.Response, status: int = 200) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    body: dict[str, Any] = response.json()
    return body


def outcome(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    body = fhir_json(response, status)
    assert body["resourceType"] == "OperationOutcome", body
    fhir_interop.validate(body)
    if code is not None:
        assert body["issue"][0]["diagnostics"] == code, body
    return body


def entries(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [entry["resource"] for entry in bundle.get("entry", [])]


def everything(world: FhirWorld, who: str = "a") -> dict[str, Any]:
    with world.http(who) as http:
        return fhir_json(http.get(f"{FHIR}/Patient/{world.patient}/$everything"))


def reads(world: FhirWorld, request_ids: set[str] | None = None) -> list[AuditEvent]:
    with world.server.db.read() as session:
        query = select(AuditEvent).where(AuditEvent.action == "read")
        if request_ids is not None:
            query = query.where(AuditEvent.request_id.in_(request_ids))
        return list(session.scalars(query.order_by(AuditEvent.id)))


# ------------------------------------------------------------------ metadata
def test_metadata_is_public_and_lists_every_type_with_its_interactions(world: FhirWorld) -> None:
    with world.http(None) as http:
        statement = fhir_json(http.get(f"{FHIR}/metadata"))
    assert statement["resourceType"] == "CapabilityStatement"
    assert statement["fhirVersion"] == fhir_interop.FHIR_VERSION
    assert "application/fhir+json" in statement["format"]
    fhir_interop.validate(statement)
    resources = {r["type"]: r for r in statement["rest"][0]["resource"]}
    assert set(resources) == {
        "Patient", "Coverage", "Condition", "AllergyIntolerance", "MedicationStatement",
        "CarePlan", "Observation", "DocumentReference", "Provenance", "Appointment",
        "AuditEvent",
    }  # fmt: skip
    for kind, resource in resources.items():
        assert {i["code"] for i in resource["interaction"]} == {"read", "search-type"}
        params = {p["name"] for p in resource["searchParam"]}
        assert {"_id", "identifier"} <= params
        assert ("patient" in params and "date" in params) == (kind != "Patient")
    assert [op["name"] for op in resources["Patient"]["operation"]] == ["everything"]


# ------------------------------------------------------------------ $everything and reads
def test_everything_returns_every_resource_of_the_patient_and_validates(world: FhirWorld) -> None:
    bundle = everything(world)
    assert bundle["type"] == "searchset"
    fhir_interop.validate(bundle)
    resources = entries(bundle)
    assert bundle["total"] == len(resources)
    kinds = {r["resourceType"] for r in resources}
    assert kinds == {
        "Patient", "Coverage", "Condition", "AllergyIntolerance", "MedicationStatement",
        "CarePlan", "Observation", "DocumentReference", "Provenance", "Appointment",
        "AuditEvent",
    }  # fmt: skip
    patient = next(r for r in resources if r["resourceType"] == "Patient")
    assert patient["id"] == world.patient
    assert {"value": world.mrn}.items() <= next(
        i for i in patient["identifier"] if i["value"] == world.mrn
    ).items()
    observations = {r["id"] for r in resources if r["resourceType"] == "Observation"}
    for assessment in world.assessments:
        assert f"{assessment}-size" in observations
    appointment = next(r for r in resources if r["resourceType"] == "Appointment")
    assert (appointment["id"], appointment["status"]) == (world.booking, "fulfilled")
    # Nothing of another clinic's patient.
    assert world.other not in json.dumps(bundle)
    # The same resources the mapping makes of the same records (gathered by the server).
    conditions = [r for r in resources if r["resourceType"] == "Condition"]
    assert len(conditions) == 2  # the wound and the diabetes


def test_every_resource_of_everything_reads_back_by_type_and_id(world: FhirWorld) -> None:
    resources = entries(everything(world))
    with world.http("a") as http:
        for resource in resources:
            kind, rid = resource["resourceType"], resource["id"]
            read = fhir_json(http.get(f"{FHIR}/{kind}/{rid}"))
            assert (read["resourceType"], read["id"]) == (kind, rid)
            if kind != "AuditEvent":  # the patient's trail: only ever grows
                assert read == resource, kind
        outcome(http.get(f"{FHIR}/Observation/{uuid.uuid4()}-size"), 404, "not_found")
        outcome(http.get(f"{FHIR}/Patient/{world.patient}x"), 404, "not_found")


# ------------------------------------------------------------------ search
def test_patients_are_found_by_identifier_and_id(world: FhirWorld) -> None:
    mrn_system = f"urn:coherency:clinic:{world.clinic_a}:mrn"

    def found(params: dict[str, str]) -> list[str]:
        with world.http("a") as http:
            bundle = fhir_json(http.get(f"{FHIR}/Patient", params=params))
        assert bundle["type"] == "searchset" and bundle["total"] == len(entries(bundle))
        return [r["id"] for r in entries(bundle)]

    assert found({"identifier": world.mrn}) == [world.patient]
    assert found({"identifier": f"{mrn_system}|{world.mrn}"}) == [world.patient]
    assert found({"identifier": f"urn:elsewhere|{world.mrn}"}) == []
    assert found({"identifier": f"{mrn_system}|"}) == [world.patient]
    assert found({"identifier": "no-such-mrn"}) == []
    assert found({"_id": world.patient}) == [world.patient]
    assert found({"_id": f"{world.other},{world.patient}"}) == [world.patient]


def test_observations_are_found_by_patient_and_date(world: FhirWorld) -> None:
    first, second = world.assessments

    def found(params: dict[str, str]) -> set[str]:
        with world.http("a") as http:
            bundle = fhir_json(http.get(f"{FHIR}/Observation", params=params))
        fhir_interop.validate(bundle)
        return {r["id"] for r in entries(bundle)}

    every = found({"patient": world.patient})
    assert {f"{first}-size", f"{second}-size"} <= every
    assert found({"patient": f"Patient/{world.patient}"}) == every
    assert found({"patient": world.patient, "date": "ge2026-11-10"}) == {
        i for i in every if i.startswith(second)
    }
    assert found({"patient": world.patient, "date": "lt2026-11-10"}) == {
        i for i in every if i.startswith(first)
    }
    assert found({"patient": world.patient, "date": "2026-11-01"}) == {
        i for i in every if i.startswith(first)
    }
    assert found({"patient": world.patient, "date": "2026-11"}) == every
    assert found({"patient": world.patient, "date": "2025"}) == set()
    # Two bounds: both must hold.
    assert found(
        {"date": ["ge2026-11-01", "le2026-11-01T23:59:59Z"], "patient": world.patient}
    ) == {  # type: ignore[dict-item]
        i for i in every if i.startswith(first)
    }
    # Without a patient: the caller's clinic.
    assert every <= found({"date": "ge2026-01-01"})
    assert found({"_id": f"{first}-size"}) == {f"{first}-size"}
    assert found({"_id": f"{first}-size,{second}-size,nope"}) == {f"{first}-size", f"{second}-size"}
    assert found({"_id": f"{first}-size", "date": "lt2026-01-01"}) == set()
    with world.http("b") as http:
        elsewhere = fhir_json(http.get(f"{FHIR}/Observation", params={"_id": f"{first}-size"}))
    assert elsewhere["total"] == 0
    with world.http("a") as http:
        appointments = fhir_json(
            http.get(f"{FHIR}/Appointment", params={"patient": world.patient, "date": "ge2026-12"})
        )
    assert [r["id"] for r in entries(appointments)] == [world.booking]


def test_a_search_pages_with_next_links(world: FhirWorld) -> None:
    seen: list[str] = []
    with world.http("a") as http:
        url: str | None = f"{FHIR}/Observation?patient={world.patient}&_count=1"
        total = None
        while url is not None:
            bundle = fhir_json(http.get(url))
            page = entries(bundle)
            assert len(page) == 1
            seen.extend(r["id"] for r in page)
            total = bundle["total"]
            links = {link["relation"]: link["url"] for link in bundle["link"]}
            url = links.get("next")
    assert total == len(seen) == len(set(seen)) >= 2


# ------------------------------------------------------------------ scope
def test_another_clinics_patient_is_not_found_anywhere(world: FhirWorld) -> None:
    with world.http("b") as http:
        outcome(http.get(f"{FHIR}/Patient/{world.patient}"), 404, "not_found")
        outcome(http.get(f"{FHIR}/Patient/{world.patient}/$everything"), 404, "not_found")
        for kind in ("Observation", "Condition", "Appointment"):
            bundle = fhir_json(http.get(f"{FHIR}/{kind}", params={"patient": world.patient}))
            assert bundle["total"] == 0 and entries(bundle) == []
        found = fhir_json(http.get(f"{FHIR}/Patient", params={"identifier": world.mrn}))
        assert found["total"] == 0
        clinic_wide = fhir_json(http.get(f"{FHIR}/Observation", params={"date": "ge2000"}))
        assert world.patient not in json.dumps(clinic_wide)
        mine = fhir_json(http.get(f"{FHIR}/Patient/{world.other}"))
        assert mine["id"] == world.other
    resource = next(r for r in entries(everything(world)) if r["resourceType"] == "Observation")
    with world.http("b") as http:
        outcome(http.get(f"{FHIR}/Observation/{resource['id']}"), 404, "not_found")
    # An organisation-wide admin sees both clinics.
    with world.http("admin") as http:
        assert fhir_json(http.get(f"{FHIR}/Patient/{world.patient}"))["id"] == world.patient
        assert fhir_json(http.get(f"{FHIR}/Patient/{world.other}"))["id"] == world.other


def test_a_break_glass_grant_opens_the_patient_audited_as_break_glass(world: FhirWorld) -> None:
    world.staff("glass", "clinician", world.clinic_b)
    with world.http("glass") as http:
        outcome(http.get(f"{FHIR}/Patient/{world.patient}"), 404, "not_found")
        asked = http.post(
            "/v1/audit/break-glass",
            json={"patient_id": world.patient, "reason": "unconscious, own clinic closed"},
        )
        assert asked.status_code == 201, asked.text
        calls = [
            http.get(f"{FHIR}/Patient/{world.patient}"),
            http.get(f"{FHIR}/Patient/{world.patient}/$everything"),
            http.get(f"{FHIR}/Observation", params={"patient": world.patient}),
        ]
    assert [c.status_code for c in calls] == [200, 200, 200]
    assert calls[0].json()["id"] == world.patient
    assert calls[2].json()["total"] >= 2
    events = reads(world, {c.headers["x-request-id"] for c in calls})
    assert [(e.purpose, e.patients, e.clinic_id) for e in events] == [
        ("break-glass", world.patient, world.clinic_a)
    ] * 3


# ------------------------------------------------------------------ audit
def test_every_read_search_and_everything_is_audited_with_ids_not_names(world: FhirWorld) -> None:
    with world.http("a") as http:
        calls = [
            http.get(f"{FHIR}/Patient/{world.patient}"),
            http.get(f"{FHIR}/Observation", params={"patient": world.patient}),
            http.get(f"{FHIR}/Patient/{world.patient}/$everything"),
        ]
    with world.http("b") as http:
        refused = http.get(f"{FHIR}/Patient/{world.patient}")
    assert [c.status_code for c in calls] == [200, 200, 200] and refused.status_code == 404
    for call in calls:
        request_id = call.headers["x-request-id"]
        (event,) = reads(world, {request_id})
        assert event.actor_id == world.users["a"] and event.outcome == "ok"
        assert event.patients == world.patient
        target = json.loads(event.target or "{}")
        (ids,) = target.values()
        returned = call.json()
        wanted = (
            [returned["id"]]
            if returned["resourceType"] != "Bundle"
            else [e["resource"]["id"] for e in returned["entry"]]
        )
        assert ids == wanted
        assert "Lovelace" not in (event.target or "") and world.mrn not in (event.target or "")
        with world.server.db.read() as session:
            named = session.scalars(
                select(AuditPatient.patient_id).where(AuditPatient.event_id == event.id)
            ).all()
        assert named == [world.patient]
    (miss,) = reads(world, {refused.headers["x-request-id"]})
    assert (miss.actor_id, miss.outcome) == (world.users["b"], "not_found")
    assert json.loads(miss.target or "{}") == {"fhir/Patient": [world.patient]}


def test_the_patients_reads_appear_in_their_own_audit_events(world: FhirWorld) -> None:
    with world.http("a") as http:
        read = http.get(f"{FHIR}/Patient/{world.patient}")
    (event,) = reads(world, {read.headers["x-request-id"]})
    audit = [r for r in entries(everything(world)) if r["resourceType"] == "AuditEvent"]
    assert any(r["id"] == f"audit-{event.seq}" for r in audit)


# ------------------------------------------------------------------ refusals
@pytest.mark.parametrize(
    "query",
    [
        "Observation?foo=1",
        "Observation?identifier:exact=x",
        "Observation?date=gt-garbage",
        "Observation?date=sa2026-01-01",
        "Observation?date=2026-13-45",
        "Observation?_count=0",
        "Observation?_count=abc",
        "Observation?_count=100000",
        "Observation?_offset=-1",
        "Observation?patient=Observation/x",
        "Observation?patient=",
        "Observation?identifier=",
        "Patient?patient=x",
        "Patient?date=2020",
        "Observation?_format=xml",
    ],
)
def test_malformed_searches_are_400_operation_outcomes(world: FhirWorld, query: str) -> None:
    with world.http("a") as http:
        outcome(http.get(f"{FHIR}/{query}"), 400, "bad_search_parameter")


def test_unknown_types_unauthenticated_and_device_callers_are_refused(
    world: FhirWorld, server: Any
) -> None:
    with world.http("a") as http:
        outcome(http.get(f"{FHIR}/Medication"), 404, "unknown_resource_type")
        outcome(http.get(f"{FHIR}/Medication/x"), 404, "unknown_resource_type")
        outcome(http.post(f"{FHIR}/Patient", json={}), 405)
    with world.http(None) as http:
        outcome(http.get(f"{FHIR}/Patient/{world.patient}"), 401, "missing_token")
        outcome(http.get(f"{FHIR}/Observation"), 401, "missing_token")
        outcome(http.get(f"{FHIR}/Patient/{world.patient}/$everything"), 401)
    with server.http("not a token") as http:
        outcome(http.get(f"{FHIR}/Patient"), 401)
    _, device = server.device_token(world.clinic_a)
    with server.http(device) as http:
        outcome(http.get(f"{FHIR}/Patient/{world.patient}"), 403, "staff_only")


# ------------------------------------------------------------------ an off-the-shelf client
def test_fhirclient_reads_the_patient_and_searches_observations(world: FhirWorld) -> None:
    from fhirclient import client as fhir_client
    from fhirclient.models.observation import Observation
    from fhirclient.models.patient import Patient

    smart = fhir_client.FHIRClient(
        settings={"app_id": "coherency-test", "api_base": world.server.url + FHIR}
    )
    assert smart.server is not None
    smart.server.session.headers["Authorization"] = f"Bearer {world.tokens['a']}"
    patient = Patient.read(world.patient, smart.server)
    assert patient.id == world.patient
    assert patient.name[0].family == "Lovelace"
    assert patient.birthDate.isostring == "1950-12-10"
    search = Observation.where(struct={"patient": world.patient, "_count": "2"})
    observations = list(search.perform_resources_iter(smart.server))
    ids = {o.id for o in observations}
    assert {f"{a}-size" for a in world.assessments} <= ids
    assert len(ids) == len(observations)  # pages followed, none twice
    assert all(o.subject.reference == f"Patient/{world.patient}" for o in observations)
    smart.server.session.headers["Authorization"] = f"Bearer {world.tokens['b']}"
    with pytest.raises(Exception) as refused:
        Patient.read(world.patient, smart.server)
    assert getattr(refused.value, "response", None) is not None
    assert refused.value.response.status_code == 404  # type: ignore[attr-defined]


def test_the_guides_fhir_client_example_runs_against_the_server(
    world: FhirWorld, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/fhir.md's fhirclient example, with its three lines filled in."""
    guide = Path(__file__).resolve().parents[2] / "docs" / "fhir.md"
    blocks = re.findall(r"```python\n(.*?)```", guide.read_text(), flags=re.DOTALL)
    [block] = [b for b in blocks if "FHIR_BASE = " in b]
    filled, count = re.subn(
        r'^FHIR_BASE = ".*"\nACCESS_TOKEN = ".*"\nPATIENT_ID = ".*"$',
        f'FHIR_BASE = "{world.server.url}{FHIR}"\nACCESS_TOKEN = "{world.tokens["a"]}"\n'
        f'PATIENT_ID = "{world.patient}"',
        block,
        flags=re.MULTILINE,
    )
    assert count == 1, "the example names FHIR_BASE, ACCESS_TOKEN and PATIENT_ID"
    exec(compile(filled, str(guide), "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "Lovelace 1950-12-10"
    assert {line.split()[0] for line in printed[1:]} >= {f"{a}-size" for a in world.assessments}
