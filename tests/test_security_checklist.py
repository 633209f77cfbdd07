"""The HIPAA checklist in docs/security.md cannot rot: every test it names exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECKLIST = ROOT / "docs" / "security.md"
NAMED = re.compile(r"`(tests/[\w/]+\.py)::(test_\w+)`")


def _tests_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name.startswith("test_")
    }


def test_every_test_the_hipaa_checklist_names_exists() -> None:
    text = CHECKLIST.read_text(encoding="utf-8")
    checklist = text[text.index("# HIPAA §164.312") :]
    named = NAMED.findall(checklist)
    assert len(named) >= 20  # the table names its tests, one or more per row
    missing = [
        f"{path}::{name}"
        for path, name in named
        if not (ROOT / path).is_file() or name not in _tests_in(ROOT / path)
    ]
    assert not missing, f"docs/security.md names tests that do not exist: {missing}"


def test_every_specification_has_a_row() -> None:
    text = CHECKLIST.read_text(encoding="utf-8")
    rows = [line for line in text[text.index("# HIPAA §164.312") :].splitlines() if "|" in line]
    for specification in (
        "Unique user identification",
        "Emergency access procedure",
        "Automatic logoff",
        "Encryption and decryption",
        "Audit controls",
        "Mechanism to authenticate ePHI",
        "Person or entity authentication",
        "Integrity controls",
        "Transmission security",
    ):
        [row] = [row for row in rows if specification in row]
        assert row.count("|") >= 5 and "Shown by" not in row, specification
