"""The wound model: its committed artifacts and the recipe that makes them.

The bundled model (`BUNDLED_MODEL_DIR`, int8; the fp32 original beside it) is a small
U-Net that segments the canonical input `lidar_capture.model_input` builds into
background, granulation, slough, necrosis and epithelium. It was trained only on
synthetic scans and is not a clinical device: read ``wound_seg/MODEL_CARD.md``.

    from models import bundled_runner
    from lidar_capture import SyntheticSource, measure

    result = measure(SyntheticSource(seed=3).capture(), model=bundled_runner())

The recipe (`models._recipe`: train, export, quantize, evaluate, bench, release,
verify) needs the ``[train]`` extra (torch, onnx); running a model needs only
``[inference]`` (onnxruntime). `coherency models ...` drives both.
"""

from __future__ import annotations

from models._bundled import BUNDLED_FP32_DIR, BUNDLED_MODEL_DIR, bundled_runner
from models._dataset import build_dataset
from models._recipe import (
    MAX_MODEL_BYTES,
    MODEL_ID,
    MODEL_VERSION,
    RELEASE_DIR,
    ModelRecipeError,
    bench,
    evaluate,
    export,
    quantize,
    release,
    train,
    verify,
)

__all__ = [
    "BUNDLED_FP32_DIR",
    "BUNDLED_MODEL_DIR",
    "MAX_MODEL_BYTES",
    "MODEL_ID",
    "MODEL_VERSION",
    "RELEASE_DIR",
    "ModelRecipeError",
    "bench",
    "build_dataset",
    "bundled_runner",
    "evaluate",
    "export",
    "quantize",
    "release",
    "train",
    "verify",
]
