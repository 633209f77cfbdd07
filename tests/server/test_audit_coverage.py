"""Every route of the server is accounted for in the audit log.

`ROUTES` is the table: for each operation of the OpenAPI document, the audit events one
successful call writes (their kinds, as `Event.name`), or ``()`` with the reason it
writes none. A route missing from the table, or one the table names that the app no
longer has, fails `test_every_route_is_in_the_table`.

`test_a_tour_of_every_route_writes_exactly_its_events` then calls every route on a live
server (SQLite and PostgreSQL), in the order a clinic's life would (an admin sets up a
clinic, a tablet enrols and syncs patients and scans, staff read them, book visits,
order supplies, bill and pay), and checks that each call wrote exactly the events the
table says, that events about patient data name the patients, and that every route
was called. Calls are matched to their events by request id (the access log names the
route of each request id; each audit row keeps the request id it was written in).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
from sqlalchemy import select

from crdt import (
    DecisionStatus,
    IntentKind,
    decode_message,
    device_login_message,
    enrolment_message,
)
from edge_sdk import Argon2Params, DeviceIdentity, EdgeClient, PassphraseKeyProvider
from sync_server.audit.tables import AuditEvent
from sync_server.commerce.reference import republish_catalogue
from sync_server.identity.users import create_user
from sync_server.notifications import DeliveryFailed, Message, deliver_due
from sync_server.payments.sandbox import SandboxGateway
from tests.conftest import add_scanned_assessment

from .bookings_world import BookingWorld, build_world, local
from .commerce_world import build_shop, days
from .test_edge_central import make_certificate
from .test_models_publish import build_graph, files, make_manifest

Route = tuple[str, str]


class _RefusingPush:
    """A push provider that refuses every message for good."""

    name = "push"

    def send(self, message: Message, *, idempotency_key: str) -> str:
        raise DeliveryFailed("refused", retryable=False)


@dataclass(frozen=True)
class Writes:
    """The events one successful call writes: all of `always`, and any of `may` (events
    that depend on what the call carried: the intents a push delivered)."""

    always: tuple[str, ...]
    may: tuple[str, ...] = ()


# ------------------------------------------------------------------ the table
NONE_PROBE = "a health or metrics probe: no data"
NONE_HASHES = "hashes and sizes of the audit log only, no event's contents"
NONE_REFERENCE = "organisation reference data (no patient data), read by staff"
NONE_BLOB_PROTOCOL = "an upload's progress, no stored data (its completion is audited)"

DECIDED = ("intents-decided", "booking-state", "order-state", "invoice-issue", "payment")
"""What a push may also write: the server's decisions on the intents it delivered."""

