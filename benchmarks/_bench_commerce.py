"""Benchmark 8: supplies orders decided by the server, on PostgreSQL, over HTTP on
loopback.

Built like the bookings benchmark (`_bench_bookings`): uvicorn serving `sync_server`
in a separate process on a fresh PostgreSQL database; an admin logs in and builds the
catalogue and stock through the REST routes (dressings, a canister, an NPWT kit made
of them, lots with several expiry dates in each clinic's store and, behind them, the
central warehouse); four clinics with five enrolled SDK devices each, each device
with a synced patient. Then, released
together by a barrier, each device pushes batch after batch of signed ``order.place``
intents (one or two lines, one in four a kit whose components other lines share; one
in ten asks for a scarce product held only in the warehouse, which soon runs out and
is then rejected with its reason)
and pulls until the feed is drained, as `client.sync()` does on the wire.

- ``commerce.decisions_per_s``: order intents decided per second of wall time.
- ``commerce.push_to_decision_p50_ms`` / ``p99_ms``: per intent, from just before its
  push is sent to the end of the pull that brought its decision.

Without PostgreSQL the figures are reported missing, with the reason.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from benchmarks._bench_bookings import _ok, _staff_client
from benchmarks._bench_sync import MissingFigure, _database, percentile
from benchmarks._common import progress
from benchmarks._harness import Figure, scratch_dir
from benchmarks._intent_race import Racer, drain, race

__all__ = ["NAMES", "run"]

NAMES = (
    "commerce.decisions_per_s",
    "commerce.push_to_decision_p50_ms",
    "commerce.push_to_decision_p99_ms",
)
DECISIONS_TARGET = 1_000.0  # order decisions/s, issue 13
P99_TARGET = 250.0  # ms, issue 13
DEVICES = 20
CLINICS = 4
BATCH = 10  # intents per push
SCARCE = 10  # one order in this many asks for the scarce product


def batches_per_device(scale: int) -> int:
    """Pushes per device and repeat: 10 at the default scale, at least 1."""
    return max(1, min(10, scale // 1_000))


def run(*, scale: int, repeat: int, root: Path) -> list[Figure | MissingFigure]:
    """Measure the order figures on PostgreSQL (missing without it)."""
    with _database("postgresql", root) as (database_url, label, unavailable):
        if unavailable is not None:
            progress(f"commerce: not measured: {unavailable}")
            return [MissingFigure("commerce", name, unavailable) for name in NAMES]
        assert database_url is not None
        return _measure(database_url, label, batches_per_device(scale), repeat, root)


@dataclass
class _Device(Racer):
    patient_id: str = ""


@dataclass
class _Catalogue:
    plain: list[str]  # well stocked products
    kit: str
    scarce: str


def _measure(
    database_url: str, label: str, batches: int, repeat: int, root: Path
) -> list[Figure | MissingFigure]:
    from benchmarks._bench_sync import _ServerProcess
    from sync_server import Settings, migrate

    with scratch_dir(root, "commerce") as work:
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
            devices: list[_Device] = []
            try:
                devices = _setup(server, staff, work / "stores")
                for r in range(repeat):
                    catalogue = _stock(staff, repeat=r)
                    _plan(devices, catalogue, batches, seed=r)
                    seconds = race(devices, "commerce")
                    latencies = [ms for d in devices for ms in d.latencies]
                    intents = DEVICES * batches * BATCH
                    if len(latencies) != intents:
                        raise RuntimeError(
                            f"commerce benchmark: {len(latencies)} of {intents} intents decided"
                        )
                    rates.append(intents / seconds)
                    p50s.append(percentile(latencies, 0.50) * 1000)
                    p99s.append(percentile(latencies, 0.99) * 1000)
                    accepted.append(sum(d.decided for d in devices))
                    progress(
                        f"commerce: repeat {r + 1}/{repeat}: {intents:,} orders in "
                        f"{seconds:.2f}s ({rates[-1]:,.0f}/s), p50 {p50s[-1]:.0f} ms, "
                        f"p99 {p99s[-1]:.0f} ms, {accepted[-1]:,} accepted"
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
        "scarce_share": 1 / SCARCE,
        "accepted": accepted,
        "server": "uvicorn in a separate process",
        "layout": layout,
    }
    return [
        Figure(
            "commerce",
            NAMES[0],
            f"{DEVICES} SDK devices in {CLINICS} clinics sync supplies orders concurrently "
            f"({label}, HTTP on loopback), stock by lot in clinic stores and a shared "
            "warehouse; order "
            "intents decided per second, barrier to last sync",
            "decisions/s",
            rates,
            DECISIONS_TARGET,
            ">=",
            extra,
        ),
        Figure(
            "commerce",
            NAMES[1],
            "the same: median time from the start of the sync that pushes an order to "
            "its decision in the device's store",
            "ms",
            p50s,
            extra=extra,
        ),
        Figure(
            "commerce",
            NAMES[2],
            "the same: 99th percentile (nearest rank)",
            "ms",
            p99s,
            P99_TARGET,
            "<=",
            extra,
        ),
    ]


def _setup(server: Any, staff: Any, stores: Path) -> list[_Device]:
    """The warehouse, clinics and enrolled devices with their patients (once:
    enrolments are rate limited per client address)."""
    from edge_sdk import Argon2Params, EdgeClient, HttpTransport, PassphraseKeyProvider

    suffix = uuid.uuid4().hex[:8]
    _ok(staff.post("/v1/commerce/locations", json={"kind": "warehouse", "name": "Central"}))
    clinics = [server.new_clinic(f"bench-{suffix}-{c}") for c in range(CLINICS)]
    for clinic_id in clinics:
        _ok(
            staff.post(
                "/v1/commerce/locations",
                json={"kind": "clinic", "name": f"Store {clinic_id}", "clinic_id": clinic_id},
            )
        )
    provider = PassphraseKeyProvider("a benchmark passphrase", params=Argon2Params.fast())
    devices: list[_Device] = []
    for n in range(DEVICES):
        clinic_id = clinics[n % CLINICS]
        client = EdgeClient.init(stores / f"device-{n}", provider, clinic_id=clinic_id)
        server.enrol(client, clinic_id, name=f"bench-{n}")
        patient = client.patients.add(
            given_name="Bench", family_name=f"P{n}", birth_date=date(1950, 1, 1)
        )
        client.sync()
        device = _Device(client, HttpTransport(client.replica), patient_id=patient.id)
        drain(device)
        devices.append(device)
    return devices


def _stock(staff: Any, *, repeat: int) -> _Catalogue:
    """Fresh products for one repeat, through the staff routes, with their lots in
    the warehouse (several expiry dates)."""
    locations = _ok(staff.get("/v1/commerce/locations"))
    warehouse = next(loc["id"] for loc in locations if loc["kind"] == "warehouse")
    stores = [loc["id"] for loc in locations if loc["kind"] == "clinic"]
    tag = f"r{repeat}-{uuid.uuid4().hex[:6]}"

    def product(name: str, **more: Any) -> str:
        body = {
            "sku": f"{name}-{tag}",
            "name": f"{name} {tag}",
            "category": "dressing",
            "product_class": name.lower(),
            "unit": "box of 10",
            "price": 1250,
            "currency": "EUR",
            **more,
        }
        return str(_ok(staff.post("/v1/commerce/products", json=body))["id"])

    def receive(product_id: str, quantity: int, days: int, location: str = warehouse) -> None:
        _ok(
            staff.post(
                "/v1/commerce/lots",
                json={
                    "location_id": location,
                    "product_id": product_id,
                    "lot_code": f"L{days}-{tag}",
                    "expires_on": (date.today() + timedelta(days=days)).isoformat(),
                    "quantity": quantity,
                },
            )
        )

    plain = [product(f"Foam{n}") for n in range(4)]
    canister = product("Canister")
    kit = product(
        "NPWT kit",
        category="npwt",
        components=[
            {"product_id": plain[0], "quantity": 2},
            {"product_id": canister, "quantity": 1},
        ],
    )
    scarce = product("Scarce")
    for product_id in [*plain, canister]:
        for days in (30, 90, 365):
            receive(product_id, 100_000, days)  # the warehouse, behind the stores
            for store in stores:
                receive(product_id, 10_000, days, store)
    receive(scarce, 20, 60)  # only in the warehouse: the clinics race for it
    return _Catalogue(plain, kit, scarce)


def _plan(devices: list[_Device], catalogue: _Catalogue, batches: int, *, seed: int) -> None:
    rng = random.Random(seed)
    for device in devices:
        device.reset()
        for _ in range(batches):
            batch = []
            for k in range(BATCH):
                lines = [{"product_id": rng.choice(catalogue.plain), "quantity": rng.randint(1, 5)}]
                if k % 4 == 3:
                    lines.append({"product_id": catalogue.kit, "quantity": 1})
                if k % SCARCE == SCARCE - 1:
                    lines = [{"product_id": catalogue.scarce, "quantity": 1}]
                batch.append(
                    {
                        "kind": "order.place",
                        "patient_id": device.patient_id,
                        "details": {"lines": lines},
                    }
                )
            device.batches.append(batch)
