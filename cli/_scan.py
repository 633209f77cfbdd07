"""`coherency scan ...`: make synthetic scans, measure scans, record them as assessments.

A thin layer over `lidar_capture`: `synth` renders a synthetic scan with its ground
truth, `measure` runs the pipeline on a file or folder (no store involved), `capture`
measures and stores the result as an assessment of a wound.

`lidar_capture` needs the ``capture`` extra (NumPy, Open3D, SciPy, ...), which a
device-only install of `coherency` lacks, so it is imported inside the commands.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from cli._app import EXIT_INVALID, EXIT_OTHER, App, CliError
from cli._output import emit, json_option, show_fields, show_record, table
from edge_sdk import RecordNotFoundError

if TYPE_CHECKING:
    from edge_sdk import EdgeClient
    from lidar_capture import MeasureOptions, Outline, WoundMeasurement, WoundModel
    from lidar_capture._types import Scan

__all__ = ["scan"]

F = TypeVar("F", bound=Callable[..., Any])

# The choices of `lidar_capture._synthetic` (SURFACES, OUTLINES, PROFILES), spelt out so
# `coherency --help` works without the capture extra; a test keeps them equal.
SURFACES = ("plane", "calf", "heel", "sacrum")
OUTLINES = ("ellipse", "irregular")
PROFILES = ("bowl", "punched", "sloped", "shallow")

_OUR_PACKAGES = {"cli", "crdt", "edge_sdk", "lidar_capture", "sync_server"}
# What a Stray Scanner folder `scan synth` wrote holds; --force replaces only such folders.
_SCAN_FOLDER_MARKS = ("odometry.csv", "camera_matrix.csv", "depth")
# (key, label, unit, decimals shown)
_FIGURE_UNITS = (
    ("area_cm2", "area", "cm²", 2),
    ("perimeter_cm", "perimeter", "cm", 2),
    ("length_cm", "length", "cm", 2),
    ("width_cm", "width", "cm", 2),
    ("max_depth_mm", "max depth", "mm", 1),
    ("mean_depth_mm", "mean depth", "mm", 1),
    ("volume_cm3", "volume", "cm³", 3),
    ("ruler_area_cm2", "ruler area (L x W)", "cm²", 2),
)


def _missing_extra(exc: ModuleNotFoundError) -> CliError:
    """The one-line error for a third-party package of the ``capture`` extra missing."""
    if (exc.name or "").split(".")[0] in _OUR_PACKAGES:
        raise exc  # our own bug: let it surface
    return CliError(
        f"scanning needs the `capture` extra ({exc.name} is missing): "
        "pip install 'coherency[capture]'",
        EXIT_OTHER,
    )


@contextmanager
def _capture_extra() -> Iterator[None]:
    """Report a missing ``capture`` extra, and a refused measurement, as one line."""
    try:
        from lidar_capture._errors import MeasurementRefused
    except ModuleNotFoundError as exc:  # the package imports NumPy and the like
        raise _missing_extra(exc) from None
    try:
        yield
    except ModuleNotFoundError as exc:
        raise _missing_extra(exc) from None
    except MeasurementRefused as exc:
        # The reason code too: scripts and support staff look it up in docs/capture.md.
        raise CliError(f"scan refused ({exc.reason}): {exc}", EXIT_INVALID) from None


def _body_axis(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> tuple[float, float, float] | None:
    """``X,Y,Z`` as three finite numbers, not all zero."""
    if value is None:
        return None
    try:
        parts = tuple(float(v) for v in value.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or not all(math.isfinite(v) for v in parts) or not any(parts):
        raise click.BadParameter(f"{value!r} is not X,Y,Z (three numbers, not all zero)")
    return parts[0], parts[1], parts[2]


def _measure_options(command: F) -> F:
    """Add ``--outline``, ``--body-axis`` and ``--frames``, shared by measure and capture."""
    command = click.option(
        "--frames",
        "max_frames",
        type=click.IntRange(min=1),
        help="Use at most this many frames of a sequence (default all).",
    )(command)
    command = click.option(
        "--body-axis",
        metavar="X,Y,Z",
        callback=_body_axis,
        help="Head-ward direction in the scan's world coordinates: length then runs head "
        "to toe (default: the scan's coherency.json, else the wound's major axis).",
    )(command)
    command = click.option(
        "--no-model",
        is_flag=True,
        help="Do not use the wound model: the colour/depth boundary alone (the result "
        "says model_not_used).",
    )(command)
    return click.option(
        "--outline",
        "outline_file",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help='A drawn wound outline (JSON: [[x, y, z], ...] in metres, or {"frame": i, '
        '"pixels": [[u, v], ...]}) that replaces the detected boundary.',
    )(command)


def _read_outline(path: Path | None) -> Outline | None:
    from lidar_capture import Outline
    from lidar_capture._errors import ScanFileError

    if path is None:
        return None
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ScanFileError(path, f"not a readable JSON outline: {exc}") from exc
    return Outline.from_json(content)


def _wound_model(client: EdgeClient | None) -> WoundModel | None:
    """The device's installed model, else the bundled one; None without onnxruntime."""
    from edge_sdk import ModelUnavailableError

    try:
        if client is not None and client.models.current() is not None:
            return client.models.runner()
        from models import bundled_runner

        return bundled_runner()
    except ModelUnavailableError:
        return None  # measured without it; the result says model_not_used


