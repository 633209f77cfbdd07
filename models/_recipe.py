"""The training recipe: train, export to ONNX, quantize to int8, evaluate, bench, release.

Training needs the ``[train]`` extra (PyTorch, onnx) and the ``[capture]`` extra (the
synthetic scans); evaluating and benchmarking need ``[inference]`` (onnxruntime). Each
heavy import happens inside the function that needs it, so importing `models` costs
nothing.

The released model is two folders, each loadable by `edge_sdk.ModelRunner.load`::

    wound_seg/
        int8/manifest.json, int8/wound_seg_int8.onnx   the on-device model
        fp32/manifest.json, fp32/wound_seg_fp32.onnx   the reference it was quantized from
        MODEL_CARD.md, evaluation.json, training_log.json

Errors: `ModelRecipeError` (a checkpoint or graph cannot be read or loaded, an export
disagrees with torch, a release breaks the size limit); `edge_sdk.ModelVerificationError`
and `edge_sdk.ModelError` from `verify`.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import os
import pickle
import platform
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from models._dataset import augment_batch, build_dataset, generator_fingerprint

if TYPE_CHECKING:
    import torch

__all__ = [
    "MAX_MODEL_BYTES",
    "MODEL_ID",
    "MODEL_VERSION",
    "RELEASE_DIR",
    "ModelRecipeError",
    "bench",
    "evaluate",
    "export",
    "quantize",
    "release",
    "train",
    "verify",
]

MODEL_ID = "wound_seg"
MODEL_VERSION = "1.0.0"
#: The committed release (shipped in the package): `RELEASE_DIR / "int8"` is the
#: on-device model folder, loadable by `edge_sdk.ModelRunner.load`.
RELEASE_DIR = Path(__file__).resolve().parent / MODEL_ID
#: The issue's limit on one model file.
MAX_MODEL_BYTES = 3 * 1024 * 1024
OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
QUICK_SCANS = 24
QUICK_EPOCHS = 2
#: Largest |onnxruntime - torch| logit difference an fp32 export may show.
EXPORT_TOLERANCE = 1e-3

Images = npt.NDArray[np.float32]
Labels = npt.NDArray[np.uint8]
PathLike = str | os.PathLike[str]


class ModelRecipeError(Exception):
    """The recipe produced something it must not ship (a mismatch or a broken limit)."""


# --------------------------------------------------------------------------- helpers


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


def _input_shape() -> tuple[int, int, int, int]:
    from lidar_capture import MODEL_CHANNELS, MODEL_INPUT_SIZE

    return (1, len(MODEL_CHANNELS), MODEL_INPUT_SIZE, MODEL_INPUT_SIZE)


def _classes() -> tuple[str, ...]:
    from lidar_capture import TISSUES

    return tuple(TISSUES)


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _import(name: str) -> Any:
    # onnxruntime ships no type information; importing it by name keeps mypy strict here.
    return importlib.import_module(name)


def _session(onnx_path: PathLike, threads: int) -> Any:
    ort = _import("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # onnxruntime's errors derive from Exception directly (a private pybind module).
    try:
        return ort.InferenceSession(
            str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:
        raise ModelRecipeError(f"{onnx_path} does not load in onnxruntime: {exc}") from None


def _run(session: Any, x: Images) -> npt.NDArray[np.float32]:
    """Logits for (N, C, S, S) inputs, one at a time (the graph's batch is fixed at 1)."""
    out = [session.run([OUTPUT_NAME], {INPUT_NAME: x[i : i + 1]})[0][0] for i in range(len(x))]
    return np.stack(out).astype(np.float32)


def _probe_inputs(n: int, seed: int = 0) -> Images:
    """Random inputs with the canonical channels' ranges, for checks that need no scan."""
    rng = np.random.default_rng(seed)
    _, c, s, _ = _input_shape()
    x = np.empty((n, c, s, s), dtype=np.float32)
    x[:, :3] = rng.uniform(0.0, 1.0, (n, 3, s, s))
    x[:, 3] = rng.uniform(-1.0, 2.0, (n, s, s))
    x[:, 4] = 1.0
    return x


# --------------------------------------------------------------------------- training


def _soft_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - mean over classes of the batch's soft Dice; keeps the small tissues in view."""
    import torch

    probs = torch.softmax(logits, dim=1)
    onehot = torch.nn.functional.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2)
    onehot = onehot.to(probs.dtype)
    inter = (probs * onehot).sum(dim=(0, 2, 3))
    total = probs.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
    dice = (2 * inter + 1.0) / (total + 1.0)
    return 1.0 - dice.mean()


