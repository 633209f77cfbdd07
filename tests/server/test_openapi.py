"""The API contract: the OpenAPI document is valid, every operation states how it
authenticates and which errors it answers (in the server's one error shape), derived
from what the route uses, and ``/docs`` loads with no internet.

What the routes really answer is checked against the document by the schemathesis
sweep (`tests/server/test_fuzz_api.py`).
"""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urljoin, urlsplit

import pytest
from fastapi import APIRouter, Body, FastAPI
from openapi_spec_validator import validate

from sync_server import create_app
from sync_server.deps import AdminCaller, AnyPrincipal, ClientDep, DbDep, DeviceCaller
from sync_server.openapi import DEVICE_TOKEN, STAFF_SESSION, install_openapi

from .conftest import make_settings

PUBLIC = {
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("post", "/v1/devices/enroll"),  # a one-time enrolment token, in the body
    ("post", "/v1/auth/refresh"),  # a refresh token, in the body
    ("post", "/v1/auth/device"),  # a signed assertion, in the body
    ("post", "/v1/auth/login"),  # password and TOTP, in the body
    ("post", "/v1/auth/logout"),  # a refresh token, in the body
    ("get", "/v1/calendar/{token}.ics"),  # a feed token, in the path
    ("get", "/fhir/R4/metadata"),  # the CapabilityStatement, public as FHIR servers make it
}
"""Operations no security scheme applies to (each says why)."""


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    app = create_app(make_settings(tmp_path_factory.mktemp("openapi"), None))
    return app.openapi()


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
    ]


def test_the_document_is_valid_openapi(document: dict[str, Any]) -> None:
    validate(document)
    assert document["openapi"].startswith("3.1")
    assert len(_operations(document)) > 90