def _measure(
    scan: Scan,
    outline_file: Path | None,
    body_axis: tuple[float, float, float] | None,
    options: MeasureOptions | None = None,
    *,
    model: WoundModel | None = None,
) -> WoundMeasurement:
    from lidar_capture import measure

    return measure(
        scan, outline=_read_outline(outline_file), body_axis=body_axis, options=options,
        model=model,
    )  # fmt: skip


def _show_figures(figures: dict[str, Any]) -> None:
    """The figures as a table, then how they were obtained."""
    table(
        ["figure", "value", "unit"],
        (
            [label, f"{figures[key]:.{decimals}f}", unit]
            for key, label, unit, decimals in _FIGURE_UNITS
            if key in figures
        ),
    )
    extra: dict[str, Any] = {
        name: figures[name]
        for name in ("quality", "boundary_source", "length_axis", "point_count", "frame_count")
        if name in figures
    }
    if "quality" in extra:
        extra["quality"] = ", ".join(extra["quality"]) or "ok"
    if "timings_ms" in figures:
        extra["time"] = f"{figures['timings_ms'].get('total', 0.0) / 1000:.1f} s"
    show_fields(extra)


# ----------------------------------------------------------------------------- scan
@click.group()
def scan() -> None:
    """Make, measure and record wound scans (point clouds and RGB-D sequences).

    Scans are point-cloud files (.ply .pcd .xyz ...) or folders in the Stray Scanner
    layout (depth, confidence, colour, poses), in metres; results are in cm, cm², cm³
    and mm.
    """


