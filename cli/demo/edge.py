"""The clinic edge box part of `coherency demo`: a clinic keeps syncing while central
is down, and the box carries everything to central when it comes back.

A central sync server of its own starts on embedded defaults (SQLite and a blob folder
in ``workdir/edge-central``, loopback only) and an admin issues an edge token for the
clinic "Lakeside". The clinic's box (an encrypted store in ``workdir/edge-box``, opened
with the key file ``workdir/edge-box.key``) enrols with its self-signed certificate
and serves the clinic's devices over HTTPS on loopback, relaying to central. Two
tablets enrol with central, which gives them the box's pinned certificate, and sync
once through the box. Then central stops: each tablet records a patient and a wound
and syncs through the box, and each sees the other's records; the box holds them for
central. Central restarts on the same address and the box's relay delivers its
backlog by itself; central, the box and both tablets end with the same records,
head for head. Every step checks its outcome (`DemoFailedError` otherwise); the box
and central are stopped at the end, also on failure. Needs the ``server`` and
``edge`` extras; uses only the public names of `edge_box`, `edge_sdk` and
`sync_server`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import httpx

from cli.demo._central import answers, embedded_settings, quiet_logs
from cli.demo._scenario import (
    DemoFailedError,
    Say,
    Scenario,
    check,
    demo_kdf,
    demo_key_provider,
)
from edge_box import BoxService, EdgeBox
from edge_sdk import EdgeClient, PassphraseKeyProvider, SyncResult
from sync_server import (
    Settings,
    ThreadedServer,
    create_app,
    document_heads,
    issue_enrolment_token,
    migrate,
)

__all__ = ["LAKESIDE", "EdgeDemoReport", "run_edge_demo"]

LAKESIDE = "Lakeside"
TABLETS = ("lakeside-a", "lakeside-b")
PATIENTS = {"lakeside-a": ("Amina", "Yusuf-Demo"), "lakeside-b": ("Pekka", "Laine-Demo")}
WOUNDS = {"lakeside-a": ("right heel", "pressure"), "lakeside-b": ("left calf", "venous")}
TOKEN_TTL = timedelta(hours=1)
NOT_ENROLLED = "not-enrolled-yet"  # a fresh store's clinic until its token names one
BOX_LONG_POLL_SECONDS = 1.0  # the relay's wait on central: short, so stopping is quick
# The relay backs off while central is away (1 s doubling to 30 s for a real box);
# the demo's box tries every second, so it notices central's return at once.
BOX_MAX_BACKOFF_SECONDS = 1.0
DEADLINE_SECONDS = 30.0  # for what the box does by itself (it takes well under 2 s)


@dataclass(slots=True)
class EdgeDemoReport:
    """What the edge part did, where it left its data, and how long catching up took."""

    workdir: Path
    central_dir: Path
    box_dir: Path
    key_file: Path
    central_url: str = ""
    box_url: str = ""
    clinic_id: str = ""
    box_id: str = ""
    fingerprint: str = ""  # SHA-256 of the box's certificate, as the tablets pinned it
    steps: list[str] = field(default_factory=list)
    devices: dict[str, str] = field(default_factory=dict)  # tablet -> device id
    stores: dict[str, Path] = field(default_factory=dict)  # tablet -> store folder
    records: dict[str, list[str]] = field(default_factory=dict)  # tablet -> ids written offline
    backlog: int = 0  # documents the box held for central while it was down
    records_delivered: int = 0  # of the tablets' offline records, found at central after
    catch_up_seconds: float = 0.0  # central back up -> the box's backlog delivered
    converged_documents: int = 0  # documents with equal heads on every replica
    seconds: float = 0.0


def run_edge_demo(
    workdir: Path, *, say: Say = lambda line: None, fast_kdf: bool = True
) -> EdgeDemoReport:
    """Run the edge box scenario in `workdir` and return its report.

    Central's data goes to ``workdir/edge-central``, the box's store to
    ``workdir/edge-box`` (its key file ``workdir/edge-box.key``) and the tablets' stores
    to ``workdir/edge-tablets``; all must be new or empty. `say` and `fast_kdf` are as
    for `cli.demo.run_demo`.

    Raises:
        DemoFailedError: A step's outcome was not what it must be, or the folders are
            already in use.
    """
    started = time.perf_counter()
    report = EdgeDemoReport(
        workdir=workdir,
        central_dir=workdir / "edge-central",
        box_dir=workdir / "edge-box",
        key_file=workdir / "edge-box.key",
    )
    tablets_dir = workdir / "edge-tablets"
    for folder in (report.central_dir, report.box_dir, tablets_dir):
        if folder.exists() and any(folder.iterdir()):
            raise DemoFailedError(f"{folder} is not empty: run the demo in a new folder")
    if report.key_file.exists():
        raise DemoFailedError(f"{report.key_file} exists: run the demo in a new folder")
    settings = embedded_settings(report.central_dir)
    migrate(settings)
    provider = demo_key_provider(demo_kdf(fast_kdf))
    # The relay warns each time central does not answer: here that is the point.
    with quiet_logs(errors_only=("edge_box", "edge_sdk")), contextlib.ExitStack() as stack:
        central = _Central(settings)
        stack.callback(central.stop)  # last: the box's relay stops before central does
        _EdgeScenario(report, say, settings, central, provider, tablets_dir, stack).run()
    check(not answers(report.box_url), "the edge box stopped serving")
    check(not answers(report.central_url), "the central server stopped")
    Scenario(report.steps, say).step(
        f"edge box and central stopped; `coherency edge status --data-dir {report.box_dir} "
        f"--key-file {report.key_file}` shows how the box stands"
    )
    report.seconds = round(time.perf_counter() - started, 3)
    return report


class _Central:
    """The part's central server: started, stopped and started again on one address."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = 0  # a free one the first time, then the same one again
        self.url = ""
        self._server: ThreadedServer | None = None

    def start(self) -> None:
        server = ThreadedServer(create_app(self.settings), port=self.port)
        try:
            server.start()
        except RuntimeError as exc:
            raise DemoFailedError(f"demo step failed: {exc}") from None
        self._server, self.port = server, server.port
        check(not self.url or server.url == self.url, f"central came back at {self.url}")
        self.url = server.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None