def test_fastapis_validation_schema_is_gone(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    assert "HTTPValidationError" not in str(document)
    assert schemas["Error"]["required"] == ["error"]


def test_every_operation_states_its_security(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes[DEVICE_TOKEN]["scheme"] == schemes[STAFF_SESSION]["scheme"] == "bearer"
    assert schemes[DEVICE_TOKEN]["description"] != schemes[STAFF_SESSION]["description"]
    public = set()
    for method, path, operation in _operations(document):
        assert "security" in operation, (method, path)
        for requirement in operation["security"]:
            assert set(requirement) <= set(schemes), (method, path)
        if not operation["security"]:
            public.add((method, path))
        elif operation["security"] != [{"gatewaySignature": []}]:
            # Whoever presents a bearer token can be refused it (401) or the route (403).
            assert {"401", "403"} <= set(operation["responses"]), (method, path)
    assert public == PUBLIC


def test_security_follows_the_caller_a_route_takes(document: dict[str, Any]) -> None:
    paths = document["paths"]
    assert paths["/v1/sync/push"]["post"]["security"] == [{DEVICE_TOKEN: []}]
    assert paths["/v1/admin/clinics"]["post"]["security"] == [{STAFF_SESSION: []}]
    assert paths["/v1/patients"]["get"]["security"] == [{STAFF_SESSION: []}]
    assert paths["/v1/blobs/{sha256}"]["get"]["security"] == [
        {DEVICE_TOKEN: []},
        {STAFF_SESSION: []},
    ]
    assert paths["/v1/payments/webhooks"]["post"]["security"] == [{"gatewaySignature": []}]


def test_every_error_answers_in_the_error_shape(document: dict[str, Any]) -> None:
    for method, path, operation in _operations(document):
        for status, response in operation["responses"].items():
            if int(status) < 400 or (path, status) == ("/readyz", "503"):
                continue  # readiness answers its failed checks, in its own shape
            if path.startswith("/fhir/"):  # FHIR answers refusals as OperationOutcome
                schema = response["content"]["application/fhir+json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/OperationOutcome"}, (path, status)
                continue
            schema = response["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/Error"}, (method, path, status)


def test_errors_follow_inputs_and_dependencies(document: dict[str, Any]) -> None:
    paths = document["paths"]
    clinic = set(paths["/v1/admin/clinics"]["post"]["responses"])
    assert {"400", "401", "403", "408", "413", "422", "503"} <= clinic
    assert "404" not in clinic  # no path parameter, no refusal of its own
    deactivate = set(paths["/v1/admin/users/{user_id}/deactivate"]["post"]["responses"])
    assert {"404", "409"} <= deactivate  # its path, and its own declared refusal
    assert "429" in paths["/v1/auth/login"]["post"]["responses"]  # the throttled client
    assert set(paths["/healthz"]["get"]["responses"]) == {"200"}  # takes nothing


def test_a_route_the_mechanism_has_not_seen_is_covered() -> None:
    """Routes added later (by any domain) are documented from what they use."""
    router = APIRouter(prefix="/v1/new")

    @router.post("/things/{thing_id}", responses={409: {"description": "Taken."}})
    def post_thing(
        thing_id: str, body: Annotated[dict[str, str], Body()], caller: AdminCaller, db: DbDep
    ) -> dict[str, str]:
        return {}

    @router.get("/mine")
    def get_mine(caller: DeviceCaller) -> dict[str, str]:
        return {}

    @router.get("/either")
    def get_either(caller: AnyPrincipal) -> dict[str, str]:
        return {}

    @router.get("/open")
    def get_open(client: ClientDep) -> dict[str, str]:
        return {}

    app = FastAPI()
    app.include_router(router)
    install_openapi(app)
    document = app.openapi()
    validate(document)
    thing = document["paths"]["/v1/new/things/{thing_id}"]["post"]
    assert thing["security"] == [{STAFF_SESSION: []}]
    assert set(thing["responses"]) == {
        "200", "400", "401", "403", "404", "408", "409", "413", "422", "503"
    }  # fmt: skip
    assert thing["responses"]["409"]["description"] == "Taken."
    assert document["paths"]["/v1/new/mine"]["get"]["security"] == [{DEVICE_TOKEN: []}]
    mine = set(document["paths"]["/v1/new/mine"]["get"]["responses"])
    assert mine == {"200", "401", "403", "503"}  # the token is checked in the database
    either = document["paths"]["/v1/new/either"]["get"]["security"]
    assert either == [{DEVICE_TOKEN: []}, {STAFF_SESSION: []}]
    opened = document["paths"]["/v1/new/open"]["get"]
    assert opened["security"] == [] and set(opened["responses"]) == {"200", "429"}

    @app.get("/v1/later/{thing_id}")
    def get_later(thing_id: str, caller: AdminCaller) -> dict[str, str]:
        return {}

    later = app.openapi()["paths"]["/v1/later/{thing_id}"]["get"]  # rebuilt, derived again
    assert later["security"] == [{STAFF_SESSION: []}] and "404" in later["responses"]


class _Assets(HTMLParser):
    """Every URL a page loads (scripts, stylesheets, icons, images) and its scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        for name in ("src", "href"):
            if found.get(name):
                self.urls.append(str(found[name]))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts.append(data)


EXPECTED_TYPES = {".js": "javascript", ".css": "text/css", ".png": "image/png"}


def test_docs_load_with_no_internet(server: Any) -> None:
    with server.http() as http:
        page = http.get("/docs")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "http://" not in page.text and "https://" not in page.text
        assets = _Assets()
        assets.feed(page.text)
        assert len(assets.urls) >= 3  # stylesheet, icon, script
        for url in assets.urls:
            absolute = urljoin(f"{server.url}/docs", url)
            assert urlsplit(absolute).netloc == urlsplit(server.url).netloc, url
            answer = http.get(absolute)
            assert answer.status_code == 200, url
            suffix = Path(urlsplit(absolute).path).suffix
            assert EXPECTED_TYPES[suffix] in answer.headers["content-type"], url
        assert any('url: "/openapi.json"' in script for script in assets.scripts)
        spec = http.get("/openapi.json")
        assert spec.status_code == 200 and spec.json() == server.app.openapi()
        assert http.get("/redoc").status_code == 404  # it would load from a CDN
        bundle = http.get("/docs/static/swagger-ui-bundle.js").text
    # The bundled Swagger UI (5) renders OpenAPI 3.1, which the document is.
    assert spec.json()["openapi"].startswith("3.1.")
    assert "isOAS31" in bundle
