"""Run the benchmarks, print a table and optionally write the results as JSON.

    python -m benchmarks.run [--only NAME] [--repeat N] [--scale N] [--json PATH]
                             [--load-devices N] [--load-seconds S]

Benchmarks: ``write`` (local write throughput against plain SQLite), ``merge`` (sync
session into an empty replica), ``storage`` (bytes per record) and ``sync`` (push,
initial sync and propagation through a real sync server over HTTP) and ``capture``
(wound measurement accuracy against synthetic ground truth, and its speed) and
``phantoms`` (the same measurement on independent phantoms: median and worst absolute
and signed errors, by skin-tone group and body site) and ``models`` (the bundled wound
model's Dice, latency and size) and ``bookings``
(intents decided per second and push-to-decision latency, 20 concurrent devices on
PostgreSQL), ``commerce`` (supplies orders decided per second and push-to-decision
latency, 20 concurrent devices on PostgreSQL) and ``payments`` (payment intents decided
per second through the sandbox gateway, 20 concurrent devices on PostgreSQL) and
``audit`` (audit events appended per second, `verify_log` over 1M events, the audit
log's overhead on push and pull) and ``edge`` (the clinic edge box: device-to-box
throughput beside device-to-central, propagation through the box, the catch-up of a
box after an outage, the box process's resident memory with 20 devices) and ``live``
(live queries: sync page to callback latency, the cost of 100 live queries) and
``export`` (staff exports: rows/s and peak memory exporting 10,000 and 100,000
assessments as CSV and NDJSON, on SQLite and PostgreSQL) and ``fhir-server`` (the
server's FHIR clinic export in resources/s and ``Patient/$everything`` latency, 1,000
patients with 10 assessments each, on SQLite and PostgreSQL) and ``load`` (200 simulated
devices of 10 clinics against two server instances behind nginx on PostgreSQL for 3
minutes; fewer and shorter at small scales) and ``fhir`` (FHIR R4 export rate of a
clinic of scale / 10 patients with 10 assessments each, from memory and from a device
store, and R4B validation rate) and ``dashboard`` (the staff dashboard in chromium: first
render of a wound page with 50 assessments, the 3D view of a 500,000-point scan
interactive, page weight) and ``reports`` (a clinic's monthly report with 10,000 wounds
and 100,000 assessments on PostgreSQL, and its PDF) and ``notifications`` (notify
committed to the in-app notice on a long-polling device: p50 and p99, server on
SQLite). See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import (
    _bench_audit,
    _bench_bookings,
    _bench_capture,
    _bench_commerce,
    _bench_dashboard,
    _bench_edge,
    _bench_export,
    _bench_fhir,
    _bench_fhir_server,
    _bench_live,
    _bench_load,
    _bench_merge,
    _bench_models,
    _bench_notification_queue,
    _bench_notifications,
    _bench_payments,
    _bench_phantoms,
    _bench_reports,
    _bench_storage,
    _bench_sync,
    _bench_write,
)
from benchmarks._bench_sync import MissingFigure
from benchmarks._harness import Figure, machine_info, pin_to_one_core, print_table, write_json

__all__ = ["BENCHMARKS", "main"]

# A benchmark returns its figures, and a `MissingFigure` for each figure it could not
# measure in this run (e.g. the PostgreSQL ones of `sync` without PostgreSQL).
BENCHMARKS: dict[str, Callable[..., Sequence[Figure | MissingFigure]]] = {
    "write": _bench_write.run,
    "merge": _bench_merge.run,
    "storage": _bench_storage.run,
    "sync": _bench_sync.run,
    "capture": _bench_capture.run,
    "phantoms": _bench_phantoms.run,
    "models": _bench_models.run,
    "bookings": _bench_bookings.run,
    "commerce": _bench_commerce.run,
    "payments": _bench_payments.run,
    "audit": _bench_audit.run,
    "edge": _bench_edge.run,
    "live": _bench_live.run,
    "export": _bench_export.run,
    "fhir-server": _bench_fhir_server.run,
    "load": _bench_load.run,
    "fhir": _bench_fhir.run,
    "dashboard": _bench_dashboard.run,
    "reports": _bench_reports.run,
    "notifications": _bench_notifications.run,
    "notification-queue": _bench_notification_queue.run,
}

DEFAULT_SCALE = 10_000
# Small runs are cheap and noisier, so they get more repeats.
_SMALL_SCALE = 2_000


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description="Run Coherency's benchmarks."
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(BENCHMARKS),
        metavar="NAME",
        help=f"run only this benchmark (repeatable): {', '.join(BENCHMARKS)}",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        help=f"repeats per timed measurement (default 5 up to scale {_SMALL_SCALE:,}, else 3)",
    )
    parser.add_argument(
        "--scale",
        type=int,
        default=DEFAULT_SCALE,
        help=f"records per benchmark (default {DEFAULT_SCALE:,}; see the README)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results here")
    parser.add_argument(
        "--tmpdir",
        type=Path,
        default=None,
        help="where the scratch stores go (default: the system temp dir)",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin the process to one CPU")
    parser.add_argument(
        "--load-devices",
        type=int,
        default=None,
        metavar="N",
        help="simulated devices of the load run (default: 200 at the default scale, "
        "scale / 50 (at least 20) below it)",
    )
    parser.add_argument(
        "--load-seconds",
        type=float,
        default=None,
        metavar="S",
        help="length of the load run (default: 180 at the default scale, less below it, "
        "at least 10)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the selected benchmarks; returns the process exit code."""
    args = _parser().parse_args(argv)
    if args.scale < 4:
        _parser().error("--scale must be at least 4")
    repeat = args.repeat or (5 if args.scale <= _SMALL_SCALE else 3)
    if repeat < 1:
        _parser().error("--repeat must be at least 1")
    if args.load_devices is not None and not 1 <= args.load_devices <= 1000:
        _parser().error("--load-devices must be between 1 and 1000")
    if args.load_seconds is not None and not 0 < args.load_seconds <= 3600:
        _parser().error("--load-seconds must be more than 0 and at most 3600")
    load = {"devices": args.load_devices, "seconds": args.load_seconds}
    selected = [name for name in BENCHMARKS if not args.only or name in args.only]
    root = Path(tempfile.mkdtemp(prefix="coherency-bench-", dir=args.tmpdir))
    started = datetime.now(UTC)
    start = time.perf_counter()
    figures: list[Figure] = []
    missing: list[MissingFigure] = []
    try:
        machine = machine_info(root)
        with pin_to_one_core(not args.no_pin) as cpu:
            for name in selected:
                options = load if name == "load" else {}
                run = BENCHMARKS[name]
                for result in run(scale=args.scale, repeat=repeat, root=root, **options):
                    if isinstance(result, MissingFigure):
                        missing.append(result)
                    else:
                        figures.append(result)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    settings = {
        "benchmarks": selected,
        "scale": args.scale,
        "repeat": repeat,
        "repeat_note": f"{repeat} repeats (storage, load: measured once)",
        "pinned_cpu": cpu,
        "started_at": started.isoformat(),
        "duration_s": round(time.perf_counter() - start, 1),
        "argv": list(sys.argv[1:] if argv is None else argv),
        "missing": [m.to_json() for m in missing],
    }
    print_table(figures, machine, settings)
    _print_notes(figures, missing)
    if args.json is not None:
        write_json(args.json, machine, settings, figures)
    return 0


def _print_notes(figures: Sequence[Figure], missing: Sequence[MissingFigure]) -> None:
    """Below the table: figures that could not be measured, and published anchors."""
    from rich.console import Console

    console = Console(width=max(100, shutil.get_terminal_size((140, 20)).columns))
    by_reason: dict[str, list[str]] = {}
    for gap in missing:
        by_reason.setdefault(gap.reason, []).append(gap.name)
    for reason, names in by_reason.items():
        console.print(f"[yellow]MISSING[/] (not measured): {', '.join(names)}: {reason}")
    for figure in figures:
        anchor = figure.extra.get("anchor")
        if anchor:
            console.print(
                f"{figure.name}: {figure.value:,.0f} {figure.unit} here; anchor: "
                f"{anchor['name']} {anchor['value']:,.0f} {anchor['unit']} ({anchor['short']})"
            )


if __name__ == "__main__":
    sys.exit(main())
