"""The on-device model runtime: manifests, signatures, the ONNX Runtime runner, the store.

Real onnxruntime sessions on tiny ONNX graphs built here (a 1x1 convolution from the five
canonical channels to five classes, fp32 and statically quantized int8), real Ed25519
keys, real files.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from edge_sdk import (
    MANIFEST_FILE,
    SIGNATURE_FILE,
    EdgeError,
    Enrollment,
    MemoryHub,
    MemoryTransport,
    ModelError,
    ModelManifest,
    ModelRunner,
    ModelStore,
    ModelTensor,
    ModelUnavailableError,
    ModelVerificationError,
    sign_manifest,
    verify_model,
)
from models import BUNDLED_MODEL_DIR, choose_runner, verify_model_folder

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

CLASSES = ("background", "granulation", "slough", "necrosis", "epithelium")
C, H, W = 5, 8, 8
# Class k's logit is 4 * channel k + 0.1 * (sum of channels) + bias: an input close to
# one-hot in channel k is labelled k with a wide margin (so int8 agrees with fp32).
WEIGHTS = (4.0 * np.eye(C) + 0.1).astype(np.float32)
BIAS = np.array([0.05, 0.0, -0.02, 0.01, 0.0], dtype=np.float32)


def build_graph(*, softmax: bool = False, input_name: str = "image") -> bytes:
    """A 1x1 Conv segmentation graph (fixed batch 1), optionally ending in a Softmax."""
    from onnx import TensorProto, helper, numpy_helper

    out = "probabilities" if softmax else "logits"
    nodes = [helper.make_node("Conv", [input_name, "w", "b"], ["conv"])]
    nodes.append(
        helper.make_node("Softmax", ["conv"], [out], axis=1)
        if softmax
        else helper.make_node("Identity", ["conv"], [out])
    )
    graph = helper.make_graph(
        nodes,
        "tiny-wound-seg",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [1, C, H, W])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, C, H, W])],
        [
            numpy_helper.from_array(WEIGHTS.reshape(C, C, 1, 1), "w"),
            numpy_helper.from_array(BIAS, "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def label_map(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, C, size=(H, W))


def make_input(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """A (C, H, W) float32 input: one-hot of `labels` plus a little noise."""
    noise = np.random.default_rng(seed).uniform(0.0, 0.2, size=(C, H, W))
    one_hot = (np.arange(C)[:, None, None] == labels[None]).astype(np.float64)
    return (one_hot + noise).astype(np.float32)


def reference_probabilities(image: np.ndarray) -> np.ndarray:
    logits = np.einsum("kc,chw->khw", WEIGHTS.astype(np.float64), image) + BIAS[:, None, None]
    e = np.exp(logits - logits.max(axis=0))
    return e / e.sum(axis=0)


def quantize(tmp_path: Path, fp32: bytes) -> bytes:
    """Static int8 (QDQ) quantization with a small calibration set."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches: Iterator[dict[str, np.ndarray]] = iter(
                {"image": make_input(label_map(s), seed=s)[None]} for s in range(8)
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    src, dst = tmp_path / "fp32.onnx", tmp_path / "int8.onnx"
    src.write_bytes(fp32)
    quantize_static(
        str(src),
        str(dst),
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
    )
    return dst.read_bytes()


def make_manifest(model: bytes, **changes: Any) -> ModelManifest:
    softmax = changes.pop("softmax", False)
    fields: dict[str, Any] = {
        "format": 1,
        "model_id": "wound-seg-test",
        "version": "1.0.0",
        "file": "wound-seg.onnx",
        "sha256": hashlib.sha256(model).hexdigest(),
        "size": len(model),
        "input": ModelTensor(name="image", shape=(1, C, H, W)),
        "output": ModelTensor(name="probabilities" if softmax else "logits", shape=(1, C, H, W)),
        "classes": CLASSES,
        "preprocessing": {
            "output_kind": "probabilities" if softmax else "logits",
            "channels": ["red", "green", "blue", "depth_cm", "valid"],
            "size": H,
        },
        "metrics": {"dice_wound": 0.93, "dice_granulation": 0.81},
        "provenance": {"data": "synthetic", "seed": 7, "renders": 1200},
        "created_at": datetime(2025, 5, 1, 12, 30, tzinfo=UTC),
        "quantization": "fp32",
    }
    fields.update(changes)
    return ModelManifest(**fields)


