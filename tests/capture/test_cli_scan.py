"""`coherency scan synth|measure|capture`, end to end on real scans and a real store."""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import click
import numpy as np
import pytest
from click.testing import CliRunner, Result

import lidar_capture
from cli.main import cli
from edge_sdk import Argon2Params, EdgeClient, PassphraseKeyProvider
from lidar_capture import (
    generate,
    open_scan,
    point_cloud_from_ply_bytes,
    random_spec,
    read_point_cloud,
)

PASSPHRASE = "correct horse battery staple"
# A scan the pipeline measures well: a bowl-shaped elliptical wound on flat skin.
SYNTH = (
    *("--seed", "7", "--surface", "plane", "--profile", "bowl", "--outline", "ellipse"),
    *("--frames", "4"),
)


def _clean_env() -> dict[str, str | None]:
    """Nothing from the caller's shell; a passphrase and cheap Argon2 for new stores."""
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("COHERENCY_")}
    return {**env, "COHERENCY_KDF": "fast", "COHERENCY_PASSPHRASE": PASSPHRASE}


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


#: Stray Scanner folders hold depth PNGs, which are read and written through Open3D.
needs_open3d = pytest.mark.skipif(
    not _importable("open3d"), reason="Stray Scanner depth PNGs go through Open3D (capture-accel)"
)


def run(*args: str, input: str | None = None, **env: str | None) -> Result:
    """`coherency ARGS...`; never raises, whatever the command does."""
    return CliRunner().invoke(cli, list(args), input=input, env={**_clean_env(), **env})