ROUTES: dict[Route, Writes | str] = {
    ("GET", "/healthz"): NONE_PROBE,
    ("GET", "/readyz"): NONE_PROBE,
    ("GET", "/metrics"): NONE_PROBE,
    ("GET", "/v1/audit/checkpoint"): NONE_HASHES,
    ("POST", "/v1/audit/checkpoints"): NONE_HASHES,
    ("GET", "/v1/audit/proofs/consistency"): NONE_HASHES,
    ("GET", "/v1/audit/proofs/inclusion"): NONE_HASHES,
    ("POST", "/v1/audit/device-events"): Writes(("device-audit-push",)),
    ("POST", "/v1/audit/break-glass"): Writes(("break-glass-grant",)),
    ("GET", "/v1/audit/break-glass"): Writes(("audit-search",)),
    ("POST", "/v1/audit/break-glass/{grant_id}/review"): Writes(("break-glass-review",)),
    ("GET", "/v1/audit/disclosures"): Writes(("audit-search",)),
    ("GET", "/v1/audit/events"): Writes(("audit-search",)),
    ("POST", "/v1/devices/enroll"): Writes(("enrol",)),
    ("POST", "/v1/auth/refresh"): "a token refresh: the login it continues is audited",
    ("POST", "/v1/auth/device"): Writes(("device-login",)),
    ("POST", "/v1/auth/login"): Writes(("login",)),
    ("POST", "/v1/auth/logout"): Writes(("logout",)),
    ("GET", "/v1/devices/me"): "the calling device's own enrolment, no patient data",
    ("PUT", "/v1/edge/certificate"): Writes(("edge-certificate-replace",)),
    ("GET", "/v1/admin/clinics"): NONE_REFERENCE,
    ("POST", "/v1/admin/clinics"): Writes(("clinic-create",)),
    ("POST", "/v1/admin/enrolment-tokens"): Writes(("enrolment-token-create",)),
    ("GET", "/v1/admin/devices"): NONE_REFERENCE,
    ("POST", "/v1/admin/devices/{device_id}/revoke"): Writes(("device-revoke",)),
    ("POST", "/v1/admin/users"): Writes(("user-create",)),
    ("GET", "/v1/admin/users"): NONE_REFERENCE,
    ("POST", "/v1/admin/users/{user_id}/unlock"): Writes(("user-unlock",)),
    ("POST", "/v1/admin/users/{user_id}/deactivate"): Writes(("user-deactivate",)),
    ("POST", "/v1/admin/users/{user_id}/reactivate"): Writes(("user-reactivate",)),
    ("POST", "/v1/admin/users/{user_id}/reset-totp"): Writes(("user-totp-reset",)),
    ("POST", "/v1/admin/users/{user_id}/revoke-sessions"): Writes(("user-sessions-revoke",)),
    ("POST", "/v1/sync/push"): Writes(("sync-push",), may=DECIDED),
    ("GET", "/v1/sync/pull"): Writes((), may=("sync-pull",)),  # none when nothing was sent
    ("GET", "/v1/sync/directory"): "device keys, box certificates, revoked ids: no patient data",
    ("POST", "/v1/blobs/uploads"): NONE_BLOB_PROTOCOL,
    ("GET", "/v1/blobs/uploads/{upload_id}"): NONE_BLOB_PROTOCOL,
    ("HEAD", "/v1/blobs/uploads/{upload_id}"): NONE_BLOB_PROTOCOL,
    ("DELETE", "/v1/blobs/uploads/{upload_id}"): NONE_BLOB_PROTOCOL,
    ("PATCH", "/v1/blobs/uploads/{upload_id}"): Writes(("blob-upload",)),
    ("GET", "/v1/blobs/{sha256}"): Writes(("blob-download",)),
    ("HEAD", "/v1/blobs/{sha256}"): "whether a blob is stored and its size, no contents",
    ("GET", "/v1/blobs/missing"): "hashes of the clinic's blobs the storage lost, no contents",
    ("POST", "/v1/admin/models"): Writes(("model-publish",)),
    ("GET", "/v1/models/current"): Writes(("model-check",)),
    ("GET", "/v1/models/{sha256}"): Writes(("model-download",)),
    ("GET", "/v1/patients"): Writes(("read",)),
    ("GET", "/v1/patients/{patient_id}"): Writes(("read",)),
    ("GET", "/v1/patients/{patient_id}/wounds"): Writes(("read",)),
    ("GET", "/v1/wounds/{wound_id}/assessments"): Writes(("read",)),
    ("GET", "/v1/staff/assessments"): Writes(("read",)),
    ("GET", "/v1/staff/notes"): Writes(("read",)),
    ("GET", "/v1/staff/totals"): "counts of a clinic's records, no record's contents",
    # A read of the wounds it lists as not on track, when it lists any.
    ("GET", "/v1/reports/clinics/{clinic_id}"): Writes((), may=("read",)),
    ("GET", "/v1/reports/clinics/{clinic_id}/report.pdf"): Writes((), may=("read",)),
    # Once as it starts, once at its end (that one names the patients exported).
    ("GET", "/v1/staff/export/{kind}"): Writes(("export", "export")),
    ("GET", "/fhir/R4/metadata"): "the FHIR CapabilityStatement: what the server serves, no data",
    ("GET", "/fhir/R4/{resource_type}/{resource_id}"): Writes(("read",)),
    ("GET", "/fhir/R4/{resource_type}"): Writes(("read",)),
    ("GET", "/fhir/R4/Patient/{patient_id}/$everything"): Writes(("read",)),
    ("PUT", "/v1/directory/clinics/{clinic_id}/timezone"): Writes(("clinic-timezone-set",)),
    ("GET", "/v1/directory/providers"): NONE_REFERENCE,
    ("POST", "/v1/directory/providers"): Writes(("provider-create",)),
    ("GET", "/v1/directory/providers/{provider_id}"): NONE_REFERENCE,
    ("PATCH", "/v1/directory/providers/{provider_id}"): Writes(("provider-update",)),
    ("GET", "/v1/directory/services"): NONE_REFERENCE,
    ("POST", "/v1/directory/services"): Writes(("service-create",)),
    ("GET", "/v1/directory/providers/{provider_id}/hours"): NONE_REFERENCE,
    ("PUT", "/v1/directory/providers/{provider_id}/hours"): Writes(("weekly-hours-set",)),
    ("POST", "/v1/directory/exceptions"): Writes(("schedule-exception-add",)),
    ("GET", "/v1/directory/exceptions"): NONE_REFERENCE,
    ("DELETE", "/v1/directory/exceptions/{exception_id}"): Writes(("schedule-exception-remove",)),
    ("GET", "/v1/slots"): "free time of providers, no patient data",
    ("GET", "/v1/bookings"): Writes(("read",)),
    ("GET", "/v1/bookings/{booking_id}"): Writes(("read",)),
    ("POST", "/v1/bookings/{booking_id}/state"): Writes(("booking-state",)),
    ("GET", "/v1/quality-flags"): Writes(("read",)),
    ("POST", "/v1/quality-flags/{flag_id}/resolve"): Writes(("quality-flag-resolve",)),
    ("GET", "/v1/caregivers/{provider_id}/rating"): "a caregiver's aggregate rating, no patient",
    ("POST", "/v1/calendar-feeds"): Writes(("calendar-feed-create",)),
    ("GET", "/v1/calendar-feeds"): Writes(("read",)),
    ("DELETE", "/v1/calendar-feeds/{feed_id}"): Writes(("calendar-feed-revoke",)),
    ("GET", "/v1/calendar/{token}.ics"): Writes(("calendar-feed-read",)),
    ("GET", "/v1/commerce/products"): NONE_REFERENCE,
    ("POST", "/v1/commerce/products"): Writes(("product-create",)),
    ("GET", "/v1/commerce/products/{product_id}"): NONE_REFERENCE,
    ("PATCH", "/v1/commerce/products/{product_id}"): Writes(("product-update",)),
    ("GET", "/v1/commerce/locations"): NONE_REFERENCE,
    ("POST", "/v1/commerce/locations"): Writes(("stock-location-create",)),
    ("GET", "/v1/commerce/stock"): NONE_REFERENCE,
    ("POST", "/v1/commerce/lots"): Writes(("stock-receive",)),
    ("POST", "/v1/commerce/lots/{lot_id}/adjust"): Writes(("stock-adjust",)),
    ("GET", "/v1/commerce/orders"): Writes(("read",)),
    ("GET", "/v1/commerce/orders/{order_id}"): Writes(("read",)),
    ("POST", "/v1/commerce/orders/{order_id}/cancel"): Writes(
        ("order-state",), may=("invoice-void",)
    ),
    ("POST", "/v1/commerce/orders/{order_id}/{action}"): Writes(("order-state",)),
    ("GET", "/v1/commerce/prescriptions"): Writes(("read",)),
    ("POST", "/v1/commerce/prescriptions"): Writes(("prescription-issue",)),
    ("POST", "/v1/commerce/prescriptions/{prescription_id}/revoke"): Writes(
        ("prescription-revoke",)
    ),
    ("POST", "/v1/invoices"): Writes(("invoice-issue",)),
    ("GET", "/v1/invoices"): Writes(("read",)),
    ("GET", "/v1/invoices/{invoice_id}"): Writes(("read",)),
    ("POST", "/v1/invoices/{invoice_id}/void"): Writes(("invoice-void",)),
    ("POST", "/v1/invoices/{invoice_id}/pay"): Writes(("payment",)),
    ("GET", "/v1/payments/{payment_id}"): Writes(("read",)),
    ("POST", "/v1/payments/{payment_id}/refund"): Writes(("payment-refund",)),
    ("POST", "/v1/payments/{payment_id}/reconcile"): Writes((), may=("payment",)),
    ("GET", "/v1/ledger"): "account balances of the organisation, no patient",
    ("POST", "/v1/payments/webhooks"): Writes((), may=("payment",)),  # once per change
    ("GET", "/v1/notifications/deliveries"): Writes(("read",)),
    ("POST", "/v1/notifications/deliveries/{delivery_id}/retry"): Writes(("notification-retry",)),
    ("GET", "/v1/notifications/preferences"): Writes(("read",)),
    ("PUT", "/v1/notifications/preferences"): Writes(("notification-preferences-set",)),
}

