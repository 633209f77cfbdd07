"""Conflicts and history grow linearly with a record's history, and agree with the
definition: a live write is a write of a field that no causally later write or delete
of that field superseded.

The reference below computes that definition the slow, obvious way (reading the
document at every change's heads, ancestors as sets): quadratic, and what the library
did before. Random concurrent edits on several replicas must give the same conflicts
and history both ways.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from automerge import core as am
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crdt import ClinicalNote, Patient, RecordDocument, device_for_actor

DEVICES = [str(uuid.UUID(int=n + 1)) for n in range(3)]
T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
BOOKKEEPING = {"updated_at", "updated_by", "collection", "schema_version"}


# ---------------------------------------------------------------- the reference
def _ancestors(changes: list[Any]) -> dict[bytes, set[bytes]]:
    result: dict[bytes, set[bytes]] = {}
    for change in changes:
        acc: set[bytes] = set()
        for dep in change.deps:
            acc.add(dep)
            acc |= result.get(dep, set())
        result[change.hash] = acc
    return result


def reference_conflicts(document: RecordDocument) -> dict[str, set[tuple[str, str]]]:
    """field -> {(device, canonical value)} of its live writes, where they differ."""
    doc = document.automerge
    changes = doc.get_changes([])
    ancestors = _ancestors(changes)
    found: dict[str, set[tuple[str, str]]] = {}
    for name in doc.keys(am.ROOT):
        if name in BOOKKEEPING or name == "text":
            continue
        writes, touched = [], []
        for change in changes:
            now = doc.get(am.ROOT, name, [change.hash])
            before = doc.get(am.ROOT, name, list(change.deps)) if change.deps else None
            if now is None:
                if before is not None:
                    touched.append(change.hash)
            elif before is None or now[1] != before[1]:
                writes.append((change, now))
                touched.append(change.hash)
        live = {
            (device_for_actor(change.actor_id), repr(got[0][1]))
            for change, got in writes
            if not any(change.hash in ancestors[other] for other in touched)
        }
        if len({value for _, value in live}) > 1:
            found[name] = live
    return found


def reference_history(document: RecordDocument) -> list[tuple[str, str, tuple[str, ...]]]:
    """(change, device, sorted fields written) per change, in change order."""
    doc = document.automerge
    out = []
    for change in doc.get_changes([]):
        after, before = [change.hash], list(change.deps)
        names = set(doc.keys(am.ROOT, after)) | (
            set(doc.keys(am.ROOT, before)) if before else set()
        )
        written = []
        for name in sorted(names - BOOKKEEPING):
            now = doc.get(am.ROOT, name, after)
            then = doc.get(am.ROOT, name, before) if before else None
            if now is None or then is None:
                changed = now is not then
            elif now[0] == am.ObjType.Text and now[1] == then[1]:
                changed = doc.text(now[1], after) != doc.text(then[1], before)
            else:
                changed = now[1] != then[1]
            if changed:
                written.append(name)
        out.append((change.hash.hex(), device_for_actor(change.actor_id), tuple(written)))
    return out


def library_conflicts(document: RecordDocument) -> dict[str, set[tuple[str, str]]]:
    return {
        c.field: {(v.device_id, repr(_stored(document, c.field, v.value))) for v in c.values}
        for c in document.conflicts()
    }


def _stored(document: RecordDocument, name: str, value: Any) -> Any:
    # The reference sees stored scalars; JSON fields are stored as canonical JSON.
    if name in document.schema.json_fields:
        import json

        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return value


def library_history(document: RecordDocument) -> list[tuple[str, str, tuple[str, ...]]]:
    order = {c.hash.hex(): i for i, c in enumerate(document.automerge.get_changes([]))}
    entries = sorted(document.history(), key=lambda e: order[e.change])
    return [(e.change, e.device_id, tuple(sorted(e.fields))) for e in entries]


def comparable_reference_history(
    document: RecordDocument,
) -> list[tuple[str, str, tuple[str, ...]]]:
    meta = {"id", "clinic_id", "created_at", "created_by"}
    created = {c.hash.hex() for c in document.automerge.get_changes([]) if not c.deps}
    return [
        (h, d, tuple(f for f in fields if f not in meta and not (h in created and f == "deleted")))
        for h, d, fields in reference_history(document)
    ]


# ---------------------------------------------------------------- random edits
edit = st.one_of(
    st.tuples(st.just("given"), st.integers(0, 2), st.sampled_from(["Ada", "Ann", "Abe"])),
    st.tuples(st.just("mrn"), st.integers(0, 2), st.sampled_from([None, "M-1", "M-2"])),
    st.tuples(st.just("delete"), st.integers(0, 2), st.booleans()),
    # Inserts and erasures always change the text (the reference compares texts;
    # the library counts any edit, so an edit that restores the same text would differ).
    st.tuples(st.just("text"), st.integers(0, 2), st.text("ab", min_size=1, max_size=3)),
    st.tuples(st.just("erase"), st.integers(0, 2), st.just(1)),
    st.tuples(st.just("merge"), st.integers(0, 2), st.integers(0, 2)),
)


def _apply(replicas: list[RecordDocument], step: tuple[str, int, Any], at: datetime) -> None:
    kind, who, arg = step
    doc, device = replicas[who], DEVICES[who]
    if kind == "merge":
        if arg != who:
            doc.merge(replicas[arg])
    elif kind == "given" and doc.schema is Patient:
        doc.update({"given_name": arg}, device_id=device, now=at)
    elif kind == "mrn" and doc.schema is Patient:
        doc.update({"mrn": arg}, device_id=device, now=at)
    elif kind == "delete":
        (doc.delete if arg else doc.restore)(device_id=device, now=at)
    elif kind == "text" and doc.schema is ClinicalNote:
        position = len(doc.values()["text"]) // 2
        doc.splice_text("text", position, 0, arg, device_id=device, now=at)
    elif kind == "erase" and doc.schema is ClinicalNote and doc.values()["text"]:
        position = len(doc.values()["text"]) // 2
        doc.splice_text(
            "text", min(position, len(doc.values()["text"]) - 1), 1, "", device_id=device, now=at
        )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    schema=st.sampled_from([Patient, ClinicalNote]),
    steps=st.lists(edit, min_size=1, max_size=25),
)
def test_conflicts_and_history_match_the_definition(
    schema: type[Any], steps: list[tuple[str, int, Any]]
) -> None:
    values = (
        {"given_name": "Ada", "family_name": "Okafor", "birth_date": "1950-03-01"}
        if schema is Patient
        else {"patient_id": "p-1", "author": "RN", "text": "seed"}
    )
    origin = RecordDocument.create(schema, values, device_id=DEVICES[0], clinic_id="c", now=T0)
    replicas = [origin] + [origin.fork(device_id=d) for d in DEVICES[1:]]
    for n, step in enumerate(steps):
        _apply(replicas, step, T0 + timedelta(minutes=n + 1))
    merged = replicas[0]
    for other in replicas[1:]:
        merged.merge(other)
    for document in (*replicas, merged):
        loaded = RecordDocument.load(document.save())
        for candidate in (document, loaded):
            assert library_conflicts(candidate) == reference_conflicts(candidate)
            assert library_history(candidate) == comparable_reference_history(candidate)


# ---------------------------------------------------------------- long histories
def _long_record(changes: int) -> tuple[RecordDocument, RecordDocument]:
    """A patient record with a chain of `changes` writes and one concurrent branch."""
    writer, other = DEVICES[0], DEVICES[1]
    doc = RecordDocument.create(
        Patient,
        {"given_name": "Ada", "family_name": "Okafor", "birth_date": "1950-03-01"},
        device_id=writer,
        clinic_id="c",
        now=T0,
    )
    branch = doc.fork(device_id=other)
    for n in range(changes):
        doc.update({"given_name": f"Ada {n}"}, device_id=writer, now=T0 + timedelta(seconds=n + 1))
    branch.update({"given_name": "Zed"}, device_id=other, now=T0 + timedelta(hours=1))
    return doc, branch


@pytest.fixture(scope="module")
def long_record() -> tuple[bytes, bytes]:
    doc, branch = _long_record(8000)
    return doc.save(), branch.save()


def test_a_record_with_8000_changes_merges_projects_and_reports_in_one_pass(
    long_record: tuple[bytes, bytes],
) -> None:
    chain, branch = long_record
    started = time.perf_counter()
    merged = RecordDocument.load(chain)
    assert merged.merge(RecordDocument.load(branch))
    record = merged.read().model_dump(mode="json")  # what a projection stores
    conflicts = merged.conflicts()
    history = merged.history()
    elapsed = time.perf_counter() - started
    assert record["given_name"] in {"Ada 7999", "Zed"}
    assert [c.field for c in conflicts] == ["given_name"]
    assert {v.value for v in conflicts[0].values} == {"Ada 7999", "Zed"}
    assert len(history) == 8002
    assert history[0].action == "created"
    # The old algorithm took ~21 s and 1.85 GB here; one pass over the operations takes
    # well under a second (benchmarks/ measures it). The bound only catches a return to
    # the quadratic algorithm: a shared, busy CI machine once took 1.07 s.
    assert elapsed < 5.0, f"took {elapsed:.2f}s"
