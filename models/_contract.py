"""What every model the recipe makes is: its name, its input and output, its size limit.

Plain Python, so checking a model needs neither NumPy nor the recipe. The input is the
canonical input `lidar_capture.model_input` builds; the classes are the generator's
tissue labels (`lidar_capture.TISSUES`).
"""

from __future__ import annotations

__all__ = [
    "INPUT_NAME",
    "MAX_MODEL_BYTES",
    "MODEL_ID",
    "MODEL_VERSION",
    "OPSET",
    "OUTPUT_NAME",
    "classes",
    "input_shape",
]

MODEL_ID = "wound_seg"
MODEL_VERSION = "1.0.0"
#: The issue's limit on one model file.
MAX_MODEL_BYTES = 3 * 1024 * 1024
OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def input_shape() -> tuple[int, int, int, int]:
    """(1, channels, size, size) of the canonical input."""
    from lidar_capture import MODEL_CHANNELS, MODEL_INPUT_SIZE

    return (1, len(MODEL_CHANNELS), MODEL_INPUT_SIZE, MODEL_INPUT_SIZE)


def classes() -> tuple[str, ...]:
    """The output's classes in order, background first."""
    from lidar_capture import TISSUES

    return tuple(TISSUES)