def train(
    out_dir: PathLike,
    *,
    seeds_train: range = range(0, 400),
    epochs: int = 30,
    seed: int = 0,
    quick: bool = False,
    frames_choices: Sequence[int] = (1, 3),
    cache_dir: PathLike | None = None,
    batch_size: int = 16,
    lr: float = 3e-3,
    widths: Sequence[int] | None = None,
    augment: bool = True,
    threads: int = 2,
    on_epoch: Callable[[Mapping[str, Any]], None] | None = None,
) -> Path:
    """Train the wound U-Net on synthetic scans; writes `model.pt` and `training_log.json`.

    Seeded end to end (initial weights, batch order, augmentation): the same arguments,
    torch version, thread count and CPU give the same losses.

    Args:
        out_dir: where the checkpoint and the log go (created).
        seeds_train: the training scans' seeds (refused scans are skipped).
        epochs: passes over the training set.
        seed: seeds torch and numpy.
        quick: a smoke run: the first 24 seeds and at most 2 epochs.
        frames_choices: frames per scan, taken in turn by seed (1 = a live frame).
        cache_dir: keep the rendered training set here (see `build_dataset`).
        batch_size: scans per step.
        lr: Adam's initial learning rate (cosine-annealed to zero).
        widths: U-Net channels per level; default `_net.DEFAULT_WIDTHS`.
        augment: dihedral flips/rotations and brightness/tint jitter per batch.
        threads: torch's intra-op threads while training (restored afterwards).
        on_epoch: called with each epoch's log entry (for progress output).

    Returns:
        The checkpoint's path.
    """
    import torch
    import torch.nn.functional as F

    from models._net import DEFAULT_WIDTHS, WoundUNet

    if quick:
        seeds_train = seeds_train[:QUICK_SCANS]
        epochs = min(epochs, QUICK_EPOCHS)
    if epochs < 1 or batch_size < 1:
        raise ValueError("epochs and batch_size must be at least 1")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    x, y = build_dataset(seeds_train, frames_choices=frames_choices, cache_dir=cache_dir)
    data_seconds = time.perf_counter() - started

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        net_widths = tuple(widths) if widths is not None else DEFAULT_WIDTHS
        net = WoundUNet(in_channels=x.shape[1], classes=len(_classes()), widths=net_widths)
        optimizer = torch.optim.Adam(net.parameters(), lr=lr)
        steps_per_epoch = math.ceil(len(x) / batch_size)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=epochs * steps_per_epoch
        )
        log: dict[str, Any] = {
            "config": {
                "seeds_train": [seeds_train.start, seeds_train.stop, seeds_train.step],
                "frames_choices": list(frames_choices),
                "epochs": epochs,
                "seed": seed,
                "quick": quick,
                "batch_size": batch_size,
                "lr": lr,
                "widths": list(net_widths),
                "augment": augment,
                "threads": threads,
                "loss": "cross-entropy + soft Dice (all classes)",
                "optimizer": "Adam, cosine-annealed per step",
            },
            "scans": len(x),
            "refused": len(seeds_train) - len(x),
            "parameters": sum(p.numel() for p in net.parameters()),
            "data_seconds": round(data_seconds, 2),
            "torch": torch.__version__,
            "generator_fingerprint": generator_fingerprint(),
            "epochs": [],
        }
        for epoch in range(1, epochs + 1):
            t0 = time.perf_counter()
            net.train()
            order = rng.permutation(len(x))
            sums = np.zeros(3)
            for step in range(steps_per_epoch):
                idx = np.sort(order[step * batch_size : (step + 1) * batch_size])
                xb, yb = x[idx], y[idx]
                if augment:
                    xb, yb = augment_batch(xb, yb, rng)
                inputs = torch.from_numpy(np.ascontiguousarray(xb))
                target = torch.from_numpy(yb.astype(np.int64))
                logits = net(inputs)
                ce = F.cross_entropy(logits, target)
                dice = _soft_dice_loss(logits, target)
                loss = ce + dice
                optimizer.zero_grad(set_to_none=True)
                torch.autograd.backward(loss)
                optimizer.step()
                schedule.step()
                sums += np.array([loss.item(), ce.item(), dice.item()]) * len(idx)
            entry = {
                "epoch": epoch,
                "loss": float(sums[0] / len(x)),
                "cross_entropy": float(sums[1] / len(x)),
                "dice_loss": float(sums[2] / len(x)),
                "seconds": round(time.perf_counter() - t0, 2),
            }
            log["epochs"].append(entry)
            if on_epoch is not None:
                on_epoch(entry)
        log["train_seconds"] = round(sum(e["seconds"] for e in log["epochs"]), 2)
        checkpoint = out / "model.pt"
        torch.save(
            {
                "format": 1,
                "state_dict": net.state_dict(),
                "widths": list(net_widths),
                "in_channels": int(x.shape[1]),
                "classes": list(_classes()),
                "input_size": int(x.shape[-1]),
            },
            checkpoint,
        )
        _write_json(out / "training_log.json", log)
    finally:
        torch.set_num_threads(previous_threads)
    return checkpoint


