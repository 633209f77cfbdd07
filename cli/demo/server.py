"""The central-server part of `coherency demo`, on embedded defaults.

A sync server starts in-process on a free loopback port (SQLite and a local blob folder
under the demo's folder, no configuration), and an IT admin sets up two clinics the
way the ``coherency server create-admin`` and ``enroll-token`` commands do. Three
tablets enrol with one-time tokens, two of one clinic and one of another. The first
tablet records a patient, a wound and an assessment with a scan; the second, waiting
on a long poll, receives them at once and fetches the scan; both edit offline and
converge through the server in either order; the other clinic's tablet sees none of
it, and the server refuses what a device may not do. Then bookings: the demo booking
directory is loaded (`seed_demo`), two offline tablets of its Berlin clinic ask for
the same slot and one of them for a caregiver visit; after their syncs one holds the
slot and the other sees why not and the alternative offered. Then supplies: an order for
a prescription-only foam dressing is refused for a patient without a prescription and
accepted for one with a valid prescription, reserved and picked first-expiry-first-out;
its invoice syncs down and the tablet pays it through the sandbox gateway, whose
timeout is settled by a status query (one charge, however often the intent is pushed);
staff refund part of it (a retried refund gives back nothing more) and the ledger
balances. Every step checks its outcome
and raises `DemoFailedError` if it does not hold, so the demo doubles as a smoke test
of a fresh installation. The server is stopped at the end, also on failure. Needs the
``server`` extra; uses only the public names of `sync_server` and its HTTP API.
"""

from __future__ import annotations

import base64
import contextlib
import random
import secrets
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyotp

from cli.demo._central import answers, embedded_settings, quiet_logs
from cli.demo._scenario import (
    DemoFailedError,
    Say,
    Scenario,
    check,
    demo_kdf,
    demo_key_provider,
    plaintext_leaks,
    timed,
)
from crdt import (
    SYNC_MEDIA_TYPE,
    Checkpoint,
    Entry,
    EntryKind,
    Patient,
    RecordDocument,
    SyncMessage,
    device_login_message,
    encode_message,
    format_money,
)
from edge_sdk import (
    EdgeClient,
    EnrolmentError,
    HttpAuditLogSource,
    RetryPolicy,
    SyncProgress,
    SyncResult,
    invoice_id_of,
    kept_checkpoints,
    witness_server_log,
)
from sync_server import (
    IssuedEnrolmentToken,
    Settings,
    ThreadedServer,
    audit_public_key,
    create_admin,
    create_app,
    document_heads,
    issue_enrolment_token,
    migrate,
    seed_demo,
    verify_audit_log,
)

__all__ = ["ServerDemoReport", "SyncTiming", "run_server_demo"]

RIVERSIDE = "Riverside Wound Clinic"
HILLSIDE = "Hillside Community Nursing"
PATIENT_NAME = ("Joseph", "Mensah-Demo")
OTHER_PATIENT_NAME = ("Ingrid", "Halvorsen-Demo")
BOOKING_PATIENTS = (("Farida", "Haddad-Demo"), ("Tomasz", "Wojcik-Demo"))
BOOKING_CLINIC = "Wound Clinic Berlin"  # from `seed_demo`
RX_DRESSING = "FOAM-10"  # a prescription-only foam dressing of `seed_demo`'s catalogue
DEMO_RX_PATIENT = "6f1c1f6e-0d7a-4a8e-9f1e-2a1d3c4b5a01"  # `seed_demo`'s Ada Okafor
ORDERED_BOXES = 8  # more than the clinic's store holds: the warehouse's lots too
SCAN_SIZE = 32 * 1024
TOKEN_TTL = timedelta(hours=1)
NOT_ENROLLED = "not-enrolled-yet"  # a fresh store's clinic until its token names one
HOME_LONG_POLL_SECONDS = 10.0  # the home-visit tablet's wait (it is woken long before)
OTHER_LONG_POLL_SECONDS = 1.5  # the other clinic's wait (it must run out)
# A loopback server answers at once: fail fast rather than back off for a minute.
DEMO_RETRY = RetryPolicy(attempts=3, base_seconds=0.05, cap_seconds=0.5, timeout_seconds=30)


@dataclass(frozen=True, slots=True)
class SyncTiming:
    """One sync of one tablet: what moved and how long it took."""

    tablet: str
    what: str
    seconds: float
    pushed: int
    pulled: int
    blobs_uploaded: int
    blobs_downloaded: int


@dataclass(slots=True)
class ServerDemoReport:
    """What the server demo did, where it left its data, and how long the syncs took."""

    workdir: Path
    data_dir: Path
    server_url: str = ""
    database: str = ""
    schema_revision: str = ""
    steps: list[str] = field(default_factory=list)
    clinics: dict[str, str] = field(default_factory=dict)  # name -> clinic id
    devices: dict[str, str] = field(default_factory=dict)  # tablet -> device id
    stores: dict[str, Path] = field(default_factory=dict)  # tablet -> store folder
    records_on_server: dict[str, int] = field(default_factory=dict)  # clinic name -> count
    scan_sha256: str = ""
    scan_bytes: int = 0
    scan_fetched: bool = False
    long_poll_wake_seconds: float | None = None  # push start -> the waiting tablet had it
    converged_rounds: int = 0
    other_clinic_received: int = -1  # Riverside records the Hillside tablet received
    bookings: dict[str, Any] = field(default_factory=dict)  # the booking part's outcome
    supplies: dict[str, Any] = field(default_factory=dict)  # the orders and payments part
    audit: dict[str, Any] = field(default_factory=dict)  # the audit log's check and tampering
    refusals: list[str] = field(default_factory=list)
    syncs: list[SyncTiming] = field(default_factory=list)
    seconds: float = 0.0


