"""Syncing a device's store with the central server over HTTP (httpx).

`sync` pushes, then pulls:

1. Push: every document whose heads differ from what the server was last known to
   hold travels whole (one `crdt` wire message per batch). The server's answer says
   which it accepted, already had, or refused; the server is then recorded as holding
   exactly the heads of the bytes sent. A batch cut off in flight is sent again: the
   server's merge is idempotent.
2. Pull: the clinic's change feed from the saved cursor, page by page. Each page's
   documents, the new cursor and the server's heads are stored in one transaction, so
   a cut between pages resumes at the next page and nothing is applied twice.
3. Blobs that records reference travel after the records: uploads resume from the
   server's offset, downloads are verified against their SHA-256.

Every request goes through one `_Http` that adds the access token (refreshing it, or
logging in with the device key when the refresh token is gone), and retries
connection failures, 429 and 5xx answers with exponential backoff and full jitter.

httpx is imported here only: `import edge_sdk` works without the `[server]` extra.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import random
import secrets
import threading
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import httpx

from crdt import (
    SYNC_MEDIA_TYPE,
    Rejection,
    device_login_message,
    enrolment_message,
)
from edge_sdk._errors import (
    AuthenticationError,
    CursorAheadError,
    DeviceRevokedError,
    EnrolmentError,
    NotEnrolledError,
    ServerUnreachableError,
    SyncError,
)
from edge_sdk._http_blobs import HttpBlobs
from edge_sdk._replica import Replica, ReplicaHolder, replica_of
from edge_sdk._sync import sync_replica
from edge_sdk._sync_types import (
    Enrollment,
    ProgressCallback,
    RetryPolicy,
    SyncResult,
)
from edge_sdk._transport import PushAnswer

__all__ = ["connect", "enroll", "sync"]

log = logging.getLogger("edge_sdk.sync")

_RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_REFRESH_MARGIN_SECONDS = 30


# ---------------------------------------------------------------- public entry points
def enroll(
    holder: Replica | ReplicaHolder,
    server_url: str,
    token: str,
    *,
    name: str = "",
    retry: RetryPolicy | None = None,
    transport: httpx.BaseTransport | None = None,
) -> Enrollment:
    """Enrol this device with the server using a one-time token from clinic staff.

    The device proves it holds its Ed25519 key; the server binds that key to the
    device and its clinic. A store that already holds records must belong to the
    token's clinic; an empty store takes the token's clinic.

    Raises:
        EnrolmentError: The server refused the token or the clinic does not match.
        ServerUnreachableError: The server did not answer within the retry budget.
    """
    replica = replica_of(holder)
    url = server_url.rstrip("/")
    has_records = replica.store.has_documents()
    identity = replica.identity
    body = {
        "token": token,
        "device_id": identity.device_id,
        "public_key": base64.b64encode(identity.public_key).decode(),
        "signature": base64.b64encode(
            identity.sign(enrolment_message(token, identity.device_id))
        ).decode(),
        "name": name,
        "expected_clinic_id": replica.clinic_id if has_records else None,
    }
    http = _Http(url, replica, retry or RetryPolicy(), transport=transport, authenticated=False)
    try:
        response = http.request("POST", "/v1/devices/enroll", json=body)
    finally:
        http.close()
    if response.status_code >= 400:
        raise EnrolmentError(f"the server refused the enrolment: {_error_text(response)}")
    answer = response.json()
    enrollment = Enrollment(
        server_url=url,
        device_id=str(answer["device_id"]),
        clinic_id=str(answer["clinic_id"]),
        organisation_id=str(answer["organisation_id"]),
        server_public_key=base64.b64decode(answer["server_public_key"]),
    )
    replica.enrol(enrollment, refresh_token=str(answer["refresh_token"]))
    return enrollment


def connect(replica: Replica, current: Any, retry: RetryPolicy | None) -> _Http:
    """A connection to the replica's server: `current` if it serves that server with
    that retry policy, else a new one (closing `current`).

    Raises:
        NotEnrolledError: The replica was never enrolled.
    """
    enrollment = replica.enrollment
    if enrollment is None:
        raise NotEnrolledError("this store is not enrolled with a server: run device enroll")
    policy = retry or RetryPolicy()
    if isinstance(current, _Http) and current.serves(enrollment.server_url, policy):
        return current
    if isinstance(current, _Http):
        current.close()
    return _Http(enrollment.server_url, replica, policy)


def sync(
    holder: Replica | ReplicaHolder,
    *,
    connection: _Http | None = None,
    progress: ProgressCallback | None = None,
    wait: float = 0.0,
    blobs: bool = True,
    retry: RetryPolicy | None = None,
    transport: httpx.BaseTransport | None = None,
) -> SyncResult:
    """Push this store's changes to its server, then pull the clinic's changes.

    `wait` > 0 makes the pull a long poll: it returns as soon as the server has
    something new, or after `wait` seconds. With `blobs`, scan blobs the records
    reference are uploaded and fetched too.

    Raises:
        NotEnrolledError: The store was never enrolled.
        DeviceRevokedError: The server revoked this device.
        ServerUnreachableError: The server did not answer within the retry budget.
    """
    replica = replica_of(holder)
    enrollment = replica.enrollment
    if enrollment is None:
        raise NotEnrolledError("this store is not enrolled with a server: run device enroll")
    policy = retry or RetryPolicy()
    http = connection or _Http(enrollment.server_url, replica, policy, transport=transport)
    try:
        return sync_replica(
            replica,
            _HttpTransport(http, enrollment),
            progress=progress,
            wait=wait,
            blobs=blobs,
        )
    finally:
        if connection is None:
            http.close()


class _HttpTransport:
    """The sync protocol over the server's HTTP API."""

    def __init__(self, http: _Http, enrollment: Enrollment) -> None:
        self._http = http
        self._blobs = HttpBlobs(http)
        # What the server holds is tracked like any peer, under its pinned key.
        self.peer_id = "server:" + enrollment.server_public_key.hex()[:32]
        self.declare_upload = self._blobs.declare_upload
        self.send_chunk = self._blobs.send_chunk
        self.download = self._blobs.download

    @property
    def requests(self) -> int:
        return self._http.requests

    @property
    def retries(self) -> int:
        return self._http.retries

    def push(self, message: bytes) -> PushAnswer:
        response = self._http.request(
            "POST", "/v1/sync/push", content=message, headers={"content-type": SYNC_MEDIA_TYPE}
        )
        _raise_for_status(response, "push")
        answer = response.json()
        return PushAnswer(
            accepted=list(answer["accepted"]),
            unchanged=list(answer["unchanged"]),
            rejected=[Rejection(r["doc_id"], r["reason"]) for r in answer["rejected"]],
        )

    def pull(self, *, cursor: int, limit: int, wait: float) -> bytes:
        params: dict[str, Any] = {"cursor": cursor, "limit": limit}
        if wait > 0:
            params["wait"] = wait
        response = self._http.request("GET", "/v1/sync/pull", params=params, extra_timeout=wait)
        if response.status_code == 409 and _error_code(response) == "cursor_ahead":
            raise CursorAheadError(f"the server's feed is behind cursor {cursor}")
        _raise_for_status(response, "pull")
        return response.content


