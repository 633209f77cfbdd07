"""Request dependencies, each defined once: the app's services and who is asking.

Routes declare what they need by type::

    def post_clinic(body: ClinicCreate, caller: AdminCaller, db: DbDep) -> ClinicPublic:

- `DbDep`, `SettingsDep`, `SigningKeyDep`, `ArtifactKeyDep`, `SecretBoxDep`,
  `BlobsDep`, `FeedDep`, `MetricsDep`: the app's database, settings, token signing key,
  artifact (model) signing key, the box that seals TOTP secrets, blob backend,
  change-feed notifier and metrics, and `IntentDeskDep` (the handlers that decide
  intents) (built once by `create_app`, kept on ``app.state``).
- `RequestIdDep`: the request id the observability middleware gave this request (for
  audit rows).
- `ClientDep`: the client address requests are throttled by (an IPv6 /64), from the
  connection as uvicorn reports it (behind a proxy, its ``X-Forwarded-For`` when the
  proxy is one uvicorn trusts: ``--forwarded-allow-ips``).
- `AnyPrincipal`, `DeviceCaller`, `StaffCaller`, `AdminCaller`: the caller, from its
  bearer access token checked against the database, narrowed to a role. Routes hand it
  to the services, which scope every query by its clinic.

Each dependency reads ``request.app.state`` at request time: nothing is created at
import time. Those that authenticate or can refuse a request are marked with
`sync_server.openapi.documents` (their security scheme, their error statuses): every
route that uses them is documented so.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from sync_server.blobs.backends import BlobBackend
from sync_server.db import Database
from sync_server.errors import Forbidden, Unauthorized
from sync_server.identity.keyring import TokenKeyring
from sync_server.identity.principals import STAFF_ROLES, Principal, authenticated
from sync_server.identity.sealing import SecretBox
from sync_server.identity.sessions import keep_session_alive, session_state
from sync_server.identity.throttling import client_of
from sync_server.intents.desk import IntentDesk
from sync_server.models.signing import ArtifactKey
from sync_server.openapi import DEVICE_TOKEN, STAFF_SESSION, documents
from sync_server.ops.metrics import Metrics
from sync_server.settings import Settings
from sync_server.sync.feed import Feed

__all__ = [
    "AdminCaller",
    "AnyPrincipal",
    "ArtifactKeyDep",
    "BlobsDep",
    "ClientDep",
    "DbDep",
    "DeviceCaller",
    "FeedDep",
    "IntentDeskDep",
    "MetricsDep",
    "RequestIdDep",
    "SecretBoxDep",
    "SettingsDep",
    "SigningKeyDep",
    "StaffCaller",
    "current_principal",
]


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


_DATABASE_DOWN = {
    503: "The database is busy or down, or the audit log could not be written: "
    "nothing was done; retry later (`unavailable` and the like)."
}
_UNAUTHENTICATED = {
    401: "No valid bearer token: missing (`missing_token`), expired, unknown, or a staff "
    "session that ended (`session_ended`).",
    403: "Valid credentials that may not do this: a revoked device, a deactivated user, "
    "the wrong kind of caller or role (`devices_only`, `staff_only`, `admins_only`).",
}


@documents(errors=_DATABASE_DOWN)
async def _db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


async def _signing_key(request: Request) -> TokenKeyring:
    key: TokenKeyring = request.app.state.signing_key
    return key


async def _artifact_key(request: Request) -> ArtifactKey:
    key: ArtifactKey = request.app.state.artifact_key
    return key


async def _intent_desk(request: Request) -> IntentDesk:
    desk: IntentDesk = request.app.state.intents
    return desk


async def _secret_box(request: Request) -> SecretBox:
    box: SecretBox = request.app.state.secret_box
    return box


@documents(errors={429: "Too many attempts from this client: retry after `Retry-After`."})
async def _client(request: Request) -> str:
    return client_of(request.client.host if request.client else None)


@documents(errors={503: "Blob storage is unavailable; retry later."})
async def _blobs(request: Request) -> BlobBackend:
    backend: BlobBackend = request.app.state.blobs
    return backend


async def _feed(request: Request) -> Feed:
    feed: Feed = request.app.state.feed
    return feed


async def _metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


async def _request_id(request: Request) -> str | None:
    value = getattr(request.state, "request_id", None)
    return str(value)[:64] if value else None


SettingsDep = Annotated[Settings, Depends(_settings)]
DbDep = Annotated[Database, Depends(_db)]
SigningKeyDep = Annotated[TokenKeyring, Depends(_signing_key)]
ArtifactKeyDep = Annotated[ArtifactKey, Depends(_artifact_key)]
SecretBoxDep = Annotated[SecretBox, Depends(_secret_box)]
IntentDeskDep = Annotated[IntentDesk, Depends(_intent_desk)]
ClientDep = Annotated[str, Depends(_client)]
BlobsDep = Annotated[BlobBackend, Depends(_blobs)]
FeedDep = Annotated[Feed, Depends(_feed)]
MetricsDep = Annotated[Metrics, Depends(_metrics)]
RequestIdDep = Annotated[str | None, Depends(_request_id)]


@documents(security=(DEVICE_TOKEN, STAFF_SESSION), errors=_UNAUTHENTICATED)
def current_principal(
    request: Request, db: DbDep, key: SigningKeyDep, settings: SettingsDep
) -> Principal:
    """The caller, from its bearer access token, checked against the database; a staff
    session's activity is noted (it ends when idle: `sync_server.identity.sessions`).

    Raises:
        Unauthorized: No token, a token that does not verify, or a staff session that
            is over (``session_idle_expired``, ``session_ended``).
        Forbidden: The device is revoked or the user deactivated.
    """
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("missing bearer access token", code="missing_token")
    claims = key.verify_access_token(token.strip())
    state = "active"
    with db.read() as session:
        principal = authenticated(session=session, claims=claims)
        if principal.kind == "user" and claims.session_id is not None:
            state = session_state(session=session, family_id=claims.session_id, settings=settings)
    if state == "ended":
        raise Unauthorized("this session has ended; log in again", code="session_ended")
    if state != "active" and claims.session_id is not None:
        with db.write() as session:
            keep_session_alive(session=session, family_id=claims.session_id, settings=settings)
    request.state.principal = principal  # for the access log
    return principal


AnyPrincipal = Annotated[Principal, Depends(current_principal)]


@documents(security=(DEVICE_TOKEN,))
async def _device(principal: AnyPrincipal) -> Principal:
    if principal.kind != "device":
        raise Forbidden("this route is for enrolled devices", code="devices_only")
    return principal


@documents(security=(STAFF_SESSION,))
async def _staff(principal: AnyPrincipal) -> Principal:
    if principal.kind != "user" or principal.role not in STAFF_ROLES:
        raise Forbidden("this route is for staff", code="staff_only")
    return principal


@documents(security=(STAFF_SESSION,))
async def _admin(principal: AnyPrincipal) -> Principal:
    if principal.kind != "user" or principal.role != "admin":
        raise Forbidden("this route is for admins", code="admins_only")
    return principal


DeviceCaller = Annotated[Principal, Depends(_device)]
StaffCaller = Annotated[Principal, Depends(_staff)]
AdminCaller = Annotated[Principal, Depends(_admin)]
