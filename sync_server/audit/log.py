"""The server's audit log as a Merkle tree (RFC 9162): sealing, proofs, checkpoints.

Every event `record_event` adds is sealed when its transaction commits (`seal`, run
before every commit): the log's head row is locked by an UPDATE (so appenders queue
for the transaction's last moments only, never while a request does its work), each
event takes the next leaf index (`seq`, from 0) and its leaf hash, the hash of its
canonical bytes (`leaf_bytes`: every column but the row id, seq included, so moving an
event changes its hash), and the head's frontier advances. A transaction that rolls
back takes no leaf: the log has no gaps.

`issue_checkpoint` signs the log's current size and root with the server's artifact
key (devices pinned it at enrolment); `inclusion_path` and `consistency_path` build
RFC 9162 proofs from the subtree hashes `audit_nodes` keeps (perfect subtrees of 256
leaves and more) and at most a few hundred leaf hashes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, cast

from sqlalchemy import Connection, Table, event, insert, inspect, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from crdt import (
    Checkpoint,
    MerkleFrontier,
    canonical_json,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
)
from sync_server.audit.tables import AuditCheckpoint, AuditEvent, AuditLogHead, AuditNode
from sync_server.db import utcnow
from sync_server.errors import Conflict, NotFound, Unavailable, Unprocessable

__all__ = [
    "LEAF_COLUMNS",
    "NODE_LEVEL",
    "CheckpointSigner",
    "Sealed",
    "checkpoints",
    "consistency_path",
    "current_checkpoint",
    "head",
    "inclusion_path",
    "issue_checkpoint",
    "latest_checkpoint",
    "leaf_actor",
    "leaf_bytes",
    "leaf_bytes_of",
    "origin_of",
    "seal",
    "seal_connection",
    "track",
]

NODE_LEVEL = 8
"""Subtrees of ``2**NODE_LEVEL`` leaves and more are kept in `audit_nodes`."""

_PENDING = "coherency.audit.pending"
_HEAD = cast(Table, AuditLogHead.__table__)
_NODES = cast(Table, AuditNode.__table__)

LEAF_COLUMNS = (
    AuditEvent.seq,
    AuditEvent.at,
    AuditEvent.actor_kind,
    AuditEvent.actor_id,
    AuditEvent.role,
    AuditEvent.clinic_id,
    AuditEvent.action,
    AuditEvent.operation,
    AuditEvent.target,
    AuditEvent.outcome,
    AuditEvent.purpose,
    AuditEvent.patients,
    AuditEvent.address,
    AuditEvent.request_id,
)
"""The columns a leaf covers, in the order `leaf_bytes_of` takes them."""
_KEYS = (
    "seq",
    "at",
    "actor_kind",
    "actor_id",
    "role",
    "clinic_id",
    "kind",
    "operation",
    "target",
    "outcome",
    "purpose",
    "patients",
    "address",
    "request_id",
)


class CheckpointSigner(Protocol):
    """What signs checkpoints: the server's artifact key."""

    @property
    def public_key_bytes(self) -> bytes: ...

    def sign_checkpoint(self, message: bytes) -> bytes: ...


def leaf_bytes_of(values: Sequence[Any]) -> bytes:
    """The canonical bytes of an event from its `LEAF_COLUMNS` values, in order."""
    fields = dict(zip(_KEYS, values, strict=True))
    at: datetime = fields["at"]
    fields["at"] = at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    fields["v"] = 1
    return canonical_json(fields)


def _row_values(event: AuditEvent) -> list[Any]:
    return [getattr(event, column.key) for column in LEAF_COLUMNS]


def track(*, session: Session, event: AuditEvent) -> None:
    """Have `event` (just added to `session`) sealed when the transaction commits."""
    session.info.setdefault(_PENDING, []).append(event)


