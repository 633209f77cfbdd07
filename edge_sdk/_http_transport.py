"""`HttpTransport`: the sync protocol over the central server's HTTP API (httpx).

    with HttpTransport(client.replica) as server:     # an enrolled replica
        sync_replica(client.replica, server)

One `httpx.Client` per transport, built from httpx's own extension points:

- `DeviceAuth` (an `httpx.Auth`) adds the device's bearer token, refreshes it before
  it expires or when refused, and logs in with the device key when it must;
- `RetryTransport` wraps the network transport and retries connection failures and
  408/425/429/5xx answers with backoff and full jitter (`RetryPolicy`);
- the routes: ``POST /v1/sync/push``, ``GET /v1/sync/pull`` (long poll with `wait`),
  the blob routes (`HttpBlobs`), and ``GET /v1/models/...`` (it is a `ModelSource`
  too: model updates use the same connection, token and retries).

A 403 ``device_revoked`` from any route is `DeviceRevokedError`. Enrolment
(`HttpTransport.enroll`) is one unauthenticated request carrying a proof signed by the
device key, signed anew (time and nonce) for each attempt.

`HttpTransport.for_edge_box` talks the same API to a clinic edge box, trusting only
the TLS certificate central pinned for it (`edge_sdk._http_pinning`).

A URL that cannot work (no scheme, another scheme, malformed, a ``.invalid`` host) is
`ServerAddressError` at once; a TLS certificate that does not verify is
`ServerCertificateError` at once; 4xx answers but 408/429 are not retried.

`HttpTransport.interrupt` (from any thread) abandons the requests in flight, a long
poll included, within moments: they raise `SyncCancelledError` (`edge_sdk._http_cancel`).

Plain ``http://`` is refused (`InsecureServerError`) unless the server is this machine
(loopback) or the app opts in with ``allow_insecure_http=True`` at enrolment (kept with
the enrolment) or when it builds the transport.

httpx is imported by the HTTP modules only: `import edge_sdk` works without the
`[server]` extra.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import ipaddress
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import httpx

from crdt import (
    SYNC_MEDIA_TYPE,
    AuditProofError,
    Checkpoint,
    Rejection,
    enrolment_message,
    is_sha256,
    schema_versions,
)
from edge_sdk._edge_boxes import EdgeBoxPin, pins_from_answer
from edge_sdk._errors import (
    AuditPushError,
    CursorAheadError,
    DeviceRevokedError,
    EnrolmentError,
    InsecureServerError,
    NotEnrolledError,
    PushTooLargeError,
    ServerAddressError,
    SyncError,
)
from edge_sdk._http_auth import DeviceAuth, post_signed
from edge_sdk._http_blobs import HttpBlobs
from edge_sdk._http_cancel import Interrupter
from edge_sdk._http_errors import error_code, error_text, raise_for_status
from edge_sdk._http_pinning import PinnedTransport, pinned_context
from edge_sdk._http_retry import NO_RETRY, STREAM, Counters, RetryTransport
from edge_sdk._model_sync import ModelOffer
from edge_sdk._replica import Replica
from edge_sdk._sync_types import Enrollment, RetryPolicy, server_peer_id
from edge_sdk._transport import (
    AuditReceipt,
    BlobDownload,
    ChainedEvent,
    PushAnswer,
    UploadState,
)

__all__ = ["HttpTransport", "check_server_url"]

_USER_AGENT = "coherency-edge-sdk"


def _checked_address(url: str) -> str:
    """The host of `url`, if the URL can work whatever the network does.

    Raises:
        ServerAddressError: It cannot.
    """
    if "://" not in url:
        raise ServerAddressError(
            f"the server URL {url!r} has no scheme: write https://{url.lstrip('/')} "
            "(or http:// to this machine)"
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (it checks the port)
        parsed = httpx.URL(url)
    except (ValueError, httpx.InvalidURL) as exc:
        raise ServerAddressError(f"the server URL {url!r} is malformed: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ServerAddressError(
            f"the server URL must be https:// (or http:// to this machine), not "
            f"{parts.scheme}:// ({url!r})"
        )
    host = parts.hostname or ""
    if not host or not parsed.host:
        raise ServerAddressError(f"the server URL {url!r} names no host")
    if parts.username is not None or parts.password is not None:
        raise ServerAddressError(
            f"the server URL {url!r} carries a user name or password: the device "
            "authenticates with its own key"
        )
    if host == "invalid" or host.endswith(".invalid"):  # RFC 6761: never resolves
        raise ServerAddressError(f"{host} never resolves (RFC 6761): check the server URL")
    return host


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_server_url(server_url: str, *, allow_insecure_http: bool = False) -> str:
    """`server_url` without its trailing slash, if it can work and credentials may be
    sent to it: ``https://``, or ``http://`` to this machine, or any ``http://`` when
    the app opts in with `allow_insecure_http`.

    Raises:
        ServerAddressError: Not a usable http(s) URL: no scheme, another scheme,
            malformed, or a host that never resolves (``.invalid``).
        InsecureServerError: Plain http to another host without the opt-in.
    """
    url = server_url.strip().rstrip("/")
    host = _checked_address(url)
    if urlsplit(url).scheme == "https" or allow_insecure_http or _is_loopback(host):
        return url
    raise InsecureServerError(
        f"refusing plain http:// to {host}: the device's tokens, key proofs and records "
        "would cross the network unprotected, and the server key it pins would be "
        "whatever answered. Use https://, or opt in on a network you trust "
        "(allow_insecure_http=True; coherency device enroll --allow-insecure-http)"
    )


class HttpTransport:
    """The sync protocol (and model fetches) over a server's HTTP API, with the
    device's credentials.

    Args:
        replica: An enrolled replica: the server's URL and pinned key, the refresh
            token and the device key come from it.
        retry: How hard to try before giving up (`RetryPolicy()` by default).
        transport: The httpx transport under the retries (tests pass their own; the
            default is `httpx.HTTPTransport()`).
        allow_insecure_http: Talk plain ``http://`` to a host other than this machine
            even though the enrolment did not opt in.

    Raises:
        NotEnrolledError: The replica was never enrolled.
        ServerAddressError: The enrolled server's URL cannot work.
        InsecureServerError: The enrolled server is plain http to another host and
            neither the enrolment nor `allow_insecure_http` opts in.
    """

    def __init__(
        self,
        replica: Replica,
        *,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        allow_insecure_http: bool = False,
    ) -> None:
        enrollment = replica.enrollment
        if enrollment is None:
            raise NotEnrolledError("this store is not enrolled with a server: run device enroll")
        url = check_server_url(
            enrollment.server_url,
            allow_insecure_http=allow_insecure_http or enrollment.insecure_http,
        )
        # What the server holds is tracked like any peer, under its pinned key.
        self._setup(
            replica,
            url,
            peer_id=server_peer_id(enrollment),
            retry=retry,
            transport=transport,
            edge_box=None,
        )

    def _setup(
        self,
        replica: Replica,
        server_url: str,
        *,
        peer_id: str,
        retry: RetryPolicy | None,
        transport: httpx.BaseTransport | None,
        edge_box: EdgeBoxPin | None,
    ) -> None:
        self._replica = replica
        self.server_url = server_url
        """The server (or edge box) this transport talks to."""
        self.retry = retry or RetryPolicy()
        """The retry policy of every request."""
        self.edge_box = edge_box
        """The pinned edge box this transport talks to, or None for the central server."""
        self._peer_id = peer_id
        self._counters = Counters()
        self._interrupter = Interrupter()
        auth = DeviceAuth(
            replica,
            post=self._post_once,
            retry=self.retry,
            counters=self._counters,
            sleep=self._interrupter.sleep,
            login_only=edge_box is not None,
        )
        if edge_box is not None:
            transport = PinnedTransport(edge_box, transport)
        self._client = _client(
            self.server_url, self.retry, transport, self._counters, auth, self._interrupter
        )
        self._blobs = HttpBlobs(self)

    @classmethod
    def for_edge_box(
        cls,
        replica: Replica,
        pin: EdgeBoxPin,
        url: str,
        *,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> HttpTransport:
        """A transport to a clinic edge box, trusting only the certificate central
        pinned for it.

        The TLS context trusts exactly `pin`'s certificate (no host name check: the
        address comes from mDNS; TLS 1.2 or later), so a box presenting any other
        certificate fails the handshake before a request is sent. The device logs in
        at the box with its key (``POST /v1/auth/device``) and never sends or replaces
        the refresh token it holds from central. Its peer id is ``edge:<box_id>``: what
        the box holds, and the cursor in its feed, are tracked apart from central's.
        Its `directory` answers never change the replica's pins (a box cannot vouch
        for boxes).

        Args:
            replica: An enrolled replica (the device key signs the login).
            pin: The box as central vouched for it (`Replica.edge_boxes`).
            url: ``https://address:port`` (from `DiscoveredBox.urls`).
            retry: How hard to try before giving up.
            transport: The httpx transport under the pinning (tests; it must do the
                pinned TLS itself).

        Raises:
            NotEnrolledError: The replica was never enrolled.
            InsecureServerError: `url` is not ``https://``.
            UntrustedEdgeBoxError: The pinned certificate does not match its
                fingerprint; later, from any request, the box's certificate is not
                the pinned one (never retried).
        """
        if replica.enrollment is None:
            raise NotEnrolledError("this store is not enrolled with a server: run device enroll")
        checked = url.strip().rstrip("/")
        _checked_address(checked)
        parts = urlsplit(checked)
        if parts.scheme != "https" or not parts.hostname:
            raise InsecureServerError(
                f"an edge box is reached over https:// only (its pinned certificate is "
                f"the whole point), not {checked!r}"
            )
        context = pinned_context(pin)  # checks the pin whatever the transport
        if transport is None:
            transport = httpx.HTTPTransport(verify=context)
        box = cls.__new__(cls)
        box._setup(
            replica,
            checked,
            peer_id=f"edge:{pin.box_id}",
            retry=retry,
            transport=transport,
            edge_box=pin,
        )
        return box

    # ---------------------------------------------------------------- lifecycle
    def close(self) -> None:
        """Close the connections."""
        self._client.close()

    def __enter__(self) -> HttpTransport:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def interrupt(self) -> None:
        """Abandon the requests in flight (from any thread): each, a long poll
        included, raises `SyncCancelledError` within moments, and so does every request
        started before `resume`. Nothing is lost (see `SyncCancelledError`)."""
        self._interrupter.interrupt()

    def resume(self) -> None:
        """Let requests through again after `interrupt`."""
        self._interrupter.resume()

    @property
    def description(self) -> str:
        """What this transport talks to, for people: the server's URL, or the edge box
        and its URL."""
        if self.edge_box is not None:
            return f"edge box {self.edge_box.name or self.edge_box.box_id} at {self.server_url}"
        return self.server_url

    def serves(self, server_url: str, retry: RetryPolicy) -> bool:
        """True if this transport talks to `server_url` with the `retry` policy."""
        return self.server_url == server_url and self.retry == retry

    # ---------------------------------------------------------------- SyncTransport
    @property
    def peer_id(self) -> str:
        """``server:`` and the start of the server's pinned key (``edge:<box_id>`` for
        an edge box)."""
        return self._peer_id

    @property
    def requests(self) -> int:
        """Requests sent so far (every attempt, token requests included)."""
        return self._counters.requests

    @property
    def retries(self) -> int:
        """Attempts repeated so far after a failure."""
        return self._counters.retries

    def push(self, message: bytes) -> PushAnswer:
        """``POST /v1/sync/push``: the server's answer per document."""
        response = self.request(
            "POST", "/v1/sync/push", content=message, headers={"content-type": SYNC_MEDIA_TYPE}
        )
        if response.status_code == 413:
            raise PushTooLargeError(f"the server refused the push: {error_text(response)}")
        raise_for_status(response, "push")
        answer = response.json()
        return PushAnswer(
            accepted=[str(doc_id) for doc_id in answer["accepted"]],
            unchanged=[str(doc_id) for doc_id in answer["unchanged"]],
            rejected=[Rejection(r["doc_id"], r["reason"]) for r in answer["rejected"]],
        )

    def push_audit(
        self, events: Sequence[ChainedEvent], *, device_id: str | None = None
    ) -> AuditReceipt:
        """``POST /v1/audit/device-events``: append to the server's copy of the chain.

        `device_id`: the device whose chain this is, when an edge box relays it (the
        caller's own by default).

        Raises:
            AuditPushError: The server refused the chain (409: where it breaks), or
                sent an unusable receipt.
        """
        body: dict[str, Any] = {
            "events": [
                {
                    "seq": event.seq,
                    "canonical": base64.b64encode(event.canonical).decode(),
                    "hash": event.hash.hex(),
                }
                for event in events
            ]
        }
        if device_id is not None:
            body["device_id"] = device_id
        response = self.request("POST", "/v1/audit/device-events", json=body)
        if response.status_code == 202:  # an edge box holds it until central acknowledges
            raise AuditPushError(
                "the edge box holds the audit chain; the central server has not "
                "acknowledged it yet (it will be relayed)"
            )
        if response.status_code == 409:
            details: Any = {}
            with contextlib.suppress(ValueError):
                details = response.json()
            raise AuditPushError(
                f"the server refused the audit chain: {error_text(response)}",
                seq=_optional_int(details.get("seq")),
                server_seq=_optional_int(details.get("server_seq")),
            )
        if response.status_code >= 400:  # e.g. a server from before device audit logs
            raise AuditPushError(f"the server refused the audit push: {error_text(response)}")
        try:
            answer: Any = response.json()
            return AuditReceipt(
                head_seq=int(answer["head_seq"]),
                head_hash=bytes.fromhex(answer["head_hash"]),
                checkpoint=Checkpoint.from_json(answer["checkpoint"]),
                leaf_index=int(answer["leaf_index"]),
                leaf=base64.b64decode(answer["leaf"], validate=True),
                inclusion=[bytes.fromhex(p) for p in answer["inclusion"]],
                public_key=bytes.fromhex(answer["public_key"]),
            )
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error, AuditProofError):
            raise AuditPushError("the server sent an unusable audit receipt") from None

    def directory(self) -> dict[str, bytes]:
        """``GET /v1/sync/directory``: the clinic's enrolled devices and their keys.

        From the central server, the clinic's edge boxes it lists (``edge_boxes``)
        replace the replica's pins (`Replica.set_edge_boxes`); an answer without the
        field (an older server) leaves them. From an edge box they are ignored.
        """
        response = self.request("GET", "/v1/sync/directory")
        raise_for_status(response, "directory request")
        try:
            answer = response.json()
            devices = {
                str(entry["device_id"]): base64.b64decode(entry["public_key"], validate=True)
                for entry in answer["devices"]
            }
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise SyncError("the server sent an unusable device directory") from None
        if self.edge_box is None:
            _keep_edge_boxes(self._replica, answer)
        return devices

    record_hints = True
    """A pull may ask for `crdt.RecordHint` entries (``pull(records=True)``): a server
    sends them; an edge box ignores the ask and sends documents alone."""

    def pull(self, *, cursor: int, limit: int, wait: float, records: bool = False) -> bytes:
        """``GET /v1/sync/pull``: one page of the clinic's change feed after `cursor`
        (with `records`, each document that has a projection followed by its hint)."""
        params: dict[str, Any] = {"cursor": cursor, "limit": limit}
        if wait > 0:
            params["wait"] = wait
        if records:
            params["records"] = "true"
            params["schemas"] = schema_versions()  # hints only if read alike
        response = self.request("GET", "/v1/sync/pull", params=params, wait=wait)
        if response.status_code == 409 and error_code(response) == "cursor_ahead":
            raise CursorAheadError(f"the server's feed is behind cursor {cursor}")
        raise_for_status(response, "pull")
        return response.content

    def declare_upload(self, *, sha256: str, size: int) -> UploadState:
        """``POST /v1/blobs/uploads``: start or resume an upload, or learn it is held."""
        return self._blobs.declare_upload(sha256=sha256, size=size)

    def send_chunk(self, *, upload_id: str, offset: int, data: bytes) -> UploadState | None:
        """``PATCH /v1/blobs/uploads/{id}``: the bytes at `offset`."""
        return self._blobs.send_chunk(upload_id=upload_id, offset=offset, data=data)

    def download(self, *, sha256: str, start: int) -> BlobDownload:
        """``GET /v1/blobs/{sha256}`` from byte `start` on."""
        return self._blobs.download(sha256=sha256, start=start)

    def missing_blobs(self) -> list[str]:
        """``GET /v1/blobs/missing``: the clinic's blobs the server's storage lost (none
        from an edge box, or a server without the route)."""
        return self._blobs.missing_blobs()

    # ---------------------------------------------------------------- ModelSource
    def current_model(self) -> ModelOffer | None:
        """``GET /v1/models/current``: the published model, or None when there is none.

        Raises:
            SyncError: The server refused the request or sent an unusable answer.
        """
        response = self.request("GET", "/v1/models/current")
        if response.status_code == 404 and error_code(response) == "no_model":
            return None
        raise_for_status(response, "model check")
        unusable = SyncError("the server sent an unusable answer about its current model")
        try:
            answer: Any = response.json()
            manifest = base64.b64decode(answer["manifest"], validate=True)
            signature = base64.b64decode(answer["signature"] or "", validate=True)
            sha256, size = answer["sha256"], answer["size"]
            artifact_key = _optional_base64(answer.get("artifact_public_key"))
            endorsement = _optional_base64(answer.get("artifact_key_signature"))
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
            raise unusable from None
        if not is_sha256(sha256) or not isinstance(size, int) or size < 1:
            raise unusable
        return ModelOffer(
            manifest=manifest,
            signature=signature or None,
            sha256=sha256,
            size=size,
            artifact_key=artifact_key,
            artifact_key_signature=endorsement,
        )

    def download_model(self, sha256: str) -> bytes:
        """``GET /v1/models/{sha256}``: the model file, read whole (models are a few MB;
        the server caps them at 20 MB), so a cut answer is retried like any other.

        Raises:
            SyncError: The server refused the request.
        """
        response = self.request("GET", f"/v1/models/{sha256}")
        raise_for_status(response, "model download")
        return response.content

    # ---------------------------------------------------------------- requests
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
        wait: float = 0.0,
    ) -> httpx.Response:
        """Send one request to the server with the device's token, retried as the
        policy says; any answer but a revoked device's comes back as it is.

        With `stream`, the body is left unread (close the response when done); `wait`
        extends the timeout for a long poll.

        Raises:
            DeviceRevokedError: The server revoked this device.
            ServerUnreachableError: The server did not answer within the retry budget.
        """
        timeout: httpx.Timeout | Any = httpx.USE_CLIENT_DEFAULT
        if wait:
            timeout = httpx.Timeout(self.retry.timeout_seconds + wait, connect=10.0)
        request = self._client.build_request(
            method,
            path,
            json=json,
            content=content,
            headers=headers,
            params=params,
            timeout=timeout,
            extensions={STREAM: True} if stream else None,
        )
        response = self._client.send(request, stream=stream)
        if response.status_code == 403:
            response.read()
            if error_code(response) == "device_revoked":
                response.close()
                raise DeviceRevokedError("the server has revoked this device")
        return response

    def _post_once(self, path: str, body: Mapping[str, Any]) -> httpx.Response:
        """POST without the bearer token, never retried (the token routes)."""
        request = self._client.build_request("POST", path, json=body, extensions={NO_RETRY: True})
        return self._client.send(request, auth=None)

    # ---------------------------------------------------------------- enrolment
    @classmethod
    def enroll(
        cls,
        replica: Replica,
        server_url: str,
        token: str,
        *,
        name: str = "",
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        allow_insecure_http: bool = False,
        tls_certificate: str | None = None,
    ) -> Enrollment:
        """Enrol the replica's device with a server, using a one-time token from staff.

        The device proves it holds its Ed25519 key, signing the token, its id, the time
        and a new nonce (`crdt.enrolment_message`); the server binds that key to the
        device and its clinic, and answers its token and artifact keys, which the
        replica pins. A replica that already holds records must belong to the token's
        clinic; an empty one takes the token's clinic. An attempt whose answer is lost
        is repeated with a fresh proof: the server then revokes the sessions it had
        granted and answers again.

        Args:
            replica: The device's replica.
            server_url: ``https://...`` (or ``http://`` to this machine).
            token: The one-time enrolment token.
            name: A label for the clinic's admins.
            retry: How hard to try before giving up.
            transport: The httpx transport under the retries (tests).
            allow_insecure_http: Allow plain ``http://`` to another host (remembered
                with the enrolment): only on a network you trust.
            tls_certificate: An edge box's self-signed certificate (PEM), registered
                with an edge enrolment token so the server can tell the clinic's
                devices its fingerprint.

        Raises:
            ServerAddressError: `server_url` cannot work (no scheme, another scheme,
                malformed, a ``.invalid`` host).
            InsecureServerError: Plain http to another host without the opt-in.
            EnrolmentError: The server refused the token or the clinic does not match.
            ServerUnreachableError: The server did not answer within the retry budget.
        """
        url = check_server_url(server_url, allow_insecure_http=allow_insecure_http)
        identity = replica.identity
        expected = replica.clinic_id if replica.store.has_documents() else None

        def signed(issued_at: int, nonce: str) -> Mapping[str, Any]:
            message = enrolment_message(token, identity.device_id, issued_at, nonce)
            return {
                "token": token,
                "device_id": identity.device_id,
                "public_key": base64.b64encode(identity.public_key).decode(),
                "issued_at": issued_at,
                "nonce": nonce,
                "signature": base64.b64encode(identity.sign(message)).decode(),
                "name": name,
                "expected_clinic_id": expected,
                **({"tls_certificate": tls_certificate} if tls_certificate else {}),
            }

        policy = retry or RetryPolicy()
        counters = Counters()
        with _client(url, policy, transport, counters, None) as http:

            def post(path: str, body: Mapping[str, Any]) -> httpx.Response:
                request = http.build_request("POST", path, json=body, extensions={NO_RETRY: True})
                return http.send(request)

            response = post_signed(
                post,
                "/v1/devices/enroll",
                signed,
                retry=policy,
                counters=counters,
                what="enrolment",
            )
        if response.status_code >= 400:
            raise EnrolmentError(f"the server refused the enrolment: {error_text(response)}")
        answer = response.json()
        enrollment = Enrollment(
            server_url=url,
            device_id=str(answer["device_id"]),
            clinic_id=str(answer["clinic_id"]),
            organisation_id=str(answer["organisation_id"]),
            server_public_key=base64.b64decode(answer["server_public_key"]),
            # None from a server older than artifact keys: its token key signs models.
            artifact_public_key=_optional_base64(answer.get("artifact_public_key")),
            insecure_http=allow_insecure_http,
        )
        replica.enrol(enrollment, refresh_token=str(answer["refresh_token"]))
        _keep_edge_boxes(replica, answer)
        return enrollment


def _keep_edge_boxes(replica: Replica, answer: Any) -> None:
    """Keep the edge boxes a central server's answer lists (if it lists any field)."""
    if isinstance(answer, dict) and answer.get("edge_boxes") is not None:
        replica.set_edge_boxes(pins_from_answer(answer["edge_boxes"]))


def _optional_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _optional_base64(value: Any) -> bytes | None:
    """The bytes of a base64 field, None when it is absent.

    Raises:
        binascii.Error, TypeError: Not base64.
    """
    return None if value is None else base64.b64decode(value, validate=True)


def _client(
    base_url: str,
    retry: RetryPolicy,
    transport: httpx.BaseTransport | None,
    counters: Counters,
    auth: httpx.Auth | None,
    interrupter: Interrupter | None = None,
) -> httpx.Client:
    return httpx.Client(
        base_url=base_url,
        auth=auth,
        timeout=httpx.Timeout(retry.timeout_seconds, connect=min(10.0, retry.timeout_seconds)),
        transport=RetryTransport(
            transport or httpx.HTTPTransport(), retry, counters=counters, interrupter=interrupter
        ),
        headers={"user-agent": _USER_AGENT},
    )
