"""Verifying the server's audit log from its database: `verify_log`.

One pass over the events in leaf order recomputes every leaf from its columns and the
tree as it grows; it checks:

- the leaves run 0, 1, 2, ... with none missing (a deleted event) and each event's
  columns still hash to its leaf (an edited event; an event moved to another place,
  since the leaf covers its index);
- every checkpoint the server kept, and every checkpoint a witness holds (a device, a
  staff tool: `witnesses`), is signed by the server's key and matches the tree the
  events rebuild at its size: a rewritten log does not, and a log shorter than a
  checkpoint lost its newest events (the attack a plain hash chain misses);
- each checkpoint extends the one before it (same tree, larger or equal);
- the head row agrees with the events (size and frontier);

It reads rows through SQLAlchemy Core in batches: a million events take seconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from crdt import GENESIS, AuditProofError, Checkpoint, MerkleFrontier, chain_hash, leaf_hash
from sync_server.audit.log import LEAF_COLUMNS, checkpoints, head, leaf_bytes_of
from sync_server.audit.tables import AuditEvent, DeviceAuditEvent

__all__ = ["AuditProblem", "AuditReport", "verify_log"]

_BATCH = 10_000


@dataclass(frozen=True, slots=True)
class AuditProblem:
    """One thing wrong with an audit log: what (`kind`), where, and a sentence."""

    kind: str  # edited, deleted, reordered, truncated, checkpoint, head, device-chain, ...
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass(slots=True)
class AuditReport:
    """What `verify_log` found: the log's size, the checkpoints checked, the problems."""

    events: int = 0
    checkpoints: int = 0
    witnesses: int = 0
    devices: int = 0
    problems: list[AuditProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing is wrong."""
        return not self.problems

    def add(self, kind: str, where: str, message: str) -> None:
        """Note one problem."""
        self.problems.append(AuditProblem(kind, where, message))


_DEVICE_HEAD = "device-audit-push"
_ACTION, _TARGET = (
    LEAF_COLUMNS.index(AuditEvent.action) + 1,
    LEAF_COLUMNS.index(AuditEvent.target) + 1,
)


def _leaves(
    session: Session, heads: dict[str, dict[int, bytes]]
) -> Iterator[tuple[int | None, bytes | None, bytes]]:
    """(seq, stored leaf hash, recomputed canonical bytes) in leaf order; the device
    heads the log recorded go to `heads` (device id -> {seq: hash})."""
    statement = select(AuditEvent.leaf_hash, *LEAF_COLUMNS).order_by(AuditEvent.seq)
    result = session.execute(statement.execution_options(yield_per=_BATCH))
    try:
        for row in result:
            seq = row[1]
            if seq is None:
                yield None, None, b""
                continue
            if row[_ACTION] == _DEVICE_HEAD:
                _note_head(heads, str(row[_TARGET] or ""))
            stored = row[0]
            yield int(seq), None if stored is None else bytes(stored), leaf_bytes_of(row[1:])
    finally:
        result.close()


def _note_head(heads: dict[str, dict[int, bytes]], target: str | None) -> None:
    device_id, _, rest = (target or "").partition(":")
    head_seq, _, head_hash = rest.partition(":")
    try:
        heads.setdefault(device_id, {})[int(head_seq)] = bytes.fromhex(head_hash)
    except ValueError:
        heads.setdefault(device_id, {})[-1] = b""  # unreadable: reported as a broken head


def verify_log(
    *,
    session: Session,
    public_key: bytes,
    witnesses: Iterable[Checkpoint] = (),
) -> AuditReport:
    """Check the server's audit log in `session`'s database against the checkpoints it
    kept and those `witnesses` hold, signed by `public_key` (the server's artifact key).

    Returns a report listing every problem found (an empty list: the log verifies).
    """
    report = AuditReport()
    kept = checkpoints(session=session)
    held = list(witnesses)
    report.checkpoints, report.witnesses = len(kept), len(held)
    by_size: dict[int, list[tuple[str, Checkpoint]]] = {}
    previous: Checkpoint | None = None
    for n, checkpoint in enumerate(kept):
        _signed(report, checkpoint, public_key, f"checkpoint {n + 1} of {len(kept)}")
        if previous is not None and checkpoint.size < previous.size:
            report.add(
                "checkpoint",
                f"checkpoint {n + 1} of {len(kept)}",
                f"covers {checkpoint.size} events, fewer than the {previous.size} of the "
                "checkpoint before it: it does not extend it",
            )
        previous = checkpoint
        by_size.setdefault(checkpoint.size, []).append(("kept checkpoint", checkpoint))
    for n, checkpoint in enumerate(held):
        _signed(report, checkpoint, public_key, f"witness checkpoint {n + 1}")
        by_size.setdefault(checkpoint.size, []).append(("witness checkpoint", checkpoint))

    frontier = MerkleFrontier()
    _match(report, frontier, by_size)
    unsealed = 0
    heads: dict[str, dict[int, bytes]] = {}
    for seq, stored, canonical in _leaves(session, heads):
        if seq is None:
            unsealed += 1
            continue
        if seq != frontier.size:
            if seq > frontier.size:
                missing = seq - frontier.size
                report.add(
                    "deleted",
                    f"event {frontier.size}",
                    f"{missing} event{'s' if missing > 1 else ''} missing before event {seq}",
                )
            # The tree cannot be rebuilt past a gap: later checkpoints go unchecked.
            report.events = seq + 1
            return _finish(report, session, frontier, unsealed, heads, complete=False)
        recomputed = leaf_hash(canonical)
        if stored != recomputed:
            report.add(
                "edited",
                f"event {seq}",
                "its contents no longer match its leaf hash (edited or moved)",
            )
        frontier.append(recomputed)
        _match(report, frontier, by_size)
    report.events = frontier.size
    _rest(report, session, frontier.size, by_size)
    return _finish(report, session, frontier, unsealed, heads, complete=True)


def _signed(report: AuditReport, checkpoint: Checkpoint, public_key: bytes, where: str) -> None:
    try:
        checkpoint.verify(public_key)
    except AuditProofError as exc:
        report.add("checkpoint", where, str(exc))


def _match(
    report: AuditReport,
    frontier: MerkleFrontier,
    by_size: dict[int, list[tuple[str, Checkpoint]]],
) -> None:
    """Compare the tree as rebuilt so far with the checkpoints of its size."""
    found = by_size.pop(frontier.size, None)
    if not found:
        return
    root = frontier.root()
    for label, checkpoint in found:
        if checkpoint.root != root:
            report.add(
                "rewritten",
                f"{label} of {checkpoint.size} events signed {checkpoint.at:%Y-%m-%d %H:%M:%S}Z",
                "the log's first events no longer hash to the root the server signed: "
                "an event before it was edited, removed or reordered",
            )


def _rest(
    report: AuditReport,
    session: Session,
    size: int,
    by_size: dict[int, list[tuple[str, Checkpoint]]],
) -> None:
    """Checkpoints larger than the log: its newest events were deleted."""
    for checkpoint_size in sorted(by_size):
        if checkpoint_size > size:
            for label, checkpoint in by_size[checkpoint_size]:
                report.add(
                    "truncated",
                    f"{label} of {checkpoint.size} events",
                    f"the log has {size} events: the newest {checkpoint.size - size} were deleted",
                )
    by_size.clear()


def _finish(
    report: AuditReport,
    session: Session,
    frontier: MerkleFrontier,
    unsealed: int,
    heads: dict[str, dict[int, bytes]],
    *,
    complete: bool,
) -> AuditReport:
    if unsealed:
        report.add(
            "unsealed",
            "audit_events",
            f"{unsealed} event{'s have' if unsealed > 1 else ' has'} no place in the log",
        )
    if complete:
        try:
            stated = head(session=session)
        except Exception as exc:  # a damaged head row is a finding, not a crash
            report.add("head", "audit_log_head", str(getattr(exc, "message", exc)))
        else:
            if stated.size != frontier.size:
                report.add(
                    "truncated" if stated.size > frontier.size else "head",
                    "audit_log_head",
                    f"the head says {stated.size} events, the log holds {frontier.size}",
                )
            elif stated.hashes != frontier.hashes and not any(
                problem.kind == "edited" for problem in report.problems
            ):
                report.add(
                    "head", "audit_log_head", "the head's subtree roots do not match the events"
                )
    _device_chains(report, session, heads)
    return report


def _device_chains(
    report: AuditReport, session: Session, heads: dict[str, dict[int, bytes]]
) -> None:
    """Every device chain whole, and holding every head the log sealed for it."""
    rows = session.execute(
        select(DeviceAuditEvent.device_id, DeviceAuditEvent.seq, DeviceAuditEvent.canonical,
               DeviceAuditEvent.hash)
        .order_by(DeviceAuditEvent.device_id, DeviceAuditEvent.seq)
        .execution_options(yield_per=_BATCH)
    )  # fmt: skip
    seen: set[str] = set()
    try:
        for device_id, chain in groupby(rows, key=lambda row: str(row[0])):
            seen.add(device_id)
            _device_chain(report, device_id, chain, heads.get(device_id, {}))
    finally:
        rows.close()
    report.devices = len(seen | heads.keys())
    for device_id in sorted(heads.keys() - seen):
        newest = max(heads[device_id])
        report.add(
            "device-chain",
            f"device {device_id}",
            f"its audit chain is gone: the log sealed its head at event {newest}",
        )


def _device_chain(
    report: AuditReport,
    device_id: str,
    chain: Iterable[Sequence[Any]],
    sealed: dict[int, bytes],
) -> None:
    previous, expected = GENESIS, 1
    found: dict[int, bytes] = {}
    for _, seq, canonical, digest in chain:
        if seq != expected:
            report.add(
                "device-chain",
                f"device {device_id} event {expected}",
                "missing or out of place" + (f" (event {seq} is there)" if seq else ""),
            )
            return
        if chain_hash(previous, bytes(canonical)) != bytes(digest):
            report.add(
                "device-chain",
                f"device {device_id} event {seq}",
                "its contents no longer match its chained hash (edited)",
            )
            return
        previous = bytes(digest)
        if seq in sealed:
            found[seq] = previous
        expected += 1
    for head_seq, head_hash in sorted(sealed.items()):
        if head_seq not in found and head_seq >= expected:
            report.add(
                "device-chain",
                f"device {device_id} event {head_seq}",
                f"the chain ends at event {expected - 1}, but the log sealed its head at "
                f"event {head_seq}: its newest events were deleted",
            )
            return
        if found.get(head_seq) != head_hash:
            report.add(
                "device-chain",
                f"device {device_id} event {head_seq}",
                "the chain does not reach the head the log sealed (rewritten)",
            )
            return