def _load_net(checkpoint: PathLike) -> tuple[torch.nn.Module, dict[str, Any]]:
    import torch

    from models._net import WoundUNet

    try:
        state = torch.load(Path(checkpoint), map_location="cpu", weights_only=True)
        net = WoundUNet(
            in_channels=int(state["in_channels"]),
            classes=len(state["classes"]),
            widths=state["widths"],
        )
        net.load_state_dict(state["state_dict"])
    except FileNotFoundError:
        raise ModelRecipeError(f"{checkpoint} is missing") from None
    except (OSError, RuntimeError, KeyError, TypeError, ValueError, pickle.PickleError) as exc:
        # torch.load raises the unpickler's errors; a foreign dict lacks our keys.
        raise ModelRecipeError(f"{checkpoint} is not a wound model checkpoint: {exc}") from None
    net.eval()
    return net, state


# --------------------------------------------------------------------------- export


def export(checkpoint: PathLike, out_onnx: PathLike) -> float:
    """Export a checkpoint to ONNX (opset 17, input "input" [1,5,S,S], output "logits").

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

    net, state = _load_net(checkpoint)
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
    onnx.checker.check_model(str(out), full_check=True)
    probe = _probe_inputs(4)
    with torch.no_grad():
        expected = net(torch.from_numpy(probe)).numpy()
    diff = float(np.max(np.abs(_run(_session(out, 1), probe) - expected)))
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

    q = _import("onnxruntime.quantization")
    quant_pre_process = _import("onnxruntime.quantization.shape_inference").quant_pre_process

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
    onnx.checker.check_model(str(out), full_check=True)
    return out


# --------------------------------------------------------------------------- evaluate


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
    classes = _classes()
    k = len(classes)
    pred = _run(_session(onnx_path, threads), x).argmax(axis=1).astype(np.int64)
    truth = y.astype(np.int64)
    cm = np.bincount((truth * k + pred).ravel(), minlength=k * k).reshape(k, k)
    per_class = {}
    for c, name in enumerate(classes):
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
    ort = _import("onnxruntime")

    if runs < 1 or warmup < 0 or blocks < 1:
        raise ValueError("runs and blocks must be at least 1, warmup at least 0")
    feed = {INPUT_NAME: _probe_inputs(1)}
    result: dict[str, Any] = {"fp32_ms": {}, "int8_ms": {}, "speedup": {}}
    per_block = max(1, runs // blocks)
    for n in threads:
        sessions = {"fp32_ms": _session(fp32, n), "int8_ms": _session(int8, n)}
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


# --------------------------------------------------------------------------- release


def _preprocessing() -> dict[str, Any]:
    from lidar_capture import MODEL_CHANNELS, MODEL_INPUT_SIZE
    from lidar_capture._model_input import MIN_SPAN_M, SPAN_PER_RADIUS

    return {
        "output_kind": "logits",
        "builder": "lidar_capture.model_input(measurement.raster).image",
        "layout": "NCHW",
        "size": MODEL_INPUT_SIZE,
        "channels": list(MODEL_CHANNELS),
        "scaling": {
            "red": "0..1",
            "green": "0..1",
            "blue": "0..1",
            "depth_cm": "depth below the skin surface in cm, clipped to -1..2",
            "valid": "1 where the scan saw the skin, else 0 (every other channel is 0 there)",
        },
        "view": (
            "orthographic, straight down the skin normal, centred on the wound; the square's "
            f"side is {SPAN_PER_RADIUS} x the wound's largest radius, at least "
            f"{MIN_SPAN_M * 100:g} cm"
        ),
    }


def _flat_metrics(evaluation: Mapping[str, Any], latency: Mapping[str, float]) -> dict[str, float]:
    flat: dict[str, float] = {
        "heldout_scans": float(evaluation["scans"]),
        "pixel_accuracy": round(evaluation["pixel_accuracy"], 4),
        "wound_dice": round(evaluation["wound"]["dice"], 4),
        "wound_iou": round(evaluation["wound"]["iou"], 4),
        "wound_dice_per_image": round(evaluation["wound"]["dice_per_image"], 4),
    }
    for name, scores in evaluation["classes"].items():
        for key in ("dice", "iou"):
            if scores[key] is not None:
                flat[f"{key}_{name}"] = round(scores[key], 4)
    for n, ms in latency.items():
        flat[f"latency_ms_{n}_thread{'s' if n != '1' else ''}"] = ms
    return flat


def _write_manifest(
    folder: Path,
    onnx_file: Path,
    *,
    quantization: Literal["int8", "fp32"],
    metrics: dict[str, float],
    provenance: dict[str, Any],
    created_at: datetime,
) -> Any:
    from edge_sdk._models import MANIFEST_FILE, MANIFEST_FORMAT, ModelManifest, ModelTensor

    shape = _input_shape()
    manifest = ModelManifest(
        format=MANIFEST_FORMAT,
        model_id=MODEL_ID,
        version=MODEL_VERSION,
        file=onnx_file.name,
        sha256=_sha256(onnx_file),
        size=onnx_file.stat().st_size,
        input=ModelTensor(name=INPUT_NAME, shape=shape),
        output=ModelTensor(name=OUTPUT_NAME, shape=(shape[0], len(_classes()), shape[2], shape[3])),
        classes=_classes(),
        preprocessing=_preprocessing(),
        metrics=metrics,
        provenance=provenance,
        created_at=created_at,
        quantization=quantization,
    )
    (folder / MANIFEST_FILE).write_bytes(manifest.to_bytes())
    return manifest


def _range(r: range) -> list[int]:
    return [r.start, r.stop] if r.step == 1 else [r.start, r.stop, r.step]


def release(
    out_dir: PathLike | None = None,
    *,
    work_dir: PathLike | None = None,
    cache_dir: PathLike | None = None,
    seeds_train: range = range(0, 400),
    seeds_calibration: range = range(5000, 5064),
    seeds_eval: range = range(10_000, 10_200),
    frames_choices: Sequence[int] = (1, 3),
    epochs: int = 30,
    seed: int = 0,
    quick: bool = False,
    on_epoch: Callable[[Mapping[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train, export, quantize, evaluate and bench; write the release into `out_dir`
    (default `RELEASE_DIR`, the package's own copy).

    Writes `fp32/` and `int8/` (each an .onnx and its `manifest.json`), `MODEL_CARD.md`,
    `evaluation.json` (full scores and latencies) and `training_log.json`. Training,
    calibration and evaluation seeds must not overlap. Rendering the default sets takes
    about 8 minutes on two cores (once, with `cache_dir`), training about 6.

    Args:
        out_dir: the release folder; default `RELEASE_DIR`.
        work_dir: where `train` writes the checkpoint and log; default a new temporary
            folder, left in place.
        cache_dir: keep the rendered scans here (see `build_dataset`).
        seeds_train, seeds_calibration, seeds_eval: disjoint seed ranges.
        frames_choices, epochs, seed, on_epoch: as for `train`.
        quick: train as `train(quick=True)` and bench 4 runs: a smoke test of the whole
            path, not a model to ship.

    Returns:
        The contents of `evaluation.json`.

    Raises:
        ValueError: the seed ranges overlap.
        ModelRecipeError: a model file is over `MAX_MODEL_BYTES`.
    """
    ranges = {"train": seeds_train, "calibration": seeds_calibration, "eval": seeds_eval}
    names = list(ranges)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if set(ranges[a]) & set(ranges[b]):
                raise ValueError(f"the {a} and {b} seed ranges overlap")
    import onnx

    onnxruntime = _import("onnxruntime")
    import torch

    out = Path(out_dir) if out_dir is not None else RELEASE_DIR
    work = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix="wound-"))
    started = time.perf_counter()
    checkpoint = train(
        work,
        seeds_train=seeds_train,
        epochs=epochs,
        seed=seed,
        frames_choices=frames_choices,
        cache_dir=cache_dir,
        quick=quick,
        on_epoch=on_epoch,
    )
    log = json.loads((work / "training_log.json").read_text(encoding="utf-8"))
    fp32 = out / "fp32" / f"{MODEL_ID}_fp32.onnx"
    int8 = out / "int8" / f"{MODEL_ID}_int8.onnx"
    export_diff = export(checkpoint, fp32)
    x_cal, _ = build_dataset(seeds_calibration, frames_choices=frames_choices, cache_dir=cache_dir)
    quantize(fp32, int8, x_cal)
    x_eval, y_eval = build_dataset(seeds_eval, frames_choices=frames_choices, cache_dir=cache_dir)
    scores = {"fp32": evaluate(fp32, x_eval, y_eval), "int8": evaluate(int8, x_eval, y_eval)}
    latency = bench(fp32, int8, runs=4, warmup=1, blocks=2) if quick else bench(fp32, int8)
    sizes = {"fp32": fp32.stat().st_size, "int8": int8.stat().st_size}
    for kind, size in sizes.items():
        if size > MAX_MODEL_BYTES:
            raise ModelRecipeError(f"the {kind} model is {size} bytes, over {MAX_MODEL_BYTES}")

    where = "" if out_dir is None else f"{str(out_dir)!r}, "
    command = (
        'python -c "from models._recipe import release; release('
        f"{where}seeds_train=range({seeds_train.start}, {seeds_train.stop}), "
        f"seeds_calibration=range({seeds_calibration.start}, {seeds_calibration.stop}), "
        f"seeds_eval=range({seeds_eval.start}, {seeds_eval.stop}), "
        f"frames_choices={tuple(frames_choices)}, epochs={epochs}, seed={seed}"
        f'{", quick=True" if quick else ""})"'
    )
    evaluation = {
        "model_id": MODEL_ID,
        "version": MODEL_VERSION,
        "evaluation": scores,
        "bench": latency,
        "sizes_bytes": sizes,
        "export_max_abs_diff": export_diff,
        "eval_seeds": _range(seeds_eval),
        "eval_scans": len(x_eval),
        "release_seconds": round(time.perf_counter() - started, 1),
    }
    provenance: dict[str, Any] = {
        "data": "synthetic only: scans rendered by lidar_capture's generator",
        "lidar_capture_version": _version("coherency"),
        "generator_fingerprint": generator_fingerprint(),
        "frames_per_scan": list(frames_choices),
        "train": {
            "seeds": _range(seeds_train),
            "scans": log["scans"],
            "refused": log["refused"],
        },
        "calibration": {"seeds": _range(seeds_calibration), "scans": len(x_cal)},
        "evaluation": {"seeds": _range(seeds_eval), "scans": len(x_eval)},
        "training": {
            "epochs": log["config"]["epochs"],
            "seed": seed,
            "batch_size": log["config"]["batch_size"],
            "lr": log["config"]["lr"],
            "widths": log["config"]["widths"],
            "parameters": log["parameters"],
            "loss": log["config"]["loss"],
            "final_loss": round(log["epochs"][-1]["loss"], 5),
            "train_seconds": log["train_seconds"],
            "threads": log["config"]["threads"],
        },
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "opset": OPSET,
        "command": command,
    }
    created = datetime.now(UTC).replace(microsecond=0)
    _write_manifest(
        fp32.parent,
        fp32,
        quantization="fp32",
        metrics=_flat_metrics(scores["fp32"], latency["fp32_ms"]),
        provenance=provenance,
        created_at=created,
    )
    _write_manifest(
        int8.parent,
        int8,
        quantization="int8",
        metrics=_flat_metrics(scores["int8"], latency["int8_ms"]),
        provenance={
            **provenance,
            "quantization": {
                "method": "onnxruntime quantize_static, QDQ",
                "weights": "int8, symmetric, per output channel",
                "activations": "uint8, asymmetric, per tensor",
                "calibration": "MinMax over the calibration scans",
                "from": f"{fp32.parent.name}/{fp32.name}",
            },
        },
        created_at=created,
    )
    _write_json(out / "evaluation.json", evaluation)
    shutil.copyfile(work / "training_log.json", out / "training_log.json")
    (out / "MODEL_CARD.md").write_text(_model_card(evaluation, provenance, log), encoding="utf-8")
    return evaluation


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _model_card(
    evaluation: Mapping[str, Any], provenance: Mapping[str, Any], log: Mapping[str, Any]
) -> str:
    scores = evaluation["evaluation"]
    latency = evaluation["bench"]
    sizes = evaluation["sizes_bytes"]
    train_info = provenance["train"]
    rows = [
        f"| wound vs rest | {_fmt(scores['fp32']['wound']['dice'])} | "
        f"{_fmt(scores['int8']['wound']['dice'])} | {_fmt(scores['fp32']['wound']['iou'])} | "
        f"{_fmt(scores['int8']['wound']['iou'])} |"
    ]
    for name in _classes():
        f, q = scores["fp32"]["classes"][name], scores["int8"]["classes"][name]
        rows.append(
            f"| {name} | {_fmt(f['dice'])} | {_fmt(q['dice'])} | {_fmt(f['iou'])} | "
            f"{_fmt(q['iou'])} |"
        )
    lat_rows = [
        f"| {n} | {latency['fp32_ms'][n]:.2f} | {latency['int8_ms'][n]:.2f} | "
        f"{latency['speedup'][n]:.2f}x |"
        for n in latency["fp32_ms"]
    ]
    epochs = log["config"]["epochs"]
    return f"""# Model card: {MODEL_ID} {MODEL_VERSION}

**This model is not a clinical device.**
**It was trained only on synthetic data rendered by `lidar_capture`.**
**It has not been validated on real wounds or real patients.** Its output must not be
used to diagnose, stage or treat a wound.

## What it does
Segments the canonical wound input (`lidar_capture.model_input`: a 96 x 96 orthographic
view down the skin normal with red, green, blue, depth below the skin in cm and
coverage) into five classes: background (skin and anything that is not wound),
granulation, slough, necrosis and epithelium. The capture pipeline uses the mask for the
wound boundary and the tissue composition (% of wound area per class).

Two files: `int8/{MODEL_ID}_int8.onnx` (the on-device model, static int8, QDQ) and
`fp32/{MODEL_ID}_fp32.onnx` (the float reference it was quantized from), each with a
`manifest.json` pinning its sha256. Output: logits "logits" [1, 5, 96, 96].

## Intended use
Research and development of the Coherency capture pipeline: a stand-in that exercises
the on-device inference path, the model manifest and update mechanism, and measurement
with a learned boundary. Any ONNX model that meets the manifest contract can replace it.

## Training data
Only synthetic scans: {train_info["scans"]} training scans (seeds
{train_info["seeds"][0]}-{train_info["seeds"][1] - 1}; {train_info["refused"]} refused by
`measure` and left out), 1- and 3-frame captures alternating, rendered by `lidar_capture`
{provenance["lidar_capture_version"]} (generator fingerprint
{provenance["generator_fingerprint"]}): six Fitzpatrick-like skin tones, four body sites
(plane, calf, heel, sacrum), elliptical and irregular outlines, four depth profiles,
LiDAR-like depth noise and hand motion, each wound's tissues painted by the generator.
Calibration ({provenance["calibration"]["scans"]} scans) and evaluation
({provenance["evaluation"]["scans"]} scans) seeds are disjoint from training.

Network: U-Net, widths {provenance["training"]["widths"]},
{provenance["training"]["parameters"]:,} parameters; {epochs} epochs of Adam with
cross-entropy + soft Dice, dihedral and colour augmentation; torch
{provenance["torch"]}, {provenance["training"]["train_seconds"]:.0f} s of training on
{provenance["training"]["threads"]} CPU threads.

Reproduce: `{provenance["command"]}`

## Metrics

Held-out synthetic scans: seeds {evaluation["eval_seeds"][0]}-{evaluation["eval_seeds"][1] - 1}
({evaluation["eval_scans"]} scans, none used in training or calibration). Dice and IoU
are over all pixels of the set; "wound vs rest" is any tissue class against background.

| class | Dice fp32 | Dice int8 | IoU fp32 | IoU int8 |
| --- | --- | --- | --- | --- |
{chr(10).join(rows)}

Mean per-scan wound Dice: fp32 {_fmt(scores["fp32"]["wound"]["dice_per_image"])},
int8 {_fmt(scores["int8"]["wound"]["dice_per_image"])}.

Latency (median of {latency["runs"]} runs, onnxruntime {latency["onnxruntime"]},
{latency["cpu"]}):

| threads | fp32 ms | int8 ms | speed-up |
| --- | --- | --- | --- |
{chr(10).join(lat_rows)}

Sizes: fp32 {sizes["fp32"] / 1024:.0f} KiB, int8 {sizes["int8"] / 1024:.0f} KiB.

## Limitations
- Synthetic only: real skin texture, lighting, exudate, dressings, hair, periwound
  maceration, scars and the variety of real tissue appearance are absent from training.
  Expect much lower accuracy on real captures until it is trained on labelled real data.
- The tissue classes come from the generator's painted regions, not clinicians'
  judgement; small classes (necrosis, epithelium) are the least reliable.
- It sees only the canonical input: a wound the capture pipeline cannot measure never
  reaches it, and the crop assumes the capture pipeline found the wound first.
- No fairness claims: skin tones are varied synthetically, not validated on people.
"""


# --------------------------------------------------------------------------- verify


def verify(model_dir: PathLike) -> dict[str, Any]:
    """Check a release folder: every model's sha256 and size against its manifest, the
    size limit, and that onnxruntime loads it with the manifest's input and output.

    Returns:
        {folder name: manifest} for each model folder checked.

    Raises:
        edge_sdk.ModelVerificationError: a file does not match its manifest.
        edge_sdk.ModelError: a graph does not load or differs from its manifest.
        ModelRecipeError: no model folder found, or a file is over `MAX_MODEL_BYTES`.
    """
    from edge_sdk._models import MANIFEST_FILE, ModelRunner

    root = Path(model_dir)
    folders = sorted(p.parent for p in root.glob(f"*/{MANIFEST_FILE}"))
    if not folders:
        raise ModelRecipeError(f"{root} holds no model folder (*/{MANIFEST_FILE})")
    found = {}
    for folder in folders:
        runner = ModelRunner.load(folder)
        if runner.manifest.size > MAX_MODEL_BYTES:
            raise ModelRecipeError(
                f"{folder / runner.manifest.file} is {runner.manifest.size} bytes, "
                f"over {MAX_MODEL_BYTES}"
            )
        found[folder.name] = runner.manifest
    return found
