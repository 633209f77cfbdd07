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

import importlib
from typing import Any

from models._bundled import BUNDLED_FP32_DIR, BUNDLED_MODEL_DIR, bundled_runner, choose_runner

# The recipe needs NumPy (and torch, onnx for training): it loads on first use, so
# checking or running the bundled model needs neither.
_RECIPE = {
    "MAX_MODEL_BYTES": "models._recipe",
    "MODEL_ID": "models._recipe",
    "MODEL_VERSION": "models._recipe",
    "RELEASE_DIR": "models._recipe",
    "ModelRecipeError": "models._recipe",
    "bench": "models._recipe",
    "evaluate": "models._recipe",
    "export": "models._recipe",
    "quantize": "models._recipe",
    "release": "models._recipe",
    "train": "models._recipe",
    "verify": "models._recipe",
    "build_dataset": "models._dataset",
}


def __getattr__(name: str) -> Any:
    module = _RECIPE.get(name)
    if module is None:
        raise AttributeError(f"module 'models' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


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
    "choose_runner",
    "evaluate",
    "export",
    "quantize",
    "release",
    "train",
    "verify",
]
