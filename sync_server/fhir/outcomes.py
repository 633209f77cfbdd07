"""The server's refusals as FHIR answers them: an ``OperationOutcome`` resource.

The app's one error handler (`sync_server.app`) answers every refusal of a path under
`FHIR_PREFIX` with `operation_outcome` instead of the server's ``{"error": ...}``
shape, with the same status; the server's stable error code is the issue's
``diagnostics``, its message the issue's ``details.text``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["FHIR_MEDIA_TYPE", "FHIR_PREFIX", "OPERATION_OUTCOME_SCHEMA", "operation_outcome"]

FHIR_PREFIX = "/fhir/"
"""Paths under this prefix answer in FHIR (``application/fhir+json``)."""

FHIR_MEDIA_TYPE = "application/fhir+json"

_ISSUE_TYPES = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    408: "timeout",
    409: "conflict",
    410: "deleted",
    413: "too-costly",
    422: "invalid",
    429: "throttled",
    503: "transient",
}

OPERATION_OUTCOME_SCHEMA: dict[str, Any] = {
    "title": "OperationOutcome",
    "type": "object",
    "description": "A FHIR R4 OperationOutcome: why the request was refused.",
    "required": ["resourceType", "issue"],
    "properties": {
        "resourceType": {"type": "string", "const": "OperationOutcome"},
        "issue": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["severity", "code"],
                "properties": {
                    "severity": {"type": "string", "enum": ["fatal", "error"]},
                    "code": {"type": "string", "description": "FHIR's issue type."},
                    "diagnostics": {
                        "type": "string",
                        "description": "The server's stable error code.",
                    },
                    "details": {
                        "type": "object",
                        "properties": {"text": {"type": "string"}},
                    },
                },
            },
        },
    },
}
"""The OpenAPI schema of `operation_outcome`'s answers."""


def operation_outcome(status: int, code: str, message: str) -> dict[str, Any]:
    """The OperationOutcome answered with HTTP `status` for a refusal with the server's
    error `code` and `message`."""
    return {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "fatal" if status >= 500 else "error",
                "code": _ISSUE_TYPES.get(status, "exception" if status >= 500 else "processing"),
                "diagnostics": code,
                "details": {"text": message},
            }
        ],
    }
