"""Witnessing the server's audit log: do the checkpoints held here still agree with it?

A device or a staff tool keeps checkpoints the server signed (`crdt.Checkpoint`). The
server may later rewrite or truncate its log, and sign checkpoints of the new one; it
cannot make the new log extend a checkpoint of the old one. `witness_server_log` asks
the server (an `AuditLogSource`) for its newest checkpoint and, for each held one, the
RFC 9162 proof that the newer tree extends it, and checks signatures (with the key
pinned here) and proofs with `crdt.verify_consistency`.

`HttpAuditLogSource` reads ``GET /v1/audit/checkpoint`` and
``GET /v1/audit/proofs/consistency`` with a bearer token or a device's credentials
(it needs the ``[server]`` extra, httpx, imported when one is made).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from crdt import AuditProofError, Checkpoint, verify_consistency
from edge_sdk._errors import ServerUnreachableError, SyncError
from edge_sdk._http_errors import error_text
from edge_sdk._replica import Replica, ReplicaHolder, replica_of

__all__ = [
    "AuditLogSource",
    "HttpAuditLogSource",
    "WitnessProblem",
    "WitnessReport",
    "kept_checkpoints",
    "witness_server_log",
]


def kept_checkpoints(holder: Replica | ReplicaHolder) -> list[Checkpoint]:
    """The checkpoints of the server's log a device kept from its audit pushes, oldest
    first (those that do not even parse are left out: `verify_audit` reports them)."""
    rows = (
        replica_of(holder)
        .store.execute("SELECT checkpoint FROM audit_checkpoints ORDER BY id")
        .fetchall()
    )
    kept: list[Checkpoint] = []
    for (text,) in rows:
        try:
            kept.append(Checkpoint.from_json(json.loads(text)))
        except (AuditProofError, ValueError, TypeError):
            continue
    return kept


class AuditLogSource(Protocol):
    """Where a witness reads the server's log: its newest checkpoint and proofs."""

    def checkpoint(self) -> Checkpoint:
        """The server's newest signed checkpoint."""
        ...

    def consistency(self, first: int, second: int) -> list[bytes]:
        """The proof that the server's tree of `second` events extends its tree of
        `first`.

        Raises:
            AuditProofError: The server could not give one (its log is damaged, or
                shorter than `second`).
        """
        ...


@dataclass(frozen=True, slots=True)
class WitnessProblem:
    """One held checkpoint the server's log does not agree with.

    Attributes:
        kind: ``checkpoint`` (a signature that fails, another log's checkpoint),
            ``truncated`` (the log is now shorter than a held checkpoint) or
            ``rewritten`` (the log does not extend a held checkpoint).
        where: Which checkpoint.
        message: What is wrong, for a person.
    """

    kind: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass(slots=True)
