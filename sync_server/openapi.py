"""The OpenAPI document the server publishes, derived from what each route really uses.

FastAPI documents a route's parameters, body and answer; this module adds the rest of
the contract from the same source, so a route added tomorrow is covered without being
listed anywhere:

- **Security**: a dependency that authenticates is marked with `documents` (the
  bearer-token dependencies in `sync_server.deps`, the gateway's webhook signature);
  an operation's ``security`` is what the dependencies it really uses (its FastAPI
  dependant tree) require, and ``[]`` (public) when none does.
- **Errors**: every operation lists the error statuses it can answer, each with the
  one `Error` shape the app's exception handlers write: from its inputs (any input:
  400 a value the database refuses, 422 a request off the schema; a body: 408 and
  413; an input that names a thing, a path parameter or an ``*_id``: 404), from its
  dependencies (401/403 for the caller, 429 for the throttled client, 503 for the
  database or blob storage) and from the route's own ``responses=`` (its domain
  refusals, 409 and the like). FastAPI's
  ``HTTPValidationError`` schema is gone: 422 is the server's shape too.

`install_openapi` puts the document on an app (``app.openapi``; served at
``/openapi.json``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts

from sync_server.fhir.outcomes import FHIR_PREFIX as _FHIR_PREFIX
from sync_server.fhir.outcomes import OPERATION_OUTCOME_SCHEMA

__all__ = [
    "DEVICE_TOKEN",
    "ERROR_SCHEMA",
    "GATEWAY_SIGNATURE",
    "SECURITY_SCHEMES",
    "STAFF_SESSION",
    "Contract",
    "RouteLike",
    "documents",
    "install_openapi",
    "route_contract",
]

DEVICE_TOKEN = "deviceToken"
STAFF_SESSION = "staffSession"
GATEWAY_SIGNATURE = "gatewaySignature"

SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    DEVICE_TOKEN: {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "A device's access token (a short-lived EdDSA JWT with `kind` "
        "`device`), from `POST /v1/devices/enroll` (which takes a one-time enrolment "
        "token in its body), `POST /v1/auth/device` (a signed assertion) or "
        "`POST /v1/auth/refresh` (a refresh token in the body, spent once).",
    },
    STAFF_SESSION: {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "A staff member's access token (a short-lived EdDSA JWT with "
        "`kind` `user` and the id of its login session, which ends when idle or at "
        "logout), from `POST /v1/auth/login` (password and TOTP) or "
        "`POST /v1/auth/refresh`. Admin routes also need the `admin` role.",
    },
    GATEWAY_SIGNATURE: {
        "type": "apiKey",
        "in": "header",
        "name": "Coherency-Signature",
        "description": "The payment gateway's HMAC-SHA256 signature of a webhook "
        "(`t=<unix time>,v1=<hex>`, over the time and the raw body, with the "
        "deployment's webhook secret).",
    },
}
"""The ways a caller authenticates, as OpenAPI security schemes. Enrolment and refresh
tokens travel in JSON bodies and calendar-feed tokens in their path, which OpenAPI
cannot state as schemes: those routes are public in the document and say so."""

ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "description": "Every refusal: a stable `code` clients branch on and a `message` "
    "for a person; some add fields beside `error` (`retry_after` with 429, `seq` and "
    "`server_seq` when a device's audit chain breaks).",
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "description": "Stable snake_case code."},
                "message": {"type": "string"},
                "details": {
                    "type": "array",
                    "description": "422 `invalid_request`: each problem and where.",
                    "items": {
                        "type": "object",
                        "required": ["where", "problem"],
                        "properties": {
                            "where": {"type": "string"},
                            "problem": {"type": "string"},
                        },
                    },
                },
                "request_id": {"type": "string"},
            },
        },
        "retry_after": {"type": "integer", "minimum": 1},
        "seq": {"type": "integer"},
        "server_seq": {"type": "integer"},
    },
}
"""The body the app's exception handlers write for every 4xx and 5xx."""

_ERROR_CONTENT = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
_FHIR_ERROR_CONTENT = {
    "application/fhir+json": {"schema": {"$ref": "#/components/schemas/OperationOutcome"}}
}

_INPUT_ERRORS = {
    400: "A value the server or its database refuses (`bad_request`, `invalid_value`, "
    "or the route's own code).",
    422: "The request does not match the schema (`invalid_request`, with `details`), "
    "or is refused for what it says.",
}
_BODY_ERRORS = {
    408: "The body did not arrive in time (`body_timeout`).",
    413: "The body is over the route's cap (`payload_too_large`).",
}
_NAMED_ERRORS = {
    404: "Something the request names does not exist, or the caller may not see it "
    "(`not_found`, `clinic_not_found` and the like)."
}

_F = TypeVar("_F", bound=Callable[..., Any])


class RouteLike(Protocol):
    """What `route_contract` reads of a route (an `APIRoute`, or the context FastAPI
    sees an included router's route in)."""

    @property
    def dependant(self) -> Dependant: ...

    @property
    def body_field(self) -> Any: ...


@dataclass(frozen=True)
class Contract:
    """What a dependency, or a whole route, adds to an operation's contract.

    Attributes:
        security: The schemes any one of which authenticates (``()``: none needed).
        errors: Status codes the dependency may answer, each with its description.
    """

    security: tuple[str, ...] = ()
    errors: Mapping[int, str] = field(default_factory=dict)


_DOCUMENTED: dict[Callable[..., Any], Contract] = {}