PATIENT_EVENTS = {
    "read",
    "notification-retry",
    "break-glass-grant",
    "blob-upload",
    "blob-download",
    "booking-state",
    "quality-flag-resolve",
    "calendar-feed-create",
    "calendar-feed-revoke",
    "calendar-feed-read",
    "order-state",
    "prescription-issue",
    "prescription-revoke",
    "invoice-issue",
    "invoice-void",
    "payment",
    "payment-refund",
}
"""Event kinds about a patient's data: each must name the patient(s) it touched. (A
push or pull names the patients of the documents it carried: none for server-owned
records such as the catalogue; tests/server/test_audit_access.py checks those.)"""


def test_every_route_is_in_the_table(tmp_path: Path) -> None:
    from sync_server import Settings, create_app

    app = create_app(Settings(data_dir=tmp_path))
    routes = {
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    }
    assert sorted(routes - ROUTES.keys()) == [], "routes with no audit entry: add them"
    assert sorted(ROUTES.keys() - routes) == [], "entries for routes the app no longer has"
    for route, expected in ROUTES.items():
        named = expected if isinstance(expected, str) else expected.always + expected.may
        assert named, f"{route}: say which events it writes, or why none"


# ------------------------------------------------------------------ the tour
@dataclass
class Call:
    method: str
    route: str
    status: int
    request_id: str


