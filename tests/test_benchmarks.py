"""Smoke tests of the benchmark runner: tiny runs that must report every figure.

These check the harness (every figure present, positive, well formed, JSON written),
not the speed of anything: at these scales the numbers mean nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

WRITE = {
    "write.acked.edge",
    "write.acked.sqlite",
    "write.acked.ratio",
    "write.batched.edge",
    "write.batched.sqlcipher",
    "write.batched.sqlite",
    "write.batched.ratio",
    "write.batched.sqlcipher_ratio",
    "write.batched.edge_vs_sqlcipher",
}
MERGE = {"merge.edge", "merge.memory"}
STORAGE = {
    f"storage.{kind}.{what}"
    for kind in ("patient", "wound", "note", "assessment")
    for what in ("automerge", "json", "ratio")
} | {"storage.store.per_record", "storage.plain_json.per_record", "storage.store.ratio"}
TARGETED = {"write.acked.ratio", "write.batched.ratio", "merge.edge"}


def _run(tmp_path: Path, *args: str) -> tuple[dict[str, Any], str]:
    out = tmp_path / "bench.json"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.run",
            *args,
            "--json",
            str(out),
            "--tmpdir",
            str(tmp_path),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(out.read_text(encoding="utf-8")), done.stdout


def test_full_run_reports_every_figure_with_positive_numbers(tmp_path: Path) -> None:
    document, table = _run(tmp_path, "--scale", "200", "--repeat", "1")

    results = {r["name"]: r for r in document["results"]}
    assert set(results) == WRITE | MERGE | STORAGE
    assert len(document["results"]) == len(results)  # no figure reported twice
    for name, r in results.items():
        assert r["value"] > 0 and r["min"] > 0, name
        assert r["min"] <= r["median"] <= r["max"], name
        assert r["value"] == r["median"], name
        assert r["repeats"] == 1 == len(r["samples"]), name
        assert r["unit"], name
        if name in TARGETED:
            assert r["target"] > 0 and r["target_op"] in ("<=", ">=")
            assert isinstance(r["meets_target"], bool)
        else:
            assert r["target"] is None and r["meets_target"] is None
        assert name in table  # the printed table lists it too
    assert results["merge.edge"]["records"] == 200
    assert results["write.acked.edge"]["records"] == 400  # 200 patients + 200 wounds
    machine = document["machine"]
    assert machine["cpu_count"] >= 1 and machine["python"] and machine["platform"]
    assert document["settings"]["scale"] == 200
    # The scratch stores are gone: only the JSON file is left in the temp dir.
    assert [p.name for p in tmp_path.iterdir()] == ["bench.json"]


def test_only_and_repeat_select_benchmarks_and_sample_counts(tmp_path: Path) -> None:
    document, _ = _run(tmp_path, "--only", "merge", "--only", "storage", "--scale", "40",
                       "--repeat", "2", "--no-pin")  # fmt: skip

    results = {r["name"]: r for r in document["results"]}
    assert set(results) == MERGE | STORAGE
    assert all(len(results[name]["samples"]) == 2 for name in MERGE)
    assert all(len(results[name]["samples"]) == 1 for name in STORAGE)  # sizes: once
    assert document["settings"]["pinned_cpu"] is None
