"""Running a graph file in onnxruntime, for the recipe's checks, scores and timings.

The device runs models through `edge_sdk.ModelRunner` (verified bytes, one session);
the recipe needs sessions over graph files with a chosen thread count, and inputs that
need no scan.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from models._contract import INPUT_NAME, OUTPUT_NAME, input_shape
from models._errors import ModelRecipeError

__all__ = [
    "Images",
    "Labels",
    "PathLike",
    "import_untyped",
    "model_file",
    "open_session",
    "probe_inputs",
    "run",
]

Images = npt.NDArray[np.float32]
Labels = npt.NDArray[np.uint8]
PathLike = str | os.PathLike[str]


def import_untyped(name: str) -> Any:
    """A module that ships no type information (onnxruntime), typed as Any."""
    return importlib.import_module(name)


def model_file(path: PathLike) -> Path:
    """The .onnx graph of `path`: the file itself, or the one in a model folder.

    Raises:
        ModelRecipeError: a folder holds no .onnx file.
    """
    found = Path(path)
    if found.is_dir():
        graphs = sorted(found.glob("*.onnx"))
        if not graphs:
            raise ModelRecipeError(f"{found}: no .onnx model in this folder")
        return graphs[0]
    return found


def open_session(onnx_path: PathLike, threads: int) -> Any:
    """An onnxruntime CPU session over a graph file (or a model folder's graph)."""
    ort = import_untyped("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    path = model_file(onnx_path)
    # onnxruntime's errors derive from Exception directly (a private pybind module).
    try:
        return ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:
        raise ModelRecipeError(f"{path} does not load in onnxruntime: {exc}") from None


def run(session: Any, x: Images) -> npt.NDArray[np.float32]:
    """Logits for (N, C, S, S) inputs, one at a time (the graph's batch is fixed at 1)."""
    out = [session.run([OUTPUT_NAME], {INPUT_NAME: x[i : i + 1]})[0][0] for i in range(len(x))]
    return np.stack(out).astype(np.float32)


def probe_inputs(n: int, seed: int = 0) -> Images:
    """Random inputs with the canonical channels' ranges, for checks that need no scan."""
    rng = np.random.default_rng(seed)
    _, c, s, _ = input_shape()
    x = np.empty((n, c, s, s), dtype=np.float32)
    x[:, :3] = rng.uniform(0.0, 1.0, (n, 3, s, s))
    x[:, 3] = rng.uniform(-1.0, 2.0, (n, s, s))
    x[:, 4] = 1.0
    return x