class _AccessLog(logging.Handler):
    """Collects (method, route, status, request id) of every request the server served."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.calls: list[Call] = []

    def emit(self, record: logging.LogRecord) -> None:
        route = getattr(record, "route", None)
        if route is not None:
            self.calls.append(
                Call(record.method, route, record.status, record.request_id)  # type: ignore[attr-defined]
            )


@pytest.fixture
def access_log() -> Iterator[_AccessLog]:
    logger = logging.getLogger("sync_server.access")
    handler, level = _AccessLog(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


PASSWORD = "a long and careful password"


def ok(response: httpx.Response, status: int | None = None) -> Any:
    if status is None:
        assert 200 <= response.status_code < 300, (response.request.url, response.text)
    else:
        assert response.status_code == status, (response.request.url, response.text)
    return response.json() if response.content else None


@dataclass
class Tour:
    server: Any
    tmp: Path
    staff: httpx.Client = field(init=False)
    refresh_token: str = ""
    ids: dict[str, str] = field(default_factory=dict)

    def login_admin(self) -> None:
        username = f"tour-admin-{uuid.uuid4().hex[:8]}"
        with self.server.db.write() as session:
            _, secret = create_user(
                session=session,
                username=username,
                password=PASSWORD,
                role="admin",
                organisation_id=self.server.organisation_id,
                secret_box=self.server.app.state.secret_box,
            )
        assert secret is not None
        with self.server.http() as http:
            tokens = ok(
                http.post(
                    "/v1/auth/login",
                    json={
                        "username": username,
                        "password": PASSWORD,
                        "totp": pyotp.TOTP(secret).now(),
                    },
                )
            )
            tokens = ok(
                http.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
            )
        self.refresh_token = tokens["refresh_token"]
        self.staff = self.server.http(tokens["access_token"])

    def administer(self) -> None:
        staff = self.staff
        ok(staff.get("/v1/admin/clinics"))
        clinic = ok(
            staff.post("/v1/admin/clinics", json={"name": f"tour-{uuid.uuid4().hex[:6]}"}), 201
        )
        self.ids["clinic"] = clinic["id"]
        ok(
            staff.put(
                f"/v1/directory/clinics/{clinic['id']}/timezone", json={"timezone": "Europe/Oslo"}
            )
        )
        user = ok(
            staff.post(
                "/v1/admin/users",
                json={
                    "username": f"tour-nurse-{uuid.uuid4().hex[:6]}",
                    "password": PASSWORD,
                    "role": "clinician",
                    "clinic_id": clinic["id"],
                },
            ),
        )
        self.ids["nurse"] = user["user"]["id"]
        ok(staff.get("/v1/admin/users"))
        for action in ("unlock", "reset-totp", "revoke-sessions", "deactivate", "reactivate"):
            ok(staff.post(f"/v1/admin/users/{user['user']['id']}/{action}"))

    def tablet_enrols_and_syncs(self) -> EdgeClient:
        token = ok(
            self.staff.post("/v1/admin/enrolment-tokens", json={"clinic_id": self.ids["clinic"]}),
        )
        client = EdgeClient.init(
            self.tmp / "tablet",
            PassphraseKeyProvider("tour pass phrase", params=Argon2Params.fast()),
            clinic_id=self.ids["clinic"],
        )
        client.enroll(self.server.url, token["token"], name="tour tablet")
        scanned = add_scanned_assessment(client, "Patient")
        patient, wound = scanned.patient, scanned.wound
        client.notes.add(patient_id=patient.id, author="Tour Nurse", text="Dressing changed.")
        result = client.sync()
        assert result.blobs_uploaded == [scanned.sha256], result
        self.ids.update(patient=patient.id, wound=wound.id, scan=scanned.sha256)
        return client

    def device_http(self, client: EdgeClient) -> httpx.Client:
        issued_at, nonce = int(time.time()), secrets.token_hex(16)
        signature = client.identity.sign(device_login_message(client.device_id, issued_at, nonce))
        with self.server.http() as http:
            tokens = ok(
                http.post(
                    "/v1/auth/device",
                    json={
                        "device_id": client.device_id,
                        "issued_at": issued_at,
                        "nonce": nonce,
                        "signature": base64.b64encode(signature).decode(),
                    },
                )
            )
        return self.server.http(tokens["access_token"])

    def device_routes(self, device: httpx.Client) -> None:
        ok(device.get("/v1/devices/me"))
        ok(device.get("/v1/sync/directory"))
        pulled = device.get("/v1/sync/pull", params={"cursor": 0})
        assert pulled.status_code == 200
        assert decode_message(pulled.content).entries
        scan = self.ids["scan"]
        assert device.head(f"/v1/blobs/{scan}").status_code == 200
        assert device.get(f"/v1/blobs/{scan}").status_code == 200
        assert ok(device.get("/v1/blobs/missing")) == {"sha256": [], "next_after": None}
        data = secrets.token_bytes(2048)
        digest = hashlib.sha256(data).hexdigest()
        upload = ok(
            device.post("/v1/blobs/uploads", json={"sha256": digest, "size": len(data)}), 201
        )
        ok(device.get(f"/v1/blobs/uploads/{upload['upload_id']}"))
        assert device.head(f"/v1/blobs/uploads/{upload['upload_id']}").status_code == 200
        assert device.delete(f"/v1/blobs/uploads/{upload['upload_id']}").status_code == 204

    def edge_box(self) -> None:
        """A clinic's edge box: an edge token, the box enrolling with its certificate,
        then replacing it."""
        token = ok(
            self.staff.post(
                "/v1/admin/enrolment-tokens",
                json={"clinic_id": self.ids["clinic"], "kind": "edge"},
            ),
            201,
        )["token"]
        box = DeviceIdentity.generate()
        issued_at, nonce = int(time.time()), secrets.token_hex(16)
        pem, _ = make_certificate()
        with self.server.http() as http:
            enrolled = ok(
                http.post(
                    "/v1/devices/enroll",
                    json={
                        "token": token,
                        "device_id": box.device_id,
                        "public_key": base64.b64encode(box.public_key).decode(),
                        "issued_at": issued_at,
                        "nonce": nonce,
                        "signature": base64.b64encode(
                            box.sign(enrolment_message(token, box.device_id, issued_at, nonce))
                        ).decode(),
                        "name": "tour box",
                        "tls_certificate": pem,
                    },
                ),
                201,
            )
        new_pem, fingerprint = make_certificate()
        with self.server.http(enrolled["access_token"]) as c:
            replaced = ok(c.put("/v1/edge/certificate", json={"certificate": new_pem}))
        assert replaced["fingerprint"] == fingerprint

    def staff_reads(self) -> None:
        staff = self.staff
        clinic, patient, wound = self.ids["clinic"], self.ids["patient"], self.ids["wound"]
        ok(staff.get("/v1/patients", params={"clinic_id": clinic}))
        ok(staff.get(f"/v1/patients/{patient}"))
        ok(staff.get(f"/v1/patients/{patient}/wounds"))
        ok(staff.get(f"/v1/wounds/{wound}/assessments"))
        ok(staff.get("/v1/staff/assessments", params={"clinic_id": clinic}))
        ok(staff.get("/v1/staff/notes", params={"clinic_id": clinic}))
        ok(staff.get("/v1/staff/totals", params={"clinic_id": clinic}))
        month = {"month": datetime.now(UTC).strftime("%Y-%m")}
        ok(staff.get(f"/v1/reports/clinics/{clinic}", params=month))
        report_pdf = staff.get(f"/v1/reports/clinics/{clinic}/report.pdf", params=month)
        assert report_pdf.status_code == 200 and report_pdf.content.startswith(b"%PDF")
        exported = staff.get("/v1/staff/export/assessments", params={"clinic_id": clinic})
        assert exported.status_code == 200 and len(exported.text.splitlines()) == 2, exported.text
        ok(staff.get("/fhir/R4/metadata"))
        ok(staff.get(f"/fhir/R4/Patient/{patient}"))
        ok(staff.get("/fhir/R4/Observation", params={"patient": patient}))
        ok(staff.get(f"/fhir/R4/Patient/{patient}/$everything"))

    def directory(self) -> None:
        staff, clinic = self.staff, self.ids["clinic"]
        nurse = ok(
            staff.post(
                "/v1/directory/providers",
                json={"name": "RN Tour", "kind": "nurse", "clinic_id": clinic},
            ),
        )
        ok(staff.get("/v1/directory/providers", params={"clinic_id": clinic}))
        ok(staff.get(f"/v1/directory/providers/{nurse['id']}"))
        ok(staff.patch(f"/v1/directory/providers/{nurse['id']}", json={"languages": ["nb"]}))
        code = f"tour-{uuid.uuid4().hex[:6]}"
        ok(
            staff.post(
                "/v1/directory/services",
                json={"code": code, "name": "Tour visit", "duration_minutes": 30},
            ),
        )
        ok(staff.get("/v1/directory/services"))
        hours = [{"weekday": 0, "start": "09:00", "end": "12:00", "clinic_id": clinic}]
        ok(staff.put(f"/v1/directory/providers/{nurse['id']}/hours", json={"hours": hours}))
        ok(staff.get(f"/v1/directory/providers/{nurse['id']}/hours"))
        day = (date.today() + timedelta(days=30)).isoformat()
        closure = ok(
            staff.post(
                "/v1/directory/exceptions", json={"day": day, "kind": "closed", "clinic_id": clinic}
            ),
        )
        ok(staff.get("/v1/directory/exceptions", params={"from": day, "to": day}))
        assert staff.delete(f"/v1/directory/exceptions/{closure['id']}").status_code == 204

    def bookings(self, world: BookingWorld) -> None:
        staff = self.staff
        ok(
            staff.get(
                "/v1/slots",
                params={
                    "clinic_id": world.clinic_id,
                    "service": world.review,
                    "from": world.monday.isoformat(),
                    "to": (world.monday + timedelta(days=1)).isoformat(),
                },
            )
        )
        tablet = world.tablet()
        patient = tablet.patient()
        visits = [
            tablet.intent(
                IntentKind.VISIT_REQUEST,
                patient_id=patient.id,
                skill="compression",
                area=world.north,
                starts_at=local(world.monday, hour),
                caregiver_id=world.caregivers[0],
            )
            for hour in (8, 10)
        ]
        tablet.sync(patient, *visits)
        bookings = []
        for visit in visits:
            decided = tablet.decision(visit.id)
            assert decided is not None and decided.status is DecisionStatus.ACCEPTED, decided
            bookings.append(str(decided.outcome["booking_id"]))  # type: ignore[index]
        done, missed = bookings
        ok(staff.get("/v1/bookings", params={"clinic_id": world.clinic_id}))
        ok(staff.get(f"/v1/bookings/{done}"))
        for state in ("en_route", "started", "completed"):
            ok(staff.post(f"/v1/bookings/{done}/state", json={"state": state}))
        ok(staff.post(f"/v1/bookings/{missed}/state", json={"state": "missed", "reason": "car"}))
        review = tablet.intent(
            IntentKind.VISIT_REVIEW, patient_id=patient.id, subject_id=done, rating=2
        )
        tablet.sync(review)
        flags = ok(staff.get("/v1/quality-flags", params={"provider_id": world.caregivers[0]}))
        assert flags
        ok(staff.post(f"/v1/quality-flags/{flags[0]['id']}/resolve"))
        ok(staff.get(f"/v1/caregivers/{world.caregivers[0]}/rating"))
        feed = ok(
            staff.post(
                "/v1/calendar-feeds", json={"subject_kind": "patient", "subject_id": patient.id}
            ),
        )
        ok(staff.get("/v1/calendar-feeds"))
        with httpx.Client(base_url=self.server.url) as anonymous:
            ics = anonymous.get(httpx.URL(feed["url"]).path)
            assert ics.status_code == 200, ics.text
        ok(staff.delete(f"/v1/calendar-feeds/{feed['id']}"))
        self.break_glass(patient.id)

    def break_glass(self, patient_id: str) -> None:
        """A nurse of the tour's clinic opens a patient of another clinic, reads them,
        and an admin reviews the grant and accounts for the patient's disclosures."""
        token, _ = self.server.app.state.signing_key.issue_access_token(
            subject=self.ids["nurse"],
            kind="user",
            clinic_id=self.ids["clinic"],
            organisation_id=self.server.organisation_id,
            role="clinician",
            ttl=timedelta(minutes=5),
        )
        with self.server.http(token) as nurse:
            grant = ok(
                nurse.post(
                    "/v1/audit/break-glass",
                    json={"patient_id": patient_id, "reason": "unconscious, brought in"},
                )
            )
            ok(nurse.get(f"/v1/patients/{patient_id}"))
        staff = self.staff
        ok(staff.get("/v1/audit/break-glass", params={"unreviewed": True}))
        ok(staff.post(f"/v1/audit/break-glass/{grant['id']}/review", json={"note": "ok"}))
        ok(staff.get("/v1/audit/disclosures", params={"patient_id": patient_id}))
        ok(staff.get("/v1/audit/events", params={"patient_id": patient_id}))

    def commerce_and_payments(self) -> None:
        staff = self.staff
        shop = build_shop(self.server)
        try:
            tablet = shop.tablet()
            patient = tablet.patient()
            tablet.sync(patient)
            product = ok(
                staff.post(
                    "/v1/commerce/products",
                    json={
                        "sku": f"TOUR-{uuid.uuid4().hex[:8]}",
                        "name": "Tour foam",
                        "category": "dressing",
                        "product_class": "foam",
                        "unit": "box",
                        "price": 1200,
                        "currency": "EUR",
                    },
                ),
            )
            ok(staff.get("/v1/commerce/products"))
            ok(staff.get(f"/v1/commerce/products/{product['id']}"))
            ok(staff.patch(f"/v1/commerce/products/{product['id']}", json={"price": 1300}))
            ok(
                staff.post(
                    "/v1/commerce/locations",
                    json={"kind": "clinic", "name": "Tour shelf", "clinic_id": shop.clinic_id},
                ),
            )
            ok(staff.get("/v1/commerce/locations"))
            lot = ok(
                staff.post(
                    "/v1/commerce/lots",
                    json={
                        "location_id": shop.warehouse_id,
                        "product_id": product["id"],
                        "lot_code": f"L-{uuid.uuid4().hex[:6]}",
                        "expires_on": days(200).isoformat(),
                        "quantity": 20,
                    },
                ),
            )
            ok(staff.get("/v1/commerce/stock", params={"product_id": product["id"]}))
            ok(staff.post(f"/v1/commerce/lots/{lot['id']}/adjust", json={"delta": -1}))
            rx = ok(
                staff.post(
                    "/v1/commerce/prescriptions",
                    json={
                        "patient_id": patient.id,
                        "prescriber_id": shop.doctor_id,
                        "product_class": "foam",
                        "quantity": 5,
                        "signature": "data:,signed",
                        "issued_on": date.today().isoformat(),
                    },
                ),
            )
            ok(staff.get("/v1/commerce/prescriptions", params={"patient_id": patient.id}))
            ok(staff.post(f"/v1/commerce/prescriptions/{rx['id']}/revoke"))
            with self.server.db.write() as session:
                republish_catalogue(
                    session=session,
                    organisation_id=self.server.organisation_id,
                    signer=self.server.server_signer(),
                    now=datetime.now(UTC),
                )
            tablet.pull()
            orders = []
            for _ in range(2):
                intent = tablet.intent(
                    IntentKind.ORDER_PLACE,
                    patient_id=patient.id,
                    lines=[{"product_id": product["id"], "quantity": 1}],
                    partial=False,
                )
                tablet.sync(intent)
                decided = tablet.decision(intent.id)
                assert decided is not None and decided.status is DecisionStatus.ACCEPTED, decided
                orders.append(str(decided.outcome["order_id"]))  # type: ignore[index]
            ok(staff.get("/v1/commerce/orders", params={"clinic_id": shop.clinic_id}))
            ok(staff.get(f"/v1/commerce/orders/{orders[0]}"))
            ok(staff.post(f"/v1/commerce/orders/{orders[0]}/pick"))
            ok(staff.post(f"/v1/commerce/orders/{orders[1]}/cancel", json={"reason": "tour"}))

            def invoice() -> dict[str, Any]:
                return ok(
                    staff.post(
                        "/v1/invoices",
                        json={
                            "clinic_id": shop.clinic_id,
                            "patient_id": patient.id,
                            "currency": "EUR",
                            "lines": [
                                {
                                    "kind": "visit",
                                    "description": "dressing change",
                                    "quantity": 1,
                                    "unit_price": 5000,
                                }
                            ],
                        },
                    ),
                )

            paid, voided = invoice(), invoice()
            ok(staff.get("/v1/invoices", params={"patient_id": patient.id}))
            ok(staff.get(f"/v1/invoices/{paid['id']}"))
            ok(staff.post(f"/v1/invoices/{voided['id']}/void", json={"reason": "tour"}))
            payment = ok(
                staff.post(
                    f"/v1/invoices/{paid['id']}/pay",
                    json={"amount": 5000, "currency": "EUR", "payment_method": "tok_success"},
                    headers={"Idempotency-Key": uuid.uuid4().hex},
                ),
            )
            ok(staff.get(f"/v1/payments/{payment['payment_id']}"))
            ok(staff.post(f"/v1/payments/{payment['payment_id']}/reconcile"))
            ok(
                staff.post(
                    f"/v1/payments/{payment['payment_id']}/refund",
                    json={"amount": 1000},
                    headers={"Idempotency-Key": uuid.uuid4().hex},
                ),
            )
            ok(staff.get("/v1/ledger"))
            self.webhook(payment)
            self.notifications(shop.clinic_id)
        finally:
            shop.close()

    def notifications(self, clinic_id: str) -> None:
        """The refund told the patient; its push fails for good, staff see and retry it."""
        refusing = _RefusingPush()
        run = deliver_due(self.server.db, {"push": refusing}, owner="tour", clinic_ids=[clinic_id])
        assert run.dead >= 1, run
        dead = ok(self.staff.get("/v1/notifications/deliveries", params={"clinic_id": clinic_id}))
        ok(self.staff.post(f"/v1/notifications/deliveries/{dead[0]['id']}/retry"))
        recipient = {"clinic_id": clinic_id, "recipient": dead[0]["recipient"]}
        ok(self.staff.put("/v1/notifications/preferences", json={**recipient, "sms": False}))
        ok(self.staff.get("/v1/notifications/preferences", params=recipient))

    def webhook(self, payment: dict[str, Any]) -> None:
        payments = self.server.app.state.payments
        gateway = payments.gateway
        assert isinstance(gateway, SandboxGateway)
        event = gateway.events()[-1]
        body, headers = SandboxGateway.delivery(event, str(payments.webhook_secret))
        ok(self.staff.post("/v1/payments/webhooks", content=body, headers=headers))

    def models(self, device: httpx.Client) -> None:
        model = build_graph(f"tour-{uuid.uuid4().hex[:6]}")
        manifest = make_manifest(model, "9.9.9")
        ok(self.staff.post("/v1/admin/models", files=files(manifest.to_bytes(), model)))
        current = ok(device.get("/v1/models/current"))
        assert device.get(f"/v1/models/{current['sha256']}").status_code == 200

    def audit_routes(self, device: httpx.Client) -> None:
        staff = self.staff
        checkpoint = ok(device.get("/v1/audit/checkpoint"))
        signed = ok(staff.post("/v1/audit/checkpoints"))
        ok(
            device.get(
                "/v1/audit/proofs/consistency",
                params={"first": checkpoint["size"], "second": signed["size"]},
            )
        )
        ok(staff.get("/v1/audit/proofs/inclusion", params={"seq": 0, "size": signed["size"]}))

    def close_down(self, client: EdgeClient) -> None:
        ok(self.staff.post(f"/v1/admin/devices/{client.device_id}/revoke"))
        ok(self.staff.get("/v1/admin/devices"))
        ok(self.staff.post("/v1/auth/logout", json={"refresh_token": self.refresh_token}))


