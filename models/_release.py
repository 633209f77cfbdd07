"""The release: train, export, quantize, evaluate and bench; write the model folders,
their manifests and the model card.

The released model is two folders, each loadable by `edge_sdk.ModelRunner.load`::

    wound_seg/
        int8/manifest.json, int8/wound_seg_int8.onnx   the on-device model
        fp32/manifest.json, fp32/wound_seg_fp32.onnx   the reference it was quantized from
        MODEL_CARD.md, evaluation.json, training_log.json

The model card is ``templates/model_card.md`` (shipped with the package) filled in from
the evaluation and the provenance. `refresh_model_card` re-evaluates a committed release
by skin tone and body site (`models._subgroups`) and rewrites its evaluation and card
without retraining.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from importlib import metadata, resources
from pathlib import Path
from string import Template
from typing import Any, Literal

from edge_sdk import MANIFEST_FILE, MANIFEST_FORMAT, ModelManifest, ModelTensor
from models._bundled import RELEASE_DIR
from models._contract import (
    INPUT_NAME,
    MAX_MODEL_BYTES,
    MODEL_ID,
    MODEL_VERSION,
    OPSET,
    OUTPUT_NAME,
    classes,
    input_shape,
    preprocessing_version,
    tissue_mix_rule,
)
from models._dataset import build_dataset, generator_fingerprint
from models._errors import ModelRecipeError
from models._evaluate import bench, evaluate
from models._export import export, quantize, stamp
from models._onnx import PathLike, import_untyped
from models._subgroups import (
    SKIN_GROUPS,
    SURFACES,
    PhantomSource,
    evaluate_groups,
    evaluate_phantoms,
)
from models._train import train, write_json

__all__ = ["model_card", "refresh_model_card", "release", "restamp"]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


def _preprocessing() -> dict[str, Any]:
    from lidar_capture import (
        MODEL_CHANNELS,
        MODEL_INPUT_SIZE,
        MODEL_MIN_SPAN_M,
        MODEL_SPAN_PER_RADIUS,
    )

    return {
        "output_kind": "logits",
        "version": preprocessing_version(),
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
            f"side is {MODEL_SPAN_PER_RADIUS} x the wound's largest radius, at least "
            f"{MODEL_MIN_SPAN_M * 100:g} cm"
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
    shape = input_shape()
    manifest = ModelManifest(
        format=MANIFEST_FORMAT,
        model_id=MODEL_ID,
        version=MODEL_VERSION,
        file=onnx_file.name,
        sha256=_sha256(onnx_file),
        size=onnx_file.stat().st_size,
        input=ModelTensor(name=INPUT_NAME, shape=shape),
        output=ModelTensor(name=OUTPUT_NAME, shape=(shape[0], len(classes()), shape[2], shape[3])),
        classes=classes(),
        preprocessing=_preprocessing(),
        metrics=metrics,
        provenance=provenance,
        created_at=created_at,
        quantization=quantization,
        tissue_mix=tissue_mix_rule(),
    )
    (folder / MANIFEST_FILE).write_bytes(manifest.to_bytes())
    return manifest


def restamp(folder: PathLike) -> ModelManifest:
    """Bring a released model folder up to the current contract without retraining:
    stamp its graph's ``metadata_props`` (`stamp`; the weights are untouched), then
    rewrite its manifest with the new sha256 and size, the input version and the
    tissue-mix rule. Everything else in the manifest (metrics, provenance, dates) stays.

    Used once on the bundled model when the metadata and the rule were introduced; on a
    folder already up to date it rewrites the same bytes.

    Returns:
        The rewritten manifest.

    Raises:
        edge_sdk.ModelError: the folder's manifest is missing or invalid.
    """
    where = Path(folder)
    old = ModelManifest.from_bytes((where / MANIFEST_FILE).read_bytes())
    graph = stamp(where / old.file)
    fields = old.model_dump()
    fields.update(
        sha256=_sha256(graph),
        size=graph.stat().st_size,
        preprocessing={**old.preprocessing, "version": preprocessing_version()},
        tissue_mix=tissue_mix_rule(),
    )
    manifest = ModelManifest.model_validate(fields)
    (where / MANIFEST_FILE).write_bytes(manifest.to_bytes())
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

    onnxruntime = import_untyped("onnxruntime")
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
        'python -c "from models import release; release('
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
    evaluation["by_group"] = evaluate_groups(int8.parent, seeds_eval, frames_choices=frames_choices)
    write_json(out / "evaluation.json", evaluation)
    shutil.copyfile(work / "training_log.json", out / "training_log.json")
    (out / "MODEL_CARD.md").write_text(model_card(evaluation, provenance, log), encoding="utf-8")
    return evaluation


def refresh_model_card(
    release_dir: PathLike | None = None,
    *,
    seeds: range = range(10_000, 10_120),
    workers: int = 2,
    phantoms: PhantomSource | None = None,
    phantom_seeds: range = range(0, 18),
) -> dict[str, Any]:
    """Evaluate a committed release's int8 model by skin tone and body site, and rewrite
    its ``evaluation.json`` (``by_group``, ``phantoms``, and the files' current sizes) and
    ``MODEL_CARD.md``. No training: the model files are not touched.

    About 8 minutes for the default 120 scans on two busy cores, plus about 20 s a
    10-frame phantom.

    Args:
        release_dir: the release folder; default `RELEASE_DIR`.
        seeds: held-out seeds (the default is the start of the release's evaluation
            range, apart from training and calibration).
        workers: processes to render and measure with.
        phantoms: scans from an independent generator (``tests/phantoms``: ``lambda
            seed: render(phantom_spec(seed))``), never used in training; None keeps the
            figures already in ``evaluation.json``.
        phantom_seeds: the phantoms' seeds.

    Returns:
        The new contents of ``evaluation.json``.
    """
    out = Path(release_dir) if release_dir is not None else RELEASE_DIR
    evaluation: dict[str, Any] = json.loads((out / "evaluation.json").read_text(encoding="utf-8"))
    fp32 = ModelManifest.from_bytes((out / "fp32" / MANIFEST_FILE).read_bytes())
    int8 = ModelManifest.from_bytes((out / "int8" / MANIFEST_FILE).read_bytes())
    provenance = fp32.model_dump(mode="json")["provenance"]
    frames = provenance["frames_per_scan"]
    evaluation["by_group"] = evaluate_groups(
        out / "int8", seeds, frames_choices=frames, workers=workers
    )
    if phantoms is not None:
        evaluation["phantoms"] = evaluate_phantoms(out / "int8", phantoms, phantom_seeds)
    evaluation["sizes_bytes"] = {"fp32": fp32.size, "int8": int8.size}
    log = json.loads((out / "training_log.json").read_text(encoding="utf-8"))
    write_json(out / "evaluation.json", evaluation)
    (out / "MODEL_CARD.md").write_text(model_card(evaluation, provenance, log), encoding="utf-8")
    return evaluation


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _pct(value: float | None, signed: bool = False) -> str:
    return "n/a" if value is None else f"{value:{'+' if signed else ''}.2f} %"


_GROUP_KINDS = {"skin_tone": "skin tone", "surface": "body site"}


def _ordered(groups: Mapping[str, Any], kind: str) -> list[tuple[str, Any]]:
    """A grouping's (name, scores) in the card's order (JSON files sort their keys)."""
    order = tuple(SKIN_GROUPS) if kind == "skin_tone" else SURFACES
    return [(name, groups[kind][name]) for name in order if name in groups[kind]]


def _group_rows(groups: Mapping[str, Any]) -> list[str]:
    """The card's table rows: every scan, then each skin-tone group and body site."""
    named = [("all scans", groups["all"])]
    for kind, label in _GROUP_KINDS.items():
        named += [(f"{label} {name}", scores) for name, scores in _ordered(groups, kind)]
    return [
        f"| {name} | {sc['scans']} | {_fmt(sc['wound_dice'])} | {_fmt(sc['wound_iou'])} | "
        f"{_pct(sc['area_abs_median_pct'])} | {_pct(sc['area_signed_median_pct'], True)} | "
        f"{_pct(sc['area_abs_worst_pct'])} |"
        for name, sc in named
    ]


def _phantom_section(phantoms: Mapping[str, Any] | None, groups: Mapping[str, Any]) -> str:
    """The card's section on the independent phantoms ("" before they were evaluated),
    beside the figures on the training generator's held-out scans (`groups`)."""
    if phantoms is None:
        return ""
    rows = [
        f"| {name} | {sc['area_scans']} | {_pct(sc['area_abs_median_pct'])} | "
        f"{_pct(sc['area_signed_median_pct'], True)} | {_pct(sc['area_abs_worst_pct'])} |"
        for name, sc in [("all", phantoms["all"]), *_ordered(phantoms, "skin_tone")]
    ]
    sized = {n: sc for n, sc in _ordered(phantoms, "skin_tone") if sc["area_scans"]}
    worst = max(sized, key=lambda n: sized[n]["area_abs_median_pct"]) if sized else None
    return "\n".join(
        [
            "## On independent phantoms",
            "Scans from an independent phantom generator (`tests/phantoms`), written apart "
            "from the training generator and **never used in training, calibration or "
            "tuning**: analytic wounds (other outlines and depth profiles, shallow and "
            "cliff-edged ones among them) on flat skin, limbs and heels, tissue colours from "
            "published wound-photograph statistics with a pale margin, skin tones by ITA. "
            f"{phantoms['scans']} phantoms (seeds {phantoms['seeds'][0]}-"
            f"{phantoms['seeds'][1] - 1}, {phantoms['frames']} frames each; "
            f"{phantoms['refused']} refused), area `measure` reports with this model "
            "against the phantom's exact area. Reproduce: `refresh_model_card(phantoms="
            "lambda seed: render(phantom_spec(seed)))` with `from tests.phantoms import "
            "phantom_spec, render`.",
            "",
            "| skin group | phantoms | area error, median abs | median signed | worst abs |",
            "| --- | --- | --- | --- | --- |",
            *rows,
            "",
            (
                f"Worst skin group on the phantoms: {worst} "
                f"({_pct(sized[worst]['area_abs_median_pct'])} median). "
                if worst is not None
                else ""
            )
            + f"Median signed area error {_pct(phantoms['all']['area_signed_median_pct'], True)} "
            "on the phantoms against "
            f"{_pct(groups['all']['area_signed_median_pct'], True)} on the training "
            "generator's held-out scans: the figures above hold for scans like the training "
            "data, these for wounds made another way.",
            "",
        ]
    )


def _group_worse(groups: Mapping[str, Any]) -> str:
    """Where the model is worse: per grouping, the lowest Dice and the largest median
    area error, each beside the best group's."""
    lines = []
    for kind, label in _GROUP_KINDS.items():
        scored = {n: sc for n, sc in _ordered(groups, kind) if sc["wound_dice"] is not None}
        sized = {n: sc for n, sc in scored.items() if sc["area_abs_median_pct"] is not None}
        if len(scored) < 2 or len(sized) < 2:
            continue
        low = min(scored, key=lambda n: scored[n]["wound_dice"])
        high = max(scored, key=lambda n: scored[n]["wound_dice"])
        far = max(sized, key=lambda n: sized[n]["area_abs_median_pct"])
        near = min(sized, key=lambda n: sized[n]["area_abs_median_pct"])
        lines.append(
            f"- By {label}: wound Dice is lowest for {low} ({_fmt(scored[low]['wound_dice'])}; "
            f"best {high}, {_fmt(scored[high]['wound_dice'])}) and the median area error "
            f"largest for {far} ({_pct(sized[far]['area_abs_median_pct'])}; smallest {near}, "
            f"{_pct(sized[near]['area_abs_median_pct'])})."
        )
    return "\n".join(lines)


def model_card(
    evaluation: Mapping[str, Any], provenance: Mapping[str, Any], log: Mapping[str, Any]
) -> str:
    """The model card: ``templates/model_card.md`` filled in.

    Args:
        evaluation: what `release` writes as ``evaluation.json``.
        provenance: the fp32 manifest's provenance.
        log: the training log (``training_log.json``).
    """
    scores = evaluation["evaluation"]
    latency = evaluation["bench"]
    sizes = evaluation["sizes_bytes"]
    train_info = provenance["train"]
    training = provenance["training"]
    rows = [
        f"| wound vs rest | {_fmt(scores['fp32']['wound']['dice'])} | "
        f"{_fmt(scores['int8']['wound']['dice'])} | {_fmt(scores['fp32']['wound']['iou'])} | "
        f"{_fmt(scores['int8']['wound']['iou'])} |"
    ]
    for name in classes():
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
    groups = evaluation["by_group"]
    template = resources.files("models").joinpath("templates/model_card.md").read_text("utf-8")
    return Template(template).substitute(
        model_id=MODEL_ID,
        version=MODEL_VERSION,
        train_scans=train_info["scans"],
        train_first=train_info["seeds"][0],
        train_last=train_info["seeds"][1] - 1,
        train_refused=train_info["refused"],
        lidar_capture_version=provenance["lidar_capture_version"],
        generator_fingerprint=provenance["generator_fingerprint"],
        calibration_scans=provenance["calibration"]["scans"],
        evaluation_scans=provenance["evaluation"]["scans"],
        widths=training["widths"],
        parameters=f"{training['parameters']:,}",
        epochs=log["config"]["epochs"],
        torch=provenance["torch"],
        train_seconds=f"{training['train_seconds']:.0f}",
        threads=training["threads"],
        command=provenance["command"],
        eval_first=evaluation["eval_seeds"][0],
        eval_last=evaluation["eval_seeds"][1] - 1,
        eval_scans=evaluation["eval_scans"],
        score_rows="\n".join(rows),
        fp32_dice_per_image=_fmt(scores["fp32"]["wound"]["dice_per_image"]),
        int8_dice_per_image=_fmt(scores["int8"]["wound"]["dice_per_image"]),
        runs=latency["runs"],
        onnxruntime=latency["onnxruntime"],
        cpu=latency["cpu"],
        latency_rows="\n".join(lat_rows),
        fp32_kib=f"{sizes['fp32'] / 1024:.0f}",
        int8_kib=f"{sizes['int8'] / 1024:.0f}",
        group_scans=groups["scans"],
        group_first=groups["seeds"][0],
        group_last=groups["seeds"][1] - 1,
        group_refused=groups["refused"],
        group_rows="\n".join(_group_rows(groups)),
        group_worse=_group_worse(groups),
        phantom_section=_phantom_section(evaluation.get("phantoms"), groups),
    )
