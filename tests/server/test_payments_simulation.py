"""The seeded payments simulation (`payments_sim`), at the service level: many seeds
on SQLite (a fresh migrated database per batch), fewer on PostgreSQL.

``COHERENCY_PAYMENT_SEEDS`` sets how many seeds run on SQLite (default 500; set 10000
for the long run). A failure names its seed; rerun one seed with
``COHERENCY_PAYMENT_SEED=<n>``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from sync_server import Settings, migrate
from sync_server.db import Database

from .payments_sim import Stats, simulate

SEEDS = int(os.environ.get("COHERENCY_PAYMENT_SEEDS", "500"))
ONE_SEED = os.environ.get("COHERENCY_PAYMENT_SEED")
BATCH = 125
POSTGRES_SEEDS = int(os.environ.get("COHERENCY_PAYMENT_PG_SEEDS", "50"))


def _seeds() -> list[range]:
    if ONE_SEED is not None:
        return [range(int(ONE_SEED), int(ONE_SEED) + 1)]
    return [range(start, min(start + BATCH, SEEDS)) for start in range(0, SEEDS, BATCH)]


def _run(seeds: range, db: Database, label: str) -> Stats:
    total = Stats()
    started = time.perf_counter()
    for seed in seeds:
        total.add(simulate(seed, db=db))
    print(
        f"\npayments simulation [{label}] seeds {seeds.start}..{seeds.stop - 1} in "
        f"{time.perf_counter() - started:.1f} s: {total}"
    )
    assert total.seeds == len(seeds)
    return total


@pytest.mark.parametrize("seeds", _seeds(), ids=lambda r: f"seeds{r.start}-{r.stop - 1}")
def test_seeded_payments_on_sqlite(tmp_path: Path, seeds: range) -> None:
    # On a RAM disk where there is one: the run checks logic, not fsync.
    shm = Path("/dev/shm")
    folder = Path(tempfile.mkdtemp(dir=shm)) if shm.is_dir() else tmp_path
    settings = Settings(data_dir=folder / "server")
    migrate(settings)
    db = Database(settings.resolved_database_url)
    try:
        stats = _run(seeds, db, "sqlite")
    finally:
        db.dispose()
        if folder != tmp_path:
            shutil.rmtree(folder, ignore_errors=True)
    if len(seeds) == BATCH:  # a full batch meets every kind of trouble
        assert stats.succeeded and stats.declined and stats.timeouts and stats.refunds
        assert stats.duplicates and stats.replays and stats.refused and stats.voids


def test_seeded_payments_on_postgresql(tmp_path: Path, postgres_url: str | None) -> None:
    if postgres_url is None:
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    settings = Settings(data_dir=tmp_path / "server", database_url=postgres_url)
    migrate(settings)
    db = Database(settings.resolved_database_url)
    try:
        _run(range(1_000_000, 1_000_000 + POSTGRES_SEEDS), db, "postgresql")
    finally:
        db.dispose()
