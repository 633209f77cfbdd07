"""The box's own store: blob uploads spooled encrypted and resumable across a restart,
and the audit chains it holds (no server needed)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from crdt import GENESIS, chain_hash
from edge_box import BoxInputError, EdgeBox
from edge_sdk import ChainedEvent

MiB = 1024 * 1024


def test_an_upload_resumes_after_the_box_restarts_and_never_touches_disk_in_clear(
    tmp_path: Path,
) -> None:
    marker = b"PATIENT-SCAN-MARKER-" * 1000
    data = marker + os.urandom(2 * MiB)
    sha = hashlib.sha256(data).hexdigest()
    box = EdgeBox.init(tmp_path / "box", tmp_path / "box.key")
    state = box.declare_upload("dev-1", sha256=sha, size=len(data))
    upload = state["upload_id"]
    assert box.send_chunk("dev-1", upload_id=upload, offset=0, data=data[:MiB]) is not None
    box.close()
    spooled = b"".join(p.read_bytes() for p in (tmp_path / "box").rglob("*") if p.is_file())
    assert b"PATIENT-SCAN-MARKER" not in spooled

    box = EdgeBox.open(tmp_path / "box", tmp_path / "box.key")
    again = box.declare_upload("dev-1", sha256=sha, size=len(data))
    assert again["upload_id"] == upload and again["offset"] == MiB
    # Another device cannot write into this device's upload.
    assert box.send_chunk("dev-2", upload_id=upload, offset=MiB, data=data[MiB:]) is None
    done = box.send_chunk("dev-1", upload_id=upload, offset=MiB, data=data[MiB:])
    assert done is not None and done["complete"]
    assert box.blob_size(sha) == len(data)
    assert b"".join(box.blob_chunks("dev-1", sha, MiB + 5)) == data[MiB + 5 :]
    box.close()


def test_an_upload_whose_bytes_do_not_match_its_hash_stores_nothing(tmp_path: Path) -> None:
    box = EdgeBox.init(tmp_path / "box", tmp_path / "box.key")
    claimed = hashlib.sha256(b"what was promised").hexdigest()
    state = box.declare_upload("dev-1", sha256=claimed, size=5)
    with pytest.raises(BoxInputError, match="do not have SHA-256"):
        box.send_chunk("dev-1", upload_id=state["upload_id"], offset=0, data=b"other")
    assert box.blob_size(claimed) is None
    with pytest.raises(BoxInputError):
        box.declare_upload("dev-1", sha256="not-a-hash", size=5)
    box.close()


def _chain(n: int) -> list[ChainedEvent]:
    events, previous = [], GENESIS
    for seq in range(1, n + 1):
        canonical = f'{{"seq":{seq}}}'.encode()
        previous = chain_hash(previous, canonical)
        events.append(ChainedEvent(seq, canonical, previous))
    return events


def test_the_box_holds_audit_chains_append_only(tmp_path: Path) -> None:
    box = EdgeBox.init(tmp_path / "box", tmp_path / "box.key")
    chain = _chain(6)
    assert box.hold_audit("dev-1", chain[:4]) == 4
    assert box.hold_audit("dev-1", chain[2:6]) == 6  # resent events are accepted unchanged
    forged = ChainedEvent(3, b'{"seq":"edited"}', chain[2].hash)
    with pytest.raises(BoxInputError) as refused:
        box.hold_audit("dev-1", [forged])
    assert refused.value.status == 409
    altered = ChainedEvent(7, b"{}", bytes(32))
    with pytest.raises(BoxInputError):
        box.hold_audit("dev-1", [altered])
    assert [e.seq for e in box.audit_backlog()["dev-1"]] == [1, 2, 3, 4, 5, 6]
    # A device whose chain central already acknowledged up to 10 starts the box's copy
    # at its next event (central checks the rest when the box relays it).
    later = _chain(12)[10:]
    assert box.hold_audit("dev-2", later) == 12
    box.close()
