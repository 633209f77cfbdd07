"""The wound model's recipe (train, export, quantize, evaluate, bench) and its release.

The recipe tests run the whole path on a tiny synthetic set (`quick`); the release
tests check the committed models against their manifests and on fresh held-out scans.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import shutil
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_sdk import ModelManifest, ModelRunner, ModelVerificationError
from lidar_capture import MODEL_CHANNELS, MODEL_INPUT_SIZE, TISSUES
from models import (
    MAX_MODEL_BYTES,
    RELEASE_DIR,
    ModelRecipeError,
    bench,
    build_dataset,
    evaluate,
    export,
    quantize,
    release,
    train,
    verify,
)
from models._dataset import _sample, augment_batch, frames_for_seed
from models._release import _group_worse, _phantom_section, model_card
from models._subgroups import SKIN_GROUPS, evaluate_groups, group_scores, skin_group

RELEASE = RELEASE_DIR
TRAIN_SEEDS = range(0, 24)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("wound-data")


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory, cache: Path) -> dict[str, Any]:
    """One quick release: train, export, quantize, evaluate, bench, manifests, card."""
    pytest.importorskip("torch", reason="training needs the [train] extra (torch)")
    root = tmp_path_factory.mktemp("quick")
    result = release(
        root / "release",
        work_dir=root / "work",
        cache_dir=cache,
        seeds_train=TRAIN_SEEDS,
        seeds_calibration=range(100, 104),
        seeds_eval=range(200, 205),
        quick=True,
    )
    return {"root": root, "result": result}


# --------------------------------------------------------------------------- dataset


def test_dataset_is_deterministic_and_cached(cache: Path) -> None:
    x, y = build_dataset(range(40, 42), cache_dir=cache)
    assert x.shape == (2, len(MODEL_CHANNELS), MODEL_INPUT_SIZE, MODEL_INPUT_SIZE)
    assert x.dtype == np.float32 and y.dtype == np.uint8 and y.shape == x.shape[:1] + x.shape[2:]
    assert int(y.max()) < len(TISSUES) and (y > 0).any()
    (cached,) = cache.glob("wound_40_42_1_f1-3_*.npz")
    stamp = cached.stat().st_mtime_ns
    again_x, again_y = build_dataset(range(40, 42), cache_dir=cache)
    assert cached.stat().st_mtime_ns == stamp  # read back, not rebuilt
    np.testing.assert_array_equal(again_x, x)
    np.testing.assert_array_equal(again_y, y)
    # What the cache holds is exactly a fresh render of the same seed and frame count.
    fresh = _sample(41, frames_for_seed(41, (1, 3)))
    assert fresh is not None
    np.testing.assert_array_equal(fresh[0], x[1])
    np.testing.assert_array_equal(fresh[1], y[1])
    assert [frames_for_seed(s, (1, 3)) for s in range(4)] == [1, 3, 1, 3]
    with pytest.raises(ValueError, match="frames_choices"):
        build_dataset(range(1), frames_choices=())


def test_augmentation_moves_inputs_and_labels_together() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (6, 5, 8, 8)).astype(np.float32)
    x[:, 4] = rng.integers(0, 2, (6, 8, 8))
    x[:, :4] *= x[:, 4:5]  # as model_input: nothing but coverage outside it
    y = rng.integers(0, 5, (6, 8, 8)).astype(np.uint8)
    ax, ay = augment_batch(x, y, np.random.default_rng(1))
    assert ax.shape == x.shape and ay.shape == y.shape
    transforms_seen = set()
    for i in range(len(x)):
        # Exactly one of the eight dihedral views maps labels, depth and coverage alike.
        matches = []
        for k in range(4):
            for flip in (False, True):
                ty = np.rot90(y[i], k)
                tx = np.rot90(x[i], k, axes=(1, 2))
                if flip:
                    ty, tx = ty[:, ::-1], tx[:, :, ::-1]
                if np.array_equal(ty, ay[i]) and np.array_equal(tx[3:], ax[i, 3:]):
                    matches.append((k, flip))
                    rgb = tx[:3]
        assert len(matches) == 1
        transforms_seen.add(matches[0])
        assert ax[i, :3].min() >= 0 and ax[i, :3].max() <= 1
        assert np.all(ax[i, :3][:, ax[i, 4] < 0.5] == 0)
        assert not np.allclose(ax[i, :3], rgb)  # brightness/tint jitter applied
    assert len(transforms_seen) > 1


# --------------------------------------------------------------------------- recipe


@pytest.mark.slow
def test_quick_release_runs_end_to_end(quick: dict[str, Any], cache: Path) -> None:
    import onnx
    import torch

    root: Path = quick["root"]
    log = json.loads((root / "work" / "training_log.json").read_text())
    assert log["scans"] == len(TRAIN_SEEDS) - log["refused"] > 0
    assert len(log["epochs"]) == 2 and all(np.isfinite(e["loss"]) for e in log["epochs"])

    out = root / "release"
    fp32, int8 = out / "fp32" / "wound_seg_fp32.onnx", out / "int8" / "wound_seg_int8.onnx"
    graph = onnx.load(str(fp32))
    assert graph.opset_import[0].version == 17
    assert [i.name for i in graph.graph.input] == ["input"]
    assert [o.name for o in graph.graph.output] == ["logits"]
    # The int8 graph really is quantized: int8 convolution weights and Q/DQ pairs.
    qgraph = onnx.load(str(int8))
    ops = {n.op_type for n in qgraph.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    int8_weights = [t for t in qgraph.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert len(int8_weights) >= 10
    assert int8.stat().st_size < fp32.stat().st_size / 2

    # onnxruntime reproduces torch on a real canonical input.
    x, y = build_dataset(range(200, 205), cache_dir=cache)
    from models._onnx import open_session, run
    from models._train import load_net

    net, _ = load_net(root / "work" / "model.pt")
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    got = run(open_session(fp32, 1), x)
    assert np.max(np.abs(got - expected)) < 1e-3
    assert quick["result"]["export_max_abs_diff"] < 1e-3

    scores = quick["result"]["evaluation"]
    assert scores["fp32"] == evaluate(fp32, x, y)
    for kind in ("fp32", "int8"):
        assert scores[kind]["scans"] == len(x)
        assert 0 <= scores[kind]["wound"]["dice"] <= 1
        assert set(scores[kind]["classes"]) == set(TISSUES)
    latency = quick["result"]["bench"]
    assert set(latency["fp32_ms"]) == set(latency["int8_ms"]) == {"1", "2"}
    assert all(ms > 0 for ms in latency["int8_ms"].values())

    found = verify(out)
    assert set(found) == {"fp32", "int8"}
    assert found["int8"].quantization == "int8" and found["fp32"].quantization == "fp32"
    card = (out / "MODEL_CARD.md").read_text()
    assert "not a clinical device" in card and "synthetic" in card
    # The release stamps both graphs and states the tissue-mix rule and the groups.
    for folder in ("fp32", "int8"):
        meta = {
            p.key: p.value for p in onnx.load(str(out / folder / found[folder].file)).metadata_props
        }
        assert meta["preprocessing_version"] == found[folder].preprocessing_version
        assert found[folder].tissue_mix is not None
    groups = quick["result"]["by_group"]
    assert groups["scans"] + groups["refused"] == 5
    assert sum(g["scans"] for g in groups["skin_tone"].values()) == groups["scans"]
    assert "By skin tone" in card or groups["scans"] < 2


@pytest.mark.slow
def test_export_quantize_and_bench_as_functions(
    quick: dict[str, Any], cache: Path, tmp_path: Path
) -> None:
    work = quick["root"] / "work"
    diff = export(work / "model.pt", tmp_path / "m.onnx")
    assert 0 <= diff < 1e-3
    x, _ = build_dataset(range(100, 104), cache_dir=cache)
    out = quantize(tmp_path / "m.onnx", tmp_path / "q.onnx", x)
    assert out.stat().st_size > 0
    with pytest.raises(ValueError, match="activations"):
        quantize(tmp_path / "m.onnx", tmp_path / "q2.onnx", x, activations="int4")
    timing = bench(tmp_path / "m.onnx", out, threads=(1,), runs=3, warmup=1, blocks=1)
    assert set(timing["speedup"]) == {"1"}

    # Unreadable inputs are one clear error naming the file.
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a graph")
    with pytest.raises(ModelRecipeError, match=r"junk\.onnx does not load"):
        evaluate(junk, x, np.zeros((len(x), *x.shape[2:]), dtype=np.uint8))
    with pytest.raises(ModelRecipeError, match="missing"):
        export(tmp_path / "none.pt", tmp_path / "none.onnx")
    with pytest.raises(ModelRecipeError, match="not a wound model checkpoint"):
        export(junk, tmp_path / "none.onnx")


@pytest.mark.slow
def test_training_is_deterministic(quick: dict[str, Any], cache: Path, tmp_path: Path) -> None:
    import torch

    def first_loss(folder: str, seed: int) -> tuple[float, dict[str, Any]]:
        checkpoint = train(
            tmp_path / folder,
            seeds_train=TRAIN_SEEDS,
            epochs=1,
            seed=seed,
            quick=True,
            cache_dir=cache,
        )
        log = json.loads((tmp_path / folder / "training_log.json").read_text())
        return log["epochs"][0]["loss"], torch.load(checkpoint, weights_only=True)["state_dict"]

    loss_a, state_a = first_loss("a", 0)
    loss_b, state_b = first_loss("b", 0)
    loss_c, _ = first_loss("c", 1)
    assert loss_a == loss_b
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert loss_c != loss_a


# --------------------------------------------------------------------------- release


def test_committed_models_match_their_manifests(tmp_path: Path) -> None:
    found = verify(RELEASE)
    assert set(found) == {"fp32", "int8"}
    for folder, manifest in found.items():
        data = (RELEASE / folder / manifest.file).read_bytes()
        assert hashlib.sha256(data).hexdigest() == manifest.sha256
        assert len(data) == manifest.size <= MAX_MODEL_BYTES
        assert manifest.model_id == "wound_seg" and manifest.version == "1.0.0"
        assert manifest.quantization == folder
        assert manifest.classes == TISSUES
        assert manifest.input.shape == (1, len(MODEL_CHANNELS), MODEL_INPUT_SIZE, MODEL_INPUT_SIZE)
        assert manifest.preprocessing["channels"] == list(MODEL_CHANNELS)
        assert manifest.metrics["wound_dice"] >= 0.8
        assert "synthetic" in str(manifest.provenance["data"])
        # The manifest on disk is the canonical bytes, so it can be signed as it is.
        raw = (RELEASE / folder / "manifest.json").read_bytes()
        assert ModelManifest.from_bytes(raw).to_bytes() == raw
    card = (RELEASE / "MODEL_CARD.md").read_text()
    assert "not a clinical device" in card and "synthetic" in card

    # A changed byte in the graph is refused.
    copy = tmp_path / "wound_seg"
    shutil.copytree(RELEASE / "int8", copy / "int8")
    graph = copy / "int8" / found["int8"].file
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0x01
    graph.write_bytes(bytes(data))
    with pytest.raises(ModelVerificationError, match="sha256"):
        verify(copy)


def test_committed_int8_model_segments_fresh_scans() -> None:
    # Seeds no training, calibration or evaluation range used.
    x, y = build_dataset(range(20_000, 20_004))
    int8 = RELEASE / "int8"
    manifest = verify(RELEASE)["int8"]
    scores = evaluate(int8 / manifest.file, x, y)
    assert scores["wound"]["dice"] >= 0.8
    # The device runtime reads it the same way.
    runner = ModelRunner.load(int8)
    segmentation = runner.segment(x[0], valid=x[0, 4] > 0.5)
    truth = y[0] > 0
    dice = (
        2 * (segmentation.wound_mask & truth).sum() / (segmentation.wound_mask.sum() + truth.sum())
    )
    assert dice >= 0.8


def _row(tone: int, site: str, tp: int, fp: int, fn: int, area: float | None) -> dict[str, Any]:
    """One scan's figures as `models._subgroups` records them."""
    return {
        "skin_tone": tone,
        "surface": site,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "area_error_pct": area,
        "boundary_source": None if area is None else "model",
    }


