"""Shared fixtures: stores in a temporary folder and comparable replica snapshots.

Test modules run with ``--import-mode=importlib`` and cannot import this file, so
helpers are handed out as fixtures (`snapshot`, `tmp_store`).

``COHERENCY_BLOCK_IMPORTS=scipy,open3d,contourpy`` makes those packages unimportable for
the run, as if not installed (``tests/capture/test_numpy_only.py`` runs the capture
tests so, to prove the pipeline needs NumPy alone).
"""

from __future__ import annotations

import contextlib
import importlib.abc
import json
import os
import secrets
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from crdt import COLLECTIONS, Patient, Wound, WoundAssessment
from edge_sdk import (
    Argon2Params,
    EdgeClient,
    MemoryHub,
    MemoryTransport,
    PassphraseKeyProvider,
    StoreError,
)


class _ImportBlocker(importlib.abc.MetaPathFinder):
    """Refuses to import the named top-level packages (and their submodules)."""

    def __init__(self, names: set[str]) -> None:
        self.names = names

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> None:
        if fullname.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {fullname!r} (blocked)", name=fullname)
        return None


_BLOCKED = {n.strip() for n in os.environ.get("COHERENCY_BLOCK_IMPORTS", "").split(",") if n}
if _BLOCKED:
    if loaded := sorted(m for m in sys.modules if m.split(".")[0] in _BLOCKED):
        raise RuntimeError(f"cannot block modules already imported: {loaded}")
    sys.meta_path.insert(0, _ImportBlocker(_BLOCKED))


FAST_KDF = Argon2Params.fast()
CLINIC = "clinic-1"
PASSPHRASE = "correct horse battery staple"

Snapshot = dict[str, Any]


def fast_provider(passphrase: str = PASSPHRASE) -> PassphraseKeyProvider:
    """A passphrase provider with test-only Argon2 costs."""
    return PassphraseKeyProvider(passphrase, params=FAST_KDF)


def take_snapshot(client: EdgeClient) -> Snapshot:
    """Everything two converged replicas must agree on, in a comparable form.

    The projection rows (as the JSON the store keeps), each document's heads, and the
    conflicts as `client.conflicts()` reports them.
    """
    store = client.replica.store
    projections = {
        name: json.dumps(store.query_records(name, [], []), sort_keys=True) for name in COLLECTIONS
    }
    heads = {
        doc_id: [h.hex() for h in doc_heads]
        for doc_id, doc_heads in sorted(store.document_heads().items())
    }
    return {"projections": projections, "heads": heads, "conflicts": client.conflicts()}


def close_quietly(client: EdgeClient) -> None:
    """Close a client a test may already have closed."""
    with contextlib.suppress(StoreError):
        client.close()


class StoreFactory:
    """Makes `EdgeClient` stores under one temporary folder and closes them at the end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._clients: list[EdgeClient] = []

    def __call__(
        self,
        name: str = "store",
        *,
        clinic_id: str = CLINIC,
        passphrase: str = PASSPHRASE,
    ) -> EdgeClient:
        """A new store at ``root / name``."""
        client = EdgeClient.init(self.root / name, fast_provider(passphrase), clinic_id=clinic_id)
        self._clients.append(client)
        return client

    def open(self, name_or_path: str | Path, *, passphrase: str = PASSPHRASE) -> EdgeClient:
        """Reopen a store made by this factory (or any store, given its path)."""
        client = EdgeClient.open(self.path(name_or_path), fast_provider(passphrase))
        self._clients.append(client)
        return client

    def path(self, name_or_path: str | Path) -> Path:
        """The folder of a store."""
        return name_or_path if isinstance(name_or_path, Path) else self.root / name_or_path

    def close_all(self) -> None:
        """Close every client made or opened here."""
        for client in self._clients:
            close_quietly(client)
        self._clients.clear()


@pytest.fixture
def tmp_store(tmp_path: Path) -> Iterator[StoreFactory]:
    """Factory of stores in `tmp_path`: ``tmp_store("a")`` inits one, fast KDF, one clinic."""
    factory = StoreFactory(tmp_path)
    yield factory
    factory.close_all()


@pytest.fixture
def snapshot() -> Callable[[EdgeClient], Snapshot]:
    """``snapshot(client)``: projections, heads and conflicts, comparable with ``==``."""
    return take_snapshot


def connect(hub: MemoryHub, client: EdgeClient) -> MemoryTransport:
    """A transport from `client` to the in-memory server `hub`."""
    return MemoryTransport(
        hub,
        device_id=client.device_id,
        clinic_id=client.clinic_id,
        public_key=client.identity.public_key,
    )


def add_patient(client: EdgeClient, family: str) -> str:
    """A new patient's id."""
    return client.patients.add(given_name="Ada", family_name=family, birth_date="1950-03-01").id


@dataclass(frozen=True)
class ScannedAssessment:
    """What `add_scanned_assessment` wrote: a patient's wound, assessed with a scan."""

    patient: Patient
    wound: Wound
    assessment: WoundAssessment
    scan: bytes  # the blob's bytes
    sha256: str


def add_scanned_assessment(
    client: EdgeClient, family: str = "Scanned", *, area_cm2: float = 4.8
) -> ScannedAssessment:
    """A new patient with a pressure ulcer on the left heel, assessed once with a 4 KiB
    random scan stored as a blob (not yet synced)."""
    patient = client.patients.add(given_name="Ada", family_name=family, birth_date="1950-01-02")
    wound = client.wounds.add(patient_id=patient.id, body_site="left heel", etiology="pressure")
    scan = secrets.token_bytes(4096)
    ref = client.blobs.put_bytes(scan)
    assessment = client.assessments.add(
        wound_id=wound.id,
        patient_id=patient.id,
        captured_at="2026-11-21T10:15:00+00:00",
        device_id=client.device_id,
        measurements={"area_cm2": area_cm2},
        blobs=[{"sha256": ref.sha256, "size": ref.size, "kind": "scan"}],
    )
    return ScannedAssessment(patient, wound, assessment, scan, ref.sha256)
