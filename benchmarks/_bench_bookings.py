"""Benchmark 7: bookings decided by the server, on PostgreSQL, over HTTP on loopback.

The server is the real thing, as in the sync benchmark: uvicorn serving `sync_server`
in a separate process (on its own core where there are two) on a fresh PostgreSQL
database. Set up as an operator and staff would: an admin (`create_admin`) logs in
and builds the directory through the REST routes: four clinics in Europe/Berlin, each
with ten doctors working 08:00-18:00 on weekdays; 20 SDK stores (five per clinic) are
enrolled and sync a patient each. Then, released together by a barrier, each device
sends batch after batch of signed appointment requests through its `HttpTransport`
(push, then pull until the feed is drained: the wire exchange `client.sync()` makes,
without merging into the local store, so that 20 devices sharing this process's one
core measure the server, not themselves). Nine in ten requests name a slot of their
own; one in ten names its clinic's one contended slot (all but the first are
rejected, with an alternative looked up).

- ``bookings.decisions_per_s``: intents decided per second of wall time, from the
  barrier to the last device's last pull.
- ``bookings.push_to_decision_p50_ms`` / ``p99_ms``: per intent, from just before its
  push is sent to the end of the pull that brought its decision.

Without PostgreSQL the figures are reported missing, with the reason.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from benchmarks._bench_sync import MissingFigure, _database, percentile
from benchmarks._common import progress
from benchmarks._harness import Figure, scratch_dir
from benchmarks._intent_race import Racer, drain, race

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
class _Device(Racer):
    patient_id: str = ""
    service: str = ""
    doctors: list[str] = field(default_factory=list)  # its clinic's
    index: int = 0  # among its clinic's devices


def _measure(
    database_url: str, label: str, batches: int, repeat: int, root: Path
) -> list[Figure | MissingFigure]:
    from benchmarks._bench_sync import _ServerProcess
    from sync_server import Settings, migrate

    with scratch_dir(root, "bookings") as work:
        settings = Settings(
            data_dir=work / "server", database_url=database_url, log_level="WARNING"
        )
        migrate(settings)
        rates: list[float] = []
        p50s: list[float] = []
        p99s: list[float] = []
        accepted: list[int] = []
        with _ServerProcess.running(settings, work / "server.log") as server:
            staff = _staff_client(settings, server.url)
            devices = _setup(server, staff, work / "stores")
            try:
                for r in range(repeat):
                    _plan(devices, batches, week=r)
                    seconds = race(devices, "bookings")
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
                        f"bookings: repeat {r + 1}/{repeat}: {intents:,} intents in "
                        f"{seconds:.2f}s ({rates[-1]:,.0f}/s), p50 {p50s[-1]:.0f} ms, "
                        f"p99 {p99s[-1]:.0f} ms"
                    )
            finally:
                for device in devices:
                    device.transport.close()
                    device.client.close()
                staff.close()
            layout = server.layout
    extra = {
        "database": label,
        "devices": DEVICES,
        "clinics": CLINICS,
        "intents": DEVICES * batches * BATCH,
        "syncs_per_device": batches,
        "intents_per_sync": BATCH,
        "contended_share": 1 / CONTENDED,
        "accepted": accepted,
        "server": "uvicorn in a separate process",
        "layout": layout,
    }
    return [
        Figure(
            "bookings",
            NAMES[0],
            f"{DEVICES} SDK devices sync appointment requests concurrently ({label}, HTTP "
            "on loopback); intents decided per second, barrier to last sync",
            "decisions/s",
            rates,
            DECISIONS_TARGET,
            ">=",
            extra,
        ),
        Figure(
            "bookings",
            NAMES[1],
            "the same: median time from the start of the sync that pushes an intent to "
            "its decision in the device's store",
            "ms",
            p50s,
            extra=extra,
        ),
        Figure(
            "bookings",
            NAMES[2],
            "the same: 99th percentile (nearest rank)",
            "ms",
            p99s,
            P99_TARGET,
            "<=",
            extra,
        ),
    ]


def _staff_client(settings: Any, url: str) -> Any:
    """An httpx client logged in as a new admin of the ``default`` organisation."""
    import secrets

    import httpx
    import pyotp

    from sync_server import create_admin

    password = secrets.token_urlsafe(18)
    admin = create_admin(
        settings, username=f"bench-{secrets.token_hex(4)}", password=password, with_totp=True
    )
    assert admin.totp_secret is not None
    http = httpx.Client(base_url=url, timeout=120)
    login = http.post(
        "/v1/auth/login",
        json={
            "username": admin.username,
            "password": password,
            "totp": pyotp.TOTP(admin.totp_secret).now(),
        },
    )
    login.raise_for_status()
    http.headers["authorization"] = f"Bearer {login.json()['access_token']}"
    return http


def _setup(server: Any, staff: Any, stores: Path) -> list[_Device]:
    """Clinics, doctors, and enrolled devices with their patients (once: enrolments
    are rate limited per client address)."""
    from edge_sdk import Argon2Params, EdgeClient, HttpTransport, PassphraseKeyProvider

    suffix = uuid.uuid4().hex[:8]
    service = f"review-{suffix}"
    _ok(
        staff.post(
            "/v1/directory/services",
            json={"code": service, "name": "Wound review", "duration_minutes": 30},
        )
    )
    clinics: list[tuple[str, list[str]]] = []
    for c in range(CLINICS):
        clinic_id = server.new_clinic(f"bench-{suffix}-{c}")
        _ok(
            staff.put(
                f"/v1/directory/clinics/{clinic_id}/timezone", json={"timezone": "Europe/Berlin"}
            )
        )
        doctors = []
        for n in range(DOCTORS):
            doctor = _ok(
                staff.post(
                    "/v1/directory/providers",
                    json={
                        "name": f"Dr {n}",
                        "kind": "doctor",
                        "clinic_id": clinic_id,
                        "services": [service],
                    },
                )
            )["id"]
            _ok(
                staff.put(
                    f"/v1/directory/providers/{doctor}/hours",
                    json={
                        "hours": [
                            {"weekday": d, "start": "08:00", "end": "18:00"} for d in range(5)
                        ]
                    },
                )
            )
            doctors.append(doctor)
        clinics.append((clinic_id, doctors))
    provider = PassphraseKeyProvider("a benchmark passphrase", params=Argon2Params.fast())
    devices: list[_Device] = []
    for n in range(DEVICES):
        clinic_id, doctors = clinics[n % CLINICS]
        client = EdgeClient.init(stores / f"device-{n}", provider, clinic_id=clinic_id)
        server.enrol(client, clinic_id, name=f"bench-{n}")
        patient = client.patients.add(
            given_name="Bench", family_name=f"P{n}", birth_date=date(1950, 1, 1)
        )
        client.sync()  # the patient goes up and the reference data comes down, untimed
        device = _Device(
            client,
            HttpTransport(client.replica),
            patient_id=patient.id,
            service=service,
            doctors=doctors,
            index=n // CLINICS,
        )
        drain(device)
        devices.append(device)
    return devices


def _plan(devices: list[_Device], batches: int, *, week: int) -> None:
    """Each device's requests for one repeat, in the week `week` weeks ahead (a fresh
    week per repeat: nothing booked yet)."""
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
    for device in devices:
        device.reset()
        mine = [s for i, s in enumerate(slots) if i % (DEVICES // CLINICS) == device.index]
        for b in range(batches):
            batch = []
            for k in range(BATCH):
                i = b * BATCH + k
                index, when = mine[i % len(mine)]
                if i % CONTENDED == CONTENDED - 1:
                    index, when = 0, slots[-1][1]  # the clinic's contended slot
                batch.append(
                    {
                        "kind": "appointment.request",
                        "patient_id": device.patient_id,
                        "details": {
                            "service": device.service,
                            "starts_at": when.isoformat(),
                            "provider_id": device.doctors[index],
                        },
                    }
                )
            device.batches.append(batch)


def _ok(response: Any) -> Any:
    if response.status_code >= 300:
        raise RuntimeError(
            f"bookings benchmark: {response.request.method} {response.request.url.path} "
            f"answered {response.status_code}: {response.text}"
        )
    return response.json()
