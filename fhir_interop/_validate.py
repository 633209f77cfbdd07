"""Validation against the FHIR R4B models of fhir.resources."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from fhir_interop._errors import FhirValidationError

__all__ = ["FHIR_VERSION", "validate"]

FHIR_VERSION = "4.3.0"
"""The FHIR release the resources are validated against (R4B, fhir.resources 8.3.0);
the resources this package writes are R4-compatible."""


def validate(resource: Mapping[str, Any]) -> None:
    """Check a resource, or a Bundle and every resource in it, against FHIR R4B.

    Raises:
        FhirValidationError: It does not validate; `.problems` says where and why.
    """
    if not isinstance(resource, Mapping):
        raise FhirValidationError("not a FHIR resource", ["(root): not a JSON object"])
    kind = resource.get("resourceType")
    if not isinstance(kind, str):
        raise FhirValidationError("not a FHIR resource", ["resourceType: missing"])
    try:
        model = get_fhir_model_class(kind)
    except (KeyError, ValueError):
        raise FhirValidationError(
            f"unknown resource type {kind!r}",
            [f"resourceType: {kind!r} is not a FHIR R4B resource"],
        ) from None
    try:
        model.model_validate(dict(resource))
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(part) for part in err['loc']) or kind}: {err['msg']}"
            for err in exc.errors()
        ]
        raise FhirValidationError(
            f"{kind}/{resource.get('id', '?')} is not valid FHIR", problems
        ) from None
