"""Record schema evolution: each collection's records carry the schema version that
wrote them (``schema_version`` in the document), and a migration brings a record from
one version to the next.

A migration is a pure function of the record's stored values (JSON-ready, as
`RecordDocument.values` gives them) at `from_version`, returning the fields to change;
`RecordDocument.upgrade` applies every step up to the collection's current version as
one ordinary change by the upgrading device (signed, synced, in history). Migrations
must be deterministic: two devices upgrading the same record write the same values,
which then do not conflict.

The registry holds the product's migrations (registered below, next to the schemas
they bridge); `migrate` registers one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from crdt._schemas import COLLECTIONS

__all__ = ["RecordMigration", "migrate", "migration_steps"]

RecordMigration = Callable[[Mapping[str, Any]], Mapping[str, Any]]
"""Given a record's values at one version, the fields to change for the next."""

_REGISTRY: dict[tuple[str, int], RecordMigration] = {}


def migrate(collection: str, from_version: int, function: RecordMigration) -> None:
    """Register `function` as the migration of `collection` records from
    `from_version` to `from_version + 1`.

    Raises:
        ValueError: An unknown collection, a version below 1, or a step already
            registered (a programming error).
    """
    if collection not in COLLECTIONS:
        raise ValueError(f"unknown collection {collection!r}")
    if from_version < 1:
        raise ValueError(f"schema versions start at 1, not {from_version}")
    if (collection, from_version) in _REGISTRY:
        raise ValueError(f"{collection} already has a migration from version {from_version}")
    _REGISTRY[(collection, from_version)] = function


def migration_steps(collection: str, from_version: int, to_version: int) -> list[RecordMigration]:
    """The migrations from `from_version` up to `to_version`, in order.

    Raises:
        ValueError: A step is missing (a schema bump without its migration).
    """
    steps = []
    for version in range(from_version, to_version):
        step = _REGISTRY.get((collection, version))
        if step is None:
            raise ValueError(f"{collection} has no migration from version {version}")
        steps.append(step)
    return steps


def _assessments_area_method(values: Mapping[str, Any]) -> Mapping[str, Any]:
    """Assessments v1 -> v2: say how the area was obtained, and estimate it where a v1
    assessment had only a length and a width (pi/4 x L x W, the ellipse rule)."""
    measurements = dict(values.get("measurements") or {})
    if measurements.get("area_method") is not None:
        return {}
    if measurements.get("area_cm2") is not None:
        measurements["area_method"] = "measured"
    elif measurements.get("length_cm") is not None and measurements.get("width_cm") is not None:
        area = math.pi / 4 * measurements["length_cm"] * measurements["width_cm"]
        measurements["area_cm2"] = round(area, 2)
        measurements["area_method"] = "ellipse"
    else:
        return {}
    return {"measurements": measurements}


migrate("assessments", 1, _assessments_area_method)


def _patients_emergency_contacts_and_insurance(values: Mapping[str, Any]) -> Mapping[str, Any]:
    """Patients v1 -> v2: the new fields (emergency contacts, insurance) start empty."""
    return {}


migrate("patients", 1, _patients_emergency_contacts_and_insurance)
