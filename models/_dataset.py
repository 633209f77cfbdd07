"""Synthetic training data for the wound model: canonical inputs and tissue labels.

Each seed is one `lidar_capture` scan (`random_spec` varies skin tone, body site, wound
shape and depth, sensor noise and hand motion), measured like a real capture and turned
into the model's canonical input (`lidar_capture.model_input`) with the generator's
true tissue labels (`lidar_capture.synthetic_labels`). Needs the ``[capture]`` extra.
Augmentation happens at training time (`augment_batch`), so a cached set stays the
plain renders.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import tempfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = [
    "DATASET_FORMAT",
    "augment_batch",
    "build_dataset",
    "frames_for_seed",
    "generator_fingerprint",
]

#: Bumped when what a cached file holds changes shape or meaning.
DATASET_FORMAT = 1

Images = npt.NDArray[np.float32]
Labels = npt.NDArray[np.uint8]


def frames_for_seed(seed: int, frames_choices: Sequence[int]) -> int:
    """How many frames seed's scan has: the choices in turn, so a range mixes them evenly."""
    return int(frames_choices[seed % len(frames_choices)])


def generator_fingerprint() -> str:
    """A short hash of the `lidar_capture` sources, so a changed generator misses the cache."""
    import lidar_capture

    digest = hashlib.sha256(f"format={DATASET_FORMAT}".encode())
    package = Path(lidar_capture.__file__).parent
    for path in sorted(package.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _sample(seed: int, frames: int) -> tuple[Images, Labels] | None:
    """One seed's (5, S, S) input and (S, S) labels, or None when measuring refuses it."""
    from lidar_capture import (
        MeasurementRefused,
        generate,
        measure,
        model_input,
        random_spec,
        synthetic_labels,
    )

    synthetic = generate(random_spec(seed, frames=frames))
    try:
        measurement = measure(synthetic.scan)
    except MeasurementRefused:
        # A refused scan never reaches the model on a device either.
        return None
    inp = model_input(measurement.raster)
    return inp.image, synthetic_labels(synthetic, inp, measurement.raster)


def _sample_args(args: tuple[int, int]) -> tuple[Images, Labels] | None:
    return _sample(*args)


def _cache_path(cache_dir: Path, seeds: range, frames_choices: Sequence[int]) -> Path:
    frames = "-".join(str(f) for f in frames_choices)
    name = f"wound_{seeds.start}_{seeds.stop}_{seeds.step}_f{frames}_{generator_fingerprint()}.npz"
    return cache_dir / name


def build_dataset(
    seeds: range,
    *,
    frames_choices: Sequence[int] = (1, 3),
    cache_dir: str | os.PathLike[str] | None = None,
    workers: int | None = None,
) -> tuple[Images, Labels]:
    """Render, measure and label one scan per seed; refused scans are left out.

    The same arguments always give identical arrays. With `cache_dir`, the result is
    stored there as an .npz named by the seeds, the frame choices and a fingerprint of
    the generator's sources, and later calls read it back.

    Args:
        seeds: the scans' seeds (a `range`, so the cache can name it).
        frames_choices: frames per scan, taken in turn by seed (`frames_for_seed`).
        cache_dir: where to keep the rendered set; None renders every time.
        workers: processes to render with; default 2 for 32 or more seeds, else 1.

    Returns:
        X, (N, 5, S, S) float32 canonical inputs, and Y, (N, S, S) uint8 `TISSUES` ids.

    Raises:
        ValueError: no frame choices, or every scan was refused.
    """
    if not frames_choices or any(int(f) < 1 for f in frames_choices):
        raise ValueError(f"frames_choices must be positive frame counts, not {frames_choices!r}")
    path = None
    if cache_dir is not None:
        path = _cache_path(Path(cache_dir), seeds, frames_choices)
        if path.exists():
            with np.load(path) as cached:
                return cached["x"], cached["y"]

    jobs = [(seed, frames_for_seed(seed, frames_choices)) for seed in seeds]
    n_workers = workers if workers is not None else (2 if len(jobs) >= 32 else 1)
    if n_workers > 1:
        # spawn: forking a process that may hold torch or Open3D threads can deadlock.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(n_workers, mp_context=context) as pool:
            results = list(pool.map(_sample_args, jobs, chunksize=4))
    else:
        results = [_sample(*job) for job in jobs]
    kept = [r for r in results if r is not None]
    if not kept:
        raise ValueError(f"every scan in seeds {seeds} was refused by measure()")
    x = np.ascontiguousarray(np.stack([r[0] for r in kept]), dtype=np.float32)
    y = np.ascontiguousarray(np.stack([r[1] for r in kept]), dtype=np.uint8)

    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write beside and rename, so an interrupted build never leaves a short cache.
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez_compressed(f, x=x, y=y)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return x, y


def augment_batch(x: Images, y: Labels, rng: np.random.Generator) -> tuple[Images, Labels]:
    """A randomly flipped/rotated, brightness- and tint-jittered copy of a batch.

    The eight dihedral transforms are all views the orthographic input can show (the
    wound frame's in-plane axes are arbitrary). Colour changes touch only red, green and
    blue where the scan saw skin, and stay within 0..1; depth and coverage are kept.

    Args:
        x: (B, C, S, S) inputs with RGB in channels 0-2 and coverage last.
        y: (B, S, S) labels.
        rng: the source of randomness (seeded by the caller for reproducibility).
    """
    xs, ys = [], []
    for xi, yi in zip(x, y, strict=True):
        k = int(rng.integers(4))
        flip = bool(rng.integers(2))
        xi = np.rot90(xi, k, axes=(1, 2))
        yi = np.rot90(yi, k, axes=(0, 1))
        if flip:
            xi, yi = xi[:, :, ::-1], yi[:, ::-1]
        xi = np.array(xi, dtype=np.float32)
        gain = rng.uniform(0.8, 1.2) * rng.uniform(0.94, 1.06, size=3)
        valid = xi[-1] > 0.5
        xi[:3] = np.where(valid, np.clip(xi[:3] * gain[:, None, None], 0.0, 1.0), 0.0)
        xs.append(xi)
        ys.append(np.array(yi, dtype=np.uint8))
    return np.stack(xs), np.stack(ys)