@dataclass(frozen=True, slots=True)
class Sealed:
    """What one `seal` appended to the log."""

    events: list[AuditEvent]  # in leaf order
    leaves: list[bytes]  # each event's canonical bytes (`leaf_bytes`), in the same order
    subtrees: dict[tuple[int, int], bytes]
    """The perfect subtrees the log held just before the last event was appended, by
    leaf range: with them, that event's inclusion proof needs no query."""


def seal(*, session: Session) -> Sealed:
    """Give the events added in this transaction (and still in it: one rolled back with
    a savepoint takes no place) their leaf index and hash, in the order they were
    recorded, and advance the log's head. Runs before every commit; a service that
    proves an event's inclusion before its transaction ends runs it first."""
    pending: list[AuditEvent] = session.info.pop(_PENDING, [])
    kept = [row for row in pending if row in session and row.seq is None]
    sealed = Sealed([], [], {})
    if not kept:
        return sealed
    # Everything else the transaction holds is written first, so that the head row
    # stays the last lock it takes (an insert may wait on another transaction's). The
    # events not yet inserted are held back meanwhile: the flush after the seal inserts
    # each once, already holding its leaf, instead of inserting it bare and updating it.
    held = [row for row in kept if inspect(row).pending]
    for row in held:
        session.expunge(row)  # its patient rows follow its insert (`record_event`)
    session.flush()
    with session.no_autoflush:
        size, frontier = _take_leaves(session, len(kept))
        nodes: list[dict[str, Any]] = []
        for seq, row in enumerate(kept, start=size):
            row.seq = seq
            leaf = leaf_bytes_of(_row_values(row))
            row.leaf_hash = leaf_hash(leaf)
            sealed.events.append(row)
            sealed.leaves.append(leaf)
            if seq == size + len(kept) - 1:
                sealed.subtrees.update(_perfect_subtrees(frontier))
            for level, index, digest in frontier.append(row.leaf_hash):
                if level >= NODE_LEVEL:
                    nodes.append({"level": level, "index": index, "hash": digest})
        connection = session.connection()
        if nodes:
            connection.execute(insert(_NODES), nodes)
        connection.execute(
            update(_HEAD).where(_HEAD.c.id == 1).values(frontier=b"".join(frontier.hashes))
        )
    session.add_all(held)
    return sealed


def _perfect_subtrees(frontier: MerkleFrontier) -> dict[tuple[int, int], bytes]:
    """The frontier's subtree roots by leaf range: one per set bit of its size, the
    largest (leftmost) first."""
    found: dict[tuple[int, int], bytes] = {}
    start = 0
    widths = [1 << b for b in reversed(range(frontier.size.bit_length())) if frontier.size >> b & 1]
    for width, digest in zip(widths, frontier.hashes, strict=True):
        found[(start, start + width)] = digest
        start += width
    return found


# The head row must be the last lock a transaction takes (it is held to the commit):
# other before-commit hooks that lock rows register with insert=True, to run first.
@event.listens_for(Session, "before_commit")
def _seal_before_commit(session: Session) -> None:
    if not session.info.get(_PENDING):
        return
    try:
        seal(session=session)
        session.flush()
    except SQLAlchemyError as exc:
        if "audit_" not in str(getattr(exc, "statement", "") or ""):
            raise
        # No unaudited access: the transaction fails with its audit row.
        raise Unavailable(
            "the audit log could not be written, so nothing was done; retry later",
            code="audit_unavailable",
        ) from exc


def _take_leaves(session: Session, count: int) -> tuple[int, MerkleFrontier]:
    """Reserve `count` leaves at the log's end in this transaction (the head row stays
    locked until it ends); returns the first leaf index and the head's frontier."""
    for _ in range(3):
        row = (
            session.connection()
            .execute(
                update(_HEAD)
                .where(_HEAD.c.id == 1)
                .values(size=_HEAD.c.size + count)
                .returning(_HEAD.c.size, _HEAD.c.frontier)
            )
            .one_or_none()
        )
        if row is not None:
            first = int(row[0]) - count
            return first, _frontier(first, bytes(row[1]))
        savepoint = session.begin_nested()
        try:
            session.add(AuditLogHead(id=1, size=0, frontier=b""))
            savepoint.commit()
        except IntegrityError:  # another appender made the row first: use it
            savepoint.rollback()
    raise Conflict("could not append to the audit log; retry", code="audit_log_busy")