class WitnessReport:
    """What `witness_server_log` found: the server's newest checkpoint, how many held
    checkpoints were checked, and every problem (none: the log extends them all)."""

    current: Checkpoint | None = None
    held: int = 0
    problems: list[WitnessProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing is wrong."""
        return not self.problems

    def add(self, kind: str, where: str, message: str) -> None:
        """Note one problem."""
        self.problems.append(WitnessProblem(kind, where, message))


def _label(n: int, checkpoint: Checkpoint) -> str:
    return (
        f"held checkpoint {n} ({checkpoint.size} events, signed {checkpoint.at:%Y-%m-%d %H:%M:%S}Z)"
    )


def witness_server_log(
    source: AuditLogSource, *, held: Iterable[Checkpoint], public_key: bytes
) -> WitnessReport:
    """Check that the server's log (as `source` gives it) extends every checkpoint in
    `held`, all signed by `public_key` (the server's artifact key, pinned here).

    Raises:
        SyncError: The server could not be asked (its own checkpoint is checked and
            reported, not raised).
    """
    report = WitnessReport()
    current = source.checkpoint()
    report.current = current
    try:
        current.verify(public_key)
    except AuditProofError as exc:
        report.add("checkpoint", "the server's checkpoint", str(exc))
        return report
    for n, checkpoint in enumerate(held, start=1):
        report.held += 1
        where = _label(n, checkpoint)
        try:
            checkpoint.verify(public_key)
        except AuditProofError as exc:
            report.add("checkpoint", where, str(exc))
            continue
        if checkpoint.origin != current.origin:
            report.add(
                "checkpoint",
                where,
                f"it is of the log {checkpoint.origin!r}, the server keeps {current.origin!r}",
            )
        elif checkpoint.size > current.size:
            report.add(
                "truncated",
                where,
                f"the server's log now has {current.size} events: the newest "
                f"{checkpoint.size - current.size} were deleted",
            )
        else:
            _check_extends(report, source, where, checkpoint, current)
    return report


def _check_extends(
    report: WitnessReport,
    source: AuditLogSource,
    where: str,
    held: Checkpoint,
    current: Checkpoint,
) -> None:
    try:
        path = source.consistency(held.size, current.size) if 0 < held.size < current.size else []
        verify_consistency(
            first=held.size,
            second=current.size,
            first_root=held.root,
            second_root=current.root,
            path=path,
        )
    except AuditProofError as exc:
        report.add(
            "rewritten",
            where,
            f"the server's log of {current.size} events does not extend it: {exc}",
        )


class HttpAuditLogSource:
    """The server's audit routes over HTTP.

    Args:
        server_url: The server (``https://``; plain ``http://`` only to this machine
            unless `allow_insecure_http`).
        token: A bearer access token (a staff member's, or a device's).
        allow_insecure_http: Talk plain ``http://`` to another host.
        request: Send requests through this instead (a device's
            `HttpTransport.request`, with its credentials); `server_url` and `token`
            are then not used.

    Raises:
        InsecureServerError: Plain ``http://`` to another host without opting in.
    """

    def __init__(
        self,
        server_url: str | None = None,
        *,
        token: str | None = None,
        allow_insecure_http: bool = False,
        request: Callable[..., Any] | None = None,
    ) -> None:
        self._client: Any = None
        if request is not None:
            self._request = request
            return
        if server_url is None:
            raise ValueError("give the server's URL (or a request function)")
        import httpx

        from edge_sdk._http_transport import check_server_url

        url = check_server_url(server_url, allow_insecure_http=allow_insecure_http)
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.Client(base_url=url, headers=headers, timeout=30.0)

        def send(method: str, path: str, *, params: Mapping[str, Any] | None = None) -> Any:
            try:
                return self._client.request(method, path, params=params)
            except httpx.HTTPError as exc:
                raise ServerUnreachableError(f"the server did not answer: {exc}") from exc

        self._request = send

    def close(self) -> None:
        """Close the connections (if this source opened any)."""
        if self._client is not None:
            self._client.close()

    def __enter__(self) -> HttpAuditLogSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def checkpoint(self) -> Checkpoint:
        """``GET /v1/audit/checkpoint``.

        Raises:
            SyncError: The server refused, or sent something that is not a checkpoint.
        """
        response = self._request("GET", "/v1/audit/checkpoint")
        if response.status_code >= 400:
            raise SyncError(f"the server refused its checkpoint: {error_text(response)}")
        try:
            return Checkpoint.from_json(response.json())
        except (AuditProofError, ValueError) as exc:
            raise SyncError(f"the server sent an unusable checkpoint: {exc}") from None

    def consistency(self, first: int, second: int) -> list[bytes]:
        """``GET /v1/audit/proofs/consistency``.

        Raises:
            AuditProofError: The server could not prove it (its log is damaged) or
                sent something that is not a proof.
            SyncError: The server refused for another reason (authentication, ...).
        """
        response = self._request(
            "GET", "/v1/audit/proofs/consistency", params={"first": first, "second": second}
        )
        if response.status_code in (409, 422):
            raise AuditProofError(f"the server gave no proof: {error_text(response)}")
        if response.status_code >= 400:
            raise SyncError(f"the server refused a consistency proof: {error_text(response)}")
        try:
            return [bytes.fromhex(p) for p in _path_of(response.json())]
        except (ValueError, TypeError) as exc:
            raise AuditProofError(f"the server sent an unusable proof: {exc}") from None


def _path_of(answer: Any) -> Sequence[str]:
    path = answer["path"] if isinstance(answer, dict) else None
    if not isinstance(path, list) or not all(isinstance(p, str) for p in path):
        raise ValueError("no path")
    return path
