"""Accuracy by skin tone and body site: where the model is worse (needs ``[capture]`` and
``[inference]``).

Each held-out seed is rendered, measured without the model (the canonical input and the
generator's labels, as `build_dataset` makes them) and measured again with it. Two
figures per scan: the model's wound mask against the true one on the canonical input
(Dice, IoU) and the signed error of the area `measure` reports with the model's
boundary against the generator's exact area. Scans are grouped by Fitzpatrick group of
the spec's `skin_tone` (I-II, III-IV, V-VI) and by body site (`surface`).

`evaluate_phantoms` measures scans from another generator (the independent phantoms in
``tests/phantoms``, which the package does not import: the caller passes them in) with
the model and groups the area error by the phantom's skin group.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from models._dataset import frames_for_seed
from models._onnx import PathLike

__all__ = [
    "SKIN_GROUPS",
    "SURFACES",
    "PhantomSource",
    "evaluate_groups",
    "evaluate_phantoms",
    "group_scores",
    "skin_group",
]

#: A scan made elsewhere, from a seed: (the `Scan`, its truth), the truth having
#: ``area_cm2`` (exact area on the skin) and ``skin_group`` ("I-II", "III-IV", "V-VI").
PhantomSource = Callable[[int], tuple[Any, Any]]

#: Fitzpatrick groups of the generator's skin tones 1..6.
SKIN_GROUPS = {"I-II": (1, 2), "III-IV": (3, 4), "V-VI": (5, 6)}
#: The generator's body sites.
SURFACES = ("plane", "calf", "heel", "sacrum")

_RUNNERS: dict[str, Any] = {}


def _runner(model_dir: str) -> Any:
    """One session per worker process, reused for every scan it measures."""
    if model_dir not in _RUNNERS:
        from edge_sdk import ModelRunner
        from models._contract import preprocessing_version

        _RUNNERS[model_dir] = ModelRunner.load(
            Path(model_dir), input_version=preprocessing_version()
        )
    return _RUNNERS[model_dir]


def skin_group(tone: int) -> str:
    """The Fitzpatrick group (I-II, III-IV, V-VI) of a skin tone 1..6."""
    return next(name for name, tones in SKIN_GROUPS.items() if tone in tones)


def _scan(args: tuple[str, int, int]) -> dict[str, Any] | None:
    """One seed's figures, or None when `measure` refuses the scan without the model."""
    from lidar_capture import (
        MeasurementRefused,
        generate,
        measure,
        model_input,
        random_spec,
        synthetic_labels,
    )

    model_dir, seed, frames = args
    runner = _runner(model_dir)
    synthetic = generate(random_spec(seed, frames=frames))
    try:
        plain = measure(synthetic.scan)
    except MeasurementRefused:
        return None  # never reaches the model on a device either
    inp = model_input(plain.raster)
    truth = synthetic_labels(synthetic, inp, plain.raster) > 0
    found = np.asarray(runner.segment(inp.image, inp.image[-1] > 0.5).labels) > 0
    row: dict[str, Any] = {
        "seed": seed,
        "frames": frames,
        "skin_tone": synthetic.spec.skin_tone,
        "surface": synthetic.spec.surface,
        "tp": int(np.count_nonzero(truth & found)),
        "fp": int(np.count_nonzero(~truth & found)),
        "fn": int(np.count_nonzero(truth & ~found)),
        "area_error_pct": None,
        "boundary_source": None,
    }
    try:
        result = measure(synthetic.scan, model=runner)
    except MeasurementRefused:
        return row
    exact = synthetic.truth.area_cm2
    row["area_error_pct"] = round(100.0 * (result.area_cm2 - exact) / exact, 3)
    row["boundary_source"] = result.boundary_source
    return row


def evaluate_groups(
    model_dir: PathLike,
    seeds: range,
    *,
    frames_choices: Sequence[int] = (1, 3),
    workers: int = 2,
) -> dict[str, Any]:
    """Score a model folder by skin-tone group and body site on held-out seeds.

    Args:
        model_dir: a model folder (``manifest.json`` and its graph).
        seeds: the scans' seeds; keep them apart from training and calibration.
        frames_choices: frames per scan, taken in turn by seed (as `build_dataset`).
        workers: processes to render and measure with.

    Returns:
        {"seeds", "scans", "refused", "skin_tone": {group: scores}, "surface": {site:
        scores}, "all": scores}; scores as `group_scores`.
    """
    jobs = [(str(model_dir), seed, frames_for_seed(seed, frames_choices)) for seed in seeds]
    if workers > 1:
        # spawn: forking a process that holds onnxruntime or Open3D threads can deadlock.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            rows = list(pool.map(_scan, jobs, chunksize=2))
    else:
        rows = [_scan(job) for job in jobs]
    kept = [r for r in rows if r is not None]
    return {
        "seeds": [seeds.start, seeds.stop],
        "scans": len(kept),
        "refused": len(rows) - len(kept),
        "all": group_scores(kept),
        "skin_tone": {
            name: group_scores(r for r in kept if skin_group(r["skin_tone"]) == name)
            for name in SKIN_GROUPS
        },
        "surface": {
            site: group_scores(r for r in kept if r["surface"] == site) for site in SURFACES
        },
    }


def evaluate_phantoms(model_dir: PathLike, source: PhantomSource, seeds: range) -> dict[str, Any]:
    """The area error with the model's boundary on scans from another generator, by the
    truth's skin group (in this process: `source` need not be picklable).

    Returns:
        {"seeds", "scans", "refused", "frames" (per scan, the most common), "all",
        "skin_tone": {group: scores}}; scores as `group_scores` (no Dice: only the
        area is compared).
    """
    from lidar_capture import MeasurementRefused, measure

    runner = _runner(str(model_dir))
    rows, refused, frames = [], 0, []
    for seed in seeds:
        scan, truth = source(seed)
        frames.append(len(scan.frames))
        try:
            result = measure(scan, model=runner)
        except MeasurementRefused:
            refused += 1
            continue
        error = 100.0 * (result.area_cm2 - truth.area_cm2) / truth.area_cm2
        rows.append(
            {
                "skin_group": str(truth.skin_group),
                "tp": 0,
                "fp": 0,
                "fn": 0,
                "area_error_pct": round(error, 3),
                "boundary_source": result.boundary_source,
            }
        )
    return {
        "seeds": [seeds.start, seeds.stop],
        "scans": len(rows),
        "refused": refused,
        "frames": max(set(frames), key=frames.count) if frames else 0,
        "all": group_scores(rows),
        "skin_tone": {
            name: group_scores(r for r in rows if r["skin_group"] == name) for name in SKIN_GROUPS
        },
    }


def group_scores(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Wound Dice and IoU (pixels pooled over the group) and the area error with the
    model's boundary (median absolute, median signed and worst absolute, in %)."""
    group = list(rows)
    tp = sum(r["tp"] for r in group)
    fp = sum(r["fp"] for r in group)
    fn = sum(r["fn"] for r in group)
    errors = np.array([r["area_error_pct"] for r in group if r["area_error_pct"] is not None])
    return {
        "scans": len(group),
        "wound_dice": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None,
        "wound_iou": tp / (tp + fp + fn) if tp + fp + fn else None,
        "area_scans": len(errors),
        "area_abs_median_pct": float(np.median(np.abs(errors))) if len(errors) else None,
        "area_signed_median_pct": float(np.median(errors)) if len(errors) else None,
        "area_abs_worst_pct": float(np.max(np.abs(errors))) if len(errors) else None,
        "model_boundary_scans": sum(1 for r in group if r["boundary_source"] == "model"),
    }