class _EdgeScenario(Scenario):
    """The part's steps, sharing central, the box and the tablets."""

    def __init__(
        self,
        report: EdgeDemoReport,
        say: Say,
        settings: Settings,
        central: _Central,
        provider: PassphraseKeyProvider,
        tablets_dir: Path,
        stack: contextlib.ExitStack,
    ) -> None:
        super().__init__(report.steps, say)
        self.report = report
        self.settings = settings
        self.central = central
        self.provider = provider
        self.tablets_dir = tablets_dir
        self.stack = stack
        self.box: EdgeBox | None = None
        self.service: BoxService | None = None
        self.tablets: dict[str, EdgeClient] = {}

    def run(self) -> None:
        self.box_enrols_and_serves()
        self.tablets_enrol_and_pin_the_box()
        self.central_goes_away()
        self.tablets_work_through_the_box()
        self.central_comes_back()

    # ------------------------------------------------------------ steps
    def box_enrols_and_serves(self) -> None:
        self.central.start()
        self.report.central_url = self.central.url
        with httpx.Client(base_url=self.central.url, timeout=30) as http:
            ready = http.get("/readyz")
        check(
            ready.status_code == 200 and ready.json().get("status") == "ready",
            f"central is ready (GET /readyz answered {ready.status_code}: {ready.text})",
        )
        issued = issue_enrolment_token(self.settings, clinic=LAKESIDE, ttl=TOKEN_TTL, edge=True)
        self.report.clinic_id = issued.clinic_id
        box = EdgeBox.init(self.report.box_dir, self.report.key_file)
        self.stack.callback(box.close)
        self.box = box
        box.enroll(self.central.url, issued.token, name="Lakeside front desk")
        check(box.clinic_id == issued.clinic_id, f"the box joined {LAKESIDE} ({box.clinic_id})")
        service = BoxService(box, long_poll=BOX_LONG_POLL_SECONDS)
        service.relay.max_backoff = BOX_MAX_BACKOFF_SECONDS
        service.start()
        self.stack.callback(service.stop)  # before the box closes and central stops
        self.service = service
        self.report.box_url, self.report.box_id = service.url, box.box_id
        self.report.fingerprint = box.fingerprint
        _until(lambda: service.relay.rounds > 0, "the box's first round with central")
        self.step(
            f"central sync server up on embedded defaults at {self.central.url} "
            f"({self.report.central_dir}); clinic {LAKESIDE!r} and a one-time edge token "
            "(what `coherency server enroll-token --edge` does)"
        )
        self.step(
            f"edge box {box.box_id[:8]} enrolled with its self-signed certificate, "
            f"SHA-256 fingerprint {box.fingerprint}; serving the clinic's devices at "
            f"{service.url} and relaying to central"
        )

    def tablets_enrol_and_pin_the_box(self) -> None:
        box = self._box()
        for name in TABLETS:
            path = self.tablets_dir / name
            client = self.stack.enter_context(
                EdgeClient.init(path, self.provider, clinic_id=NOT_ENROLLED)
            )
            token = issue_enrolment_token(self.settings, clinic=LAKESIDE, ttl=TOKEN_TTL)
            client.enroll(self.central.url, token.token, name=f"Lakeside tablet {name[-1]}")
            pins = client.replica.edge_boxes
            check(
                [(p.box_id, p.fingerprint) for p in pins] == [(box.box_id, box.fingerprint)],
                f"central pinned the box's certificate for {name} ({pins})",
            )
            self.tablets[name] = client
            self.report.devices[name] = client.device_id
            self.report.stores[name] = path
        for name, client in self.tablets.items():
            self._via_box(name, client)
        seen = {d.device_id for d in box.status().devices}
        check(seen == set(self.report.devices.values()), f"the box saw both tablets ({seen})")
        self.step(
            f"2 tablets enrolled with central and got the box's pinned fingerprint "
            f"({box.fingerprint[:16]}...); each synced once through the box over pinned TLS"
        )

    def central_goes_away(self) -> None:
        self.central.stop()
        check(not answers(self.central.url), f"central stopped answering at {self.central.url}")
        self.step(f"central stopped: nothing answers at {self.central.url} (the uplink is down)")

    def tablets_work_through_the_box(self) -> None:
        box = self._box()
        for name, client in self.tablets.items():
            given, family = PATIENTS[name]
            patient = client.patients.add(
                given_name=given, family_name=family, birth_date="1947-03-12"
            )
            site, etiology = WOUNDS[name]
            wound = client.wounds.add(patient_id=patient.id, body_site=site, etiology=etiology)
            self.report.records[name] = [patient.id, wound.id]
            result = self._via_box(name, client)
            check(
                set(self.report.records[name]) <= set(result.pushed),
                f"the box took {name}'s patient and wound ({result.pushed})",
            )
        first = TABLETS[0]
        self._via_box(first, self.tablets[first])  # the first tablet pulls the second's
        for name, client in self.tablets.items():
            for other, ids in self.report.records.items():
                patient_id, wound_id = ids
                check(
                    client.patients.get(patient_id).family_name == PATIENTS[other][1]
                    and client.wounds.get(wound_id).body_site == WOUNDS[other][0],
                    f"{name} holds {other}'s patient and wound",
                )
        written = {i for ids in self.report.records.values() for i in ids}
        _until(lambda: bool(box.status().last_error), "the box to find central unreachable")
        status = box.status()
        check(
            status.upstream_documents == len(written),
            f"the box holds the {len(written)} records for central "
            f"({status.upstream_documents} waiting)",
        )
        held = set(document_heads(self.settings, clinic_id=self.report.clinic_id))
        check(not held & written, "central has none of the records yet")
        self.report.backlog = status.upstream_documents
        self.step(
            f"central down: each tablet recorded a patient and a wound and synced through "
            f"the box; each sees the other's; the box holds {status.upstream_documents} "
            f"records for central (last error: {status.last_error})"
        )

    def central_comes_back(self) -> None:
        box = self._box()
        self.central.start()
        came_back = time.perf_counter()
        _until(lambda: box.status().upstream_documents == 0, "the box's backlog to reach central")
        self.report.catch_up_seconds = round(time.perf_counter() - came_back, 3)
        # The round that delivered the backlog goes on (the clinic's feed, blobs, audit
        # chains) and clears the box's last error when it ends.
        _until(lambda: not box.status().last_error, "the box's round with central to end")
        central = document_heads(self.settings, clinic_id=self.report.clinic_id)
        written = {i for ids in self.report.records.values() for i in ids}
        self.report.records_delivered = len(written & set(central))
        check(
            self.report.records_delivered == len(written),
            f"central holds both tablets' records ({sorted(written - set(central))} missing)",
        )
        for name, client in self.tablets.items():
            self._via_box(name, client)  # whatever central had to say, through the box
        expected = {doc_id: sorted(heads) for doc_id, heads in central.items()}
        replicas = {name: client.replica.document_heads() for name, client in self.tablets.items()}
        replicas["the box"] = box.replica.document_heads()
        for name, heads in replicas.items():
            mine = {doc_id: sorted(h) for doc_id, h in heads.items()}
            check(mine == expected, f"{name} holds the same document heads as central")
        self.report.converged_documents = len(expected)
        self.step(
            f"central restarted at the same address; the box's relay delivered its "
            f"{self.report.backlog} records by itself in {self.report.catch_up_seconds:.2f} s; "
            f"central, the box and both tablets hold the same {len(expected)} documents, "
            "head for head"
        )

    # ------------------------------------------------------------ helpers
    def _box(self) -> EdgeBox:
        assert self.box is not None, "the box enrols first"
        return self.box

    def _via_box(self, name: str, client: EdgeClient) -> SyncResult:
        """Sync `client` through the box, trusting only the certificate central pinned."""
        assert self.service is not None, "the box serves first"
        with client.edge_transport(self.service.url, self._box().box_id) as transport:
            result = client.sync(transport=transport)
        check(
            not result.refused_by_server and not result.rejected and not result.blob_errors,
            f"{name} synced cleanly through the box ({result.refused_by_server}, "
            f"{result.rejected}, {result.blob_errors})",
        )
        return result


def _until(predicate: Callable[[], bool], what: str) -> None:
    """Poll `predicate` until it holds; fail the demo after the deadline."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not predicate():
        if time.monotonic() > deadline:
            raise DemoFailedError(f"demo step failed: timed out waiting for {what}")
        time.sleep(0.05)