# ---------------------------------------------------------------- HTTP
class _Http:
    """httpx with the device's credentials, retries, backoff and jitter.

    Implements the `SyncHttp` protocol the blob transfer functions use.
    """

    def __init__(
        self,
        base_url: str,
        replica: Replica,
        retry: RetryPolicy,
        *,
        transport: httpx.BaseTransport | None = None,
        authenticated: bool = True,
    ) -> None:
        self._replica = replica
        self._retry = retry
        self._authenticated = authenticated
        self._base_url = base_url
        self._http = httpx.Client(
            base_url=base_url,
            timeout=httpx.Timeout(retry.timeout_seconds, connect=min(10.0, retry.timeout_seconds)),
            transport=transport,
            headers={"user-agent": "coherency-edge-sdk"},
        )
        self._access_token: str | None = None
        self._access_expires = 0.0
        self._rng = random.Random()
        self._lock = threading.Lock()
        self.requests = 0
        self.retries = 0

    def close(self) -> None:
        self._http.close()

    def serves(self, base_url: str, retry: RetryPolicy) -> bool:
        """True if this connection is for `base_url` with the same retry policy."""
        return self._base_url == base_url and self._retry == retry

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        stream: bool = False,
        extra_timeout: float = 0.0,
        bearer: bool | None = None,
        attempts: int | None = None,
    ) -> httpx.Response:
        """Send a request, retrying what is worth retrying; returns the final response.

        4xx answers other than 401/408/425/429 come back to the caller as they are.
        With `stream`, the body is left unread (close the response when done).
        `bearer=False` sends no access token (the token routes themselves);
        `attempts` overrides the policy's number of tries.

        Raises:
            ServerUnreachableError: Every attempt failed to connect or got a 5xx.
            DeviceRevokedError: The server revoked this device.
        """
        authenticated = self._authenticated if bearer is None else bearer
        tries = self._retry.attempts if attempts is None else attempts
        last_problem = ""
        refreshed = False
        attempt = 0
        while True:
            retry_after = 0.0
            send_headers = dict(headers or {})
            if authenticated:
                send_headers["authorization"] = f"Bearer {self._token()}"
            timeout: httpx.Timeout | Any = httpx.USE_CLIENT_DEFAULT
            if extra_timeout:
                timeout = httpx.Timeout(self._retry.timeout_seconds + extra_timeout, connect=10.0)
            request = self._http.build_request(
                method,
                path,
                json=json,
                content=content,
                headers=send_headers,
                params=params,
                timeout=timeout,
            )
            self.requests += 1
            try:
                response = self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                last_problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code == 401 and authenticated and not refreshed:
                    if stream:
                        response.close()
                    refreshed = True
                    self._access_token = None  # refresh (or log in) and try once more
                    continue
                if response.status_code == 403 and _error_code(response) == "device_revoked":
                    raise DeviceRevokedError("the server has revoked this device")
                if response.status_code not in _RETRYABLE_STATUS:
                    return response
                last_problem = f"HTTP {response.status_code}: {_error_text(response)}"
                retry_after = _retry_after(response)
                if stream:
                    response.close()
            if attempt + 1 >= tries:
                raise ServerUnreachableError(
                    f"{method} {path} failed {attempt + 1} times; last: {last_problem}"
                )
            delay = self._retry.delay(attempt, self._rng)
            if retry_after:
                delay = max(delay, min(retry_after, self._retry.cap_seconds))
            attempt += 1
            self.retries += 1
            log.info("retrying %s %s in %.2fs (%s)", method, path, delay, last_problem)
            time.sleep(delay)

    # ------------------------------------------------------------ credentials
    def _token(self) -> str:
        with self._lock:
            if self._access_token is None or time.time() > self._access_expires:
                self._access_token, self._access_expires = self._new_access_token()
            return self._access_token

    def _new_access_token(self) -> tuple[str, float]:
        refresh = self._replica.refresh_token
        if refresh:
            # One attempt only: resending a refresh token whose answer was lost would be
            # reuse, which revokes the family. On any failure the device key logs in.
            try:
                response = self._post_auth(
                    "/v1/auth/refresh", {"refresh_token": refresh}, attempts=1
                )
            except ServerUnreachableError as exc:
                log.info("refresh failed (%s); logging in with the device key", exc)
            else:
                if response.status_code == 200:
                    return self._keep(response.json())
                if response.status_code == 403 and _error_code(response) == "device_revoked":
                    raise DeviceRevokedError("the server has revoked this device")
                # Unknown, expired, revoked or reused: a new family from the device key.
                log.info(
                    "refresh refused (%s); logging in with the device key", _error_text(response)
                )
        return self._device_login()

    def _device_login(self) -> tuple[str, float]:
        """Log in with a signed assertion of the device key, a fresh one per attempt
        (a nonce is single-use, so a resent assertion would be refused as a replay)."""
        identity = self._replica.identity
        attempt = 0
        while True:
            issued_at = int(time.time())
            nonce = secrets.token_hex(16)
            signature = identity.sign(device_login_message(identity.device_id, issued_at, nonce))
            body = {
                "device_id": identity.device_id,
                "issued_at": issued_at,
                "nonce": nonce,
                "signature": base64.b64encode(signature).decode(),
            }
            try:
                response = self._post_auth("/v1/auth/device", body, attempts=1)
            except ServerUnreachableError as exc:
                if attempt + 1 >= self._retry.attempts:
                    raise ServerUnreachableError(
                        f"device login failed {attempt + 1} times; last: {exc}"
                    ) from None
                self.retries += 1
                time.sleep(self._retry.delay(attempt, self._rng))
                attempt += 1
                continue
            if response.status_code == 200:
                return self._keep(response.json())
            if response.status_code == 403 and _error_code(response) == "device_revoked":
                raise DeviceRevokedError("the server has revoked this device")
            raise AuthenticationError(f"the server refused the device: {_error_text(response)}")

    def _post_auth(self, path: str, body: dict[str, Any], *, attempts: int) -> httpx.Response:
        return self.request("POST", path, json=body, bearer=False, attempts=attempts)

    def _keep(self, answer: Mapping[str, Any]) -> tuple[str, float]:
        # The new refresh token is stored before it is used: losing it would only mean
        # a device-key login next time.
        self._replica.keep_refresh_token(str(answer["refresh_token"]))
        expires = datetime.fromisoformat(answer["access_token_expires_at"]).timestamp()
        return str(answer["access_token"]), expires - _REFRESH_MARGIN_SECONDS


def _error_code(response: httpx.Response) -> str:
    with contextlib.suppress(ValueError, KeyError, TypeError, httpx.ResponseNotRead):
        return str(response.json()["error"]["code"])
    return ""


def _error_text(response: httpx.Response) -> str:
    with contextlib.suppress(ValueError, KeyError, TypeError, httpx.ResponseNotRead):
        error = response.json()["error"]
        return f"{error['message']} ({error['code']}, HTTP {response.status_code})"
    return f"HTTP {response.status_code}"


def _retry_after(response: httpx.Response) -> float:
    value = response.headers.get("retry-after", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return 0.0


def _raise_for_status(response: httpx.Response, what: str) -> None:
    if response.status_code >= 400:
        raise SyncError(f"the server refused the {what}: {_error_text(response)}")
