"""`coherency scan ...`: make synthetic scans, measure scans, record them as assessments.

A thin layer over `lidar_capture`: `synth` renders a synthetic scan with its ground
truth (`write_synthetic_scan`), `measure` runs the pipeline on a file or folder (no store
involved), `capture` measures and stores the result as an assessment of a wound.

`import lidar_capture` is cheap (its errors, options and choice lists are plain
Python), so the options below list the library's own choices; what needs the
``capture`` extra (NumPy, Open3D, SciPy, ...) is imported inside the commands.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from cli._app import EXIT_INVALID, App, CliError, with_app
from cli._extras import needs_extras
from cli._output import emit, json_option, show_fields, show_record, table
from edge_sdk import RecordNotFoundError
from lidar_capture import (
    FUSION_METHODS,
    OUTLINES,
    PROFILES,
    SURFACES,
    SYNTHETIC_SCAN_FORMATS,
    MeasurementRefused,
    MeasureOptions,
    ScanExistsError,
    random_spec,
)
from models import choose_runner

if TYPE_CHECKING:
    from lidar_capture import Scan, WoundMeasurement, WoundModel

__all__ = ["scan"]

F = TypeVar("F", bound=Callable[..., Any])

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


@contextmanager
def _scanning() -> Iterator[None]:
    """Report a missing ``capture`` extra, and a refused measurement, as one line."""
    with needs_extras("capture"):
        try:
            yield
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


def _measure(
    scan: Scan,
    outline_file: Path | None,
    body_axis: tuple[float, float, float] | None,
    options: MeasureOptions | None = None,
    *,
    model: WoundModel | None = None,
) -> WoundMeasurement:
    from lidar_capture import Outline, measure

    outline = None if outline_file is None else Outline.read(outline_file)
    return measure(scan, outline=outline, body_axis=body_axis, options=options, model=model)


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
    type=click.Choice(SYNTHETIC_SCAN_FORMATS),
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
    with _scanning():
        from lidar_capture import WRITABLE_POINT_CLOUD_SUFFIXES, write_synthetic_scan

        spec = random_spec(seed, **{k: v for k, v in given.items() if v is not None})

        if out_format == "ply" and out.suffix.lower() not in WRITABLE_POINT_CLOUD_SUFFIXES:
            writable = ", ".join(WRITABLE_POINT_CLOUD_SUFFIXES)
            raise click.UsageError(f"{out}: a point cloud is written as one of {writable}")
        try:
            written = write_synthetic_scan(out, spec, format=out_format, video=video, replace=force)
        except ScanExistsError as exc:
            hint = "" if force else " (use --force to replace it)"
            raise CliError(f"{exc}{hint}", EXIT_INVALID) from None
    truth = written.synthetic.truth.to_json()
    shown = {k: v for k, v in truth.items() if k not in ("outline_world", "wound_to_world")}
    result = {
        "path": str(out),
        "format": out_format,
        "frames" if out_format == "dir" else "points": written.count,
        "truth_path": str(written.truth_path),
        "spec": spec.to_json(),
        "truth": shown,
    }

    def human(r: dict[str, Any]) -> None:
        noun = "frame" if out_format == "dir" else "point"
        what = f"{written.count} {noun}" + ("" if written.count == 1 else "s")
        click.echo(f"wrote {r['path']} ({what}); ground truth in {r['truth_path']}")
        _show_figures(r["truth"])

    emit(as_json, result, human)


@scan.command("measure")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@_measure_options
@click.option(
    "--fusion",
    type=click.Choice(FUSION_METHODS),
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
    with _scanning():
        from lidar_capture import open_scan

        found = open_scan(path, max_frames)
        options = None if fusion is None else MeasureOptions(fusion=fusion)
        model = None if no_model else choose_runner()
        measured = _measure(found, outline_file, body_axis, options, model=model)
    result = {"source": found.source, "path": str(path), **measured.to_json()}
    emit(as_json, result, _show_figures)


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
    with _scanning():
        from lidar_capture import generate, open_scan, record_assessment

        if from_path is not None:
            found = open_scan(from_path, max_frames)
        else:
            overrides = {} if max_frames is None else {"frames": max_frames}
            found = generate(random_spec(seed, **overrides)).scan
        model = None if no_model else choose_runner(client)
        measured = _measure(found, outline_file, body_axis, model=model)
        assessment = record_assessment(client, wound_id, measured, clinician=clinician)
    emit(as_json, assessment, show_record)
