"""Benchmark 8: payments decided by the server through the sandbox gateway, on
PostgreSQL, over HTTP on loopback.

As the bookings benchmark: uvicorn serving `sync_server` in a separate process on a
fresh PostgreSQL database; an admin issues invoices through the REST routes (one per
payment, in four clinics); 20 enrolled SDK devices (five per clinic), released
together by a barrier, push batches of signed ``payment.pay`` intents (each paying one
invoice in full) and pull until their decisions come back. The server decides each
inside the push: a conditional reservation on the invoice, the charge through the
sandbox gateway (its own SQLite record, idempotent by the intent's id), the settlement
and its ledger transaction, and the invoice's synced record. One payment in twenty is
declined (``tok_decline``); one in fifty times out and is left processing.

- ``payments.payments_per_s``: payment intents decided per second of wall time.
- ``payments.push_to_decision_p50_ms`` / ``p99_ms``: per intent, from just before
  its push to the end of the pull that brought its decision.

Without PostgreSQL the figures are reported missing, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from benchmarks._bench_bookings import _ok, _staff_client
from benchmarks._bench_sync import MissingFigure, _database, percentile
from benchmarks._common import progress
from benchmarks._harness import Figure, scratch_dir
from benchmarks._intent_race import Racer, drain, race

__all__ = ["NAMES", "run"]

NAMES = (
    "payments.payments_per_s",
    "payments.push_to_decision_p50_ms",
    "payments.push_to_decision_p99_ms",
)
DEVICES = 20
CLINICS = 4
BATCH = 10  # intents per push
DECLINED = 20  # one payment in this many is declined
TIMEOUT = 50  # one in this many times out


def batches_per_device(scale: int) -> int:
    """Pushes per device and repeat: 5 at the default scale, at least 1."""
    return max(1, min(5, scale // 2_000))


def run(*, scale: int, repeat: int, root: Path) -> list[Figure | MissingFigure]:
    """Measure the payment figures on PostgreSQL (missing without it)."""
    with _database("postgresql", root) as (database_url, label, unavailable):
        if unavailable is not None:
            progress(f"payments: not measured: {unavailable}")
            return [MissingFigure("payments", name, unavailable) for name in NAMES]
        assert database_url is not None
        return _measure(database_url, label, batches_per_device(scale), repeat, root)


@dataclass
class _Device(Racer):
    clinic_id: str = ""


def _measure(
    database_url: str, label: str, batches: int, repeat: int, root: Path
) -> list[Figure | MissingFigure]:
    from benchmarks._bench_sync import _ServerProcess
    from sync_server import Settings, migrate

    with scratch_dir(root, "payments") as work:
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
            devices = _setup(server, work / "stores")
            try:
                for r in range(repeat):
                    _plan(staff, devices, batches)
                    seconds = race(devices, "payments")
                    latencies = [s for d in devices for s in d.latencies]
                    intents = DEVICES * batches * BATCH
                    if len(latencies) != intents:
                        raise RuntimeError(f"payments: {len(latencies)} of {intents} decided")
                    rates.append(intents / seconds)
                    p50s.append(percentile(latencies, 0.50) * 1000)
                    p99s.append(percentile(latencies, 0.99) * 1000)
                    accepted.append(sum(d.decided for d in devices))
                    progress(
                        f"payments: repeat {r + 1}/{repeat}: {intents:,} payments in "
                        f"{seconds:.2f}s ({rates[-1]:,.0f}/s), p50 {p50s[-1]:.0f} ms, "
                        f"p99 {p99s[-1]:.0f} ms"
                    )
                ledger = _ok(staff.get("/v1/ledger"))
                if ledger["problems"]:
                    raise RuntimeError(f"payments: the ledger does not add up: {ledger}")
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
        "intents_per_sync": BATCH,
        "declined_share": 1 / DECLINED,
        "timeout_share": 1 / TIMEOUT,
        "accepted": accepted,
        "gateway": "sandbox (its own SQLite record)",
        "server": "uvicorn in a separate process",
        "layout": layout,
    }
    return [
        Figure(
            "payments",
            NAMES[0],
            f"{DEVICES} SDK devices push payment intents concurrently ({label}, HTTP on "
            "loopback, sandbox gateway); payments decided per second",
            "payments/s",
            rates,
            extra=extra,
        ),
        Figure(
            "payments", NAMES[1], "the same: median push-to-decision time", "ms", p50s, extra=extra
        ),
        Figure(
            "payments",
            NAMES[2],
            "the same: 99th percentile (nearest rank)",
            "ms",
            p99s,
            extra=extra,
        ),
    ]


def _setup(server: Any, stores: Path) -> list[_Device]:
    from edge_sdk import Argon2Params, EdgeClient, HttpTransport, PassphraseKeyProvider

    clinics = [server.new_clinic(f"pay-bench-{c}") for c in range(CLINICS)]
    provider = PassphraseKeyProvider("a benchmark passphrase", params=Argon2Params.fast())
    devices: list[_Device] = []
    for n in range(DEVICES):
        clinic_id = clinics[n % CLINICS]
        client = EdgeClient.init(stores / f"device-{n}", provider, clinic_id=clinic_id)
        server.enrol(client, clinic_id, name=f"pay-bench-{n}")
        client.patients.add(given_name="Bench", family_name=f"P{n}", birth_date=date(1950, 1, 1))
        client.sync()
        device = _Device(client, HttpTransport(client.replica), clinic_id=clinic_id)
        drain(device)
        devices.append(device)
    return devices


def _plan(staff: Any, devices: list[_Device], batches: int) -> None:
    """Issue one invoice per payment (untimed) and plan each device's batches."""
    n = 0
    for device in devices:
        device.reset()
        for _ in range(batches):
            batch = []
            for _ in range(BATCH):
                n += 1
                amount = 1000 + n % 9000
                invoice = _ok(
                    staff.post(
                        "/v1/invoices",
                        json={
                            "clinic_id": device.clinic_id,
                            "patient_id": device.client.device_id,
                            "currency": "EUR",
                            "lines": [
                                {"kind": "visit", "description": "visit", "unit_price": amount}
                            ],
                        },
                    )
                )
                token = (
                    "tok_decline"
                    if n % DECLINED == 0
                    else "tok_timeout"
                    if n % TIMEOUT == 1
                    else "tok_success"
                )
                batch.append(
                    {
                        "kind": "payment.pay",
                        "subject_id": invoice["id"],
                        "details": {"amount": amount, "currency": "EUR", "payment_method": token},
                    }
                )
            device.batches.append(batch)