def public_bytes(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


@pytest.fixture(scope="module")
def fp32_model() -> bytes:
    return build_graph()


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory: pytest.TempPathFactory, fp32_model: bytes) -> bytes:
    return quantize(tmp_path_factory.mktemp("quant"), fp32_model)


@pytest.fixture(scope="module")
def server_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture()
def signed(fp32_model: bytes, server_key: Ed25519PrivateKey) -> tuple[bytes, bytes, bytes]:
    manifest = make_manifest(fp32_model)
    return manifest.to_bytes(), fp32_model, sign_manifest(manifest, server_key)


# --- manifests -----------------------------------------------------------------------


def test_manifest_round_trip_and_canonical_bytes(fp32_model: bytes) -> None:
    manifest = make_manifest(fp32_model)
    data = manifest.to_bytes()
    assert ModelManifest.from_bytes(data) == manifest
    assert ModelManifest.from_bytes(data).to_bytes() == data
    # Sorted keys, no whitespace: the same bytes whatever order the JSON came in.
    parsed = json.loads(data)
    assert data == json.dumps(parsed, sort_keys=True, separators=(",", ":")).encode()
    shuffled = json.dumps(dict(reversed(list(parsed.items()))), indent=2).encode()
    assert ModelManifest.from_bytes(shuffled).to_bytes() == data
    assert b" " not in data
    assert manifest.output_kind == "logits"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "invalid"),
    ],
)
def test_manifest_from_bad_bytes(data: bytes, expected: str) -> None:
    with pytest.raises(ModelError, match=expected):
        ModelManifest.from_bytes(data)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"format": 2}, "format 2 is not supported"),
        ({"file": "../evil.onnx"}, "file"),
        ({"sha256": "XYZ"}, "sha256"),
        ({"classes": ["wound", "skin", "a", "b", "c"]}, "background"),
        ({"classes": ["background", "granulation"]}, "2 classes"),
        ({"preprocessing": {"size": 8}}, "output_kind"),
        ({"created_at": "2025-05-01T12:30:00"}, "created_at"),
        ({"metrics": {"dice": "NaN"}}, "finite"),
        ({"unknown": 1}, "unknown"),
    ],
)
def test_manifest_schema_errors_name_the_field(
    fp32_model: bytes, change: dict[str, Any], expected: str
) -> None:
    raw = json.loads(make_manifest(fp32_model).to_bytes())
    raw.update(change)
    with pytest.raises(ModelError, match=expected) as info:
        ModelManifest.from_bytes(json.dumps(raw).encode())
    assert isinstance(info.value, EdgeError)


# --- verify_model --------------------------------------------------------------------


def test_verify_model_accepts_a_good_model(
    signed: tuple[bytes, bytes, bytes], server_key: Ed25519PrivateKey
) -> None:
    manifest_bytes, model, signature = signed
    key = public_bytes(server_key)
    got = verify_model(manifest_bytes, model, signature=signature, public_key=key)
    assert got.model_id == "wound-seg-test"
    # No pinned key (the bundled model): sha256 and size only.
    assert verify_model(manifest_bytes, model, signature=None, public_key=None) == got