def run_server_demo(
    workdir: Path, *, say: Say = lambda line: None, fast_kdf: bool = True
) -> ServerDemoReport:
    """Run the central-server scenario in `workdir` and return its report.

    The server's data goes to ``workdir/server`` and the tablets' stores to
    ``workdir/online-tablets``; both must be new or empty. `say` and `fast_kdf` are
    as for `cli.demo.run_demo`.

    Raises:
        DemoFailedError: A step's outcome was not what it must be, or the folders are
            already in use.
    """
    started = time.perf_counter()
    data_dir, tablets_dir = workdir / "server", workdir / "online-tablets"
    for folder in (data_dir, tablets_dir):
        if folder.exists() and any(folder.iterdir()):
            raise DemoFailedError(f"{folder} is not empty: run the demo in a new folder")
    report = ServerDemoReport(workdir=workdir, data_dir=data_dir)
    settings = embedded_settings(data_dir)
    migration = migrate(settings)
    report.schema_revision, report.database = migration.revision, migration.database
    provider = demo_key_provider(demo_kdf(fast_kdf))
    with quiet_logs(), contextlib.ExitStack() as stack:
        server = ThreadedServer(create_app(settings))
        try:
            server.start()
        except RuntimeError as exc:
            raise DemoFailedError(f"demo step failed: {exc}") from None
        stack.callback(server.stop)
        report.server_url = server.url
        http = stack.enter_context(httpx.Client(base_url=server.url, timeout=30))
        tablets: dict[str, EdgeClient] = {}
        for name in ("riverside-ward", "riverside-home-visit", "hillside"):
            path = tablets_dir / name
            tablets[name] = stack.enter_context(
                EdgeClient.init(path, provider, clinic_id=NOT_ENROLLED)
            )
            report.stores[name] = path
        # Long polls run in these threads. On the way out the server stops first (its
        # graceful shutdown cuts a poll still waiting after 2 s), then the threads are
        # joined, and only then are the stores they use closed.
        pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="demo-long-poll")
        stack.callback(pool.shutdown)
        stack.callback(server.stop)
        _Scenario(report, say, settings, http, tablets, pool).run()
    check(not answers(report.server_url), "the sync server stopped")
    Scenario(report.steps, say).step(
        f"sync server stopped; `coherency server run --data-dir {data_dir}` serves its data again"
    )
    report.seconds = round(time.perf_counter() - started, 3)
    return report