def ok(*args: str, **env: str | None) -> Any:
    """Run a command with ``--json``, check it succeeded, and return its parsed output."""
    result = run(*args, "--json", **env)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def failed(result: Result, code: int) -> str:
    """Check `result` failed with `code` and one ``error:`` line; return that line."""
    assert result.exit_code == code, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    return lines[0]


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A synthetic Stray Scanner folder written by `scan synth`, and what it printed."""
    if not _importable("open3d"):
        pytest.skip("Stray Scanner depth PNGs go through Open3D (capture-accel)")
    out = tmp_path_factory.mktemp("synth") / "scan"
    return out, ok("scan", "synth", str(out), *SYNTH)


@pytest.fixture(scope="module")
def measured(synth_dir: tuple[Path, dict[str, Any]]) -> dict[str, Any]:
    """`scan measure --json` of the synthetic folder."""
    result: dict[str, Any] = ok("scan", "measure", str(synth_dir[0]))
    return result


# ----------------------------------------------------------------------------- synth
def test_synth_writes_a_stray_scanner_folder_with_its_truth(
    synth_dir: tuple[Path, dict[str, Any]],
) -> None:
    out, printed = synth_dir
    assert printed["path"] == str(out)
    assert printed["format"] == "dir"
    assert printed["frames"] == 4
    assert printed["spec"]["surface"] == "plane" and printed["spec"]["seed"] == 7
    truth = json.loads((out / "ground_truth.json").read_text())
    assert printed["truth_path"] == str(out / "ground_truth.json")
    assert {k: truth[k] for k in printed["truth"]} == printed["truth"]
    assert len(truth["outline_world"]) == 1024
    sidecar = json.loads((out / "coherency.json").read_text())
    assert sidecar["ground_truth"] == "ground_truth.json"
    assert sidecar["synthetic_spec"] == printed["spec"]

    scan = open_scan(out)
    assert (scan.source, len(scan.frames)) == ("strayscanner", 4)
    assert scan.body_axis is not None
    np.testing.assert_allclose(scan.body_axis, truth["body_axis"], atol=1e-9)
    # The same options always give the same wound.
    spec = random_spec(7, surface="plane", profile="bowl", outline="ellipse", frames=4)
    assert truth["area_cm2"] == pytest.approx(generate(spec).truth.area_cm2)


@needs_open3d
def test_synth_refuses_to_overwrite_unless_forced(tmp_path: Path) -> None:
    out = tmp_path / "scan"
    first = ok("scan", "synth", str(out), "--seed", "1", "--frames", "1")
    assert "already exists" in failed(run("scan", "synth", str(out), "--frames", "1"), 5)
    assert json.loads((out / "ground_truth.json").read_text())["area_cm2"] == pytest.approx(
        first["truth"]["area_cm2"]
    )
    second = ok("scan", "synth", str(out), "--seed", "2", "--frames", "1", "--force")
    assert second["truth"]["area_cm2"] != first["truth"]["area_cm2"]
    assert json.loads((out / "ground_truth.json").read_text())["area_cm2"] == pytest.approx(
        second["truth"]["area_cm2"]
    )
    # --force replaces a scan, never an unrelated folder.
    other = tmp_path / "photos"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    line = failed(run("scan", "synth", str(other), "--frames", "1", "--force"), 5)
    assert "not a Stray Scanner scan" in line
    assert (other / "keep.txt").read_text() == "mine"


def test_synth_ply_writes_one_fused_cloud_its_truth_and_body_axis(tmp_path: Path) -> None:
    out = tmp_path / "wound.ply"
    printed = ok("scan", "synth", str(out), *SYNTH, "--format", "ply")
    cloud = read_point_cloud(out)
    assert len(cloud) == printed["points"] > 10_000
    assert cloud.colors is not None
    # The frames' confident points, merged at 1 mm: far fewer than were seen.
    spec = random_spec(7, surface="plane", profile="bowl", outline="ellipse", frames=4)
    frames = generate(spec).scan.frames
    confidences = [f.confidence for f in frames if f.confidence is not None]
    assert len(confidences) == len(frames)
    seen = sum(int(np.count_nonzero(c >= 1)) for c in confidences)
    assert len(cloud) < 0.85 * seen
    assert np.min(np.linalg.norm(cloud.points - frames[0].pose[:3, 3], axis=1)) > 0.1
    truth = json.loads((tmp_path / "wound.truth.json").read_text())
    assert truth["area_cm2"] == pytest.approx(printed["truth"]["area_cm2"])
    assert open_scan(out).body_axis is not None  # from wound.coherency.json

    assert "already exists" in failed(run("scan", "synth", str(out), "--format", "ply"), 5)
    assert "--video" in failed(
        run("scan", "synth", str(tmp_path / "b.ply"), "--format", "ply", "--video"), 2
    )


@needs_open3d
def test_synth_human_output_and_bad_options(tmp_path: Path) -> None:
    result = run("scan", "synth", str(tmp_path / "s"), "--seed", "5", "--frames", "1")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"wrote {tmp_path / 's'} (1 frame); ground truth in ")
    assert "area" in result.stdout and "cm²" in result.stdout
    assert "--surface" in failed(run("scan", "synth", str(tmp_path / "t"), "--surface", "arm"), 2)
    assert "--skin-tone" in failed(run("scan", "synth", str(tmp_path / "t"), "--skin-tone", "7"), 2)
    assert not (tmp_path / "t").exists()


# --------------------------------------------------------------------------- measure
def test_measure_json_is_close_to_the_truth(
    synth_dir: tuple[Path, dict[str, Any]], measured: dict[str, Any]
) -> None:
    out, printed = synth_dir
    truth = printed["truth"]
    assert (measured["source"], measured["path"]) == ("strayscanner", str(out))
    for key in (
        "area_cm2", "perimeter_cm", "length_cm", "width_cm", "max_depth_mm",
        "mean_depth_mm", "volume_cm3", "ruler_area_cm2", "point_count", "quality", "timings_ms",
    ):  # fmt: skip
        assert key in measured
    assert measured["frame_count"] == 4
    assert measured["length_axis"] == "body"  # from the folder's coherency.json
    assert measured["area_cm2"] == pytest.approx(truth["area_cm2"], rel=0.10)
    assert measured["length_cm"] == pytest.approx(truth["length_cm"], rel=0.15)
    assert measured["width_cm"] == pytest.approx(truth["width_cm"], rel=0.15)
    assert measured["max_depth_mm"] == pytest.approx(truth["max_depth_mm"], abs=1.5)
    assert measured["volume_cm3"] == pytest.approx(truth["volume_cm3"], rel=0.35)


def test_measure_needs_no_store_and_prints_a_table(
    tmp_path: Path, synth_dir: tuple[Path, dict[str, Any]], measured: dict[str, Any]
) -> None:
    # No store, no passphrase: nothing is asked for.
    result = run(
        "--store", str(tmp_path / "absent"), "scan", "measure", str(synth_dir[0]),
        "--body-axis", "1,0,0", "--frames", "2", "--fusion", "points",
        COHERENCY_PASSPHRASE=None, COLUMNS="100",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["figure", "value", "unit"]
    assert any(line.split()[:1] == ["area"] and "cm²" in line for line in lines)
    assert "length_axis: body" in lines
    assert "frame_count: 2" in lines
    assert not (tmp_path / "absent").exists()


def test_measure_of_a_corrupt_file_is_exit_6_naming_it(
    tmp_path: Path, synth_dir: tuple[Path, dict[str, Any]]
) -> None:
    garbage = tmp_path / "garbage.ply"
    garbage.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 1000\n")
    assert str(garbage) in failed(run("scan", "measure", str(garbage)), 6)
    outline = tmp_path / "outline.json"
    outline.write_text("[[0, 0, 0], [1, 0")
    line = failed(run("scan", "measure", str(synth_dir[0]), "--outline", str(outline)), 6)
    assert str(outline) in line
    failed(run("scan", "measure", str(tmp_path / "absent.ply")), 2)
    assert "X,Y,Z" in failed(run("scan", "measure", str(garbage), "--body-axis", "0,0"), 2)


def _skin_ply(path: Path, n: int) -> Path:
    """Flat, evenly coloured skin with depth noise and no wound, as a PLY."""
    rng = np.random.default_rng(7)
    xy = rng.uniform(-0.05, 0.05, (n, 2))
    points = np.column_stack([xy, rng.normal(0, 0.0003, n)])
    colors = np.clip(np.array([0.85, 0.65, 0.55]) + rng.normal(0, 0.01, (n, 3)), 0, 1)
    ply = (
        f"ply\nformat ascii 1.0\nelement vertex {n}\nproperty double x\nproperty double y\n"
        "property double z\nproperty uchar red\nproperty uchar green\nproperty uchar blue\n"
        "end_header\n"
    )
    rows = (
        f"{x} {y} {z} {r} {g} {b}"
        for (x, y, z), (r, g, b) in zip(points, np.rint(colors * 255).astype(int), strict=True)
    )
    path.write_text(ply + "\n".join(rows) + "\n")
    return path


def test_measure_refuses_a_scan_without_a_wound_with_the_reason(tmp_path: Path) -> None:
    line = failed(run("scan", "measure", str(_skin_ply(tmp_path / "skin.ply", 20_000))), 5)
    assert "no_wound_found" in line
    line = failed(run("scan", "measure", str(_skin_ply(tmp_path / "few.ply", 100))), 5)
    assert "too_few_points" in line


# --------------------------------------------------------------------------- capture
@pytest.fixture
def wound(tmp_path: Path) -> tuple[Path, str]:
    """A store with a patient and a wound: (store, wound id)."""
    store = tmp_path / "store"
    ok("--store", str(store), "init", "--clinic", "clinic-1")
    patient = ok(
        "--store", str(store), "patients", "add", "--given", "Ada", "--family", "Okafor",
        "--birth-date", "1950-03-01",
    )  # fmt: skip
    added = ok(
        "--store", str(store), "wounds", "add", "--patient", patient["id"], "--site", "sacrum"
    )
    return store, added["id"]


def _open(store: Path) -> EdgeClient:
    return EdgeClient.open(store, PassphraseKeyProvider(PASSPHRASE, params=Argon2Params.fast()))


def test_capture_synthetic_stores_an_assessment_with_two_blobs(wound: tuple[Path, str]) -> None:
    store, wound_id = wound
    shown = ok(
        "--store", str(store), "scan", "capture", "--wound", wound_id,
        "--synthetic", "--seed", "3", "--frames", "4", "--clinician", "RN Patel",
    )  # fmt: skip
    assert shown["wound_id"] == wound_id
    assert shown["clinician"] == "RN Patel"
    assert shown["measurements"]["area_cm2"] > 0
    assert [b["kind"] for b in shown["blobs"]] == ["scan-pointcloud", "measurement-details"]
    with _open(store) as client:
        (stored,) = client.assessments.for_wound(wound_id)
        assert stored.id == shown["id"]
        assert stored.device_id == client.device_id
        assert list(stored.quality_flags) == shown["quality_flags"]
        scan_ref, details_ref = stored.blobs
        cloud = point_cloud_from_ply_bytes(client.blobs.read_bytes(scan_ref.sha256))
        assert len(cloud) > 1000
        details = json.loads(client.blobs.read_bytes(details_ref.sha256))
        assert details["area_cm2"] == shown["measurements"]["area_cm2"]
        assert details["frame_count"] == 4


def test_capture_from_a_file_with_a_human_summary(
    wound: tuple[Path, str], synth_dir: tuple[Path, dict[str, Any]], measured: dict[str, Any]
) -> None:
    store, wound_id = wound
    result = run(
        "--store", str(store), "scan", "capture", "--wound", wound_id, "--from", str(synth_dir[0])
    )
    assert result.exit_code == 0, result.output
    assert f"wound_id: {wound_id}" in result.stdout.splitlines()
    with _open(store) as client:
        (stored,) = client.assessments.for_wound(wound_id)
    assert stored.measurements.area_cm2 == measured["area_cm2"]
    assert f"id: {stored.id}" in result.stdout.splitlines()


def test_capture_usage_and_lookup_errors(
    wound: tuple[Path, str], synth_dir: tuple[Path, dict[str, Any]]
) -> None:
    store, wound_id = wound
    base = ("--store", str(store), "scan", "capture", "--wound", wound_id)
    assert "exactly one" in failed(run(*base), 2)
    assert "exactly one" in failed(run(*base, "--synthetic", "--from", str(synth_dir[0])), 2)
    failed(run("--store", str(store), "scan", "capture", "--synthetic"), 2)  # no --wound
    line = failed(
        run("--store", str(store), "scan", "capture", "--wound", "nope", "--synthetic"), 4
    )
    assert "nope" in line
    refused = run(*base, "--from", str(_skin_ply(store.parent / "skin.ply", 20_000)))
    assert "no_wound_found" in failed(refused, 5)
    failed(run(*base, "--synthetic", COHERENCY_PASSPHRASE="wrong"), 3)
    with _open(store) as client:
        assert client.assessments.list() == []
        assert list(client.blobs.list()) == []


# ------------------------------------------------------------------------------ help
def test_every_scan_command_and_option_has_help() -> None:
    group = cli.commands["scan"]
    assert isinstance(group, click.Group)
    assert group.help
    assert sorted(group.commands) == ["capture", "measure", "synth"]
    for name, command in group.commands.items():
        assert command.help, name
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, f"scan {name} {param.opts[0]}"
        assert any(p.name == "as_json" for p in command.params), name
        result = run("scan", name, "--help")
        assert result.exit_code == 0 and "Usage: coherency scan " + name in result.stdout


def test_the_cli_choices_are_the_librarys() -> None:
    def choices(command: str, option: str) -> tuple[str, ...]:
        group = cli.commands["scan"]
        assert isinstance(group, click.Group)
        (param,) = (p for p in group.commands[command].params if p.name == option)
        assert isinstance(param.type, click.Choice)
        return tuple(param.type.choices)

    assert choices("synth", "surface") == lidar_capture.SURFACES
    assert choices("synth", "outline") == lidar_capture.OUTLINES
    assert choices("synth", "profile") == lidar_capture.PROFILES
    assert choices("synth", "out_format") == lidar_capture.SYNTHETIC_SCAN_FORMATS
    assert choices("measure", "fusion") == lidar_capture.FUSION_METHODS


def test_a_missing_accelerator_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "open3d", None)  # as if Open3D were not installed
    # A PLY needs NumPy alone; the other formats name the extra that reads them.
    line = failed(run("scan", "measure", str(_skin_ply(tmp_path / "skin.ply", 1000))), 5)
    assert "no_wound_found" in line  # measured, and found skin only
    cloud = tmp_path / "skin.xyz"
    cloud.write_text("0.01 0.02 0.03\n" * 100)
    line = failed(run("scan", "measure", str(cloud)), 6)
    assert "need Open3D" in line and "coherency[capture-accel]" in line


def test_capture_of_a_deleted_wound_is_not_found(wound: tuple[Path, str]) -> None:
    store, wound_id = wound
    with _open(store) as client:
        client.wounds.delete(wound_id)
    line = failed(
        run("--store", str(store), "scan", "capture", "--wound", wound_id, "--synthetic"), 4
    )
    assert "deleted" in line
    with _open(store) as client:
        assert client.assessments.list() == []


def test_synth_force_keeps_the_old_file_when_the_new_one_cannot_be_written(
    tmp_path: Path,
) -> None:
    victim = tmp_path / "notes.txt"
    victim.write_text("keep me", encoding="utf-8")
    line = failed(
        run("scan", "synth", str(victim), "--format", "ply", "--frames", "1", "--force"), 2
    )
    assert ".ply" in line and str(victim) in line
    assert victim.read_text(encoding="utf-8") == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # no staging left


def test_an_outline_in_the_wrong_units_is_a_clear_error(
    tmp_path: Path, synth_dir: tuple[Path, dict[str, Any]]
) -> None:
    millimetres = tmp_path / "outline.json"
    millimetres.write_text("[[10, 10, 0], [-10, 10, 0], [0, -10, 0]]", encoding="utf-8")
    line = failed(run("scan", "measure", str(synth_dir[0]), "--outline", str(millimetres)), 5)
    assert "outline" in line and "metres" in line
    garbage = tmp_path / "garbage.json"
    garbage.write_text('{"frame": null, "pixels": [[1, "a"]]}', encoding="utf-8")
    assert "outline" in failed(
        run("scan", "measure", str(synth_dir[0]), "--outline", str(garbage)), 5
    )


def test_measure_without_onnxruntime_says_the_model_was_not_used(
    synth_dir: tuple[Path, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    shown = ok("scan", "measure", str(synth_dir[0]), "--json")
    assert "model_not_used" in shown["quality"] and shown["model_output"] is None
    assert shown["boundary_source"] == "colour"
    monkeypatch.undo()
    with_model = ok("scan", "measure", str(synth_dir[0]), "--json")
    assert with_model["boundary_source"] == "model"
    assert with_model["model_output"]["model_id"] == "wound_seg"
    assert abs(sum(with_model["model_output"]["tissue_composition"].values()) - 100) < 0.1
