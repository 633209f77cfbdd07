"""Routes: the audit log's checkpoints and proofs.

- ``GET /v1/audit/checkpoint`` (any authenticated caller): the newest checkpoint the
  server signed (signing one first if the log grew since).
- ``POST /v1/audit/checkpoints`` (admins): sign a checkpoint now.
- ``GET /v1/audit/proofs/consistency?first=&second=`` (any authenticated caller): the
  proof that the log of `second` events extends the log of `first`: how a witness
  holding an older checkpoint checks the newer one.
- ``GET /v1/audit/proofs/inclusion?seq=&size=`` (admins; a device for its own events):
  one event's canonical bytes and its proof of inclusion.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from crdt import leaf_hash
from sync_server.audit.log import (
    consistency_path,
    current_checkpoint,
    inclusion_path,
    issue_checkpoint,
    leaf_actor,
    leaf_bytes,
)
from sync_server.audit.schemas import CheckpointPublic, ConsistencyProof, InclusionProof
from sync_server.deps import AdminCaller, AnyPrincipal, ArtifactKeyDep, DbDep
from sync_server.errors import NotFound

__all__ = ["router"]

router = APIRouter(prefix="/v1/audit", tags=["audit"])

_Size = Annotated[int, Query(ge=0, le=2**62, description="A tree size (events).")]


@router.get("/checkpoint", summary="The newest signed checkpoint of the audit log")
def get_checkpoint(caller: AnyPrincipal, db: DbDep, key: ArtifactKeyDep) -> CheckpointPublic:
    """The newest checkpoint, signed by the server's artifact key; one is signed first if
    the log grew since the last. Keep it: it is what catches a server that later
    rewrites or truncates its log (`coherency audit verify --checkpoints`)."""
    with db.write() as session:
        return CheckpointPublic.of(current_checkpoint(session=session, signer=key))


@router.post("/checkpoints", status_code=201, summary="Sign a checkpoint of the audit log now")
def post_checkpoint(caller: AdminCaller, db: DbDep, key: ArtifactKeyDep) -> CheckpointPublic:
    """Sign the log's current size and root (admins; the server also signs one on a
    schedule, `Settings.audit_checkpoint_seconds`)."""
    with db.write() as session:
        return CheckpointPublic.of(issue_checkpoint(session=session, signer=key))


@router.get("/proofs/consistency", summary="Proof that one log state extends another")
def get_consistency(
    caller: AnyPrincipal, db: DbDep, first: _Size, second: _Size
) -> ConsistencyProof:
    """The RFC 9162 consistency proof from the log of `first` events to the log of
    `second` (hashes only: no event's contents)."""
    with db.read() as session:
        path = consistency_path(session=session, first=first, second=second)
    return ConsistencyProof(first=first, second=second, path=[p.hex() for p in path])


@router.get("/proofs/inclusion", summary="Proof that one event is in the log")
def get_inclusion(caller: AnyPrincipal, db: DbDep, seq: _Size, size: _Size) -> InclusionProof:
    """The event at leaf `seq` (its canonical bytes: ids only) and the RFC 9162 proof of
    its inclusion in the log of `size` events. Admins may ask for any event; a device
    only for the events it was the actor of (404 otherwise, as for a missing one)."""
    with db.read() as session:
        if caller.role != "admin" and leaf_actor(session=session, seq=seq) != caller.id:
            raise NotFound(f"the audit log has no event {seq}", code="audit_event_not_found")
        data = leaf_bytes(session=session, seq=seq)
        path = inclusion_path(session=session, seq=seq, size=size)
    return InclusionProof(
        seq=seq,
        size=size,
        leaf=data.decode(),
        leaf_hash=leaf_hash(data).hex(),
        path=[p.hex() for p in path],
    )