# ---------------------------------------------------------------- the scenario
class _Scenario(Scenario):
    """The demo's steps, sharing the server, the tablets and what they recorded."""

    def __init__(
        self,
        report: ServerDemoReport,
        say: Say,
        settings: Settings,
        http: httpx.Client,
        tablets: dict[str, EdgeClient],
        pool: ThreadPoolExecutor,
    ) -> None:
        super().__init__(report.steps, say)
        self.report = report
        self.pool = pool
        self.settings = settings
        self.http = http
        self.ward = tablets["riverside-ward"]
        self.home = tablets["riverside-home-visit"]
        self.hill = tablets["hillside"]
        self.staff_headers: dict[str, str] = {}
        self.tokens: dict[str, IssuedEnrolmentToken] = {}
        self.riverside = ""
        self.hillside = ""
        self.ids: dict[str, str] = {}  # patient, wound, assessment, hillside-patient
        self.scan = b""

    def run(self) -> None:
        self.server_is_ready()
        self.staff_set_up_clinics()
        self.tablets_enrol()
        self.other_clinic_records()
        self.ward_records_offline()
        self.sync_with_long_polls()
        self.home_fetches_scan()
        self.concurrent_edits(round_no=1)
        self.concurrent_edits(round_no=2)
        self.staff_view()
        self.server_refuses()
        self.clinics_stay_apart()
        self.bookings_decided()
        self.supplies_ordered_and_paid()
        self.nothing_in_plaintext()
        self.audit_verified()

    # ------------------------------------------------------------ steps
    def server_is_ready(self) -> None:
        answer = self.http.get("/readyz")
        check(
            answer.status_code == 200 and answer.json().get("status") == "ready",
            f"the server is ready (GET /readyz answered {answer.status_code}: {answer.text})",
        )
        self.step(
            f"central sync server up on embedded defaults at {self.report.server_url}: "
            f"SQLite database and blob folder in {self.report.data_dir} "
            f"(schema {self.report.schema_revision}); /readyz says ready"
        )

    def staff_set_up_clinics(self) -> None:
        password = secrets.token_urlsafe(18)
        admin = create_admin(
            self.settings, username="demo-it-admin", password=password, with_totp=True
        )
        check(admin.totp_secret is not None, "the admin account has a TOTP secret")
        assert admin.totp_secret is not None
        login = self.http.post(
            "/v1/auth/login",
            json={
                "username": admin.username,
                "password": password,
                "totp": pyotp.TOTP(admin.totp_secret).now(),
            },
        )
        check(login.status_code == 200, f"the admin logs in ({_error_of(login)})")
        self.staff_headers = {"authorization": f"Bearer {login.json()['access_token']}"}
        self.tokens = {
            "riverside-ward": issue_enrolment_token(self.settings, clinic=RIVERSIDE, ttl=TOKEN_TTL),
            "riverside-home-visit": issue_enrolment_token(
                self.settings, clinic=RIVERSIDE, ttl=TOKEN_TTL
            ),
            "hillside": issue_enrolment_token(self.settings, clinic=HILLSIDE, ttl=TOKEN_TTL),
        }
        self.riverside = self.tokens["riverside-ward"].clinic_id
        self.hillside = self.tokens["hillside"].clinic_id
        check(
            self.tokens["riverside-home-visit"].clinic_id == self.riverside != self.hillside,
            "two tokens for Riverside, one for Hillside",
        )
        self.report.clinics = {RIVERSIDE: self.riverside, HILLSIDE: self.hillside}
        self.step(
            f"IT admin created (password + TOTP) and logged in; clinics {RIVERSIDE!r} and "
            f"{HILLSIDE!r}; 3 one-time enrolment tokens, valid {_hours(TOKEN_TTL)} "
            "(what `coherency server create-admin` and `enroll-token` do)"
        )

    def tablets_enrol(self) -> None:
        self.ward.enroll(
            self.report.server_url, self.tokens["riverside-ward"].token, name="Riverside ward"
        )
        try:
            self.home.enroll(self.report.server_url, self.tokens["riverside-ward"].token)
        except EnrolmentError as exc:
            refusal = str(exc).removeprefix("the server refused the enrolment: ")
        else:
            raise DemoFailedError("demo step failed: a spent enrolment token was accepted again")
        check("already used" in refusal, f"the spent token is refused as used ({refusal})")
        self.report.refusals.append(f"spent enrolment token: {refusal}")
        self.home.enroll(
            self.report.server_url,
            self.tokens["riverside-home-visit"].token,
            name="Riverside home visit",
        )
        self.hill.enroll(self.report.server_url, self.tokens["hillside"].token, name="Hillside")
        check(
            self.ward.clinic_id == self.home.clinic_id == self.riverside
            and self.hill.clinic_id == self.hillside,
            "each tablet took its token's clinic",
        )
        devices = self.http.get("/v1/admin/devices", headers=self.staff_headers)
        check(devices.status_code == 200, f"the admin lists devices ({_error_of(devices)})")
        listed = {d["id"]: d["clinic_id"] for d in devices.json()}
        expected = {t.device_id: t.clinic_id for t in (self.ward, self.home, self.hill)}
        check(listed == expected, f"the server lists exactly the 3 tablets ({listed})")
        self.report.devices = {
            "riverside-ward": self.ward.device_id,
            "riverside-home-visit": self.home.device_id,
            "hillside": self.hill.device_id,
        }
        self.step(
            f"3 tablets enrolled, each proving its Ed25519 device key: Riverside ward "
            f"{self.ward.device_id[:8]}, Riverside home visit {self.home.device_id[:8]}, "
            f"Hillside {self.hill.device_id[:8]}; the admin's device list shows all three"
        )
        self.step(
            f"the ward tablet's token, tried again on the home-visit tablet: refused: {refusal}"
        )

    def other_clinic_records(self) -> None:
        patient = self.hill.patients.add(
            given_name=OTHER_PATIENT_NAME[0],
            family_name=OTHER_PATIENT_NAME[1],
            birth_date="1939-02-14",
            sex="female",
            mrn="HCN-20817",
        )
        self.ids["hillside-patient"] = patient.id
        result = self._sync(self.hill, "hillside", "own patient")
        check(result.pushed == [patient.id], f"Hillside pushed its patient ({result.pushed})")
        self.step(
            f"Hillside tablet recorded a patient of its own and synced: 1 record pushed "
            f"in {_ms(self.report.syncs[-1].seconds)}"
        )

    def ward_records_offline(self) -> None:
        ward = self.ward
        patient = ward.patients.add(
            given_name=PATIENT_NAME[0],
            family_name=PATIENT_NAME[1],
            birth_date="1951-09-03",
            sex="male",
            mrn="RVS-000452",
        )
        wound = ward.wounds.add(
            patient_id=patient.id, body_site="left shin", etiology="venous", onset="2026-09-15"
        )
        self.scan = _made_up_scan(SCAN_SIZE)
        ref = ward.blobs.put_bytes(self.scan)
        check(ref.size == len(self.scan), "the scan is stored whole on the ward tablet")
        assessment = ward.assessments.add(
            wound_id=wound.id,
            patient_id=patient.id,
            captured_at="2026-11-21T10:15:00+00:00",
            device_id=ward.device_id,
            clinician="RN Osei",
            measurements={"area_cm2": 4.8, "length_cm": 3.1, "width_cm": 1.9, "max_depth_mm": 2.2},
            blobs=[
                {
                    "sha256": ref.sha256,
                    "size": ref.size,
                    "kind": "scan",
                    "media_type": "application/octet-stream",
                }
            ],
        )
        self.ids.update(patient=patient.id, wound=wound.id, assessment=assessment.id)
        self.report.scan_sha256, self.report.scan_bytes = ref.sha256, ref.size
        self.step(
            f"Riverside ward tablet, offline: patient {patient.id[:8]}, wound (left shin, "
            f"venous), assessment ({assessment.measurements.area_cm2} cm²) with a "
            f"{_kib(ref.size)} scan, encrypted on the tablet"
        )

    def sync_with_long_polls(self) -> None:
        expected = {self.ids["patient"], self.ids["wound"], self.ids["assessment"]}
        pushed_at: list[float] = []

        def progress(p: SyncProgress) -> None:
            if p.phase == "push" and p.total and p.done == p.total:
                pushed_at.append(time.perf_counter())

        home_wait = self.pool.submit(
            timed, lambda: self.home.sync(wait=HOME_LONG_POLL_SECONDS, retry=DEMO_RETRY)
        )
        hill_wait = self.pool.submit(
            timed, lambda: self.hill.sync(wait=OTHER_LONG_POLL_SECONDS, retry=DEMO_RETRY)
        )
        self._await_long_polls(2, [home_wait, hill_wait])
        sync_started = time.perf_counter()
        ward_result = self._sync(self.ward, "riverside-ward", "records and scan", progress)
        home_result, home_seconds, home_done = home_wait.result(timeout=60)
        hill_result, hill_seconds, _ = hill_wait.result(timeout=60)
        check(
            set(ward_result.pushed) == expected,
            f"the ward tablet pushed the 3 records ({ward_result.pushed})",
        )
        check(
            ward_result.blobs_uploaded == [self.report.scan_sha256] and not ward_result.blob_errors,
            f"the ward tablet uploaded the scan ({ward_result.blob_errors})",
        )
        self.step(
            f"ward tablet synced: 3 records pushed and the {_kib(self.report.scan_bytes)} scan "
            f"uploaded in {_ms(self.report.syncs[-1].seconds)}"
        )
        self._record("riverside-home-visit", "long poll", home_seconds, home_result)
        check(
            set(home_result.pulled) == expected,
            f"the waiting home-visit tablet received the 3 records ({home_result.pulled})",
        )
        wake = home_done - sync_started
        check(
            0 < wake < HOME_LONG_POLL_SECONDS - 1,
            f"the home-visit tablet was woken by the push, not by its timeout ({wake:.2f} s)",
        )
        self.report.long_poll_wake_seconds = round(wake, 3)
        check(self.home.patients.get(self.ids["patient"]).mrn == "RVS-000452", "patient arrived")
        self.step(
            f"home-visit tablet, waiting on a long poll, had the 3 records "
            f"{_ms(wake)} after the ward tablet began its sync"
        )
        self._record("hillside", "long poll", hill_seconds, hill_result)
        check(
            not hill_result.pulled and hill_seconds >= OTHER_LONG_POLL_SECONDS * 0.9,
            f"Riverside's push did not wake the Hillside tablet ({hill_result.pulled}, "
            f"{hill_seconds:.2f} s)",
        )
        self.step(
            f"Hillside tablet, long-polling at the same time, was not woken: nothing "
            f"arrived in its {OTHER_LONG_POLL_SECONDS:g} s wait"
        )

    def home_fetches_scan(self) -> None:
        sha = self.report.scan_sha256
        result = self._sync(self.home, "riverside-home-visit", "scan")
        check(
            result.blobs_downloaded == [sha] and not result.blob_errors,
            f"the home-visit tablet downloaded the scan ({result.blob_errors})",
        )
        check(self.home.blobs.read_bytes(sha) == self.scan, "the fetched scan is byte-identical")
        reference = self.home.assessments.get(self.ids["assessment"]).blobs
        check([b.sha256 for b in reference] == [sha], "the assessment references the scan")
        self.report.scan_fetched = True
        self.step(
            f"home-visit tablet fetched the scan: {self.report.scan_bytes} bytes, SHA-256 "
            f"verified and identical, re-encrypted under its own key "
            f"({_ms(self.report.syncs[-1].seconds)})"
        )

    def concurrent_edits(self, *, round_no: int) -> None:
        ward, home = self.ward, self.home
        if round_no == 1:
            ward.wounds.update(self.ids["wound"], status="healing")
            home.wounds.update(self.ids["wound"], body_site="left shin, medial")
            order = [("riverside-ward", ward), ("riverside-home-visit", home)]
            edits = "ward sets the wound to healing, home visit refines its site"
        else:
            ward.patients.update(
                self.ids["patient"], contacts=[{"kind": "phone", "value": "+44 1632 960452"}]
            )
            home.patients.update(self.ids["patient"], mrn="RVS-000452-B")
            order = [("riverside-home-visit", home), ("riverside-ward", ward)]
            edits = "ward adds a phone number, home visit corrects the MRN"
        timings_from = len(self.report.syncs)
        for name, client in [*order, order[0]]:
            self._sync(client, name, f"offline edits, round {round_no}")
        self._check_converged()
        check(not ward.conflicts() and not home.conflicts(), "edits of different fields merge")
        if round_no == 1:
            wound = home.wounds.get(self.ids["wound"])
            check(
                wound.status.value == "healing" and wound.body_site == "left shin, medial",
                f"both wound edits kept ({wound.status.value}, {wound.body_site})",
            )
            kept = f"wound is now '{wound.body_site}', {wound.status.value}"
        else:
            patient = ward.patients.get(self.ids["patient"])
            check(
                patient.mrn == "RVS-000452-B" and len(patient.contacts) == 1,
                f"both patient edits kept ({patient.mrn}, {patient.contacts})",
            )
            kept = f"MRN {patient.mrn} and the phone number both kept"
        self.report.converged_rounds = round_no
        path = " → ".join(_short(name) for name, _ in [*order, order[0]])
        total = sum(t.seconds for t in self.report.syncs[timings_from:])
        self.step(
            f"both tablets offline, {edits}; synced {path} ({_ms(total)} in all): converged, "
            f"same document heads on both tablets and the server; {kept}"
        )

    def staff_view(self) -> None:
        patients = self._staff_get("/v1/patients", params={"clinic_id": self.riverside})
        items = patients["items"]
        check(
            [p["id"] for p in items] == [self.ids["patient"]],
            f"staff see Riverside's one patient ({[p['id'] for p in items]})",
        )
        patient = items[0]["record"]
        check(patient["mrn"] == "RVS-000452-B", "the server has the converged MRN")
        wounds = self._staff_get(f"/v1/patients/{self.ids['patient']}/wounds")["items"]
        check(
            len(wounds) == 1 and wounds[0]["record"]["status"] == "healing",
            "the server has the converged wound",
        )
        assessments = self._staff_get(f"/v1/wounds/{self.ids['wound']}/assessments")["items"]
        check(len(assessments) == 1, "the server has the assessment")
        scans = assessments[0]["record"]["blobs"]
        check(
            [s["sha256"] for s in scans] == [self.report.scan_sha256],
            "the assessment on the server references the scan",
        )
        blob = self.http.get(
            f"/v1/blobs/{self.report.scan_sha256}",
            params={"clinic_id": self.riverside},
            headers=self.staff_headers,
        )
        check(
            blob.status_code == 200 and blob.content == self.scan,
            f"staff can download the scan ({_error_of(blob)})",
        )
        hillside = self._staff_get("/v1/patients", params={"clinic_id": self.hillside})["items"]
        check(
            [p["id"] for p in hillside] == [self.ids["hillside-patient"]],
            "staff see Hillside's own patient under Hillside only",
        )
        self.report.records_on_server = self._records_on_server()
        measurements = assessments[0]["record"]["measurements"]
        self.step(
            f"staff view through the HTTP API (admin, password + TOTP): Riverside lists "
            f"{patient['family_name']}, {patient['given_name']} (MRN {patient['mrn']}); "
            f"wound '{wounds[0]['record']['body_site']}', {wounds[0]['record']['status']}; "
            f"1 assessment, {measurements['area_cm2']} cm², scan downloadable "
            f"({len(blob.content)} bytes)"
        )

    def server_refuses(self) -> None:
        token = self._device_access_token(self.hill)
        device = {"authorization": f"Bearer {token}"}
        forged = RecordDocument.create(
            Patient,
            {"given_name": "Forged", "family_name": "Record", "birth_date": "1970-01-01"},
            device_id=self.hill.device_id,
            clinic_id=self.riverside,
        )
        body = encode_message(SyncMessage({}, (Entry(EntryKind.DOC, forged.id, forged.save()),)))
        push = self.http.post(
            "/v1/sync/push", content=body, headers={**device, "content-type": SYNC_MEDIA_TYPE}
        )
        check(push.status_code == 200, f"the push is answered ({_error_of(push)})")
        answer = push.json()
        refused = {r["doc_id"]: r["reason"] for r in answer["rejected"]}
        check(
            not answer["accepted"] and list(refused) == [forged.id],
            f"the server refused the forged record ({answer})",
        )
        stored = self.http.get(f"/v1/patients/{forged.id}", headers=self.staff_headers)
        check(stored.status_code == 404, "nothing of the forged record was stored")
        self.report.refusals.append(f"record pushed into another clinic: {refused[forged.id]}")
        self.step(
            f"Hillside tablet pushed a record claiming to be Riverside's: refused "
            f"({refused[forged.id]}); nothing stored"
        )
        scan = self.http.get(f"/v1/blobs/{self.report.scan_sha256}", headers=device)
        check(scan.status_code == 404, f"another clinic's scan is not served ({scan.status_code})")
        staff_only = self.http.get("/v1/patients", headers=device)
        check(
            staff_only.status_code == 403 and _code(staff_only) == "staff_only",
            f"a tablet may not use the staff API ({_error_of(staff_only)})",
        )
        self.report.refusals += [
            f"another clinic's scan: HTTP 404 {_code(scan)}",
            f"staff API with a device token: HTTP 403 {_code(staff_only)}",
        ]
        self.step(
            f"Hillside tablet asking for Riverside's scan: 404 {_code(scan)}; "
            f"calling the staff API: 403 {_code(staff_only)}"
        )

    def clinics_stay_apart(self) -> None:
        result = self._sync(self.hill, "hillside", "final")
        riverside_ids = set(self.ward.replica.document_heads())
        hillside_ids = set(self.hill.replica.document_heads())
        self.report.other_clinic_received = len(hillside_ids & riverside_ids)
        check(not result.pulled, f"the Hillside tablet pulled nothing ({result.pulled})")
        check(
            hillside_ids == {self.ids["hillside-patient"]},
            f"the Hillside tablet holds only its own record ({sorted(hillside_ids)})",
        )
        check(
            set(self.home.replica.document_heads()) == riverside_ids
            and self.ids["hillside-patient"] not in riverside_ids,
            "the Riverside tablets hold nothing of Hillside's",
        )
        self.step(
            f"Hillside tablet synced again: received none of Riverside's "
            f"{len(riverside_ids)} records (it holds only its own); the Riverside tablets "
            "hold nothing of Hillside's"
        )

    def bookings_decided(self) -> None:
        seeded = seed_demo(self.settings)
        check(BOOKING_CLINIC in seeded.clinics, f"the demo directory has {BOOKING_CLINIC}")
        folder = self.report.workdir / "online-tablets"
        provider = demo_key_provider(demo_kdf(True))
        with (
            EdgeClient.init(folder / "berlin-a", provider, clinic_id=NOT_ENROLLED) as first,
            EdgeClient.init(folder / "berlin-b", provider, clinic_id=NOT_ENROLLED) as second,
        ):
            for tablet, name in ((first, "berlin-a"), (second, "berlin-b")):
                token = issue_enrolment_token(self.settings, clinic=BOOKING_CLINIC, ttl=TOKEN_TTL)
                tablet.enroll(self.report.server_url, token.token, name=name)
                self.report.devices[name] = tablet.device_id
                self.report.stores[name] = folder / name
                self._sync(tablet, name, "directory and free slots")
            directory = first.bookings.directory()
            check(directory is not None, "the tablet holds the clinic's directory")
            assert directory is not None
            days = [day for day in first.bookings.free_slots() if day.slots]
            check(bool(days), "the tablet holds free slots for the coming days")
            slot = days[0].slots[0]
            doctor = next(p for p in directory.providers if p.id == slot.provider_id)
            caregiver = next(p for p in directory.providers if p.kind == "caregiver")
            self.step(
                f"booking directory loaded (`coherency server seed-demo`: {seeded.providers} "
                f"providers, {seeded.services} services, {len(seeded.clinics)} clinics); two "
                f"{BOOKING_CLINIC} tablets enrolled and synced it: {len(days)} days of free "
                f"slots, as of {days[0].generated_at:%H:%M:%S} UTC"
            )
            # Offline: both ask for the same slot; the second also books a home visit.
            asked = []
            for tablet, (given, family) in zip((first, second), BOOKING_PATIENTS, strict=True):
                patient = tablet.patients.add(
                    given_name=given, family_name=family, birth_date="1951-09-12"
                )
                asked.append(
                    tablet.bookings.request_appointment(
                        patient.id, slot.service, slot.starts_at, provider_id=slot.provider_id
                    )
                )
            # Noon on the first day with free slots whose noon is still ahead (after
            # noon UTC the first day's has passed, and a time passed is refused).
            noons = [d.slots[0].starts_at.replace(hour=12, minute=0) for d in days]
            visit_at = next(
                (noon for noon in noons if noon > days[0].generated_at + timedelta(hours=1)),
                None,
            )
            check(visit_at is not None, "the tablet holds a day whose noon is still ahead")
            assert visit_at is not None
            visit = second.bookings.request_visit(
                asked[1].intent.patient_id or "",
                caregiver.skills[0],
                caregiver.areas[0],
                visit_at,
                duration_minutes=45,
                flexible=True,
            )
            check(
                all(a.state == "pending" for a in (*asked, visit)),
                "offline, the intents are pending",
            )
            self.step(
                f"offline, both tablets asked for {doctor.name} at "
                f"{slot.starts_at:%a %d %b %H:%M} UTC ({slot.service}); tablet B also asked "
                f"for a {caregiver.skills[0]} visit in {caregiver.areas[0]}: all pending"
            )
            self._sync(first, "berlin-a", "appointment request")
            self._sync(second, "berlin-b", "appointment and visit requests")
            won, lost = first.intent_status(asked[0].id), second.intent_status(asked[1].id)
            booked_visit = second.intent_status(visit.id)
            check(won.state == "accepted", f"tablet A got the slot ({won.state})")
            check(lost.state == "rejected", f"tablet B was refused the slot ({lost.state})")
            assert lost.decision is not None and won.decision is not None
            check(
                lost.decision.alternative is not None,
                "tablet B was offered an alternative slot",
            )
            check(
                booked_visit.state in ("accepted", "accepted_alternative"),
                f"the visit was booked ({booked_visit.state})",
            )
            assert lost.decision.alternative is not None and booked_visit.decision is not None
            alternative = lost.decision.alternative
            visit_outcome = booked_visit.decision.outcome or {}
            self.report.bookings = {
                "clinic_id": seeded.clinics[BOOKING_CLINIC],
                "patient_id": asked[0].intent.patient_id,
                "slot": slot.starts_at.isoformat(),
                "provider": doctor.name,
                "winner": won.state,
                "loser": lost.state,
                "reason": lost.decision.reason,
                "alternative": alternative,
                "visit": booked_visit.state,
                "caregiver": visit_outcome.get("provider_name"),
            }
            self.step(
                f"after their syncs, tablet A holds the slot (accepted); tablet B: "
                f"{lost.decision.reason}; offered instead: {alternative['provider_name']} at "
                f"{alternative['starts_at']}"
            )
            self.step(
                f"tablet B's visit: {booked_visit.state}, with "
                f"{visit_outcome.get('provider_name')} at {visit_outcome.get('starts_at')} "
                "(the server picked the free caregiver "
                "with the skill who serves the area)"
            )

    def supplies_ordered_and_paid(self) -> None:
        provider = demo_key_provider(demo_kdf(True))
        with EdgeClient.open(self.report.stores["berlin-a"], provider) as tablet:
            self._sync(tablet, "berlin-a", "the supplies catalogue")
            foam = tablet.orders.product(RX_DRESSING)
            check(foam.prescription_required, f"{foam.name} needs a prescription")
            without = self.report.bookings["patient_id"]  # booked earlier; no prescription
            with_rx = DEMO_RX_PATIENT  # seeded with a valid foam-dressing prescription
            refused = tablet.orders.place(without, [(RX_DRESSING, 2)])
            placed = tablet.orders.place(with_rx, [(RX_DRESSING, ORDERED_BOXES)])
            self._sync(tablet, "berlin-a", "two supply orders")
            no = tablet.intent_status(refused.id)
            yes = tablet.intent_status(placed.id)
            check(no.state == "rejected", f"the order without a prescription was refused ({no})")
            check(yes.state == "accepted", f"the order with a prescription was accepted ({yes})")
            assert no.decision is not None and yes.decision is not None
            check(
                "prescription" in (no.decision.reason or ""),
                f"the refusal says a prescription is needed ({no.decision.reason})",
            )
            outcome = yes.decision.outcome or {}
            taken = [r for line in outcome["lines"] for r in line["reservations"]]
            self.step(
                f"{foam.name} ({foam.hcpcs}, prescription only): refused for a patient "
                f"without a prescription: {no.decision.reason}"
            )
            stock = {
                lot["lot_code"]: lot
                for lot in self._staff_get_list("/v1/commerce/stock", {"product_id": foam.id})
            }
            expired = [code for code, lot in stock.items() if lot["expires_on"] < _today()]
            check(bool(expired), "the demo stock has an expired lot")
            check(
                not {r["lot_code"] for r in taken} & set(expired),
                "no expired lot was reserved",
            )
            order_id = str(outcome["order_id"])
            picked = self.http.post(
                f"/v1/commerce/orders/{order_id}/pick", headers=self.staff_headers
            )
            check(picked.status_code == 200, f"staff picked the order ({_error_of(picked)})")
            check(
                all(r["state"] == "picked" for r in picked.json()["reservations"]),
                "every reservation was picked",
            )
            self.step(
                f"accepted for the patient with a prescription: {ORDERED_BOXES} boxes reserved "
                + ", ".join(
                    f"{r['quantity']} from lot {r['lot_code']} (expires {r['expires_on']})"
                    for r in taken
                )
                + f" - first expiry first, lot {', '.join(expired)} (expired) never taken; "
                "staff picked it"
            )
            self._sync(tablet, "berlin-a", "the order's invoice")
            invoice = tablet.payments.invoice(str(outcome["invoice_id"]))
            check(invoice.total == outcome["total"], "the invoice bills the order's total")
            paying = tablet.payments.pay(
                invoice_id_of(invoice), invoice.total, invoice.currency, "tok_timeout"
            )
            self._sync(tablet, "berlin-a", "a payment")
            paid = tablet.intent_status(paying.id)
            check(paid.state == "accepted", f"the payment was taken ({paid})")
            assert paid.decision is not None
            payment = paid.decision.outcome or {}
            check(payment.get("status") == "processing", "the gateway timed out: processing")
            settled = self.http.post(
                f"/v1/payments/{payment['payment_id']}/reconcile", headers=self.staff_headers
            )
            check(settled.status_code == 200, f"the payment was reconciled ({_error_of(settled)})")
            check(settled.json()["status"] == "succeeded", "the gateway's record says succeeded")
            self._sync(tablet, "berlin-a", "the paid invoice")
            invoice = tablet.payments.invoice(invoice_id_of(invoice))
            check(invoice.status == "paid", f"the invoice is paid on the tablet ({invoice.status})")
            self.step(
                f"invoice {invoice.number} ({format_money(invoice.total, invoice.currency)}) "
                "synced down; the tablet paid it with the sandbox's timeout card: processing; a "
                "status query (not a second charge) settled it: succeeded; invoice paid on "
                "the tablet"
            )
            key = f"demo-refund-{secrets.token_hex(8)}"
            refunds = []
            for _ in range(2):  # a retried request: the first answer again
                answer = self.http.post(
                    f"/v1/payments/{payment['payment_id']}/refund",
                    json={"amount": foam.price, "reason": "one box arrived damaged"},
                    headers={**self.staff_headers, "Idempotency-Key": key},
                )
                check(answer.status_code == 200, f"staff refunded a box ({_error_of(answer)})")
                refunds.append(answer)
            check(
                refunds[0].json()["id"] == refunds[1].json()["id"]
                and refunds[1].headers.get("idempotent-replayed") == "true",
                "the retried refund replayed the first one",
            )
            ledger = self._staff_get("/v1/ledger")
            check(ledger["problems"] == [], f"the ledger balances ({ledger['problems']})")
            accounts = {b["account"]: b["balance"] for b in ledger["balances"]}
            check(
                accounts.get("gateway:clearing") == invoice.total - foam.price,
                "the gateway holds one charge less one refund (charged once)",
            )
            self.step(
                f"staff refunded one box ({format_money(foam.price, invoice.currency)}); the "
                "retried refund (same Idempotency-Key) gave back nothing more; ledger "
                f"balanced: clearing {format_money(accounts['gateway:clearing'], invoice.currency)}"
                f", refunds {format_money(accounts.get('refunds', 0), invoice.currency)}"
            )
            self.report.supplies = {
                "refused": no.decision.reason,
                "order_id": order_id,
                "lots": [r["lot_code"] for r in taken],
                "expired_lots": expired,
                "invoice": invoice.number,
                "paid": invoice.total,
                "refunded": foam.price,
                "ledger_problems": ledger["problems"],
            }

    def nothing_in_plaintext(self) -> None:
        tablets = self.report.workdir / "online-tablets"
        names = (
            PATIENT_NAME[1].encode(),
            OTHER_PATIENT_NAME[1].encode(),
            *(family.encode() for _, family in BOOKING_PATIENTS),
        )
        leaks = plaintext_leaks(tablets, names)
        check(not leaks, f"patient name found in plaintext in {leaks}")
        self.step(
            f"no plaintext patient name in the 5 tablets' stores under {tablets}; the "
            f"server keeps the clinics' records for staff in {self.report.data_dir}"
        )

    def audit_verified(self) -> None:
        """`coherency audit verify` on the server, then one audit row edited by hand
        (what someone with the database file could do) caught, and put back."""
        answer = self.http.get("/v1/audit/checkpoint", headers=self.staff_headers)
        check(answer.status_code == 200, f"staff fetch a checkpoint ({_error_of(answer)})")
        held = Checkpoint.from_json(answer.json())  # a staff tool keeps it as a witness
        key = audit_public_key(self.settings)
        token = self.staff_headers["authorization"].removeprefix("Bearer ")
        tablet = self.ward.verify_audit()
        check(
            tablet.ok and tablet.checkpoints > 0,
            f"the ward tablet's audit chain verifies, with kept checkpoints: {tablet}",
        )
        witnesses = [held, *kept_checkpoints(self.ward)]
        with HttpAuditLogSource(self.report.server_url, token=token) as source:
            witnessed = witness_server_log(source, held=witnesses, public_key=key)
        check(witnessed.ok, f"the server's log extends the held checkpoints: {witnessed.problems}")
        clean = verify_audit_log(self.settings, witnesses=[held])
        check(clean.ok, f"the audit log verifies: {[str(p) for p in clean.problems]}")
        self.step(
            f"`coherency audit verify` on the server: {clean.events} audit events, "
            f"{clean.checkpoints} signed checkpoints and a staff witness checkpoint of "
            f"{held.size} events, all consistent; on the ward tablet: {tablet.events} "
            f"chained events, {tablet.checkpoints} kept server checkpoints, and the "
            "server's log extends every one"
        )
        database = self.report.data_dir / "server.db"
        with contextlib.closing(sqlite3.connect(database, timeout=30)) as connection:
            seq, outcome = connection.execute(
                "SELECT seq, outcome FROM audit_events WHERE action = 'login' ORDER BY seq"
            ).fetchone()
            with connection:  # someone with the file turns the admin's login into a failure
                connection.execute(
                    "UPDATE audit_events SET outcome = 'denied' WHERE seq = ?", (seq,)
                )
            tampered = verify_audit_log(self.settings, witnesses=[held])
            with connection:  # and the demo puts it back
                connection.execute(
                    "UPDATE audit_events SET outcome = ? WHERE seq = ?", (outcome, seq)
                )
        edited = [str(p) for p in tampered.problems if p.kind == "edited"]
        check(
            edited
            == [f"event {seq}: its contents no longer match its leaf hash (edited or moved)"],
            f"the edited audit row is caught: {tampered.problems}",
        )
        restored = verify_audit_log(self.settings, witnesses=[held])
        check(restored.ok, f"the restored log verifies: {restored.problems}")
        self.report.audit = {
            "events": clean.events,
            "checkpoints": clean.checkpoints,
            "witness_size": held.size,
            "edited_seq": seq,
            "caught": [str(p) for p in tampered.problems],
            "restored_ok": restored.ok,
            "tablet_events": tablet.events,
            "tablet_checkpoints": tablet.checkpoints,
            "witnessed": witnessed.held,
        }
        self.step(
            f"one audit row edited in {database.name} (event {seq}, the admin's login, made "
            f"to read 'denied'): `audit verify` reports {len(tampered.problems)} problems, "
            f'first "{edited[0]}"; put back, the log verifies again'
        )

    # ------------------------------------------------------------ helpers
    def _sync(
        self,
        client: EdgeClient,
        tablet: str,
        what: str,
        progress: Callable[[SyncProgress], None] | None = None,
    ) -> SyncResult:
        result, seconds, _ = timed(lambda: client.sync(progress=progress, retry=DEMO_RETRY))
        self._record(tablet, what, seconds, result)
        check(
            not result.refused_by_server and not result.rejected and not result.blob_errors,
            f"{tablet} synced cleanly ({result.refused_by_server}, {result.rejected}, "
            f"{result.blob_errors})",
        )
        return result

    def _record(self, tablet: str, what: str, seconds: float, result: SyncResult) -> None:
        self.report.syncs.append(
            SyncTiming(
                tablet=tablet,
                what=what,
                seconds=round(seconds, 4),
                pushed=len(result.pushed),
                pulled=len(result.pulled),
                blobs_uploaded=len(result.blobs_uploaded),
                blobs_downloaded=len(result.blobs_downloaded),
            )
        )

    def _await_long_polls(self, count: int, running: list[Future[Any]]) -> None:
        """Wait until `count` pulls are waiting on the server (or one failed)."""
        deadline = time.monotonic() + 15
        while True:
            if self._long_polls_waiting() >= count:
                return
            for future in running:
                if future.done():
                    future.result()  # raises what went wrong
                    raise DemoFailedError("demo step failed: a long poll ended before any push")
            if time.monotonic() > deadline:
                raise DemoFailedError("demo step failed: the tablets' long polls never waited")
            time.sleep(0.02)

    def _long_polls_waiting(self) -> float:
        """How many pulls wait in a long poll now, from the server's /metrics."""
        metrics = self.http.get("/metrics")
        check(metrics.status_code == 200, f"GET /metrics ({_error_of(metrics)})")
        for line in metrics.text.splitlines():
            name, _, value = line.partition(" ")
            if name == "coherency_sync_long_polls_waiting":
                return float(value)
        return 0.0

    def _check_converged(self) -> None:
        ward = self.ward.replica.document_heads()
        home = self.home.replica.document_heads()
        check(ward == home, "both tablets hold the same document heads")
        server = document_heads(self.settings, clinic_id=self.riverside)
        check(
            server == {doc_id: sorted(heads) for doc_id, heads in ward.items()},
            "the server holds the same document heads as the tablets",
        )
        for name in ("patients", "wounds", "assessments"):
            check(
                [r.model_dump() for r in self.ward.collection(name).list()]
                == [r.model_dump() for r in self.home.collection(name).list()],
                f"{name} identical on both tablets",
            )

    def _records_on_server(self) -> dict[str, int]:
        return {
            name: len(document_heads(self.settings, clinic_id=clinic_id))
            for name, clinic_id in self.report.clinics.items()
        }

    def _staff_get_list(
        self, path: str, params: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        answer = self.http.get(path, params=params, headers=self.staff_headers)
        check(answer.status_code == 200, f"staff GET {path} ({_error_of(answer)})")
        body: list[dict[str, Any]] = answer.json()
        return body

    def _staff_get(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        answer = self.http.get(path, params=params, headers=self.staff_headers)
        check(answer.status_code == 200, f"staff GET {path} ({_error_of(answer)})")
        body: dict[str, Any] = answer.json()
        return body

    def _device_access_token(self, client: EdgeClient) -> str:
        """An access token for `client`, from a signed device assertion (POST /v1/auth/device)."""
        issued_at, nonce = int(time.time()), secrets.token_hex(16)
        signature = client.identity.sign(device_login_message(client.device_id, issued_at, nonce))
        answer = self.http.post(
            "/v1/auth/device",
            json={
                "device_id": client.device_id,
                "issued_at": issued_at,
                "nonce": nonce,
                "signature": base64.b64encode(signature).decode(),
            },
        )
        check(answer.status_code == 200, f"the device logs in with its key ({_error_of(answer)})")
        return str(answer.json()["access_token"])


# ---------------------------------------------------------------- small helpers
def _made_up_scan(size: int) -> bytes:
    """Deterministic bytes standing in for a depth scan (not a real format)."""
    header = b"COHERENCY-DEMO-SCAN v1 (made-up depth samples)\n"
    return header + random.Random(452).randbytes(size - len(header))


def _error_of(response: httpx.Response) -> str:
    try:
        error = response.json()["error"]
        return f"HTTP {response.status_code} {error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}"


def _code(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return ""


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def _today() -> str:
    return datetime.now(UTC).date().isoformat()


def _kib(size: int) -> str:
    return f"{size / 1024:g} KiB"


def _hours(ttl: timedelta) -> str:
    hours = ttl.total_seconds() / 3600
    return f"{hours:g} h"


def _short(tablet: str) -> str:
    return {"riverside-ward": "ward", "riverside-home-visit": "home visit"}.get(tablet, tablet)
