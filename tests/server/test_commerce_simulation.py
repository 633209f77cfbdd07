"""The seeded randomized stock run (`commerce_sim`) on SQLite and PostgreSQL: orders,
cancellations, picks, receipts, corrections, payments and hold sweeps, with the books
checked after every step.

``COHERENCY_COMMERCE_SEEDS`` sets how many seeds run per database (default 200;
``COHERENCY_COMMERCE_SEEDS=10000`` for the long run). A failure names its seed;
rerun one seed with ``COHERENCY_COMMERCE_SEED=<n>``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

from .commerce_sim import SimStats, simulate
from .commerce_world import Shop, build_shop, patient_of

SEEDS = int(os.environ.get("COHERENCY_COMMERCE_SEEDS", "200"))
ONE_SEED = os.environ.get("COHERENCY_COMMERCE_SEED")
PER_SHOP = 10  # seeds per organisation: its catalogue lists every seed's products


def _shops(server: Any, count: int) -> Iterator[tuple[Shop, list[str]]]:
    """`count` shops, each in an organisation of its own (a catalogue that stays
    small), with three patients."""
    for _ in range(count):
        shop = build_shop(server, own_organisation=True)
        try:
            tablet = shop.tablet()
            yield shop, [patient_of(tablet, f"Sim{n}") for n in range(3)]
        finally:
            shop.close()


def test_seeded_stock_runs_keep_the_books(server: Any) -> None:
    seeds = [int(ONE_SEED)] if ONE_SEED is not None else list(range(SEEDS))
    total = SimStats()
    started = time.perf_counter()
    shops = _shops(server, (len(seeds) + PER_SHOP - 1) // PER_SHOP)
    shop, patients = next(shops)
    for n, seed in enumerate(seeds):
        if n and n % PER_SHOP == 0:
            shop, patients = next(shops)
        try:
            total.add(simulate(shop, seed, patients))
        except AssertionError as failure:
            raise AssertionError(f"seed {seed}: {failure}") from failure
    shops.close()
    seconds = time.perf_counter() - started
    print(f"\ncommerce simulation [{server.backend}]: {total} in {seconds:.1f} s")
    assert total.seeds == len(seeds)
    if len(seeds) >= 50:
        assert total.accepted and total.rejected and total.cancelled and total.picked
        assert total.expired
        assert total.payments and total.declined and total.timeouts and total.refunds
