"""The wound model: its committed artifacts and the recipe that makes them.

The bundled model (`BUNDLED_MODEL_DIR`, int8; the fp32 original beside it) is a small
U-Net that segments the canonical input `lidar_capture.model_input` builds into
background, granulation, slough, necrosis and epithelium. It was trained only on
synthetic scans and is not a clinical device: read ``wound_seg/MODEL_CARD.md``.

    from models import choose_runner
    from lidar_capture import SyntheticSource, measure

    result = measure(SyntheticSource(seed=3).capture(), model=choose_runner())

`choose_runner` picks the model a measurement uses (the device's installed model, else
the bundled one); `verify_model_folder` checks a model folder against its manifest.
The recipe (`train`, `export`, `quantize`, `evaluate`, `bench`, `release`, `verify`)
needs the ``[train]`` extra (torch, onnx); running a model needs only ``[inference]``
(onnxruntime). `coherency models ...` drives both. Importing the package needs
neither: the recipe's functions load their modules (and NumPy) on first use.
"""

import importlib
import typing

from models._bundled import (
    BUNDLED_FP32_DIR,
    BUNDLED_MODEL_DIR,
    RELEASE_DIR,
    bundled_runner,
    choose_runner,
)
from models._contract import MAX_MODEL_BYTES, MODEL_ID, MODEL_VERSION
from models._errors import ModelRecipeError
from models._verify import verify, verify_model_folder

if typing.TYPE_CHECKING:
    from models._dataset import build_dataset
    from models._evaluate import bench, evaluate
    from models._export import export, quantize
    from models._release import release
    from models._train import train

# The recipe needs NumPy (and torch, onnx for training): it loads on first use, so
# checking or running the bundled model needs neither.
_LAZY = {
    "bench": "_evaluate",
    "evaluate": "_evaluate",
    "export": "_export",
    "quantize": "_export",
    "release": "_release",
    "train": "_train",
    "build_dataset": "_dataset",
}


def __getattr__(name: str) -> typing.Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'models' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"models.{module}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


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
    "verify_model_folder",
]
