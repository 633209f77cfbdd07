"""The seeded booking simulation (`bookings_sim`): many seeds in process on SQLite
(a fresh migrated database per batch), fewer on PostgreSQL, a few over real HTTP.

``COHERENCY_SIM_SEEDS`` sets how many seeds run on SQLite (default 500; ``make
simulate`` runs 10,000). A failure names its seed; rerun one seed with
``COHERENCY_SIM_SEED=<n>``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from sync_server import Settings, migrate
from sync_server.db import Database

from .bookings_sim import HttpLink, ServiceLink, Stats, simulate

SEEDS = int(os.environ.get("COHERENCY_SIM_SEEDS", "500"))
ONE_SEED = os.environ.get("COHERENCY_SIM_SEED")
BATCH = 100  # seeds per fresh SQLite database
POSTGRES_SEEDS = 20
HTTP_SEEDS = 3


def _seeds() -> list[range]:
    if ONE_SEED is not None:
        return [range(int(ONE_SEED), int(ONE_SEED) + 1)]
    return [range(start, min(start + BATCH, SEEDS)) for start in range(0, SEEDS, BATCH)]


def _run(seeds: range, link: ServiceLink, db: Database, label: str) -> Stats:
    total = Stats()
    started = time.perf_counter()
    for seed in seeds:
        total.add(simulate(seed, db=db, link=link))
    seconds = time.perf_counter() - started
    print(
        f"\nbooking simulation [{label}]: seeds {seeds.start}..{seeds.stop - 1} "
        f"({total.seeds} seeds) in {seconds:.1f} s: {total}"
    )
    assert total.seeds == len(seeds)
    assert total.intents > 0 and total.accepted > 0 and total.rejected > 0
    return total


def _settings(tmp_path: Path, database_url: str | None) -> Settings:
    settings = Settings(data_dir=tmp_path / "server", database_url=database_url)
    migrate(settings)
    return settings


@pytest.mark.parametrize("seeds", _seeds(), ids=lambda r: f"seeds{r.start}-{r.stop - 1}")
def test_seeded_simulation_in_process_on_sqlite(tmp_path: Path, seeds: range) -> None:
    settings = _settings(tmp_path, None)
    db = Database(settings.resolved_database_url)
    try:
        stats = _run(seeds, ServiceLink(db, settings), db, "sqlite, in process")
    finally:
        db.dispose()
    if len(seeds) == BATCH:  # a full batch exercises every kind of trouble
        assert stats.cuts and stats.retries and stats.relays


def test_seeded_simulation_in_process_on_postgresql(
    tmp_path: Path, postgres_url: str | None
) -> None:
    if postgres_url is None:
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    settings = _settings(tmp_path, postgres_url)
    db = Database(settings.resolved_database_url)
    try:
        _run(range(1_000_000, 1_000_000 + POSTGRES_SEEDS), ServiceLink(db, settings), db,
             "postgresql, in process")  # fmt: skip
    finally:
        db.dispose()


def test_seeded_simulation_over_http(server: Any) -> None:
    link = HttpLink(server)
    total = Stats()
    try:
        for seed in range(2_000_000, 2_000_000 + HTTP_SEEDS):
            total.add(
                simulate(seed, db=server.db, link=link, organisation_id=server.organisation_id)
            )
    finally:
        link.close()
    print(f"\nbooking simulation [{server.backend}, over HTTP]: {total}")
    assert total.seeds == HTTP_SEEDS and total.accepted > 0
