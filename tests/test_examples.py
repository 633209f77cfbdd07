"""Every program in examples/ runs to completion and prints what it promises."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
EXPECTED = {
    "quickstart.py": [
        "patients matching 'okon': ['RVS-000451']",
        "medical history: ['Type 2 diabetes']",
        "care plan: hydrofibre, foam cover every 3 days",
        "wrong passphrase refused",
    ],
    "offline_sync.py": ["conflict on mrn", "after resolving: RVS-1 conflicts: []"],
    "server_sync.py": [
        "ward pushed 3 records and 1 blob",
        "home pulled 3 records; scan fetched: True",
        "converged: status healing, mrn RVS-1-B",
        "hillside pulled 0 records of Riverside's",
    ],
    "custom_wound_model.py": [
        "boundary from the app's runtime: model",
        "same tissue mix as the SDK runner: True",
        "refused: wound_seg reads input 'wound-input/2'; this app builds 'wound-input/1'",
    ],
    "wound_scan.py": [
        "refused: too_far",
        "stored assessment with blobs ['measurement-details', 'scan-pointcloud']",
    ],
}


def test_every_example_has_expectations() -> None:
    assert {p.name for p in EXAMPLES} == set(EXPECTED)


# These start a real server or run the capture pipeline: many seconds each.
SLOW = {"custom_wound_model.py", "server_sync.py", "wound_scan.py"}


@pytest.mark.parametrize(
    "example",
    [pytest.param(p, marks=pytest.mark.slow) if p.name in SLOW else p for p in EXAMPLES],
    ids=lambda p: p.name,
)
def test_example_runs(example: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, str(example), str(tmp_path / "work")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    for line in EXPECTED[example.name]:
        assert line in result.stdout
