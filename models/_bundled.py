"""The model shipped with the package, and which model a measurement uses."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from models._contract import MODEL_ID, preprocessing_version

if TYPE_CHECKING:
    from edge_sdk import EdgeClient, ModelRunner

__all__ = [
    "BUNDLED_FP32_DIR",
    "BUNDLED_MODEL_DIR",
    "RELEASE_DIR",
    "bundled_runner",
    "choose_runner",
]

#: The committed release (shipped in the package): `RELEASE_DIR / "int8"` is the
#: on-device model folder, loadable by `edge_sdk.ModelRunner.load`.
RELEASE_DIR = Path(__file__).resolve().parent / MODEL_ID
#: The shipped int8 model: ``manifest.json`` and its ``.onnx`` (sha256-pinned).
BUNDLED_MODEL_DIR = RELEASE_DIR / "int8"
#: The fp32 model it was quantized from.
BUNDLED_FP32_DIR = RELEASE_DIR / "fp32"


def bundled_runner(*, threads: int = 1, int8: bool = True) -> ModelRunner:
    """The bundled model, checked against its manifest's sha256 and loaded.

    Raises:
        edge_sdk.ModelUnavailableError: onnxruntime is not installed.
        edge_sdk.ModelVerificationError: the bundled files do not match the manifest.
        edge_sdk.ModelError: the graph's metadata disagrees with its manifest, or it
            reads another input version than `lidar_capture.MODEL_INPUT_VERSION`.
    """
    from edge_sdk import ModelRunner

    return ModelRunner.load(
        BUNDLED_MODEL_DIR if int8 else BUNDLED_FP32_DIR,
        threads=threads,
        input_version=preprocessing_version(),
    )


def choose_runner(client: EdgeClient | None = None, *, threads: int = 1) -> ModelRunner | None:
    """The wound model to measure with: the device's installed model, else the bundled one.

    Args:
        client: the open store whose installed model (`client.models`) comes first; None
            for the bundled model.
        threads: intra-op threads of the loaded model.

    Returns:
        The loaded model, or None when onnxruntime is not installed (`measure` then draws
        the colour/depth boundary and says ``model_not_used``).

    Raises:
        edge_sdk.ModelVerificationError: the installed or bundled files do not match
            their manifest; no other model is loaded in their place.
        edge_sdk.ModelError: the model reads another input version than
            `lidar_capture.MODEL_INPUT_VERSION` (or its graph and manifest disagree).
    """
    from edge_sdk import ModelUnavailableError

    try:
        if client is not None:  # the installed model, else the bundled one
            return client.models.runner(threads=threads, input_version=preprocessing_version())
        return bundled_runner(threads=threads)
    except ModelUnavailableError:
        return None
