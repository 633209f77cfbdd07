"""`verify_audit`: what is wrong with a device's audit log, and where (see
`edge_sdk._audit`); given the server (an `AuditLogSource`), also whether the server's
log still extends every checkpoint the device kept (`witness_server_log`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field

from crdt import GENESIS, AuditProofError, Checkpoint, verify_chain
from edge_sdk._audit import CHECKPOINT_KEY_META, as_bytes, check_receipt
from edge_sdk._audit_witness import AuditLogSource, witness_server_log
from edge_sdk._errors import ServerUnreachableError, SyncError
from edge_sdk._replica import Replica, ReplicaHolder, replica_of
from edge_sdk._store import Store
from edge_sdk._transport import AuditReceipt

__all__ = ["AuditProblem", "AuditReport", "verify_audit"]


@dataclass(frozen=True, slots=True)
class AuditProblem:
    """One thing wrong with a device's audit log.

    Attributes:
        kind: ``altered`` (an event's bytes or hash), ``missing`` (a gap in the
            numbering), ``misplaced`` (an event under another event's number),
            ``truncated`` (events a kept checkpoint covers are gone or differ),
            ``checkpoint`` (a kept checkpoint's signature or proof fails),
            ``rollback`` (a kept checkpoint does not extend an earlier one); asked
            with a server: ``server-rewritten`` (the server's log does not extend a
            kept checkpoint, or it could not prove it does), ``server-truncated``
            (the log is now shorter than a kept checkpoint), ``server-checkpoint``
            (the server's checkpoint is not signed by the pinned key, or a kept one
            is of another log), ``server-refused`` (the server refused to give its
            checkpoint or a proof).
        seq: The event (or, for checkpoints, the acknowledged head: the kept
            checkpoint is the one received for it; 0 for the server's own checkpoint)
            it is about.
        message: What is wrong, for a person.
    """

    kind: str
    seq: int
    message: str


@dataclass(slots=True)
class AuditReport:
    """What `verify_audit` found.

    Attributes:
        events: Events in the chain.
        head_seq: The last event's seq (0: none).
        checkpoints: Checkpoints kept from the server.
        acknowledged: The highest seq a kept checkpoint covers (0: none).
        server: The server's current checkpoint the kept ones were checked against
            (None: no server was asked, or it gave none).
        problems: Everything wrong, in chain order (then the server's); empty when
            the log is intact.
    """

    events: int = 0
    head_seq: int = 0
    checkpoints: int = 0
    acknowledged: int = 0
    server: Checkpoint | None = None
    problems: list[AuditProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing is wrong."""
        return not self.problems


def verify_audit(
    holder: Replica | ReplicaHolder, *, server: AuditLogSource | None = None
) -> AuditReport:
    """Check a device's audit log: its hash chain, and the checkpoints it kept.

    Finds an edited event, a deleted one, events moved to other places, the newest
    events deleted (a kept checkpoint acknowledged a head the chain no longer has),
    and a kept checkpoint whose signature or inclusion proof fails or that does not
    extend an earlier one. It reads the store only; nothing is changed.

    With `server` (the enrolled server's log: ``HttpAuditLogSource(request=
    transport.request)`` over an `HttpTransport`, or `EdgeClient.verify_audit` with
    ``server=True``), the device also witnesses the server's log: the server's
    current checkpoint must be signed by the key pinned at enrolment, and for each
    kept checkpoint the server must give the RFC 9162 proof that its log extends it
    (`witness_server_log`). A server that rewrote or truncated its log cannot; each
    kept checkpoint it fails is a problem naming it.

    Raises:
        ServerUnreachableError: `server` did not answer (nothing was witnessed; a
            refusal is reported as a problem).
    """
    replica = replica_of(holder)
    report = AuditReport()
    hashes: dict[int, bytes] = {}
    report.problems += _check_chain(replica.store, report, hashes)
    report.problems += _check_checkpoints(replica, report, hashes)
    if server is not None:
        report.problems += _witness(replica, server, report)
    return report


def _witness(
    replica: Replica, server: AuditLogSource, report: AuditReport
) -> Iterator[AuditProblem]:
    rows = replica.store.execute(
        "SELECT peer, head_seq, checkpoint, public_key FROM audit_checkpoints ORDER BY id"
    ).fetchall()
    try:
        current = server.checkpoint()
    except ServerUnreachableError:
        raise  # no answer is no evidence either way
    except SyncError as exc:  # refused: 409 audit_log_damaged, ...
        yield AuditProblem("server-refused", 0, f"the server gave no checkpoint: {exc}")
        return
    report.server = current
    if not rows:
        return  # nothing kept: nothing to witness
    key = _pinned_key(replica, str(rows[0][0]), as_bytes(rows[0][3]))
    try:
        current.verify(key)
    except AuditProofError as exc:
        yield AuditProblem("server-checkpoint", 0, f"the server's checkpoint: {exc}")
        return
    source = _Answered(server, current)
    witnessed: set[tuple[int, bytes]] = set()
    for _peer, head_seq, text, _key in rows:
        try:
            checkpoint = Checkpoint.from_json(json.loads(text))
        except (AuditProofError, ValueError, TypeError):
            continue  # `_check_checkpoints` reported it
        if (checkpoint.size, checkpoint.root) in witnessed:
            continue
        witnessed.add((checkpoint.size, checkpoint.root))
        named = (
            f"the checkpoint kept for event {head_seq} ({checkpoint.size} events of the "
            "server's log)"
        )
        try:
            found = witness_server_log(source, held=[checkpoint], public_key=key).problems
        except ServerUnreachableError:
            raise
        except SyncError as exc:
            yield AuditProblem("server-refused", int(head_seq), f"{named}: {exc}")
            continue
        for problem in found:
            yield AuditProblem(
                "server-" + problem.kind, int(head_seq), f"{named}: {problem.message}"
            )


class _Answered:
    """`server` with its current checkpoint asked once for all the kept ones."""

    def __init__(self, server: AuditLogSource, current: Checkpoint) -> None:
        self._server = server
        self._current = current

    def checkpoint(self) -> Checkpoint:
        return self._current

    def consistency(self, first: int, second: int) -> list[bytes]:
        return self._server.consistency(first, second)


def _check_chain(
    store: Store, report: AuditReport, hashes: dict[int, bytes]
) -> Iterator[AuditProblem]:
    expected = 1
    previous: bytes | None = GENESIS
    rows = store.execute("SELECT seq, canonical, hash FROM audit_events ORDER BY seq")
    for row in rows.fetchall():
        seq, canonical, digest = int(row[0]), as_bytes(row[1]), as_bytes(row[2])
        report.events += 1
        report.head_seq = seq
        hashes[seq] = digest
        if seq != expected:
            yield AuditProblem(
                "missing", expected, f"audit events {expected} to {seq - 1} are missing"
            )
            previous = None  # the event before this one is gone: its link cannot be checked
        if _numbered(canonical) != seq:
            yield AuditProblem(
                "misplaced",
                seq,
                f"audit event {seq} holds the event numbered {_numbered(canonical)}",
            )
        elif previous is not None:
            try:
                verify_chain([(seq, canonical, digest)], start_seq=seq, previous=previous)
            except AuditProofError as exc:
                yield AuditProblem("altered", seq, str(exc))
        previous, expected = digest, seq + 1


def _numbered(canonical: bytes) -> int | None:
    try:
        fields = json.loads(canonical)
    except ValueError:
        return None
    seq = fields.get("seq") if isinstance(fields, dict) else None
    return seq if isinstance(seq, int) else None


def _check_checkpoints(
    replica: Replica, report: AuditReport, hashes: dict[int, bytes]
) -> Iterator[AuditProblem]:
    rows = replica.store.execute(
        "SELECT peer, head_seq, head_hash, checkpoint, leaf_index, leaf, inclusion, public_key"
        " FROM audit_checkpoints ORDER BY id"
    ).fetchall()
    earlier: dict[str, Checkpoint] = {}
    for peer, head_seq, head_hash, text, leaf_index, leaf, inclusion, key in rows:
        report.checkpoints += 1
        head_seq, head_hash = int(head_seq), as_bytes(head_hash)
        report.acknowledged = max(report.acknowledged, head_seq)
        try:
            checkpoint = Checkpoint.from_json(json.loads(text))
            receipt = AuditReceipt(
                head_seq=head_seq,
                head_hash=head_hash,
                checkpoint=checkpoint,
                leaf_index=int(leaf_index),
                leaf=as_bytes(leaf),
                inclusion=[bytes.fromhex(p) for p in json.loads(inclusion)],
                public_key=as_bytes(key),
            )
            check_receipt(
                receipt, _pinned_key(replica, str(peer), as_bytes(key)), replica.device_id
            )
        except (AuditProofError, ValueError) as exc:
            yield AuditProblem(
                "checkpoint", head_seq, f"the checkpoint kept for event {head_seq}: {exc}"
            )
            continue
        found = hashes.get(head_seq)
        if head_seq > report.head_seq:
            yield AuditProblem(
                "truncated",
                head_seq,
                f"the server acknowledged audit event {head_seq}, but the chain ends at "
                f"{report.head_seq}: the newest events were deleted",
            )
        elif found != head_hash:
            yield AuditProblem(
                "truncated",
                head_seq,
                f"audit event {head_seq} is not the one the server acknowledged "
                "(the chain was rewritten)",
            )
        before = earlier.get(checkpoint.origin)
        if before is not None and (
            checkpoint.size < before.size
            or (checkpoint.size == before.size and checkpoint.root != before.root)
        ):
            yield AuditProblem(
                "rollback",
                head_seq,
                f"the server's checkpoint of size {checkpoint.size} does not extend the "
                f"earlier one of size {before.size}",
            )
        earlier[checkpoint.origin] = checkpoint


def _pinned_key(replica: Replica, peer: str, kept: bytes) -> bytes:
    enrollment = replica.enrollment
    if enrollment is not None and enrollment.artifact_public_key is not None:
        return enrollment.artifact_public_key
    pinned = replica.store.get_meta(CHECKPOINT_KEY_META + peer)
    return bytes.fromhex(pinned) if pinned else kept
