"""Benchmark 6: the bundled wound model — segmentation quality, latency, size.

Quality: the committed fp32 and int8 models (`models.BUNDLED_FP32_DIR`,
`models.BUNDLED_MODEL_DIR`) on held-out synthetic scans (seeds 20,000 on, never used in
training, calibration or the release's own evaluation; 1- and 3-frame scans), scored
with the recipe's `evaluate`: wound-vs-rest Dice (target ≥ 0.90) and per-tissue Dice for
both, and the int8 drop (target ≤ 0.01). Latency: one inference at the canonical input
size, fp32 against int8 in the same run at 1 and 2 threads (`models.bench`;
target int8 ≥ 1.5x faster); the pinned core is released for the 2-thread run. Size:
the .onnx files (target ≤ 3 MB).

Scale: 120 held-out scans at the default scale (10,000), fewer for small smoke runs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from benchmarks._common import progress
from benchmarks._harness import Figure

__all__ = ["run"]

HELD_OUT_START = 20_000
TISSUE_CLASSES = ("granulation", "slough", "necrosis", "epithelium")


def scan_count(scale: int) -> int:
    """Held-out scans: 120 at the default scale, at least 4."""
    return 120 if scale >= 10_000 else max(4, min(120, scale // 50))


def run(*, scale: int, repeat: int, root: Path) -> Sequence[Figure]:
    """Quality on held-out scans, then latency and size."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from models import (
        BUNDLED_FP32_DIR,
        BUNDLED_MODEL_DIR,
        bench,
        build_dataset,
        evaluate,
        verify_model_folder,
    )

    count = scan_count(scale)
    progress(f"models: rendering {count} held-out synthetic scans")
    x, y = build_dataset(range(HELD_OUT_START, HELD_OUT_START + count), cache_dir=root)
    fp32, int8 = BUNDLED_FP32_DIR, BUNDLED_MODEL_DIR
    scores = {"fp32": evaluate(fp32, x, y, threads=1), "int8": evaluate(int8, x, y, threads=1)}
    figures: list[Figure] = []
    for kind, result in scores.items():
        figures.append(
            Figure(
                "models",
                f"models.dice.wound.{kind}",
                f"wound-vs-rest Dice, {kind}, {result['scans']} held-out synthetic scans",
                "Dice",
                [float(result["wound"]["dice"])],
                target=0.90,
                target_op=">=",
                extra={"scans": result["scans"], "iou": result["wound"]["iou"]},
            )
        )
        for tissue in TISSUE_CLASSES:
            dice = result["classes"][tissue]["dice"]
            if dice is not None:
                figures.append(
                    Figure(
                        "models",
                        f"models.dice.{tissue}.{kind}",
                        f"{tissue} Dice, {kind}",
                        "Dice",
                        [float(dice)],
                        extra={"iou": result["classes"][tissue]["iou"]},
                    )
                )
    drop = float(scores["fp32"]["wound"]["dice"]) - float(scores["int8"]["wound"]["dice"])
    figures.append(
        Figure(
            "models",
            "models.dice.wound.int8_drop",
            "wound Dice lost to int8 (fp32 minus int8; negative: int8 scored higher)",
            "Dice",
            [drop],
            target=0.01,
            target_op="<=",
        )
    )
    progress("models: latency, fp32 against int8")
    with _all_cores():
        latency = bench(fp32, int8, threads=(1, 2), runs=max(30, 20 * repeat))
    for threads in ("1", "2"):
        for kind in ("fp32", "int8"):
            figures.append(
                Figure(
                    "models",
                    f"models.latency.{kind}.t{threads}",
                    f"one inference at 1x5x96x96, {kind}, {threads} thread(s)",
                    "ms",
                    [float(latency[f"{kind}_ms"][threads])],
                )
            )
        figures.append(
            Figure(
                "models",
                f"models.latency.speedup.t{threads}",
                f"int8 against fp32 latency, {threads} thread(s), same run",
                "x",
                [float(latency["speedup"][threads])],
                target=1.5,
                target_op=">=",
            )
        )
    for kind, folder in (("fp32", fp32), ("int8", int8)):
        manifest = verify_model_folder(folder)  # its size is the file's, checked
        figures.append(
            Figure(
                "models",
                f"models.size.{kind}",
                f"{manifest.file} on disk",
                "MB",
                [manifest.size / 1e6],
                target=3.0,
                target_op="<=",
            )
        )
    return figures


class _all_cores:
    """Let the 2-thread latency run use every CPU, then pin back."""

    def __enter__(self) -> None:
        self._saved = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        if self._saved is not None:
            os.sched_setaffinity(0, range(os.cpu_count() or 1))

    def __exit__(self, *exc: object) -> None:
        if self._saved is not None:
            os.sched_setaffinity(0, self._saved)
