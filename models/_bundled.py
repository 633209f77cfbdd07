"""The model shipped with the package, checked against its pinned manifest."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge_sdk import ModelRunner

__all__ = ["BUNDLED_FP32_DIR", "BUNDLED_MODEL_DIR", "bundled_runner"]

#: The shipped int8 model: ``manifest.json`` and its ``.onnx`` (sha256-pinned).
BUNDLED_MODEL_DIR = Path(__file__).resolve().parent / "wound_seg" / "int8"
#: The fp32 model it was quantized from.
BUNDLED_FP32_DIR = Path(__file__).resolve().parent / "wound_seg" / "fp32"


def bundled_runner(*, threads: int = 1, int8: bool = True) -> ModelRunner:
    """The bundled model, checked against its manifest's sha256 and loaded.

    Raises:
        edge_sdk.ModelUnavailableError: onnxruntime is not installed.
        edge_sdk.ModelVerificationError: the bundled files do not match the manifest.
    """
    from edge_sdk import ModelRunner

    return ModelRunner.load(BUNDLED_MODEL_DIR if int8 else BUNDLED_FP32_DIR, threads=threads)