def test_scores_by_group_pool_pixels_and_take_medians() -> None:
    rows = [
        _row(1, "plane", 90, 10, 0, -2.0),
        _row(6, "calf", 50, 0, 50, 4.0),
        _row(5, "calf", 10, 0, 0, None),
    ]
    assert [skin_group(t) for t in range(1, 7)] == [
        "I-II",
        "I-II",
        "III-IV",
        "III-IV",
        "V-VI",
        "V-VI",
    ]
    assert set(SKIN_GROUPS) == {"I-II", "III-IV", "V-VI"}
    every = group_scores(rows)
    assert every["wound_dice"] == pytest.approx(2 * 150 / (2 * 150 + 10 + 50))
    assert every["wound_iou"] == pytest.approx(150 / (150 + 10 + 50))
    assert every["area_scans"] == every["model_boundary_scans"] == 2
    assert every["area_abs_median_pct"] == 3.0 and every["area_signed_median_pct"] == 1.0
    assert every["area_abs_worst_pct"] == 4.0
    dark = group_scores(r for r in rows if skin_group(r["skin_tone"]) == "V-VI")
    assert dark["scans"] == 2 and dark["wound_dice"] == pytest.approx(2 * 60 / (120 + 50))
    empty = group_scores([])
    assert empty["wound_dice"] is None and empty["area_abs_median_pct"] is None

    groups = {
        "all": every,
        "skin_tone": {"I-II": group_scores(rows[:1]), "III-IV": empty, "V-VI": dark},
        "surface": {"plane": group_scores(rows[:1]), "calf": group_scores(rows[1:])},
    }
    text = _group_worse(groups)
    assert "By skin tone: wound Dice is lowest for V-VI" in text
    assert "median area error largest for V-VI (4.00 %; smallest I-II, 2.00 %)" in text
    assert "By body site: wound Dice is lowest for calf" in text

    assert _phantom_section(None, groups) == ""
    phantoms = {
        "seeds": [0, 3],
        "scans": 3,
        "refused": 0,
        "frames": 10,
        "all": every,
        "skin_tone": {"I-II": group_scores(rows[:1]), "III-IV": empty, "V-VI": dark},
    }
    section = _phantom_section(phantoms, groups)
    assert "never used in training, calibration or tuning" in section
    assert "Worst skin group on the phantoms: V-VI (4.00 % median)" in section
    assert "| III-IV | 0 | n/a | n/a | n/a |" in section


