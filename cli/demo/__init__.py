"""The end-to-end demonstration behind `coherency demo`, in four parts.

`offline` (two tablets, sync bundles, a conflict), `server` (a central sync server on
embedded defaults, three tablets of two clinics; the ``server`` extra), `edge` (a
clinic's edge box keeps two tablets syncing while central is down, then delivers
everything; the ``edge`` extra) and `capture` (synthetic scans measured against their
ground truth; the ``capture`` extra), then `fhir` (the demo patient's record as a
validated FHIR R4 Bundle; the ``fhir`` extra). A part
whose extra is not installed is skipped and says so. Every step checks its own outcome
and the demo fails loudly (`DemoFailedError`) if one does not hold, so it doubles as a
smoke test of a fresh installation. The parts use only the libraries' public names
and share the helpers of `cli.demo._scenario`.

`coherency --help` does not import this package: the `demo` command does, when it runs.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cli._extras import missing_extra
from cli.demo._scenario import DEMO_PASSPHRASE, DemoFailedError, Say, demo_folder
from cli.demo.offline import run_offline_demo

if TYPE_CHECKING:
    from cli.demo.capture import CaptureDemoReport
    from cli.demo.edge import EdgeDemoReport
    from cli.demo.fhir import FhirDemoReport
    from cli.demo.server import ServerDemoReport

__all__ = ["DEMO_PASSPHRASE", "DemoFailedError", "DemoReport", "run_demo"]


@dataclass(slots=True)
class DemoReport:
    """What the demo did: the offline part's steps and stores, then each other part's
    report, or why it was skipped."""

    workdir: Path
    steps: list[str] = field(default_factory=list)
    stores: dict[str, Path] = field(default_factory=dict)
    server: ServerDemoReport | None = None
    server_skipped: str | None = None
    edge: EdgeDemoReport | None = None
    edge_skipped: str | None = None
    capture: CaptureDemoReport | None = None
    capture_skipped: str | None = None
    fhir: FhirDemoReport | None = None
    fhir_skipped: str | None = None
    seconds: float = 0.0


def run_demo(
    workdir: str | os.PathLike[str] | None = None,
    *,
    say: Say = lambda line: None,
    fast_kdf: bool = True,
) -> DemoReport:
    """Run every part of the demo whose extra is installed, and return the report.

    Args:
        workdir: Folder for every part's stores, bundles and server data (a new
            temporary folder if None); the server and edge parts need their subfolders new.
        say: Called with one line per step as it completes, and an empty line
            between parts.
        fast_kdf: Use cheap Argon2 costs (the demo's data is made up).

    Raises:
        DemoFailedError: A step's outcome was not what it must be.
    """
    started = time.perf_counter()
    root = demo_folder(workdir)
    offline = run_offline_demo(root, say=say, fast_kdf=fast_kdf)
    report = DemoReport(workdir=root, steps=offline.steps, stores=offline.stores)
    report.server_skipped = _skipped("server", say)
    if report.server_skipped is None:
        from cli.demo.server import run_server_demo

        say("")
        report.server = run_server_demo(root, say=say, fast_kdf=fast_kdf)
    report.edge_skipped = _skipped("edge", say)
    if report.edge_skipped is None:
        from cli.demo.edge import run_edge_demo

        say("")
        report.edge = run_edge_demo(root, say=say, fast_kdf=fast_kdf)
    report.capture_skipped = _skipped("capture", say)
    if report.capture_skipped is None:
        from cli.demo.capture import run_capture_demo

        say("")
        report.capture = run_capture_demo(root, say=say, fast_kdf=fast_kdf)
    report.fhir_skipped = _skipped("fhir", say)
    if report.fhir_skipped is None:
        from cli.demo.fhir import run_fhir_demo

        say("")
        report.fhir = run_fhir_demo(root, offline.stores["ward"], say=say, fast_kdf=fast_kdf)
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _skipped(part: str, say: Say) -> str | None:
    """Why `part` cannot run here (its extra is missing), said once; None if it can."""
    missing = missing_extra(part)
    if missing is None:
        return None
    line = f"{part} part skipped: it {missing}"
    say(line)
    return line
