"""Benchmark 5: wound measurement accuracy against synthetic ground truth, and its speed.

Accuracy: a suite of synthetic wounds (`lidar_capture.random_spec(seed)`: flat and
curved skin — plane, calf 4.5-11 cm, heel, sacrum — ellipses to irregular outlines, four
depth profiles, six skin tones) at depth noise 0.5, 1 and 2 mm. Each wound is scanned
once with 10 frames of hand-held motion; it is measured from its first frame alone and
from all ten. Reported per (frames, noise) group: the median and the worst absolute
error of area, volume, length and width (% of the truth) and of max depth (mm). The
body axis is given (as a capture app records it), so length runs head to toe.

Beside them: the ruler estimate's error against the true area (the anchor: length x
width overestimates by about 41 %), and the volume error when the skin is fitted with a
plane instead of the curved surface, on calf wounds (the reason the fit goes to degree 4).

With the bundled wound model installed, the 10-frame scans are measured a second time
with the model drawing the boundary: ``capture.boundary.{geometric,model}.*`` compare
the two over the whole suite.

Speed, on one core: one 256x192 frame (about 50,000 points) and a 10-frame capture,
each to a measurement; median ms over the repeats. Target 500 ms for the frame.

Scale: 60 wounds at the default scale (10,000), fewer for small smoke runs.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks._common import progress
from benchmarks._harness import Figure, timed

__all__ = ["run"]

NOISES = (0.5, 1.0, 2.0)
FRAME_COUNTS = (1, 10)
_METRICS = (
    ("area", "area_cm2", "%"),
    ("volume", "volume_cm3", "%"),
    ("length", "length_cm", "%"),
    ("width", "width_cm", "%"),
    ("max_depth", "max_depth_mm", "mm"),
)
_TARGETS = {
    ("area", 10, 1.0): 2.0,
    ("volume", 10, 1.0): 5.0,
    ("max_depth", 10, 1.0): 0.5,
}


def wound_count(scale: int) -> int:
    """Wounds in the accuracy suite: 60 at the default scale, at least 3 (one per noise)."""
    return 60 if scale >= 10_000 else max(3, min(60, scale // 100))


def _error(kind: str, measured: float, truth: float) -> float:
    if kind == "%":
        return abs(measured - truth) / truth * 100.0
    return abs(measured - truth)


def _accuracy(count: int) -> list[Figure]:
    from lidar_capture import (
        MeasurementRefused,
        MeasureOptions,
        generate,
        measure,
        random_spec,
    )

    errors: dict[tuple[str, int, float], list[float]] = {}
    signed_area: dict[tuple[int, float], list[float]] = {}
    ruler: list[float] = []
    plane_fit: list[float] = []
    curved_fit: list[float] = []
    refused: dict[tuple[int, float], list[str]] = {}
    boundary: dict[tuple[str, str], list[float]] = {}
    signed_boundary: dict[str, list[float]] = {}
    model = _model()
    for index in range(count):
        noise = NOISES[index % len(NOISES)]
        spec = random_spec(index, noise_mm=noise, frames=10)
        synthetic = generate(spec)
        truth = synthetic.truth
        ruler.append((truth.ruler_area_cm2 - truth.area_cm2) / truth.area_cm2 * 100.0)
        for frames in FRAME_COUNTS:
            scan = replace(synthetic.scan, frames=synthetic.scan.frames[:frames])
            try:
                result = measure(scan)
            except MeasurementRefused as exc:
                refused.setdefault((frames, noise), []).append(f"seed {index}: {exc.reason}")
                continue
            for name, attr, unit in _METRICS:
                errors.setdefault((name, frames, noise), []).append(
                    _error(unit, getattr(result, attr), getattr(truth, attr))
                )
            signed_area.setdefault((frames, noise), []).append(
                (result.area_cm2 - truth.area_cm2) / truth.area_cm2 * 100.0
            )
            if frames == 10 and model is not None:
                with_model = measure(scan, model=model)
                for name, attr, unit in _METRICS:
                    truth_value = getattr(truth, attr)
                    boundary.setdefault(("geometric", name), []).append(
                        _error(unit, getattr(result, attr), truth_value)
                    )
                    boundary.setdefault(("model", name), []).append(
                        _error(unit, getattr(with_model, attr), truth_value)
                    )
                for source, measured in (("geometric", result), ("model", with_model)):
                    signed_boundary.setdefault(source, []).append(
                        (measured.area_cm2 - truth.area_cm2) / truth.area_cm2 * 100.0
                    )
            if frames == 10 and spec.surface == "calf" and noise == 1.0:
                flat = measure(scan, options=MeasureOptions(max_skin_degree=1, max_noise_mm=100.0))
                plane_fit.append(_error("%", flat.volume_cm3, truth.volume_cm3))
                curved_fit.append(_error("%", result.volume_cm3, truth.volume_cm3))
        progress(f"  capture accuracy: wound {index + 1}/{count} ({spec.surface}, {noise} mm)")
    figures: list[Figure] = []
    for frames in FRAME_COUNTS:
        for noise in NOISES:
            group_refused = refused.get((frames, noise), [])
            for name, _, unit in _METRICS:
                samples = errors.get((name, frames, noise), [])
                if not samples:
                    continue
                key = f"capture.{name}.f{frames}.n{noise:g}"
                extra: dict[str, Any] = {
                    "wounds": len(samples),
                    "frames": frames,
                    "noise_mm": noise,
                    "worst": max(samples),
                    "refused": group_refused,
                }
                target = _TARGETS.get((name, frames, noise))
                figures.append(
                    Figure(
                        "capture",
                        f"{key}.median",
                        f"median |error| of {name}, {frames} frame(s), {noise:g} mm noise",
                        unit,
                        [statistics.median(samples)],
                        target=target,
                        target_op="<=" if target is not None else None,
                        extra=extra,
                    )
                )
                figures.append(
                    Figure(
                        "capture",
                        f"{key}.worst",
                        f"worst |error| of {name}, {frames} frame(s), {noise:g} mm noise",
                        unit,
                        [max(samples)],
                        extra=extra,
                    )
                )
                if name == "area":
                    signed = signed_area[(frames, noise)]
                    figures.append(
                        Figure(
                            "capture",
                            f"{key}.median_signed",
                            f"median signed error of area (negative: reads low), {frames} "
                            f"frame(s), {noise:g} mm noise",
                            unit,
                            [statistics.median(signed)],
                            extra={**extra, "worst_signed": max(signed, key=abs)},
                        )
                    )
    for (source, name), samples in sorted(boundary.items()):
        unit = next(u for n, _, u in _METRICS if n == name)
        for stat, value in (("median", statistics.median(samples)), ("worst", max(samples))):
            figures.append(
                Figure(
                    "capture",
                    f"capture.boundary.{source}.{name}.{stat}",
                    f"{stat} |error| of {name}, 10 frames, all noise, {source} boundary",
                    unit,
                    [value],
                    extra={"wounds": len(samples)},
                )
            )
    for source, samples in sorted(signed_boundary.items()):
        figures.append(
            Figure(
                "capture",
                f"capture.boundary.{source}.area.median_signed",
                f"median signed error of area, 10 frames, all noise, {source} boundary",
                "%",
                [statistics.median(samples)],
                extra={"wounds": len(samples), "worst_signed": max(samples, key=abs)},
            )
        )
    refusals = sorted(
        f"{frames} frame(s), {noise:g} mm, {item}"
        for (frames, noise), items in refused.items()
        for item in items
    )
    scans = count * len(FRAME_COUNTS)
    figures.append(
        Figure(
            "capture",
            "capture.refused",
            "scans of the suite a quality gate refused (not in the medians above)",
            "%",
            [len(refusals) / scans * 100.0],
            extra={"scans": scans, "refusals": refusals},
        )
    )
    figures.append(
        Figure(
            "capture",
            "capture.ruler_overestimate",
            "ruler length x width against the true area, median over the suite",
            "%",
            [statistics.median(ruler)],
            extra={"anchor_percent": 41.0, "wounds": len(ruler)},
        )
    )
    if plane_fit:
        figures.append(
            Figure(
                "capture",
                "capture.calf_volume.plane_fit",
                "calf wounds, 10 frames, 1 mm: median |volume error| with a plane as skin",
                "%",
                [statistics.median(plane_fit)],
                extra={
                    "wounds": len(plane_fit),
                    "curved_fit_median": statistics.median(curved_fit),
                },
            )
        )
        figures.append(
            Figure(
                "capture",
                "capture.calf_volume.curved_fit",
                "the same wounds with the fitted curved skin (median |volume error|)",
                "%",
                [statistics.median(curved_fit)],
                extra={"wounds": len(curved_fit)},
            )
        )
    return figures


def _model() -> Any:
    """The bundled wound model, or None without onnxruntime (the comparison is skipped)."""
    from models import choose_runner

    model = choose_runner()
    if model is None:
        progress("  capture: no wound model (onnxruntime missing); model boundary figures skipped")
    return model


def _speed(repeat: int) -> list[Figure]:
    from lidar_capture import Scan, WoundSpec, generate, measure

    synthetic = generate(WoundSpec(seed=7, surface="calf", noise_mm=1.0, frames=10))
    scans: dict[str, Scan] = {
        "frame1": replace(synthetic.scan, frames=synthetic.scan.frames[:1]),
        "frames10": synthetic.scan,
    }
    points = int(sum(int((f.depth > 0).sum()) for f in synthetic.scan.frames[:1]))
    measure(scans["frame1"])  # warm up: imports, Open3D's first calls
    figures: list[Figure] = []
    for key, scan in scans.items():
        samples = [timed(partial(measure, scan)) * 1000.0 for _ in range(repeat)]
        frames = len(scan.frames)
        figures.append(
            Figure(
                "capture",
                f"capture.time.{key}",
                f"{frames} frame(s) of 256x192 depth to a measurement, one core",
                "ms",
                samples,
                target=500.0 if frames == 1 else None,
                target_op="<=" if frames == 1 else None,
                extra={"frames": frames, "depth_points_first_frame": points},
            )
        )
    return figures


def run(*, scale: int, repeat: int, root: Path) -> Sequence[Figure]:
    """Accuracy over the synthetic suite, then speed."""
    del root
    # Open3D's OpenMP pool would fight over the one pinned core.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    count = wound_count(scale)
    progress(f"capture: accuracy over {count} synthetic wounds, then speed")
    return [*_accuracy(count), *_speed(repeat)]