@scan.command("synth")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--seed", type=int, default=0, show_default=True, help="Draws the unset options.")
@click.option("--surface", type=click.Choice(SURFACES), help="The body surface around the wound.")
@click.option(
    "--limb-radius",
    "limb_radius_cm",
    type=click.FloatRange(min=0, min_open=True),
    metavar="CM",
    help="Calf radius, or heel size, in cm (ignored for plane and sacrum).",
)
@click.option("--outline", type=click.Choice(OUTLINES), help="The wound's outline shape.")
@click.option("--profile", type=click.Choice(PROFILES), help="The wound floor's shape.")
@click.option(
    "--noise",
    "noise_mm",
    type=click.FloatRange(min=0),
    metavar="MM",
    help="Depth noise (std, mm) of confident pixels at 30 cm.",
)
@click.option("--frames", type=click.IntRange(min=1), help="Number of frames (default 10).")
@click.option(
    "--distance",
    "distance_cm",
    type=click.FloatRange(min=0, min_open=True),
    metavar="CM",
    help="Camera distance to the wound in cm.",
)
@click.option(
    "--skin-tone", type=click.IntRange(1, 6), help="1-6, Fitzpatrick-like, light to very dark."
)
@click.option(
    "--format",
    "out_format",
    type=click.Choice(["dir", "ply"]),
    default="dir",
    show_default=True,
    help="dir: a Stray Scanner folder of frames; ply: one fused, coloured point cloud.",
)
@click.option("--video", is_flag=True, help="Store colour as rgb.mp4 (H.264) in a dir scan.")
@click.option("--force", is_flag=True, help="Replace OUT if a scan is already there.")
@json_option
def scan_synth(
    out: Path,
    seed: int,
    surface: str | None,
    limb_radius_cm: float | None,
    outline: str | None,
    profile: str | None,
    noise_mm: float | None,
    frames: int | None,
    distance_cm: float | None,
    skin_tone: int | None,
    out_format: str,
    video: bool,
    force: bool,
    as_json: bool,
) -> None:
    """Write a synthetic wound scan to OUT, with its exact ground truth.

    Options not given are drawn from --seed; the same options always give the same
    scan. `dir` writes a Stray Scanner folder with OUT/ground_truth.json; `ply` writes
    one point cloud (the frames back-projected and merged at 1 mm), OUT.truth.json and
    OUT's coherency.json sidecar (the body axis).
    """
    if video and out_format != "dir":
        raise click.UsageError("--video needs --format dir")
    given: dict[str, Any] = {
        "surface": surface,
        "limb_radius_m": None if limb_radius_cm is None else limb_radius_cm / 100.0,
        "outline": outline,
        "profile": profile,
        "noise_mm": noise_mm,
        "frames": frames,
        "distance_m": None if distance_cm is None else distance_cm / 100.0,
        "skin_tone": skin_tone,
    }
    targets = (
        [out]
        if out_format == "dir"
        else [out, out.with_suffix(".truth.json"), out.with_name(f"{out.stem}.coherency.json")]
    )
    replaced = _check_room(targets, force=force, folder=out_format == "dir")
    with _capture_extra():
        from lidar_capture import generate, random_spec
        from lidar_capture._point_files import POINT_CLOUD_SUFFIXES, write_point_cloud
        from lidar_capture._points import merge_frames
        from lidar_capture._strayscanner import write_strayscanner

        writable = [x for x in POINT_CLOUD_SUFFIXES if x != ".xyzn"]  # .xyzn needs normals
        if out_format == "ply" and out.suffix.lower() not in writable:
            raise click.UsageError(
                f"{out}: a point cloud is written as one of {', '.join(writable)}"
            )
        spec = random_spec(seed, **{k: v for k, v in given.items() if v is not None})
        made = generate(spec)
        truth = made.truth.to_json()
        # Everything is written beside OUT first and moved into place only once it all
        # succeeded, so a failed write (an unsupported format, PyAV missing for
        # --video) leaves the old scan untouched.
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        try:
            if out_format == "dir":
                truth_path = out / "ground_truth.json"
                extra: dict[str, object] = {
                    "ground_truth": truth_path.name,
                    "synthetic_spec": _spec_json(spec),
                }
                staged = [staging / out.name]
                write_strayscanner(staged[0], made.scan, video=video, extra=extra)
                (staged[0] / truth_path.name).write_text(
                    json.dumps(truth, indent=2) + "\n", encoding="utf-8"
                )
                written = len(made.scan.frames)
            else:
                truth_path = targets[1]
                cloud = merge_frames(made.scan)
                staged = [staging / t.name for t in targets]
                write_point_cloud(staged[0], cloud)
                sidecar = {
                    "body_axis": truth["body_axis"],
                    "ground_truth": truth_path.name,
                    "synthetic_spec": _spec_json(spec),
                }
                staged[1].write_text(json.dumps(truth, indent=2) + "\n", encoding="utf-8")
                staged[2].write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")
                written = len(cloud)
            _clear(replaced)  # only once the new scan exists in full
            for source, target in zip(staged, targets, strict=False):
                os.replace(source, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    shown = {k: v for k, v in truth.items() if k not in ("outline_world", "wound_to_world")}
    result = {
        "path": str(out),
        "format": out_format,
        "frames" if out_format == "dir" else "points": written,
        "truth_path": str(truth_path),
        "spec": _spec_json(spec),
        "truth": shown,
    }

    def human(r: dict[str, Any]) -> None:
        noun = "frame" if out_format == "dir" else "point"
        what = f"{written} {noun}" + ("" if written == 1 else "s")
        click.echo(f"wrote {r['path']} ({what}); ground truth in {r['truth_path']}")
        _show_figures(r["truth"])

    emit(as_json, result, human)


def _spec_json(spec: Any) -> dict[str, Any]:
    return dataclasses.asdict(spec)


def _check_room(targets: list[Path], *, force: bool, folder: bool) -> list[Path]:
    """What --force will replace; refuses an existing target without it.

    With --force only files and scan folders are replaced, never another folder.
    """
    present = [p for p in targets if p.exists() or p.is_symlink()]
    if present and not force:
        raise CliError(f"{present[0]} already exists (use --force to replace it)", EXIT_INVALID)
    for path in present:
        is_folder = path.is_dir() and not path.is_symlink()
        if is_folder and not (folder and all((path / m).exists() for m in _SCAN_FOLDER_MARKS)):
            # Never delete a folder that is not a scan: it may be anything.
            raise CliError(
                f"{path} is a folder but not a Stray Scanner scan; not replacing it",
                EXIT_INVALID,
            )
    return present


def _clear(paths: list[Path]) -> None:
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


@scan.command("measure")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@_measure_options
@click.option(
    "--fusion",
    type=click.Choice(["tsdf", "points"]),
    help="How frames are fused: their points pooled, or an Open3D TSDF volume "
    "(default: the pipeline's, MeasureOptions.fusion).",
)
@json_option
def scan_measure(
    path: Path,
    outline_file: Path | None,
    body_axis: tuple[float, float, float] | None,
    max_frames: int | None,
    no_model: bool,
    fusion: str | None,
    as_json: bool,
) -> None:
    """Measure the wound in a scan file or folder (the store is not used).

    PATH is a point cloud (.ply .pcd .xyz .xyzrgb .pts) or a Stray Scanner folder. Prints
    area, perimeter, length, width, depth, volume, the ruler estimate and quality flags.
    The bundled wound model draws the boundary and gives the tissue mix when
    onnxruntime is installed (--no-model to skip it).
    """
    with _capture_extra():
        from lidar_capture import MeasureOptions, open_scan

        found = open_scan(path, max_frames)
        options = None if fusion is None else MeasureOptions(fusion=fusion)
        model = None if no_model else _wound_model(None)
        measured = _measure(found, outline_file, body_axis, options, model=model)
    result = {"source": found.source, "path": str(path), **measured.to_json()}
    emit(as_json, result, _show_figures)


with_app = click.make_pass_decorator(App)


@scan.command("capture")
@click.option("--wound", "wound_id", required=True, help="The wound scanned (its id).")
@click.option(
    "--from",
    "from_path",
    type=click.Path(exists=True, path_type=Path),
    help="Measure this scan file or folder.",
)
@click.option("--synthetic", is_flag=True, help="Measure a synthetic scan (drawn from --seed).")
@click.option("--seed", type=int, default=0, show_default=True, help="The synthetic scan's seed.")
@_measure_options
@click.option("--clinician", help="Who took the scan.")
@json_option
@with_app
def scan_capture(
    app: App,
    wound_id: str,
    from_path: Path | None,
    synthetic: bool,
    seed: int,
    outline_file: Path | None,
    body_axis: tuple[float, float, float] | None,
    max_frames: int | None,
    no_model: bool,
    clinician: str | None,
    as_json: bool,
) -> None:
    """Measure a scan and store it as an assessment of a wound.

    Exactly one of --from and --synthetic. The assessment holds the figures and quality
    flags; the scan's point cloud and the measurement details are stored beside it as
    encrypted blobs.
    """
    if (from_path is None) == (not synthetic):
        raise click.UsageError("give exactly one of --from PATH and --synthetic")
    client = app.client()
    # An unknown or deleted wound fails before the slow part.
    if client.wounds.get(wound_id).deleted:
        raise RecordNotFoundError(f"wound {wound_id} is deleted")
    with _capture_extra():
        from lidar_capture._record import record_assessment

        if from_path is not None:
            from lidar_capture import open_scan

            found = open_scan(from_path, max_frames)
        else:
            from lidar_capture import generate, random_spec

            overrides = {} if max_frames is None else {"frames": max_frames}
            found = generate(random_spec(seed, **overrides)).scan
        model = None if no_model else _wound_model(client)
        measured = _measure(found, outline_file, body_axis, model=model)
        assessment = record_assessment(client, wound_id, measured, clinician=clinician)
    emit(as_json, assessment, show_record)