def test_verify_model_refusals(
    signed: tuple[bytes, bytes, bytes], server_key: Ed25519PrivateKey
) -> None:
    manifest_bytes, model, signature = signed
    key = public_bytes(server_key)

    flipped = bytearray(model)
    flipped[len(flipped) // 2] ^= 0x01
    with pytest.raises(ModelVerificationError, match="sha256"):
        verify_model(manifest_bytes, bytes(flipped), signature=signature, public_key=key)

    with pytest.raises(ModelVerificationError, match=r"is \d+ bytes; its manifest says"):
        verify_model(manifest_bytes, model + b"\0", signature=signature, public_key=key)

    with pytest.raises(ModelVerificationError, match="unsigned"):
        verify_model(manifest_bytes, model, signature=None, public_key=key)

    other = Ed25519PrivateKey.generate()
    with pytest.raises(ModelVerificationError, match="signature does not verify"):
        verify_model(manifest_bytes, model, signature=other.sign(manifest_bytes), public_key=key)

    raw = json.loads(manifest_bytes)
    raw["metrics"]["dice_wound"] = 0.99  # a better-looking model, same signature
    tampered = ModelManifest.model_validate(raw).to_bytes()
    with pytest.raises(ModelVerificationError, match="signature does not verify"):
        verify_model(tampered, model, signature=signature, public_key=key)


# --- the runner ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["fp32", "int8", "fp32-softmax"])
def test_runner_predicts_the_expected_labels(
    kind: str, fp32_model: bytes, int8_model: bytes
) -> None:
    softmax = kind == "fp32-softmax"
    model = {"fp32": fp32_model, "int8": int8_model}.get(kind) or build_graph(softmax=True)
    quantization = "int8" if kind == "int8" else "fp32"
    runner = ModelRunner(make_manifest(model, softmax=softmax, quantization=quantization), model)
    labels = label_map(3)
    image = make_input(labels, seed=3)

    probs = runner.predict(image[None])

    assert probs.shape == (1, C, H, W) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert np.array_equal(probs[0].argmax(axis=0), labels)
    tolerance = 0.05 if kind == "int8" else 1e-5
    np.testing.assert_allclose(probs[0], reference_probabilities(image), atol=tolerance)


def test_segment_composition_and_confidence(fp32_model: bytes) -> None:
    runner = ModelRunner(make_manifest(fp32_model), fp32_model)
    labels = label_map(5)
    image = make_input(labels, seed=5)
    valid = np.ones((H, W), dtype=bool)
    valid[:, :2] = False  # the scan did not see the two left columns

    seg = runner.segment(image, valid)

    expected = np.where(valid, labels, 0)
    assert seg.labels.dtype == np.uint8 and np.array_equal(seg.labels, expected)
    assert np.array_equal(seg.wound_mask, expected > 0)
    wound = int((expected > 0).sum())
    assert list(seg.tissue_composition) == list(CLASSES[1:])
    assert sum(seg.tissue_composition.values()) == pytest.approx(100.0)
    for k, name in enumerate(CLASSES[1:], start=1):
        assert seg.tissue_composition[name] == pytest.approx(100 * (expected == k).sum() / wound)
    top = reference_probabilities(image).max(axis=0)
    assert 0.0 <= seg.confidence <= 1.0
    assert seg.confidence == pytest.approx(top[expected > 0].mean(), abs=1e-5)
    assert seg.probabilities.shape == (C, H, W)
    assert (seg.model_id, seg.model_version) == ("wound-seg-test", "1.0.0")


def test_segment_without_a_wound(fp32_model: bytes) -> None:
    runner = ModelRunner(make_manifest(fp32_model), fp32_model)
    image = make_input(np.zeros((H, W), dtype=int))

    seg = runner.segment(image)

    assert not seg.wound_mask.any()
    assert set(seg.tissue_composition.values()) == {0.0}
    top = reference_probabilities(image).max(axis=0)
    assert seg.confidence == pytest.approx(top.mean(), abs=1e-5)


@pytest.mark.parametrize(
    ("batch", "expected"),
    [
        (np.zeros((1, C, H, W), dtype=np.float64), "float32"),
        (np.zeros((C, H, W), dtype=np.float32), r"\(1, 5, 8, 8\)"),
        (np.zeros((1, 4, H, W), dtype=np.float32), r"\(1, 5, 8, 8\)"),
        (np.zeros((1, C, H, W + 1), dtype=np.float32), r"\(1, 5, 8, 8\)"),
        (np.zeros((2, C, H, W), dtype=np.float32), r"\(1, 5, 8, 8\)"),  # the batch is fixed
        ([[0.0]], "float32"),
    ],
)
def test_predict_refuses_bad_input(fp32_model: bytes, batch: Any, expected: str) -> None:
    runner = ModelRunner(make_manifest(fp32_model), fp32_model)
    with pytest.raises(ModelError, match=expected):
        runner.predict(batch)


def test_segment_refuses_a_mask_of_the_wrong_shape(fp32_model: bytes) -> None:
    runner = ModelRunner(make_manifest(fp32_model), fp32_model)
    with pytest.raises(ModelError, match="valid mask"):
        runner.segment(make_input(label_map(1)), np.ones((H, W + 1), dtype=bool))


def test_threads_are_set_on_the_session(fp32_model: bytes) -> None:
    manifest = make_manifest(fp32_model)
    assert ModelRunner(manifest, fp32_model).threads == 1
    assert ModelRunner(manifest, fp32_model, threads=2).threads == 2
    with pytest.raises(ValueError, match="threads"):
        ModelRunner(manifest, fp32_model, threads=0)


@pytest.mark.parametrize(
    ("manifest_change", "expected"),
    [
        ({"input": ModelTensor(name="rgbd", shape=(1, C, H, W))}, "inputs are \\['image'\\]"),
        ({"input": ModelTensor(name="image", shape=(1, C, 16, 16))}, "input shape"),
        ({"output": ModelTensor(name="scores", shape=(1, C, H, W))}, "no output 'scores'"),
    ],
)
def test_runner_checks_the_graph_against_the_manifest(
    fp32_model: bytes, manifest_change: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ModelError, match=expected):
        ModelRunner(make_manifest(fp32_model, **manifest_change), fp32_model)


def test_runner_reports_a_graph_that_does_not_load() -> None:
    garbage = b"not an onnx graph"
    with pytest.raises(ModelError, match="does not load in onnxruntime"):
        ModelRunner(make_manifest(garbage), garbage)


def test_runner_load_from_a_folder(
    tmp_path: Path, signed: tuple[bytes, bytes, bytes], server_key: Ed25519PrivateKey
) -> None:
    manifest_bytes, model, signature = signed
    (tmp_path / MANIFEST_FILE).write_bytes(manifest_bytes)
    (tmp_path / "wound-seg.onnx").write_bytes(model)
    key = public_bytes(server_key)

    with pytest.raises(ModelError, match=f"{SIGNATURE_FILE} is missing"):
        ModelRunner.load(tmp_path, public_key=key)
    (tmp_path / SIGNATURE_FILE).write_bytes(signature)
    runner = ModelRunner.load(tmp_path, public_key=key, threads=2)
    assert runner.manifest.version == "1.0.0" and runner.threads == 2
    assert ModelRunner.load(tmp_path).manifest == runner.manifest


# --- the store -----------------------------------------------------------------------


def publish(model: bytes, key: Ed25519PrivateKey, version: str) -> tuple[bytes, bytes, bytes]:
    manifest = make_manifest(model, version=version)
    return manifest.to_bytes(), model, sign_manifest(manifest, key)


def assert_runs(store: ModelStore, version: str) -> None:
    runner = store.runner()
    assert runner.manifest.version == version
    labels = label_map(9)
    assert np.array_equal(runner.segment(make_input(labels, seed=9)).labels, labels)


def test_store_installs_and_swaps(
    tmp_path: Path, fp32_model: bytes, int8_model: bytes, server_key: Ed25519PrivateKey
) -> None:
    store = ModelStore(tmp_path / "models", public_key=public_bytes(server_key))
    assert store.current() is None
    with pytest.raises(ModelUnavailableError, match="no model is installed"):
        store.runner()

    first = store.install(*publish(fp32_model, server_key, "1.0.0"))
    assert store.current() == first
    assert_runs(store, "1.0.0")

    store.install(*publish(int8_model, server_key, "1.1.0"))
    current = store.current()
    assert current is not None and current.version == "1.1.0"
    assert_runs(store, "1.1.0")

    store.install(*publish(fp32_model, server_key, "1.2.0"))
    assert_runs(store, "1.2.0")
    # The current model and the one before it are kept.
    assert len(list((tmp_path / "models" / "versions").iterdir())) == 2

    # The same model again changes nothing.
    again = publish(fp32_model, server_key, "1.2.0")
    before = sorted(p.name for p in (tmp_path / "models" / "versions").iterdir())
    store.install(*again)
    assert sorted(p.name for p in (tmp_path / "models" / "versions").iterdir()) == before


def test_store_refuses_bad_models_and_keeps_the_previous(
    tmp_path: Path, fp32_model: bytes, server_key: Ed25519PrivateKey
) -> None:
    store = ModelStore(tmp_path, public_key=public_bytes(server_key))
    store.install(*publish(fp32_model, server_key, "1.0.0"))
    manifest_bytes, model, signature = publish(fp32_model, server_key, "2.0.0")

    raw = json.loads(manifest_bytes)
    raw["metrics"]["dice_wound"] = 0.99
    tampered = json.dumps(raw, sort_keys=True, separators=(",", ":")).encode()
    other = Ed25519PrivateKey.generate()
    refusals = [
        ((tampered, model, signature), "signature does not verify"),
        ((manifest_bytes, model, None), "unsigned"),
        ((manifest_bytes, model, other.sign(manifest_bytes)), "signature does not verify"),
        ((manifest_bytes, model[:-1], signature), "bytes"),
    ]
    for args, expected in refusals:
        with pytest.raises(ModelVerificationError, match=expected):
            store.install(*args)
        assert_runs(store, "1.0.0")

    # Signed, matching sha256, but not a graph onnxruntime can load.
    garbage = b"\x08\x07garbage"
    bad = make_manifest(garbage, version="3.0.0")
    with pytest.raises(ModelVerificationError, match="does not load"):
        store.install(bad.to_bytes(), garbage, sign_manifest(bad, server_key))
    assert_runs(store, "1.0.0")
    assert len(list((tmp_path / "versions").iterdir())) == 1


def test_store_detects_tampering_on_disk(
    tmp_path: Path, fp32_model: bytes, server_key: Ed25519PrivateKey
) -> None:
    store = ModelStore(tmp_path, public_key=public_bytes(server_key))
    store.install(*publish(fp32_model, server_key, "1.0.0"))
    store.install(*publish(fp32_model, server_key, "1.1.0"))
    current_folder = (tmp_path / "current").read_text(encoding="ascii").strip()
    onnx_file = tmp_path / "versions" / current_folder / "wound-seg.onnx"
    data = bytearray(onnx_file.read_bytes())
    data[-1] ^= 0xFF
    onnx_file.write_bytes(bytes(data))

    with pytest.raises(ModelVerificationError) as info:
        store.runner()
    message = str(info.value)
    assert str(onnx_file) in message and "sha256" in message and "not loaded" in message
    current = store.current()
    assert current is not None and current.version == "1.1.0"  # no silent fallback


def test_store_detects_a_swapped_manifest_on_disk(
    tmp_path: Path, fp32_model: bytes, server_key: Ed25519PrivateKey
) -> None:
    store = ModelStore(tmp_path, public_key=public_bytes(server_key))
    store.install(*publish(fp32_model, server_key, "1.0.0"))
    (manifest_file,) = (tmp_path / "versions").glob("*/" + MANIFEST_FILE)
    raw = json.loads(manifest_file.read_bytes())
    raw["metrics"]["dice_wound"] = 0.99
    manifest_file.write_bytes(json.dumps(raw, sort_keys=True, separators=(",", ":")).encode())

    with pytest.raises(ModelVerificationError, match="signature does not verify") as info:
        store.runner()
    assert str(manifest_file) in str(info.value)


def test_a_crash_before_the_swap_keeps_the_old_model(
    tmp_path: Path,
    fp32_model: bytes,
    server_key: Ed25519PrivateKey,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = ModelStore(tmp_path, public_key=public_bytes(server_key))
    store.install(*publish(fp32_model, server_key, "1.0.0"))
    real_replace = os.replace
    calls: list[str] = []

    def crash_once(src: Any, dst: Any) -> None:
        if not calls:
            calls.append(str(dst))
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_once)

    with pytest.raises(ModelError, match="could not install") as info:
        store.install(*publish(fp32_model, server_key, "2.0.0"))
    assert not isinstance(info.value, ModelVerificationError)
    assert calls == [str(tmp_path / "current")]
    assert_runs(store, "1.0.0")
    # Nothing of the failed install is left behind.
    assert len(list((tmp_path / "versions").iterdir())) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["current", "versions"]

    store.install(*publish(fp32_model, server_key, "2.0.0"))  # the retry succeeds
    assert_runs(store, "2.0.0")


def test_install_bundled_checks_sha256_without_a_signature(
    tmp_path: Path, int8_model: bytes, server_key: Ed25519PrivateKey
) -> None:
    bundle = tmp_path / "bundled"
    bundle.mkdir()
    manifest = make_manifest(int8_model, quantization="int8")
    (bundle / MANIFEST_FILE).write_bytes(manifest.to_bytes())
    (bundle / "wound-seg.onnx").write_bytes(int8_model)
    digest = hashlib.sha256(manifest.to_bytes()).hexdigest()
    # With a pinned key, only the app's own bundled manifests go in unsigned.
    stranger = ModelStore(tmp_path / "strange", public_key=public_bytes(server_key))
    with pytest.raises(ModelVerificationError, match="bundled"):
        stranger.install_bundled(bundle)
    assert stranger.current() is None
    store = ModelStore(tmp_path / "models", public_key=public_bytes(server_key), bundled={digest})

    assert store.install_bundled(bundle) == manifest
    assert_runs(store, "1.0.0")
    assert store.install_bundled(bundle) == manifest  # idempotent at every app start

    (bundle / "wound-seg.onnx").write_bytes(int8_model[:-1] + b"\0")
    fresh = ModelStore(tmp_path / "other", public_key=None)
    with pytest.raises(ModelVerificationError, match=r"wound-seg\.onnx.*sha256"):
        fresh.install_bundled(bundle)
    assert fresh.current() is None


def test_store_rejects_a_malformed_key(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        ModelStore(tmp_path, public_key=b"short")


# --- without onnxruntime -------------------------------------------------------------


def test_without_onnxruntime(
    tmp_path: Path,
    fp32_model: bytes,
    server_key: Ed25519PrivateKey,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ModelUnavailableError, match=r"pip install 'coherency\[inference\]'"):
        ModelRunner(make_manifest(fp32_model), fp32_model)
    # Verification and installs still work; only running needs onnxruntime.
    store = ModelStore(tmp_path, public_key=public_bytes(server_key))
    store.install(*publish(fp32_model, server_key, "1.0.0"))
    current = store.current()
    assert current is not None and current.version == "1.0.0"
    with pytest.raises(ModelUnavailableError, match="onnxruntime is not installed"):
        store.runner()


def test_the_base_install_verifies_and_installs_without_numpy_or_onnxruntime(
    tmp_path: Path, fp32_model: bytes, server_key: Ed25519PrivateKey
) -> None:
    """`import edge_sdk` needs only the base install: the model module must too."""
    manifest_bytes, model, signature = publish(fp32_model, server_key, "1.0.0")
    (tmp_path / "manifest").write_bytes(manifest_bytes)
    (tmp_path / "model").write_bytes(model)
    (tmp_path / "sig").write_bytes(signature)
    code = f"""
import sys
from pathlib import Path
sys.modules['onnxruntime'] = None
sys.modules['numpy'] = None
from edge_sdk import ModelStore, ModelUnavailableError
d = Path({str(tmp_path)!r})
store = ModelStore(d / "store", public_key=bytes.fromhex({public_bytes(server_key).hex()!r}))
store.install((d / "manifest").read_bytes(), (d / "model").read_bytes(), (d / "sig").read_bytes())
try:
    store.runner()
except ModelUnavailableError as exc:
    print(store.current().version, exc)
"""
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "1.0.0 onnxruntime is not installed: pip install 'coherency[inference]'"
    )


def test_an_unsigned_model_put_in_place_on_disk_is_not_loaded(
    tmp_path: Path, fp32_model: bytes, int8_model: bytes, server_key: Ed25519PrivateKey
) -> None:
    store = ModelStore(tmp_path, public_key=public_bytes(server_key))
    store.install(*publish(fp32_model, server_key, "1.0.0"))
    folder = tmp_path / "versions" / (tmp_path / "current").read_text(encoding="ascii").strip()
    (folder / SIGNATURE_FILE).unlink()
    swapped = make_manifest(int8_model, quantization="int8")
    (folder / MANIFEST_FILE).write_bytes(swapped.to_bytes())
    (folder / "wound-seg.onnx").write_bytes(int8_model)
    with pytest.raises(ModelVerificationError, match="not signed"):
        store.runner()


def test_long_names_install_and_stay_readable(
    tmp_path: Path, fp32_model: bytes, server_key: Ed25519PrivateKey
) -> None:
    store = ModelStore(tmp_path, public_key=public_bytes(server_key))
    manifest = make_manifest(fp32_model, model_id="m" * 64, version="v" * 64)
    store.install(manifest.to_bytes(), fp32_model, sign_manifest(manifest, server_key))
    current = store.current()
    assert current is not None and current.model_id == "m" * 64


def test_a_deeply_nested_manifest_is_a_model_error() -> None:
    with pytest.raises(ModelError, match="nested"):
        ModelManifest.from_bytes(b"[" * 5000 + b"]" * 5000)


# --- updates from a model source --------------------------------------------------------


def test_update_model_installs_what_a_model_source_offers_once(
    tmp_store: Any, fp32_model: bytes, int8_model: bytes, server_key: Ed25519PrivateKey
) -> None:
    """`update_model` over a `MemoryHub` (a `ModelSource`, as the server is)."""
    client = tmp_store()
    pinned = Enrollment(
        server_url="memory:",
        device_id=client.device_id,
        clinic_id=client.clinic_id,
        organisation_id="org",
        server_public_key=public_bytes(server_key),
    )
    client.replica.enrol(pinned, refresh_token="unused")
    hub = MemoryHub()
    source = MemoryTransport(
        hub,
        device_id=client.device_id,
        clinic_id=client.clinic_id,
        public_key=client.identity.public_key,
    )
    nothing = client.update_model(source=source)
    assert not nothing.changed and nothing.reason == "the server has not published a model"

    manifest, model, signature = publish(fp32_model, server_key, "1.0.0")
    hub.publish_model(manifest=manifest, model=model, signature=signature)
    first = client.update_model(source=source)
    assert first.changed and first.manifest is not None and first.manifest.version == "1.0.0"
    assert not client.update_model(source=source).changed  # already the current one

    # A model signed by another key is refused, and the installed one stays.
    forged = publish(int8_model, Ed25519PrivateKey.generate(), "2.0.0")
    hub.publish_model(manifest=forged[0], model=forged[1], signature=forged[2])
    with pytest.raises(ModelVerificationError, match="previous model stays in use"):
        client.update_model(source=source)
    assert client.models.runner().manifest.version == "1.0.0"


# ------------------------------------------------------------------ models' library calls
def test_verify_model_folder_checks_the_files_and_the_signature(
    tmp_path: Path, fp32_model: bytes, server_key: Ed25519PrivateKey
) -> None:
    manifest_bytes, model, signature = publish(fp32_model, server_key, "1.0.0")
    manifest = ModelManifest.from_bytes(manifest_bytes)
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / MANIFEST_FILE).write_bytes(manifest_bytes)
    (folder / manifest.file).write_bytes(model)
    assert verify_model_folder(folder).sha256 == manifest.sha256
    key = public_bytes(server_key)
    with pytest.raises(ModelVerificationError, match="unsigned"):
        verify_model_folder(folder, public_key=key)
    (folder / SIGNATURE_FILE).write_bytes(signature)
    assert verify_model_folder(folder, public_key=key).version == "1.0.0"
    with pytest.raises(ModelVerificationError, match="signature"):
        verify_model_folder(folder, public_key=public_bytes(Ed25519PrivateKey.generate()))
    (folder / manifest.file).write_bytes(model[:-1] + bytes([model[-1] ^ 1]))
    with pytest.raises(ModelVerificationError, match="sha256"):
        verify_model_folder(folder)
    (folder / manifest.file).unlink()
    with pytest.raises(ModelError, match="which is missing"):
        verify_model_folder(folder)
    (folder / MANIFEST_FILE).unlink()
    with pytest.raises(ModelError, match=f"no {MANIFEST_FILE}"):
        verify_model_folder(folder)


def test_a_fresh_store_runs_the_bundled_model_until_one_is_installed(
    tmp_store: Any,
    fp32_model: bytes,
    server_key: Ed25519PrivateKey,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    device = tmp_store("fresh")
    assert device.models.current() is None
    bundled = device.models.runner()  # nothing installed yet: the bundled model
    assert bundled.manifest.model_id == "wound_seg"
    assert device.models.fallback == BUNDLED_MODEL_DIR
    assert choose_runner(device) is not None and choose_runner() is not None
    device.models.install(*publish(fp32_model, server_key, "2.0.0"))
    installed = choose_runner(device, threads=2)
    assert installed is not None and installed.manifest.version == "2.0.0"
    assert installed.threads == 2
    assert device.models.runner().manifest.version == "2.0.0"
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    assert choose_runner(device) is None and choose_runner() is None


def test_a_model_store_without_a_fallback_says_none_is_installed(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailableError, match="no model is installed"):
        ModelStore(tmp_path / "store", public_key=None).runner()