def _frontier(size: int, packed: bytes) -> MerkleFrontier:
    hashes = [packed[i : i + 32] for i in range(0, len(packed), 32)]
    if len(hashes) != size.bit_count():
        raise Conflict(
            f"the audit log's head is damaged (size {size}, {len(hashes)} subtree roots): "
            "run `coherency audit verify`",
            code="audit_log_damaged",
        )
    return MerkleFrontier(size, hashes)


def seal_connection(connection: Connection) -> int:
    """Seal every event of the log that has no leaf yet, in the order they were
    written (for a database upgraded from before the log was a tree); returns how
    many. Runs in the caller's transaction."""
    rows = connection.execute(
        select(AuditEvent.id, *LEAF_COLUMNS[1:])
        .where(AuditEvent.seq.is_(None))
        .order_by(AuditEvent.id)
    ).all()
    if not rows:
        return 0
    current = connection.execute(select(AuditLogHead.size, AuditLogHead.frontier)).one_or_none()
    if current is None:
        connection.execute(insert(AuditLogHead).values(id=1, size=0, frontier=b""))
        frontier = MerkleFrontier()
    else:
        frontier = _frontier(int(current[0]), bytes(current[1]))
    for row in rows:
        seq = frontier.size
        digest = leaf_hash(leaf_bytes_of([seq, *row[1:]]))
        connection.execute(
            update(AuditEvent).where(AuditEvent.id == row[0]).values(seq=seq, leaf_hash=digest)
        )
        for level, index, node in frontier.append(digest):
            if level >= NODE_LEVEL:
                connection.execute(insert(AuditNode).values(level=level, index=index, hash=node))
    connection.execute(
        update(AuditLogHead)
        .where(AuditLogHead.id == 1)
        .values(size=frontier.size, frontier=b"".join(frontier.hashes))
    )
    return len(rows)


def head(*, session: Session) -> MerkleFrontier:
    """The log as it stands in this transaction: its size and frontier."""
    row = session.execute(select(AuditLogHead.size, AuditLogHead.frontier)).one_or_none()
    if row is None:
        return MerkleFrontier()
    return _frontier(int(row[0]), bytes(row[1]))


def origin_of(public_key: bytes) -> str:
    """The name of the log a server with this artifact key keeps."""
    return f"coherency-audit/{public_key[:8].hex()}"


def issue_checkpoint(*, session: Session, signer: CheckpointSigner) -> Checkpoint:
    """Sign the log's current size and root, keep the checkpoint, and return it."""
    frontier = head(session=session)
    unsigned = Checkpoint(
        origin=origin_of(signer.public_key_bytes),
        size=frontier.size,
        root=frontier.root(),
        at=utcnow(),
    )
    signed = Checkpoint(
        unsigned.origin,
        unsigned.size,
        unsigned.root,
        unsigned.at,
        signer.sign_checkpoint(unsigned.message()),
    )
    session.add(
        AuditCheckpoint(
            origin=signed.origin,
            size=signed.size,
            root=signed.root,
            at=signed.at,
            signature=signed.signature,
        )
    )
    return signed


def current_checkpoint(*, session: Session, signer: CheckpointSigner) -> Checkpoint:
    """The newest checkpoint, signing one first if the log grew since (or none yet)."""
    latest = latest_checkpoint(session=session)
    if latest is not None and latest.size == head(session=session).size:
        return latest
    return issue_checkpoint(session=session, signer=signer)


def latest_checkpoint(*, session: Session) -> Checkpoint | None:
    """The newest checkpoint the server signed, if any."""
    row = session.scalars(
        select(AuditCheckpoint).order_by(AuditCheckpoint.id.desc()).limit(1)
    ).one_or_none()
    return None if row is None else _checkpoint(row)