def test_a_tour_of_every_route_writes_exactly_its_events(
    server: Any, tmp_path: Path, access_log: _AccessLog
) -> None:
    tour = Tour(server, tmp_path)
    with server.http() as anonymous:
        for probe in ("/healthz", "/readyz", "/metrics"):
            assert anonymous.get(probe).status_code == 200
    tour.login_admin()
    tour.administer()
    client = tour.tablet_enrols_and_syncs()
    try:
        device = tour.device_http(client)
        tour.device_routes(device)
        tour.edge_box()
        tour.staff_reads()
        tour.directory()
        world = build_world(server)
        try:
            tour.bookings(world)
        finally:
            world.close()
        tour.commerce_and_payments()
        tour.models(device)
        tour.audit_routes(device)
        tour.close_down(client)
        device.close()
    finally:
        client.close()
        tour.staff.close()

    with server.db.read() as session:
        request_ids = {call.request_id for call in access_log.calls}
        rows = session.scalars(
            select(AuditEvent).where(AuditEvent.request_id.in_(request_ids))
        ).all()
    by_request: dict[str, list[AuditEvent]] = {}
    for row in rows:
        by_request.setdefault(str(row.request_id), []).append(row)

    problems: list[str] = []
    called: set[Route] = set()
    for call in access_log.calls:
        route = (call.method, call.route)
        expected = ROUTES.get(route)
        if expected is None:
            problems.append(f"{route}: not in the table")
            continue
        if not 200 <= call.status < 300:
            continue  # refusals are audited where they matter (tested per domain)
        called.add(route)
        events = by_request.get(call.request_id, [])
        wrote = Counter(e.action for e in events)
        always = Counter() if isinstance(expected, str) else Counter(expected.always)
        may = set() if isinstance(expected, str) else set(expected.may)
        if wrote & always != always or set((wrote - always).keys()) - may:
            problems.append(f"{route}: wrote {sorted(wrote.elements())}, table {expected}")
        for event in events:
            if event.operation not in ("C", "R", "U", "D", "E") or event.address != "127.0.0.1":
                problems.append(f"{route}: event {event.action} lacks its operation or address")
            if event.seq is None or event.leaf_hash is None:
                problems.append(f"{route}: event {event.action} is not in the Merkle log")
            if event.action in PATIENT_EVENTS and not event.patients:
                problems.append(f"{route}: event {event.action} names no patient")
    assert sorted(set(problems)) == [], "\n".join(sorted(set(problems)))
    assert sorted(ROUTES.keys() - called) == [], "routes the tour never called successfully"
    # The nurse's read under the break-glass grant is flagged as such.
    nurse_reads = [r for r in rows if r.actor_id == tour.ids["nurse"] and r.action == "read"]
    assert [(r.purpose, r.role) for r in nurse_reads] == [("break-glass", "clinician")]
