"""Benchmark 7: bookings decided by the server, on PostgreSQL, over HTTP on loopback.

A live server (`sync_server.ThreadedServer`, uvicorn in a thread of this process) on
a fresh PostgreSQL database. Four clinics in Europe/Berlin, each with ten doctors
working 08:00-18:00 on weekdays; 20 devices (five per clinic, each with its own HTTP
client, token and patient) released together by a barrier, each pushing batches of
appointment requests and pulling after each push, as the SDK's sync does. Nine in
ten requests name a slot of their own; one in ten names its clinic's one contended
slot (all but the first are rejected, with an alternative looked up).

- ``bookings.decisions_per_s``: intents decided per second of wall time, from the
  barrier to the last device's last pull.
- ``bookings.push_to_decision_p50_ms`` / ``p99_ms``: per intent, from just before
  its push is sent to the return of the pull that brought its decision.

Without PostgreSQL the figures are reported missing, with the reason.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from benchmarks._bench_sync import MissingFigure, _database, percentile
from benchmarks._common import progress
from benchmarks._harness import Figure, scratch_dir

__all__ = ["NAMES", "run"]

NAMES = (
    "bookings.decisions_per_s",
    "bookings.push_to_decision_p50_ms",
    "bookings.push_to_decision_p99_ms",
)
DECISIONS_TARGET = 1_000.0  # decisions/s, issue 12
P99_TARGET = 250.0  # ms, issue 12
DEVICES = 20
CLINICS = 4
DOCTORS = 10
BATCH = 10  # intents per push
CONTENDED = 10  # one request in this many names the clinic's contended slot
BERLIN = ZoneInfo("Europe/Berlin")
MEDIA = {"content-type": "application/vnd.coherency.sync"}


def batches_per_device(scale: int) -> int:
    """Pushes per device and repeat: 10 at the default scale, at least 1."""
    return max(1, min(10, scale // 1_000))


def run(*, scale: int, repeat: int, root: Path) -> list[Figure | MissingFigure]:
    """Measure the booking figures on PostgreSQL (missing without it)."""
    with _database("postgresql", root) as (database_url, label, unavailable):
        if unavailable is not None:
            progress(f"bookings: not measured: {unavailable}")
            return [MissingFigure("bookings", name, unavailable) for name in NAMES]
        assert database_url is not None
        return _measure(database_url, label, batches_per_device(scale), repeat, root)


# ---------------------------------------------------------------- the measurement
@dataclass
class _Device:
    device_id: str
    clinic_id: str
    http: Any
    intents: list[list[tuple[str, bytes]]] = field(default_factory=list)  # per push
    cursor: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds, one per intent
    decided: int = 0
    error: BaseException | None = None


def _measure(
    database_url: str, label: str, batches: int, repeat: int, root: Path
) -> list[Figure | MissingFigure]:
    from sync_server import Settings, ThreadedServer, create_app, migrate

    with scratch_dir(root, "bookings") as work:
        settings = Settings(
            data_dir=work / "server", database_url=database_url, log_level="WARNING"
        )
        migrate(settings)
        app = create_app(settings)
        server = ThreadedServer(app)
        server.start()
        rates: list[float] = []
        p50s: list[float] = []
        p99s: list[float] = []
        accepted: list[int] = []
        try:
            for r in range(repeat):
                devices = _setup(app, server.url, batches, week=r)
                try:
                    seconds = _race(devices)
                finally:
                    for device in devices:
                        device.http.close()
                latencies = [ms for d in devices for ms in d.latencies]
                intents = DEVICES * batches * BATCH
                if len(latencies) != intents:
                    raise RuntimeError(
                        f"bookings benchmark: {len(latencies)} of {intents} intents decided"
                    )
                rates.append(intents / seconds)
                p50s.append(percentile(latencies, 0.50) * 1000)
                p99s.append(percentile(latencies, 0.99) * 1000)
                accepted.append(sum(d.decided for d in devices))
                progress(
                    f"bookings: repeat {r + 1}/{repeat}: {intents:,} intents in {seconds:.2f}s "
                    f"({rates[-1]:,.0f}/s), p50 {p50s[-1]:.0f} ms, p99 {p99s[-1]:.0f} ms"
                )
        finally:
            server.stop()
    extra = {
        "database": label,
        "devices": DEVICES,
        "clinics": CLINICS,
        "intents": DEVICES * batches * BATCH,
        "pushes_per_device": batches,
        "intents_per_push": BATCH,
        "contended_share": 1 / CONTENDED,
        "accepted": accepted,
        "server": "uvicorn in a thread of the benchmark process (ThreadedServer)",
    }
    return [
        Figure(
            "bookings",
            NAMES[0],
            f"{DEVICES} devices push appointment requests concurrently ({label}, HTTP on "
            "loopback); intents decided per second, barrier to last pull",
            "decisions/s",
            rates,
            DECISIONS_TARGET,
            ">=",
            extra,
        ),
        Figure(
            "bookings",
            NAMES[1],
            "the same: median time from push to the pull that brings the decision",
            "ms",
            p50s,
            extra=extra,
        ),
        Figure(
            "bookings",
            NAMES[2],
            "the same: 99th percentile (nearest rank) time from push to decision",
            "ms",
            p99s,
            P99_TARGET,
            "<=",
            extra,
        ),
    ]


def _setup(app: Any, url: str, batches: int, *, week: int) -> list[_Device]:
    """Clinics, doctors, devices and every device's intents, written before timing."""
    import httpx
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from crdt import Intent, IntentKind, Patient, RecordDocument, new_record_id
    from edge_sdk import DeviceIdentity
    from sync_server.bookings.directory import (
        add_provider,
        add_service,
        set_clinic_timezone,
        set_weekly_hours,
    )
    from sync_server.identity.principals import Principal
    from sync_server.identity.tables import Clinic, Device, Organisation

    db = app.state.db
    organisation_id = str(uuid.uuid4())
    suffix = organisation_id[:8]
    service = f"review-{suffix}"
    monday = date.today() + timedelta(days=7 + 7 * week)
    monday += timedelta(days=(7 - monday.weekday()) % 7)
    slots = [  # every doctor's 30-minute slots of the week, in order
        (
            d,
            datetime.combine(monday + timedelta(days=day), datetime.min.time(), tzinfo=BERLIN)
            + timedelta(hours=8, minutes=30 * n),
        )
        for day in range(5)
        for n in range(20)
        for d in range(DOCTORS)
    ]
    devices: list[_Device] = []
    with db.write() as session:
        session.add(Organisation(id=organisation_id, name=f"bench-{suffix}"))
        session.flush()
        staff = Principal("user", str(uuid.uuid4()), None, organisation_id, "admin")
        add_service(
            session=session, principal=staff, code=service, name="Wound review", duration_minutes=30
        )
        clinics: list[tuple[str, list[str]]] = []
        for c in range(CLINICS):
            clinic_id = str(uuid.uuid4())
            session.add(
                Clinic(id=clinic_id, organisation_id=organisation_id, name=f"b{c}", feed_seq=0)
            )
            session.flush()
            set_clinic_timezone(
                session=session, principal=staff, clinic_id=clinic_id, timezone="Europe/Berlin"
            )
            doctors = []
            for n in range(DOCTORS):
                doctor = add_provider(
                    session=session,
                    principal=staff,
                    name=f"Dr {n}",
                    kind="doctor",
                    clinic_id=clinic_id,
                    services=[service],
                )
                set_weekly_hours(
                    session=session,
                    principal=staff,
                    provider_id=doctor.id,
                    hours=[(d, "08:00", "18:00") for d in range(5)],
                )
                doctors.append(doctor.id)
            clinics.append((clinic_id, doctors))
        identities = []
        for n in range(DEVICES):
            clinic_id, _ = clinics[n % CLINICS]
            identity = DeviceIdentity(str(uuid.uuid4()), Ed25519PrivateKey.generate())
            session.add(
                Device(id=identity.device_id, clinic_id=clinic_id, public_key=identity.public_key)
            )
            identities.append((identity, clinic_id))
    for n, (identity, clinic_id) in enumerate(identities):
        doctors = dict(clinics)[clinic_id]
        token, _ = app.state.signing_key.issue_access_token(
            subject=identity.device_id,
            kind="device",
            clinic_id=clinic_id,
            organisation_id=organisation_id,
            role="device",
            ttl=timedelta(hours=1),
        )
        device = _Device(
            identity.device_id,
            clinic_id,
            httpx.Client(base_url=url, headers={"authorization": f"Bearer {token}"}, timeout=120),
        )
        patient = RecordDocument.create(
            Patient,
            {"given_name": "Bench", "family_name": f"P{n}", "birth_date": date(1950, 1, 1)},
            device_id=identity.device_id,
            clinic_id=clinic_id,
            signer=identity,
        )
        # The patient goes up first, untimed: the race is about the intents.
        device.http.post(
            "/v1/sync/push", content=_wire([(patient.id, patient.save())]), headers=MEDIA
        ).raise_for_status()
        mine = [s for i, s in enumerate(slots) if i % (DEVICES // CLINICS) == n // CLINICS]
        for b in range(batches):
            batch = []
            for k in range(BATCH):
                i = b * BATCH + k
                index, when = mine[i % len(mine)]
                if i % CONTENDED == CONTENDED - 1:
                    index, when = 0, slots[-1][1]  # the clinic's contended slot
                intent = RecordDocument.create(
                    Intent,
                    {
                        "kind": IntentKind.APPOINTMENT_REQUEST,
                        "patient_id": patient.id,
                        "details": {
                            "service": service,
                            "starts_at": when.isoformat(),
                            "provider_id": doctors[index],
                        },
                    },
                    device_id=identity.device_id,
                    clinic_id=clinic_id,
                    record_id=new_record_id(),
                    signer=identity,
                )
                batch.append((intent.id, intent.save()))
            device.intents.append(batch)
        devices.append(device)
    return devices


def _wire(documents: list[tuple[str, bytes]]) -> bytes:
    from crdt import Entry, EntryKind, SyncMessage, encode_message

    return encode_message(SyncMessage({}, tuple(Entry(EntryKind.DOC, i, d) for i, d in documents)))


def _race(devices: list[_Device]) -> float:
    """Run every device's pushes and pulls concurrently; returns the wall seconds."""
    barrier = threading.Barrier(len(devices) + 1)
    threads = [threading.Thread(target=_device_loop, args=(d, barrier)) for d in devices]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    failed = [d.error for d in devices if d.error is not None]
    if failed:
        raise RuntimeError("bookings benchmark: a device failed") from failed[0]
    return seconds


def _device_loop(device: _Device, barrier: threading.Barrier) -> None:
    from crdt import Decision, DecisionStatus, RecordDocument, decision_id, decode_message

    def pull() -> dict[str, bytes]:
        got: dict[str, bytes] = {}
        while True:
            response = device.http.get("/v1/sync/pull", params={"cursor": device.cursor})
            response.raise_for_status()
            message = decode_message(response.content)
            got.update((e.doc_id, e.payload) for e in message.entries)
            device.cursor = int(message.control["cursor"])
            if not message.control["more"]:
                return got

    try:
        barrier.wait()
        for batch in device.intents:
            sent = time.perf_counter()
            device.http.post(
                "/v1/sync/push", content=_wire(batch), headers=MEDIA
            ).raise_for_status()
            got = pull()
            returned = time.perf_counter()
            for intent_id, _ in batch:
                data = got.get(decision_id(intent_id))
                if data is None:
                    raise RuntimeError(f"no decision for {intent_id} in the same sync")
                device.latencies.append(returned - sent)
                record = RecordDocument.load(data).read()
                assert isinstance(record, Decision)
                device.decided += record.status is not DecisionStatus.REJECTED
    except BaseException as exc:  # reported by _race
        device.error = exc
