"""Bundles of resources: collection, transaction and searchset."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable, Mapping
from typing import Any, Literal

from fhir_interop._errors import FhirError
from fhir_interop._export import patient_resources
from fhir_interop._records import PatientRecords

__all__ = ["BundleKind", "bundle", "export_bundle", "full_url"]

BundleKind = Literal["collection", "transaction", "searchset"]
# Names the urn:uuid fullUrls of resources exported without a base URL.
_NAMESPACE = uuid.UUID("6f0c2b1e-3f49-5d1c-9a0e-c0e4e2e7f1a9")


def full_url(resource_type: str, resource_id: str, base_url: str | None = None) -> str:
    """The fullUrl of a resource in a Bundle.

    With `base_url`, the resource's RESTful URL; without, a ``urn:uuid:`` (FHIR allows
    only absolute URIs there) made from the type and id by UUIDv5, so the same
    resource always gets the same fullUrl.
    """
    if base_url:
        return f"{base_url.rstrip('/')}/{resource_type}/{resource_id}"
    return f"urn:uuid:{uuid.uuid5(_NAMESPACE, f'{resource_type}/{resource_id}')}"


def bundle(
    resources: Iterable[Mapping[str, Any]],
    kind: BundleKind = "collection",
    *,
    base_url: str | None = None,
    total: int | None = None,
    match_types: Collection[str] | None = None,
) -> dict[str, Any]:
    """Wrap resources in a Bundle of `kind`.

    Each entry has a fullUrl (`full_url`); a transaction entry has
    ``request: {method: PUT, url: "<type>/<id>"}``, so loading it twice updates in
    place; a searchset entry has ``search.mode`` "match", or "include" when
    `match_types` is given and the resource's type is not in it. `total` (searchset
    only) defaults to the number of matches.

    Raises:
        FhirError: A resource has no resourceType or id.
    """
    if kind not in ("collection", "transaction", "searchset"):
        raise FhirError(f"unknown bundle type {kind!r}")
    entries = []
    matches = 0
    for resource in resources:
        kind_of, rid = resource.get("resourceType"), resource.get("id")
        if not isinstance(kind_of, str) or not isinstance(rid, str):
            raise FhirError("every resource in a bundle needs a resourceType and an id")
        entry: dict[str, Any] = {"fullUrl": full_url(kind_of, rid, base_url), "resource": resource}
        if kind == "transaction":
            entry["request"] = {"method": "PUT", "url": f"{kind_of}/{rid}"}
        elif kind == "searchset":
            mode = "match" if match_types is None or kind_of in match_types else "include"
            matches += mode == "match"
            entry["search"] = {"mode": mode}
        entries.append(entry)
    out: dict[str, Any] = {"resourceType": "Bundle", "type": kind}
    if kind == "searchset":
        out["total"] = matches if total is None else total
    out["entry"] = entries
    return out


def export_bundle(
    patients: Iterable[PatientRecords],
    kind: BundleKind = "collection",
    *,
    base_url: str | None = None,
) -> dict[str, Any]:
    """Every resource of every patient in one Bundle (see `patient_resources`)."""
    resources: list[dict[str, Any]] = []
    for records in patients:
        resources.extend(patient_resources(records, base_url=base_url))
    return bundle(resources, kind, base_url=base_url)
