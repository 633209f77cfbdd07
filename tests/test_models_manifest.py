"""What the bundled model says about itself: its graph's ``metadata_props``, the input
version the runner checks, and the tissue-mix rule its manifest states.

The tissue-mix test recomputes the composition from the manifest's rule alone (its own
code, reading the rule's fields) and must get the figures `lidar_capture.measure`
reports, so the rule stays what the SDK does.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_sdk import MANIFEST_FILE, ModelError, ModelManifest, ModelRunner
from lidar_capture import MODEL_INPUT_VERSION, generate, measure, model_input, random_spec
from models import BUNDLED_FP32_DIR, BUNDLED_MODEL_DIR, bundled_runner
from models._release import restamp

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

OUR_KEYS = ("model_id", "model_version", "classes", "preprocessing_version")


def _metadata(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def _copy(folder: Path, tmp_path: Path) -> Path:
    out = tmp_path / folder.name
    shutil.copytree(folder, out)
    return out


def _rewrite_graph(folder: Path, **metadata: str) -> None:
    """Set `metadata` in the folder's graph and re-pin the manifest to the new bytes."""
    manifest = json.loads((folder / MANIFEST_FILE).read_bytes())
    path = folder / manifest["file"]
    graph = onnx.load(str(path))
    for prop in graph.metadata_props:
        if prop.key in metadata:
            prop.value = metadata[prop.key]
    onnx.save(graph, str(path))
    data = path.read_bytes()
    manifest.update(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    (folder / MANIFEST_FILE).write_bytes(ModelManifest.model_validate(manifest).to_bytes())


@pytest.mark.parametrize("folder", [BUNDLED_MODEL_DIR, BUNDLED_FP32_DIR], ids=["int8", "fp32"])
def test_the_bundled_graphs_carry_their_metadata(folder: Path) -> None:
    manifest = ModelManifest.from_bytes((folder / MANIFEST_FILE).read_bytes())
    meta = _metadata(folder / manifest.file)
    assert meta["model_id"] == manifest.model_id == "wound_seg"
    assert meta["model_version"] == manifest.version
    assert json.loads(meta["classes"]) == list(manifest.classes)
    assert meta["preprocessing_version"] == manifest.preprocessing_version == MODEL_INPUT_VERSION
    assert manifest.tissue_mix is not None and manifest.tissue_mix["classes"] == list(
        manifest.classes[1:]
    )


@pytest.mark.parametrize("folder", [BUNDLED_MODEL_DIR, BUNDLED_FP32_DIR], ids=["int8", "fp32"])
def test_restamping_an_unstamped_copy_reproduces_the_bundled_files(
    folder: Path, tmp_path: Path
) -> None:
    copy = _copy(folder, tmp_path)
    manifest = ModelManifest.from_bytes((folder / MANIFEST_FILE).read_bytes())
    graph_path = copy / manifest.file
    # Strip what the stamp writes, and the manifest's new fields: the files as they were.
    graph = onnx.load(str(graph_path))
    kept = [(p.key, p.value) for p in graph.metadata_props if p.key not in OUR_KEYS]
    del graph.metadata_props[:]
    for key, value in kept:
        graph.metadata_props.add(key=key, value=value)
    onnx.save(graph, str(graph_path))
    old = json.loads((copy / MANIFEST_FILE).read_bytes())
    del old["tissue_mix"], old["preprocessing"]["version"]
    (copy / MANIFEST_FILE).write_bytes(ModelManifest.model_validate(old).to_bytes())
    assert graph_path.read_bytes() != (folder / manifest.file).read_bytes()

    restamp(copy)
    assert graph_path.read_bytes() == (folder / manifest.file).read_bytes()
    assert (copy / MANIFEST_FILE).read_bytes() == (folder / MANIFEST_FILE).read_bytes()
    # The weights never changed: the graph is the one the stamp was given.
    assert onnx.load(str(graph_path)).graph == onnx.load(str(folder / manifest.file)).graph


def test_a_manifest_from_before_the_rule_still_reads_with_the_same_bytes() -> None:
    raw = json.loads((BUNDLED_MODEL_DIR / MANIFEST_FILE).read_bytes())
    del raw["tissue_mix"], raw["preprocessing"]["version"]
    old = json.dumps(raw, sort_keys=True, separators=(",", ":")).encode()
    manifest = ModelManifest.from_bytes(old)
    assert manifest.tissue_mix is None and manifest.preprocessing_version is None
    assert manifest.to_bytes() == old


def test_the_runner_refuses_a_graph_whose_metadata_disagrees(tmp_path: Path) -> None:
    copy = _copy(BUNDLED_MODEL_DIR, tmp_path)
    _rewrite_graph(copy, model_version="2.0.0")
    with pytest.raises(ModelError, match=r"metadata says model_version '2\.0\.0'"):
        ModelRunner.load(copy)
    copy2 = _copy(BUNDLED_FP32_DIR, tmp_path / "b")
    _rewrite_graph(copy2, classes='["background","slough","granulation","necrosis","epithelium"]')
    with pytest.raises(ModelError, match="metadata says classes"):
        ModelRunner.load(copy2)


def test_the_runner_refuses_another_input_version(tmp_path: Path) -> None:
    copy = _copy(BUNDLED_MODEL_DIR, tmp_path)
    _rewrite_graph(copy, preprocessing_version="wound-input/2")
    # The graph and the manifest must agree first ...
    with pytest.raises(ModelError, match="preprocessing_version"):
        ModelRunner.load(copy)
    raw = json.loads((copy / MANIFEST_FILE).read_bytes())
    raw["preprocessing"]["version"] = "wound-input/2"
    (copy / MANIFEST_FILE).write_bytes(ModelManifest.model_validate(raw).to_bytes())
    assert ModelRunner.load(copy).manifest.preprocessing_version == "wound-input/2"
    # ... and then the model must read the input this SDK builds.
    with pytest.raises(ModelError, match=r"reads input 'wound-input/2'.*builds 'wound-input/1'"):
        ModelRunner.load(copy, input_version=MODEL_INPUT_VERSION)


def _tissue_mix_from_rule(
    rule: dict[str, Any],
    classes: list[str],
    channels: list[str],
    probabilities: np.ndarray,
    image: np.ndarray,
    input_x: np.ndarray,
    input_y: np.ndarray,
    grid: np.ndarray,
    outline: np.ndarray,
) -> dict[str, float]:
    """The composition as the manifest's rule states it, written from the rule alone."""
    assert rule["rule"] == 1 and rule["labels"] == "argmax"
    assert rule["argmax_over"] == "all_classes" and rule["grid"] == "measurement"
    assert rule["resample"] == "nearest" and rule["outside_input"] == "background"
    assert rule["within"] == "wound_outline" and rule["weight"] == "cell"
    assert rule["denominator"] == "tissue_cells" and rule["rounding"] == "half_even"
    labels = probabilities.argmax(axis=0)
    invalid = rule["invalid_pixels"]
    channel = channels.index(invalid["channel"])
    labels[image[channel] <= invalid["at_most"]] = classes.index(invalid["label"])
    # Nearest input pixel of every grid cell (ties to the even index, as NumPy rounds).
    step = input_x[1] - input_x[0]
    i = np.rint((grid[:, None] - input_x[0]) / step).astype(int) + np.zeros((1, len(grid)), int)
    j = np.rint((grid[None, :] - input_y[0]) / step).astype(int) + np.zeros((len(grid), 1), int)
    on = (i >= 0) & (i < labels.shape[0]) & (j >= 0) & (j < labels.shape[1])
    cell_labels = np.zeros(outline.shape, dtype=int)
    cell_labels[on] = labels[i[on], j[on]]
    counts = {
        name: int(np.sum((cell_labels == classes.index(name)) & outline))
        for name in rule["classes"]
    }
    total = sum(counts.values())
    if total == 0:
        assert rule["empty"] == "no_composition"
        return {}
    return {n: round(rule["scale"] * c / total, rule["decimals"]) for n, c in counts.items()}


@pytest.mark.slow
@pytest.mark.parametrize("seed", [10_001, 10_002, 10_003])
def test_the_manifest_tissue_mix_rule_reproduces_the_sdk(seed: int) -> None:
    runner = bundled_runner()
    rule = runner.manifest.tissue_mix
    assert rule is not None
    scan = generate(random_spec(seed, frames=1 + 2 * (seed % 2))).scan
    # The model's input is framed by the colour/depth boundary (`measure` without a model).
    inp = model_input(measure(scan).raster)
    result = measure(scan, model=runner)
    assert result.boundary_source == "model" and result.model_output is not None
    probabilities = runner.predict(inp.image[None])[0]
    mix = _tissue_mix_from_rule(
        rule,
        list(runner.manifest.classes),
        list(runner.manifest.preprocessing["channels"]),
        probabilities,
        inp.image,
        inp.centres_x,
        inp.centres_y,
        result.raster.centres,
        result.raster.wound,
    )
    assert mix and sum(mix.values()) == pytest.approx(100.0, abs=0.05)
    assert mix == result.model_output.tissue_composition


@pytest.mark.slow
def test_measure_does_not_use_a_plugged_model_of_another_input_version() -> None:
    runner = bundled_runner()
    newer = runner.manifest.model_copy(
        update={"preprocessing": {**runner.manifest.preprocessing, "version": "wound-input/2"}}
    )

    class Plugged:
        """Another runtime that forgot to check the input version."""

        manifest = newer

        def segment(self, image: Any, valid: Any = None) -> Any:
            return runner.segment(image, valid)

    scan = generate(random_spec(10_002, frames=1)).scan
    result = measure(scan, model=Plugged())
    assert "model_incompatible" in result.quality and result.boundary_source != "model"
    assert measure(scan, model=runner).boundary_source == "model"
