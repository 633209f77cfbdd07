"""Export to ONNX and static int8 quantization (needs ``[train]``: torch, onnx; and
``[inference]``: onnxruntime).

An export is checked with `onnx.checker` and run in onnxruntime against torch on probe
inputs; a quantized graph is checked with `onnx.checker` too. Both are stamped (`stamp`)
with the model's id, version, class names and input version in their ``metadata_props``,
which `edge_sdk.ModelRunner` checks against the manifest.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edge_sdk import graph_metadata
from models._contract import (
    INPUT_NAME,
    MODEL_ID,
    MODEL_VERSION,
    OPSET,
    OUTPUT_NAME,
    classes,
    preprocessing_version,
)
from models._errors import ModelRecipeError
from models._onnx import Images, PathLike, import_untyped, open_session, probe_inputs, run
from models._train import load_net

__all__ = ["EXPORT_TOLERANCE", "export", "quantize", "stamp"]

#: Largest |onnxruntime - torch| logit difference an fp32 export may show.
EXPORT_TOLERANCE = 1e-3


def stamp(onnx_path: PathLike) -> Path:
    """Write the model's ``metadata_props`` into a graph file, in place.

    The id, version and class names come from the contract (`MODEL_ID`, `MODEL_VERSION`,
    `classes`) and the input version from `lidar_capture.MODEL_INPUT_VERSION`
    (`edge_sdk.graph_metadata` names the keys); they replace earlier values of those
    keys, and other keys (onnxruntime's quantization notes) stay. The graph, its weights
    and every other field are kept as they are, so stamping a stamped file writes the
    same bytes.

    Returns:
        The graph's path.
    """
    import onnx

    path = Path(onnx_path)
    graph = onnx.load(str(path))
    meta = graph_metadata(
        model_id=MODEL_ID,
        version=MODEL_VERSION,
        classes=classes(),
        preprocessing_version=preprocessing_version(),
    )
    kept = [(p.key, p.value) for p in graph.metadata_props if p.key not in meta]
    del graph.metadata_props[:]
    for key, value in [*kept, *meta.items()]:
        graph.metadata_props.add(key=key, value=value)
    onnx.save(graph, str(path))
    return path


def export(checkpoint: PathLike, out_onnx: PathLike) -> float:
    """Export a checkpoint to ONNX (opset 17, input "input" [1,5,S,S], output "logits"),
    stamped with the model's metadata (`stamp`).

    The graph is checked with `onnx.checker` and run in onnxruntime against torch on
    probe inputs.

    Returns:
        The largest absolute logit difference between onnxruntime and torch.

    Raises:
        ModelRecipeError: the checkpoint cannot be read, or the difference exceeds
            `EXPORT_TOLERANCE`.
    """
    import onnx
    import torch

    net, state = load_net(checkpoint)
    size = int(state["input_size"])
    shape = (1, int(state["in_channels"]), size, size)
    out = Path(out_onnx)
    out.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of the torch.export one, which
        # needs onnxscript and exports opset 18 first; this one writes opset 17 directly
        # and folds BatchNorm into the convolutions. Its deprecation notices are noise here.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            net,
            (torch.zeros(shape),),
            str(out),
            dynamo=False,
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            do_constant_folding=True,
        )
    stamp(out)
    onnx.checker.check_model(str(out), full_check=True)
    probe = probe_inputs(4)
    with torch.no_grad():
        expected = net(torch.from_numpy(probe)).numpy()
    diff = float(np.max(np.abs(run(open_session(out, 1), probe) - expected)))
    if not diff <= EXPORT_TOLERANCE:
        raise ModelRecipeError(
            f"{out}: onnxruntime and torch differ by {diff:.2e} (allowed {EXPORT_TOLERANCE:.0e})"
        )
    return diff


# --------------------------------------------------------------------------- quantize


class _Calibration:
    """Feeds calibration inputs one at a time (onnxruntime's CalibrationDataReader)."""

    def __init__(self, x: Images) -> None:
        self._items: Iterator[dict[str, Images]] = iter(
            {INPUT_NAME: np.ascontiguousarray(x[i : i + 1])} for i in range(len(x))
        )

    def get_next(self) -> dict[str, Images] | None:
        return next(self._items, None)


def quantize(
    fp32_onnx: PathLike,
    out_int8: PathLike,
    calibration: Images,
    *,
    activations: str = "uint8",
) -> Path:
    """Statically quantize an fp32 graph to int8 (QDQ, per-channel weights).

    Weights are signed int8 per output channel. Activations default to unsigned uint8
    (asymmetric): onnxruntime's x86 kernels run u8 x s8 convolutions natively (VNNI's
    VPDPBUSD, or VPMADDUBSW on AVX2), while s8 activations take a slower path — measured
    here about 1.6x slower than uint8 at the same accuracy. Every activation the network
    produces after a ReLU is non-negative, so uint8 loses no range.

    Args:
        fp32_onnx: the exported float graph.
        out_int8: where to write the quantized graph.
        calibration: (N, C, S, S) inputs held apart from training (about 64 is enough);
            the activation ranges are their min/max.
        activations: "uint8" or "int8".

    Returns:
        `out_int8`.
    """
    import onnx

    q = import_untyped("onnxruntime.quantization")
    quant_pre_process = import_untyped("onnxruntime.quantization.shape_inference").quant_pre_process

    kinds = {"uint8": q.QuantType.QUInt8, "int8": q.QuantType.QInt8}
    if activations not in kinds:
        raise ValueError(f'activations must be "uint8" or "int8", not {activations!r}')
    if calibration.ndim != 4 or len(calibration) == 0:
        raise ValueError(f"calibration must be (N, C, S, S) inputs, not {calibration.shape}")
    out = Path(out_int8)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        # Shape inference and graph clean-up first, as onnxruntime recommends: it gives
        # the quantizer every tensor's shape and removes nodes it would otherwise wrap.
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_onnx), str(prepared), skip_symbolic_shape=True)
        q.quantize_static(
            str(prepared),
            str(out),
            _Calibration(np.asarray(calibration, dtype=np.float32)),
            quant_format=q.QuantFormat.QDQ,
            per_channel=True,
            activation_type=kinds[activations],
            weight_type=q.QuantType.QInt8,
            calibrate_method=q.CalibrationMethod.MinMax,
        )
    stamp(out)
    onnx.checker.check_model(str(out), full_check=True)
    return out