def checkpoints(*, session: Session) -> list[Checkpoint]:
    """Every checkpoint the server signed, oldest first."""
    rows = session.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.id)).all()
    return [_checkpoint(row) for row in rows]


def _checkpoint(row: AuditCheckpoint) -> Checkpoint:
    return Checkpoint(row.origin, row.size, bytes(row.root), row.at, bytes(row.signature))


def leaf_bytes(*, session: Session, seq: int) -> bytes:
    """The canonical bytes of the event at leaf `seq`."""
    row = session.execute(select(*LEAF_COLUMNS).where(AuditEvent.seq == seq)).one_or_none()
    if row is None:
        raise NotFound(f"the audit log has no event {seq}", code="audit_event_not_found")
    return leaf_bytes_of(list(row))


def leaf_actor(*, session: Session, seq: int) -> str | None:
    """The id of the actor of the event at leaf `seq` (None: no such event, or none)."""
    return session.scalar(select(AuditEvent.actor_id).where(AuditEvent.seq == seq))


class _Subtrees:
    """Subtree hashes of the log: `known` ones, kept nodes where there are some, leaves
    otherwise."""

    def __init__(
        self, session: Session, known: Mapping[tuple[int, int], bytes] | None = None
    ) -> None:
        self._session = session
        self._known = known or {}

    def __call__(self, start: int, end: int) -> bytes:
        digest = self._known.get((start, end))
        if digest is not None:
            return digest
        width = end - start
        if width & (width - 1) == 0 and start % width == 0:
            return self._perfect(width.bit_length() - 1, start // width)
        split = 1 << ((width - 1).bit_length() - 1)
        return node_hash(self(start, start + split), self(start + split, end))

    def _perfect(self, level: int, index: int) -> bytes:
        if level >= NODE_LEVEL:
            digest = self._session.scalar(
                select(AuditNode.hash).where(AuditNode.level == level, AuditNode.index == index)
            )
            if digest is not None:
                return bytes(digest)
        start = index << level
        leaves = self._session.scalars(
            select(AuditEvent.leaf_hash)
            .where(AuditEvent.seq >= start, AuditEvent.seq < start + (1 << level))
            .order_by(AuditEvent.seq)
        ).all()
        if len(leaves) != 1 << level or any(leaf is None for leaf in leaves):
            raise Conflict(
                f"the audit log is missing events in {start}..{start + (1 << level) - 1}: "
                "run `coherency audit verify`",
                code="audit_log_damaged",
            )
        return _fold([bytes(leaf) for leaf in leaves if leaf is not None])


def _fold(leaves: Iterable[bytes]) -> bytes:
    frontier = MerkleFrontier()
    for leaf in leaves:
        frontier.append(leaf)
    return frontier.root()


def _check_size(session: Session, size: int) -> None:
    current = head(session=session).size
    if not 0 < size <= current:
        raise Unprocessable(
            f"the audit log has {current} events: no tree of {size}", code="audit_size_invalid"
        )


def inclusion_path(
    *,
    session: Session,
    seq: int,
    size: int,
    known: Mapping[tuple[int, int], bytes] | None = None,
) -> list[bytes]:
    """The RFC 9162 inclusion proof of leaf `seq` in the log's tree of `size` leaves;
    `known` subtree hashes (`Sealed.subtrees`) are taken as they are, not read."""
    _check_size(session, size)
    if not 0 <= seq < size:
        raise Unprocessable(f"event {seq} is not in a tree of {size}", code="audit_seq_invalid")
    return inclusion_proof(seq, size, _Subtrees(session, known))


def consistency_path(*, session: Session, first: int, second: int) -> list[bytes]:
    """The RFC 9162 proof that the log's tree of `second` leaves extends its tree of
    `first`."""
    _check_size(session, second)
    if not 0 < first <= second:
        raise Unprocessable(
            f"no consistency proof from {first} to {second}", code="audit_size_invalid"
        )
    return consistency_proof(first, second, _Subtrees(session))
