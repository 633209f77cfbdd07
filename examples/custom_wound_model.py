"""Plug your own model runtime into the measurement (Core ML on iOS, say).

`measure(scan, model=...)` takes any object with the `lidar_capture.WoundModel`
protocol: a ``manifest`` and ``segment(image, valid)``. On an iPad there is no
onnxruntime wheel, so an app runs the wound model in Core ML and wraps it like this.
Here the bundled ONNX graph runs through a raw onnxruntime session this example
creates itself, standing in for the app's runtime; the SDK's `ModelRunner` measures
the same scan beside it and gives the same figures.

What an implementation must do (docs/models.md, "Another runtime"):
1. Check the model folder against its manifest (`models.verify_model_folder`) and
   refuse a model whose ``preprocessing["version"]`` is not
   `lidar_capture.MODEL_INPUT_VERSION`: it was trained on another input.
2. ``segment(image, valid)``: run the (C, S, S) canonical input, label each pixel with
   the argmax over all classes (background included), background where ``valid`` is
   False; return ``labels``, ``probabilities`` (softmax of logits) and ``confidence``.
3. `measure` then turns the labels into the tissue mix by the manifest's ``tissue_mix``
   rule; a runtime that reports its own mix must follow that rule.

Run:  python examples/custom_wound_model.py
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime

from edge_sdk import ModelManifest
from lidar_capture import MODEL_INPUT_VERSION, SyntheticSource, measure
from models import BUNDLED_MODEL_DIR, bundled_runner, verify_model_folder

Logits = Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]]


@dataclass(frozen=True, eq=False)
class Segmented:
    """What `measure` reads of a segmentation."""

    labels: npt.NDArray[np.uint8]
    probabilities: npt.NDArray[np.float32]
    confidence: float


class CallableWoundModel:
    """A `WoundModel` around any function from a (1, C, S, S) input to (1, K, S, S) logits."""

    def __init__(self, manifest: ModelManifest, logits: Logits) -> None:
        if manifest.preprocessing_version != MODEL_INPUT_VERSION:
            raise ValueError(
                f"{manifest.model_id} reads input {manifest.preprocessing_version!r}; "
                f"this app builds {MODEL_INPUT_VERSION!r}"
            )
        self._manifest = manifest
        self._logits = logits

    @property
    def manifest(self) -> ModelManifest:
        return self._manifest

    def segment(
        self, image: npt.NDArray[np.float32], valid: npt.NDArray[np.bool_] | None = None
    ) -> Segmented:
        raw = self._logits(np.ascontiguousarray(image[np.newaxis], dtype=np.float32))[0]
        shifted = np.exp(raw - raw.max(axis=0, keepdims=True))
        probabilities = (shifted / shifted.sum(axis=0, keepdims=True)).astype(np.float32)
        labels = probabilities.argmax(axis=0).astype(np.uint8)
        seen = np.ones(labels.shape, bool) if valid is None else np.asarray(valid, bool)
        labels[~seen] = 0
        over = labels > 0 if np.any(labels > 0) else seen
        top = probabilities.max(axis=0)
        return Segmented(labels, probabilities, float(top[over].mean()) if over.any() else 0.0)


def onnx_logits(folder: Any, manifest: ModelManifest) -> Logits:
    """The app's own runtime: here a plain onnxruntime session (Core ML on a device)."""
    session = onnxruntime.InferenceSession(
        str(folder / manifest.file), providers=["CPUExecutionProvider"]
    )
    return lambda x: np.asarray(
        session.run([manifest.output.name], {manifest.input.name: x})[0], dtype=np.float32
    )


def main() -> None:
    manifest = verify_model_folder(BUNDLED_MODEL_DIR)  # sha256 and size against the manifest
    logits = onnx_logits(BUNDLED_MODEL_DIR, manifest)
    model = CallableWoundModel(manifest, logits)
    scan = SyntheticSource(seed=3).capture()
    ours = measure(scan, model=model)
    sdk = measure(scan, model=bundled_runner())
    assert ours.model_output is not None and sdk.model_output is not None
    print(f"boundary from the app's runtime: {ours.boundary_source}")
    print(f"area {ours.area_cm2:.2f} cm2 (SDK runner {sdk.area_cm2:.2f} cm2)")
    mix = ", ".join(f"{k} {v:.1f} %" for k, v in ours.model_output.tissue_composition.items())
    print(f"tissue mix: {mix}")
    same = ours.model_output.tissue_composition == sdk.model_output.tissue_composition
    print(f"same tissue mix as the SDK runner: {same}")

    newer = manifest.model_copy(
        update={"preprocessing": {**manifest.preprocessing, "version": "wound-input/2"}}
    )
    try:
        CallableWoundModel(newer, logits)
    except ValueError as refusal:
        print(f"refused: {refusal}")


if __name__ == "__main__":
    main()
