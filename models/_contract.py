"""What every model the recipe makes is: its name, its input and output, its size limit,
and how the measurement reads its output.

Plain Python, so checking a model needs neither NumPy nor the recipe. The input is the
canonical input `lidar_capture.model_input` builds (its version is
`lidar_capture.MODEL_INPUT_VERSION`); the classes are the generator's tissue labels
(`lidar_capture.TISSUES`); the tissue-mix rule is what `lidar_capture.measure` does with
the model's output, written so another runtime can reproduce its figures.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "INPUT_NAME",
    "MAX_MODEL_BYTES",
    "MODEL_ID",
    "MODEL_VERSION",
    "OPSET",
    "OUTPUT_NAME",
    "classes",
    "input_shape",
    "preprocessing_version",
    "tissue_mix_rule",
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


def preprocessing_version() -> str:
    """The version of the canonical input every model is trained on and fed."""
    from lidar_capture import MODEL_INPUT_VERSION

    return MODEL_INPUT_VERSION


def tissue_mix_rule() -> dict[str, Any]:
    """How `lidar_capture.measure` turns the model's output into the tissue composition
    (`ModelResult.tissue_composition`), as the manifest's ``tissue_mix``.

    It states what ``lidar_capture._model_boundary.model_boundary`` does, field by field;
    ``tests/test_models_manifest.py`` recomputes the composition from these fields alone
    and must get the SDK's figures.
    """
    tissues = list(classes()[1:])
    return {
        "rule": 1,
        "text": (
            "Label each pixel of the canonical input with the argmax of the model's output "
            "over all classes, background included (pixels whose 'valid' channel is not "
            "above 0.5 are background). Give each cell of the measurement grid the label of "
            "the input pixel nearest its centre (cells beyond the input are background). "
            "Within the measured wound outline (grid cells whose centres lie inside it), "
            "each tissue's share is 100 x its cells / the cells of any tissue class, "
            "rounded to 2 decimals; with no tissue cell there is no composition."
        ),
        "labels": "argmax",
        "argmax_over": "all_classes",
        "invalid_pixels": {"channel": "valid", "at_most": 0.5, "label": "background"},
        "classes": tissues,
        "grid": "measurement",
        "resample": "nearest",
        "outside_input": "background",
        "within": "wound_outline",
        "weight": "cell",
        "weight_note": (
            "every measurement-grid cell counts once: its projected area in the wound "
            "frame, not its area on the curved skin"
        ),
        "denominator": "tissue_cells",
        "scale": 100,
        "decimals": 2,
        "rounding": "half_even",
        "empty": "no_composition",
    }