def documents(
    *, security: tuple[str, ...] = (), errors: Mapping[int, str] | None = None
) -> Callable[[_F], _F]:
    """Mark a dependency with what it adds to every route that uses it: the security
    schemes it authenticates by, the statuses it refuses with. A route's own
    dependencies outrank the ones they depend on for security (`DeviceCaller` narrows
    the token `AnyPrincipal` takes to a device's)."""

    def mark(dependency: _F) -> _F:
        _DOCUMENTED[dependency] = Contract(security=security, errors=dict(errors or {}))
        return dependency

    return mark


def _security_of(dependant: Dependant) -> frozenset[str] | None:
    """The schemes the dependencies under `dependant` accept (None: no requirement);
    the nearest marked dependency on each branch decides, and branches must all agree."""
    found: frozenset[str] | None = None
    for sub in dependant.dependencies:
        contract = _DOCUMENTED.get(sub.call) if sub.call is not None else None
        if contract is not None and contract.security:
            branch: frozenset[str] | None = frozenset(contract.security)
        else:
            branch = _security_of(sub)
        if branch is not None:
            found = branch if found is None else found & branch
    return found


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for sub in dependant.dependencies:
        if sub.call is not None:
            yield sub.call
        yield from _calls(sub)


def _is_a_name(name: str) -> bool:
    return name == "id" or name.endswith("_id")


def _body_names(field_: Any) -> list[str]:
    """The top-level field names of a JSON body model (a body of another type: its
    parameter's own name)."""
    model = getattr(getattr(field_, "field_info", None), "annotation", None)
    fields = getattr(model, "model_fields", None)
    return list(fields) if isinstance(fields, dict) else [getattr(field_, "name", "")]


def _has_parameters(dependant: Dependant) -> tuple[bool, bool]:
    """(any input, any input that names a thing) anywhere in the tree: every path
    parameter names one, and so does a query parameter or top-level body field called
    ``id`` or ``*_id``."""
    inputs = bool(
        dependant.path_params
        or dependant.query_params
        or dependant.header_params
        or dependant.cookie_params
        or dependant.body_params
    )
    names = bool(dependant.path_params) or any(
        _is_a_name(param.name) for param in dependant.query_params
    )
    for body in dependant.body_params:
        names = names or any(_is_a_name(name) for name in _body_names(body))
    for sub in dependant.dependencies:
        sub_inputs, sub_names = _has_parameters(sub)
        inputs, names = inputs or sub_inputs, names or sub_names
    return inputs, names


def route_contract(route: RouteLike, *, reads_body: bool = False) -> Contract:
    """The security and error statuses `route` has from its inputs and dependencies
    (its own ``responses=`` come on top). `reads_body`: the route reads a body of its
    own (a raw stream, documented with ``openapi_extra``)."""
    inputs, names = _has_parameters(route.dependant)
    has_body = reads_body or route.body_field is not None
    errors: dict[int, str] = {}
    if inputs or has_body:
        errors.update(_INPUT_ERRORS)
    if has_body:
        errors.update(_BODY_ERRORS)
    if names:
        errors.update(_NAMED_ERRORS)
    for call in _calls(route.dependant):
        contract = _DOCUMENTED.get(call)
        if contract is not None:
            errors.update(contract.errors)
    security = _security_of(route.dependant)
    schemes = tuple(name for name in SECURITY_SCHEMES if security and name in security)
    return Contract(security=schemes, errors=dict(sorted(errors.items())))


def _wants_error_shape(response: Mapping[str, Any]) -> bool:
    content = response.get("content")
    return not content or "HTTPValidationError" in repr(content)


def _document_operation(
    operation: dict[str, Any], contract: Contract, *, fhir: bool = False
) -> None:
    operation["security"] = [{name: []} for name in contract.security]
    responses: dict[str, Any] = operation["responses"]
    for code, description in contract.errors.items():
        declared = responses.setdefault(str(code), {"description": description})
        if declared.get("description") == "Validation Error":  # FastAPI's own
            declared["description"] = description
    for status, response in responses.items():
        if status.isdigit() and int(status) >= 400 and _wants_error_shape(response):
            response["content"] = copy.deepcopy(_FHIR_ERROR_CONTENT if fhir else _ERROR_CONTENT)
    operation["responses"] = dict(sorted(responses.items()))


def _derive(app: FastAPI, document: dict[str, Any]) -> None:
    """Add the derived security and error responses to FastAPI's `document` of `app`."""
    for route in iter_route_contexts(app.routes):
        if not isinstance(route.original_route, APIRoute) or not route.include_in_schema:
            continue
        for method in route.methods or ():
            operation = document["paths"][route.path_format][method.lower()]
            contract = route_contract(route, reads_body="requestBody" in operation)
            _document_operation(
                operation, contract, fhir=(route.path_format or "").startswith(_FHIR_PREFIX)
            )
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas["Error"] = copy.deepcopy(ERROR_SCHEMA)
    if any(path.startswith(_FHIR_PREFIX) for path in document["paths"]):
        schemas["OperationOutcome"] = copy.deepcopy(OPERATION_OUTCOME_SCHEMA)
    components["schemas"] = dict(sorted(schemas.items()))
    components["securitySchemes"] = copy.deepcopy(SECURITY_SCHEMES)


def install_openapi(app: FastAPI) -> None:
    """Serve FastAPI's document of `app` with the derived contract added (built on first
    use, and again whenever FastAPI rebuilds it for routes added since)."""
    build = app.openapi
    derived: list[dict[str, Any]] = []  # the document last derived (FastAPI caches it)

    def openapi() -> dict[str, Any]:
        document = build()
        if not derived or derived[0] is not document:
            _derive(app, document)
            derived[:] = [document]
        return document

    app.openapi = openapi  # type: ignore[method-assign]
