"""`coherency models ...`: the wound model's recipe and the device's installed model.

A thin layer over `models`. Training needs the ``train`` extra (torch) and ``capture``
(synthetic scans); export and quantization ``train`` (onnx) and ``inference``
(onnxruntime); evaluation and benchmarks ``inference``. The recipe's functions load
what they need on first use, so `coherency --help` works without any of them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from cli._app import EXIT_INVALID, App, CliError, with_app
from cli._extras import needs_extras
from cli._output import emit, json_option, show_fields
from models import BUNDLED_FP32_DIR, BUNDLED_MODEL_DIR, ModelRecipeError, verify_model_folder

__all__ = ["models"]


@contextmanager
def _recipe(*extras: str) -> Iterator[None]:
    """Report a missing extra, and the recipe's own errors, as one line."""
    with needs_extras(*extras):
        try:
            yield
        except ModelRecipeError as exc:
            raise CliError(str(exc), EXIT_INVALID) from None


def _seeds(text: str) -> range:
    try:
        start, stop = (int(part) for part in text.split(":"))
    except ValueError:
        raise click.BadParameter("seeds are START:STOP, e.g. 0:400") from None
    if not 0 <= start < stop:
        raise click.BadParameter("seeds are START:STOP with 0 <= START < STOP")
    return range(start, stop)


def _say_epoch(as_json: bool) -> Any:
    def say(entry: Mapping[str, Any]) -> None:
        if not as_json:
            click.echo(
                f"epoch {entry.get('epoch')}: loss {float(entry.get('loss', 0.0)):.4f}", err=True
            )

    return say


@click.group()
def models() -> None:
    """The wound model: train, export, quantize, evaluate, bench, verify, install."""


@models.command("train")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    default=30,
    show_default=True,
    help="Passes over the data.",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed of the run (training is reproducible).",
)
@click.option(
    "--seeds",
    "seeds_text",
    default="0:400",
    show_default=True,
    help="Synthetic scans to train on, START:STOP.",
)
@click.option(
    "--quick",
    is_flag=True,
    help="A tiny run (24 scans, 2 epochs) that checks the recipe end to end.",
)
@json_option
def models_train(
    out_dir: Path, epochs: int, seed: int, seeds_text: str, quick: bool, as_json: bool
) -> None:
    """Train the wound U-Net on synthetic scans; writes model.pt and training_log.json."""
    with _recipe("train", "capture"):
        from models import train

        checkpoint = train(out_dir, seeds_train=_seeds(seeds_text), epochs=epochs, seed=seed,
                           quick=quick, on_epoch=_say_epoch(as_json))  # fmt: skip
    emit(as_json, {"checkpoint": str(checkpoint)}, show_fields)


@models.command("export")
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("out_onnx", type=click.Path(dir_okay=False, path_type=Path))
@json_option
def models_export(checkpoint: Path, out_onnx: Path, as_json: bool) -> None:
    """Export a checkpoint to ONNX (opset 17) and check it against torch."""
    with _recipe("train", "inference"):
        from models import export

        diff = export(checkpoint, out_onnx)
    emit(as_json, {"onnx": str(out_onnx), "max_abs_diff": diff}, show_fields)


@models.command("quantize")
@click.argument("fp32_onnx", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("out_onnx", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--calibration",
    "calibration_text",
    default="5000:5064",
    show_default=True,
    help="Synthetic scans to calibrate on, START:STOP (never the training ones).",
)
@json_option
def models_quantize(fp32_onnx: Path, out_onnx: Path, calibration_text: str, as_json: bool) -> None:
    """Statically quantize an fp32 model to int8 (QDQ, per-channel weights)."""
    with _recipe("train", "inference", "capture"):
        from models import build_dataset, quantize

        x, _ = build_dataset(_seeds(calibration_text))
        path = quantize(fp32_onnx, out_onnx, x)
    emit(as_json, {"onnx": str(path), "bytes": path.stat().st_size}, show_fields)


@models.command("evaluate")
@click.argument("model", type=click.Path(exists=True, path_type=Path), required=False)
@click.option(
    "--seeds",
    "seeds_text",
    default="10000:10100",
    show_default=True,
    help="Held-out synthetic scans, START:STOP.",
)
@json_option
def models_evaluate(model: Path | None, seeds_text: str, as_json: bool) -> None:
    """Score a model (.onnx or a model folder; default the bundled int8) on held-out scans:
    wound-vs-rest and per-tissue Dice and IoU."""
    with _recipe("inference", "capture"):
        from models import build_dataset, evaluate

        x, y = build_dataset(_seeds(seeds_text))
        result = evaluate(model or BUNDLED_MODEL_DIR, x, y)
    shown = {"scans": result["scans"], "wound_dice": result["wound"]["dice"],
             **{f"{k}_dice": v["dice"] for k, v in result["classes"].items()}}  # fmt: skip
    emit(as_json, result, lambda _: show_fields(shown))


@models.command("bench")
@json_option
def models_bench(as_json: bool) -> None:
    """Latency of the bundled fp32 and int8 models in the same run, 1 and 2 threads."""
    with _recipe("inference"):
        from models import bench

        result = bench(BUNDLED_FP32_DIR, BUNDLED_MODEL_DIR)
    rows = {f"{kind} {t} thread(s)": f"{ms:.2f} ms" for kind in ("fp32", "int8")
            for t, ms in result[f"{kind}_ms"].items()}  # fmt: skip
    rows |= {f"int8 speed-up, {t} thread(s)": f"{x:.2f}x" for t, x in result["speedup"].items()}
    emit(as_json, result, lambda _: show_fields(rows))


@models.command("verify")
@click.argument(
    "folder", type=click.Path(exists=True, file_okay=False, path_type=Path), required=False
)
@click.option(
    "--public-key",
    help="Hex Ed25519 key the manifest's signature (manifest.sig) must verify against.",
)
@json_option
def models_verify(folder: Path | None, public_key: str | None, as_json: bool) -> None:
    """Check a model folder (default the bundled one): sha256 and size against its manifest,
    and the signature when --public-key is given."""
    where = folder or BUNDLED_MODEL_DIR
    key = None
    if public_key is not None:
        try:
            key = bytes.fromhex(public_key)
        except ValueError:
            raise click.BadParameter("--public-key is hex") from None
    manifest = verify_model_folder(where, public_key=key)
    emit(as_json, {"folder": str(where), "model_id": manifest.model_id, "version": manifest.version,
                   "sha256": manifest.sha256, "signature_checked": key is not None, "ok": True},
         show_fields)  # fmt: skip


@models.command("fetch")
@json_option
@with_app
def models_fetch(app: App, as_json: bool) -> None:
    """Fetch the model the server publishes, verify it against the server key pinned at
    enrolment, and make it this device's current model (the old one stays on failure)."""
    update = app.client().update_model()
    emit(as_json, {"changed": update.changed, "reason": update.reason,
                   "model": None if update.manifest is None else
                   f"{update.manifest.model_id} {update.manifest.version}"},
         show_fields)  # fmt: skip
