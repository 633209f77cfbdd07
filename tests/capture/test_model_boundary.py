"""The pipeline with a wound model: the model's mask draws the boundary.

The model here is a real ONNX graph run by `edge_sdk.ModelRunner`: a 1x1 convolution
that calls a cell granulation where the floor is more than 1 mm below the skin — simple
enough that what it should say is known, run through the same runtime as the trained one.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from edge_sdk import (
    Argon2Params,
    EdgeClient,
    ModelManifest,
    ModelRunner,
    ModelTensor,
    PassphraseKeyProvider,
)
from lidar_capture import (
    MODEL_CHANNELS,
    MODEL_INPUT_SIZE,
    SyntheticScan,
    WoundSpec,
    generate,
    measure,
    record_assessment,
)

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

CLASSES = ("background", "granulation", "slough", "necrosis", "epithelium")
C, S = len(MODEL_CHANNELS), MODEL_INPUT_SIZE
DEPTH = MODEL_CHANNELS.index("depth_cm")


def depth_model(threshold_cm: float | None) -> tuple[ModelManifest, bytes]:
    """Granulation where depth > threshold; with None, background everywhere."""
    from onnx import TensorProto, helper, numpy_helper

    weights = np.zeros((5, C, 1, 1), dtype=np.float32)
    bias = np.array([0.0, -10.0, -10.0, -10.0, -10.0], dtype=np.float32)
    if threshold_cm is not None:
        weights[1, DEPTH] = 40.0
        bias[1] = -40.0 * threshold_cm
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w", "b"], ["logits"])],
        "depth-threshold",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, C, S, S])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 5, S, S])],
        [numpy_helper.from_array(weights, "w"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    data = model.SerializeToString()
    manifest = ModelManifest(
        format=1,
        model_id="depth-threshold",
        version="0.1.0",
        file="depth.onnx",
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        input=ModelTensor(name="input", shape=(1, C, S, S)),
        output=ModelTensor(name="logits", shape=(1, 5, S, S)),
        classes=CLASSES,
        preprocessing={"output_kind": "logits", "channels": list(MODEL_CHANNELS), "size": S},
        metrics={},
        provenance={"data": "none: a fixed test graph"},
        created_at=datetime(2026, 11, 24, tzinfo=UTC),
        quantization="fp32",
    )
    return manifest, data


@pytest.fixture(scope="module")
def punched() -> SyntheticScan:
    # Steep walls: the 1 mm depth contour is close to the true rim.
    return generate(WoundSpec(seed=5, surface="plane", profile="punched", radius_m=0.015,
                              max_depth_m=0.006, frames=3))  # fmt: skip


def test_the_model_draws_the_boundary_and_gives_the_tissue_mix(punched: SyntheticScan) -> None:
    runner = ModelRunner(*depth_model(0.1))
    geometric = measure(punched.scan)
    with_model = measure(punched.scan, model=runner)
    assert geometric.boundary_source == "colour" and "model_not_used" in geometric.quality
    assert with_model.boundary_source == "model" and "model_not_used" not in with_model.quality
    out = with_model.model_output
    assert out is not None
    assert (out.model_id, out.model_version) == ("depth-threshold", "0.1.0")
    assert out.tissue_composition["granulation"] == pytest.approx(100.0)
    assert 0.9 <= out.confidence <= 1.0
    truth = punched.truth.area_cm2
    # The 1 mm contour of a punched wound lies a little inside the rim.
    assert 0.75 * truth < with_model.area_cm2 < 1.02 * truth
    assert with_model.area_cm2 != geometric.area_cm2
    assert "model" in with_model.timings_ms
    assert with_model.to_json()["model_output"]["model_id"] == "depth-threshold"


def test_a_model_that_sees_no_wound_leaves_the_geometric_boundary(punched: SyntheticScan) -> None:
    runner = ModelRunner(*depth_model(None))
    m = measure(punched.scan, model=runner)
    assert m.boundary_source == "colour"
    assert "model_found_no_wound" in m.quality and m.model_output is None


def test_the_assessment_stores_the_model_output(punched: SyntheticScan, tmp_path: Path) -> None:
    m = measure(punched.scan, model=ModelRunner(*depth_model(0.1)))
    keys = PassphraseKeyProvider("pass phrase", params=Argon2Params.fast())
    with EdgeClient.init(tmp_path / "store", keys, clinic_id="clinic-1") as client:
        patient = client.patients.add(given_name="A", family_name="B", birth_date="1950-01-01")
        wound = client.wounds.add(patient_id=patient.id, body_site="sacrum")
        stored = client.assessments.get(record_assessment(client, wound.id, m).id)
    assert stored.model_output is not None
    assert stored.model_output.model_id == "depth-threshold"
    assert stored.model_output.tissue_composition["granulation"] == pytest.approx(100.0)
