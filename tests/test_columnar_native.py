"""The compiled reader of saved documents (`crdt._columnar_native`, built by setup.py
with mypyc) is the installed one, and reads exactly as the Python source does: the same
operations from real documents, and the same error (type and message) from hostile
bytes, so a replica built without a compiler keeps the same records."""

from __future__ import annotations

import os
import sys
import types
import uuid
from dataclasses import astuple
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import crdt._columnar as columnar
from crdt import ClinicalNote, Patient, RecordDocument
from tests.hostile_bytes import mutated

SOURCE = Path(columnar.__file__)
MARKER = "# ---------------------------------------------------------------- native build"
A, B = str(uuid.UUID(int=7)), str(uuid.UUID(int=8))
NOW = datetime(2024, 1, 1, tzinfo=UTC)


def _python_reader() -> types.ModuleType:
    """The module exactly as setup.py compiles it (the source above the native block),
    run as Python."""
    module = types.ModuleType("columnar_as_python")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    body = SOURCE.read_text(encoding="utf-8").partition(MARKER)[0]
    exec(compile(body, str(SOURCE), "exec"), module.__dict__)
    return module


PYTHON = _python_reader()


def _documents() -> list[bytes]:
    patient = RecordDocument.create(
        Patient,
        {"given_name": "Ada", "family_name": "Okafor", "birth_date": "1950-03-01"},
        device_id=A,
        clinic_id="c",
        now=NOW,
    )
    patient.update({"mrn": "M-1"}, device_id=A)
    other = patient.fork(device_id=B)
    other.update({"mrn": "M-2", "given_name": "Adaeze"}, device_id=B)
    patient.update({"mrn": "M-3"}, device_id=A)
    patient.merge(other)  # a conflict: successors from two actors
    patient.delete(device_id=A)
    note = RecordDocument.create(
        ClinicalNote,
        {"patient_id": patient.id, "author": "RN", "text": "Granulating well. " * 40},
        device_id=A,
        clinic_id="c",
    )
    note.splice_text("text", 0, 0, "Day 3. ", device_id=A)
    note.splice_text("text", 7, 200, "", device_id=A)  # deletions inside the text
    return [patient.save(), note.save()]


DOCUMENTS = _documents()


def _outcome(read: Any, data: bytes, **kwargs: Any) -> tuple[str, Any]:
    try:
        result = read(data, **kwargs)
    except Exception as exc:  # compared between the two readers, not judged here
        return type(exc).__name__, str(exc)
    if isinstance(result, tuple):  # measure_saved
        return "ok", result
    return "ok", (
        [astuple(op) for op in result.root],
        [astuple(nested) for nested in result.nested],
    )


def _same_reading(data: bytes) -> None:
    for name, kwargs in [
        ("read_document", {}),
        ("read_document", {"trailing": True}),
        ("measure_saved", {"max_inflated": 1 << 20}),
    ]:
        native = _outcome(getattr(columnar, name), data, **kwargs)
        python = _outcome(getattr(PYTHON, name), data, **kwargs)
        assert native == python, (name, kwargs)


def test_the_compiled_reader_is_installed() -> None:
    if os.environ.get("COHERENCY_PURE_PYTHON") == "1":
        pytest.skip("built with COHERENCY_PURE_PYTHON=1")
    assert columnar.backend() == "mypyc"
    assert type(columnar.read_document).__name__ == "builtin_function_or_method"


def test_real_documents_read_the_same() -> None:
    for data in DOCUMENTS:
        _same_reading(data)
        assert _outcome(columnar.read_document, data)[0] == "ok"
    conflicted = columnar.read_document(DOCUMENTS[0])
    assert any(len(op.successors) >= 2 for op in conflicted.root)  # the merge's conflict
    assert len(columnar.read_document(DOCUMENTS[1]).nested) > 500  # the note's characters


# Seeded: the same 400 byte strings every run.
@settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.one_of(mutated(DOCUMENTS, min_edits=1), st.binary(max_size=1024)))
def test_hostile_bytes_read_the_same(data: bytes) -> None:
    _same_reading(data)
