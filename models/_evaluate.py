"""Scoring a graph on labelled inputs, and timing fp32 against int8 (needs
``[inference]``: onnxruntime).

Either function takes a graph file or a model folder (its .onnx).
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from models._contract import INPUT_NAME, classes
from models._onnx import Images, Labels, PathLike, import_untyped, open_session, probe_inputs, run

__all__ = ["bench", "evaluate"]


def _scores(cm: npt.NDArray[np.int64], c: int) -> tuple[float | None, float | None]:
    tp = float(cm[c, c])
    true, pred = float(cm[c].sum()), float(cm[:, c].sum())
    if true + pred == 0:
        return None, None  # the class is absent and never predicted: no score
    return 2 * tp / (true + pred), tp / (true + pred - tp)


def evaluate(onnx_path: PathLike, x: Images, y: Labels, *, threads: int = 2) -> dict[str, Any]:
    """Score a graph on labelled inputs.

    Dice and IoU are over all pixels of the set together (a class's true positives,
    false positives and false negatives summed over every scan). "wound" is any tissue
    class against background; `wound_dice_per_image` averages each scan's own Dice.

    Returns:
        {"scans", "pixel_accuracy", "wound": {"dice", "iou", "dice_per_image"},
        "classes": {name: {"dice", "iou", "true_pixels", "predicted_pixels"}}};
        a score is None for a class that is neither present nor predicted.
    """
    if x.ndim != 4 or y.shape != (x.shape[0], *x.shape[2:]):
        raise ValueError(f"need (N, C, S, S) inputs and (N, S, S) labels, not {x.shape}, {y.shape}")
    names = classes()
    k = len(names)
    pred = run(open_session(onnx_path, threads), x).argmax(axis=1).astype(np.int64)
    truth = y.astype(np.int64)
    cm = np.bincount((truth * k + pred).ravel(), minlength=k * k).reshape(k, k)
    per_class = {}
    for c, name in enumerate(names):
        dice, iou = _scores(cm, c)
        per_class[name] = {
            "dice": dice,
            "iou": iou,
            "true_pixels": int(cm[c].sum()),
            "predicted_pixels": int(cm[:, c].sum()),
        }
    wound_cm = np.array([[cm[0, 0], cm[0, 1:].sum()], [cm[1:, 0].sum(), cm[1:, 1:].sum()]])
    wound_dice, wound_iou = _scores(wound_cm, 1)
    per_image = []
    for t, p in zip(truth > 0, pred > 0, strict=True):
        denom = int(t.sum() + p.sum())
        per_image.append(2 * int((t & p).sum()) / denom if denom else 1.0)
    return {
        "scans": len(x),
        "pixel_accuracy": float(np.trace(cm) / cm.sum()),
        "wound": {
            "dice": wound_dice,
            "iou": wound_iou,
            "dice_per_image": float(np.mean(per_image)),
        },
        "classes": per_class,
    }


def bench(
    fp32: PathLike,
    int8: PathLike,
    *,
    threads: Sequence[int] = (1, 2),
    runs: int = 100,
    warmup: int = 10,
    blocks: int = 5,
) -> dict[str, Any]:
    """Median latency of one inference, fp32 against int8, in the same run.

    For each thread count both sessions are created once and warmed up, then timed in
    `blocks` alternating blocks (fp32, int8, int8, fp32, ...), so slow drift in the
    background load of a shared machine hits both alike. Runs are not interleaved one by
    one: onnxruntime's pool threads spin briefly after each run and would steal the
    other session's cores.

    Returns:
        {"fp32_ms": {threads: ms}, "int8_ms": {...}, "speedup": {...}, "runs", "warmup",
        "cpu", "onnxruntime"}; thread counts are string keys (JSON).
    """
    ort = import_untyped("onnxruntime")

    if runs < 1 or warmup < 0 or blocks < 1:
        raise ValueError("runs and blocks must be at least 1, warmup at least 0")
    feed = {INPUT_NAME: probe_inputs(1)}
    result: dict[str, Any] = {"fp32_ms": {}, "int8_ms": {}, "speedup": {}}
    per_block = max(1, runs // blocks)
    for n in threads:
        sessions = {"fp32_ms": open_session(fp32, n), "int8_ms": open_session(int8, n)}
        for session in sessions.values():
            for _ in range(warmup):
                session.run(None, feed)
        times: dict[str, list[float]] = {key: [] for key in sessions}
        for block in range(blocks):
            order = list(sessions) if block % 2 == 0 else list(reversed(sessions))
            for key in order:
                for _ in range(per_block):
                    t0 = time.perf_counter()
                    sessions[key].run(None, feed)
                    times[key].append((time.perf_counter() - t0) * 1000)
        del sessions  # free this thread count's pools before the next one starts
        for key, values in times.items():
            result[key][str(n)] = round(float(np.median(values)), 3)
        result["speedup"][str(n)] = round(result["fp32_ms"][str(n)] / result["int8_ms"][str(n)], 2)
    result.update(
        runs=per_block * blocks,
        warmup=warmup,
        cpu=_cpu_name(),
        onnxruntime=ort.__version__,
    )
    return result


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return platform.processor() or platform.machine()
