"""What the benchmarks share: the store's key provider, the clinic, progress lines."""

from __future__ import annotations

import sys
from pathlib import Path

from edge_sdk import Argon2Params, EdgeClient, PassphraseKeyProvider

__all__ = ["CLINIC_ID", "SQLITE_PRAGMAS", "new_client", "progress"]

CLINIC_ID = "clinic-bench-01"

# The pragmas edge_sdk's store sets (WAL, a returned commit is on disk, temp tables in
# memory); every plain baseline sets the same so that only the store's own work differs.
SQLITE_PRAGMAS = (
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = FULL",
    "PRAGMA temp_store = MEMORY",
)


def new_client(path: Path) -> EdgeClient:
    """A new encrypted store at `path`.

    The passphrase KDF runs at cheap test costs: opening a store is not what these
    benchmarks measure, and it happens outside every timed region anyway.
    """
    provider = PassphraseKeyProvider("benchmark passphrase", params=Argon2Params.fast())
    return EdgeClient.init(path, provider, clinic_id=CLINIC_ID)


def progress(message: str) -> None:
    """One progress line on stderr (the table goes to stdout)."""
    print(message, file=sys.stderr, flush=True)