@pytest.mark.slow
def test_evaluate_groups_on_fresh_scans() -> None:
    groups = evaluate_groups(RELEASE / "int8", range(20_000, 20_003), workers=1)
    assert groups["scans"] + groups["refused"] == 3 and groups["scans"] >= 1
    for kind in ("skin_tone", "surface"):
        assert sum(g["scans"] for g in groups[kind].values()) == groups["scans"]
    assert groups["all"]["wound_dice"] >= 0.8
    assert groups["all"]["area_abs_worst_pct"] < 15


def test_the_model_card_comes_from_its_template() -> None:
    # The committed card is the template filled in from the committed release's files.
    evaluation = json.loads((RELEASE / "evaluation.json").read_text(encoding="utf-8"))
    provenance = json.loads((RELEASE / "fp32" / "manifest.json").read_text(encoding="utf-8"))
    log = json.loads((RELEASE / "training_log.json").read_text(encoding="utf-8"))
    card = model_card(evaluation, provenance["provenance"], log)
    assert card == (RELEASE / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "$" not in card
    # The template ships with the package (pyproject's package-data).
    root = Path(__file__).resolve().parents[1]
    data = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = data["tool"]["setuptools"]["package-data"]["models"]
    assert any(fnmatch.fnmatch("templates/model_card.md", p) for p in patterns)
