"""Benchmark: the staff dashboard in a browser (issue 20).

A server on embedded SQLite (uvicorn in a child process on loopback, as the sync
benchmark runs it: the browser's loads do not share this process's interpreter) gets
a clinic seeded through the real paths (`tests/server/dashboard_seed.py`: an enrolled
tablet syncs a patient, a wound with `ASSESSMENTS` assessments over 10 weeks,
and a scan of `scan_points_for(scale)` points, 500,000 at the default scale, as PLY and
details blobs through the blob API). Debian's chromium (headless, through Playwright,
WebGL on SwiftShader) signs in once through the form as an organisation admin; every
measured load is then a fresh browser context with that session's cookie (a cold
cache), `LOADS` (7) loads per page after one warm-up load (``--repeat`` loads in a
smoke run of fewer than 3 repeats), and each figure is the median:

- ``dashboard.wound.fcp_ms``: first-contentful-paint of the wound page (timeline,
  healing curve, tissue chart) from navigation start (goal: at most 500 ms).
- ``dashboard.scan.interactive_ms``: the 3D view's ``scan-interactive`` performance
  mark (its first frame drawn) from navigation start (goal: at most 2 s).
- ``dashboard.patient.fcp_ms``: first-contentful-paint of the patient page.
  Each first-render figure's ``sign_in_fcp_ms`` is the same measure of the sign-in
  page (no data, no database read): chromium's own floor on this machine.
- ``dashboard.wound.bytes``, ``dashboard.scan.bytes``: page weight, the bytes
  transferred for the page and everything it loaded (the navigation's and every
  resource's ``transferSize``: headers and bodies as sent, the points included).

The benchmark process is pinned to one CPU by the runner; while this benchmark runs it
is given every CPU it may use, so that chromium (its children inherit the affinity)
renders as it would on this machine.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from benchmarks._bench_sync import MissingFigure, _ServerProcess
from benchmarks._common import progress
from benchmarks._harness import Figure

__all__ = ["NAMES", "run"]

NAMES = (
    "dashboard.wound.fcp_ms",
    "dashboard.scan.interactive_ms",
    "dashboard.patient.fcp_ms",
    "dashboard.wound.bytes",
    "dashboard.scan.bytes",
)
ASSESSMENTS = 50
LOADS = 7
WOUND_GOAL_MS = 500.0
SCAN_GOAL_MS = 2_000.0

_FCP = """() => {
    const paint = performance.getEntriesByType("paint")
        .find((e) => e.name === "first-contentful-paint");
    return paint ? paint.startTime : null;
}"""
_MARK = """() => {
    const mark = performance.getEntriesByName("scan-interactive")[0];
    return mark ? mark.startTime : null;
}"""
_WEIGHT = """() => {
    const nav = performance.getEntriesByType("navigation")[0];
    const resources = performance.getEntriesByType("resource");
    return [nav.transferSize + resources.reduce((sum, r) => sum + r.transferSize, 0),
            nav.responseStart];
}"""


def scan_points_for(scale: int) -> int:
    """Points of the seeded scan: 500,000 at the default scale, fewer (at least 10,000)
    in small runs."""
    return max(10_000, min(500_000, scale * 50))


@contextlib.contextmanager
def _all_cpus() -> Iterator[int | None]:
    if not hasattr(os, "sched_setaffinity"):
        yield None
        return
    before = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, range(os.cpu_count() or 1))
    except OSError:
        yield len(before)
        return
    try:
        yield len(os.sched_getaffinity(0))
    finally:
        os.sched_setaffinity(0, before)


def loads_for(repeat: int) -> int:
    """Measured loads per page: `LOADS`, or `repeat` in a smoke run (under 3 repeats)."""
    return LOADS if repeat >= 3 else max(1, repeat)


def run(*, scale: int, repeat: int, root: Path) -> list[Figure | MissingFigure]:
    """Measure every figure: `loads_for(repeat)` loads per page."""
    with _all_cpus() as cpus:
        return _measure(root / "dashboard", scan_points_for(scale), loads_for(repeat), cpus)


def _measure(work: Path, points: int, loads: int, cpus: int | None) -> list[Figure | MissingFigure]:
    from playwright.sync_api import Page, sync_playwright

    from sync_server import (
        Settings,
        create_admin,
        issue_enrolment_token,
        migrate,
    )
    from tests.server.browser_world import CHROMIUM, CHROMIUM_ARGS, browser_sign_in
    from tests.server.dashboard_seed import seed_wound
    from tests.server.dashboard_world import StaffAccount

    settings = Settings(data_dir=work / "server")
    migrate(settings)
    issued = issue_enrolment_token(settings, clinic="dashboard-bench")
    with _ServerProcess.running(settings, work / "server.log") as server:
        progress(f"dashboard: seeding {ASSESSMENTS} assessments and a {points:,}-point scan")
        seed_start = time.perf_counter()
        world = seed_wound(
            server.url, issued.token, work / "tablet", assessments=ASSESSMENTS, scan_points=points
        )
        progress(f"dashboard: seeded through sync in {time.perf_counter() - seed_start:.1f} s")
        admin = create_admin(settings, username="dash-bench", password="bench pass phrase 1",
                             with_totp=True)  # fmt: skip
        assert admin.totp_secret is not None
        account = StaffAccount(admin.username, "bench pass phrase 1", admin.totp_secret,
                               admin.user_id, None, "admin")  # fmt: skip
        pages = {
            "patient": f"/dashboard/patients/{world.patient_id}",
            "wound": f"/dashboard/wounds/{world.wound_id}",
            "scan": f"/dashboard/assessments/{world.scan_assessment_id}/scan",
        }
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                first = browser.new_context()
                browser_sign_in(first.new_page(), server, account)
                state = first.storage_state()
                first.close()

                def load(path: str, until: str) -> tuple[float, float, float] | str:
                    """One cold load of `path`: (ms to `until`, bytes, ms to the
                    response's first byte), or why not."""
                    context = browser.new_context(storage_state=state)
                    try:
                        page: Page = context.new_page()
                        answer = page.goto(server.url + path, wait_until="load")
                        if answer is None or answer.status != 200:
                            return f"{path.split('/')[2]} page answered HTTP " + (
                                str(answer.status) if answer else "nothing"
                            )
                        script = _MARK if until == "mark" else _FCP
                        page.wait_for_function(f"() => ({script})() !== null", timeout=120_000)
                        at = float(page.evaluate(script))
                        page.wait_for_load_state("networkidle")
                        weight, first_byte = page.evaluate(_WEIGHT)
                        return at, float(weight), float(first_byte)
                    finally:
                        context.close()

                baseline = _loads(load, "/dashboard/sign-in", "fcp", loads)
                results = {
                    "patient": _loads(load, pages["patient"], "fcp", loads),
                    "wound": _loads(load, pages["wound"], "fcp", loads),
                    "scan": _loads(load, pages["scan"], "mark", loads),
                }
            finally:
                browser.close()
    extra = {
        "assessments": ASSESSMENTS,
        "scan_points": points,
        "loads": loads,
        "browser": "Debian chromium, headless, WebGL on SwiftShader",
        "cpus": cpus,
        "database": "SQLite (embedded)",
        # What chromium here takes for a page with no data at all (the sign-in form):
        # the floor under every first-render figure on this machine.
        "sign_in_fcp_ms": None
        if isinstance(baseline, str)
        else round(statistics.median(sample[0] for sample in baseline), 1),
    }
    figures: list[Figure | MissingFigure] = []
    described = (
        ("patient", "fcp_ms", "Patient page first-contentful-paint", "ms", 0, None),
        ("wound", "fcp_ms", f"Wound page ({ASSESSMENTS} assessments) first-contentful-paint",
         "ms", 0, WOUND_GOAL_MS),
        ("scan", "interactive_ms", f"3D view of a {points:,}-point scan, navigation to "
         "first frame (scan-interactive)", "ms", 0, SCAN_GOAL_MS),
        ("wound", "bytes", "Wound page weight (bytes transferred, all resources)", "bytes",
         1, None),
        ("scan", "bytes", "3D view page weight (bytes transferred, points included)", "bytes",
         1, None),
    )  # fmt: skip
    for page_name, suffix, description, unit, index, goal in described:
        name = f"dashboard.{page_name}.{suffix}"
        found = results[page_name]
        if isinstance(found, str):
            figures.append(MissingFigure("dashboard", name, found))
            continue
        samples = [sample[index] for sample in found]
        first_byte = statistics.median(sample[2] for sample in found)
        figures.append(
            Figure(
                "dashboard", name, description, unit, samples,
                target=goal, target_op="<=" if goal is not None else None,
                extra={**extra, "first_byte_ms": round(first_byte, 1)},
            )
        )  # fmt: skip
    return figures


def _loads(
    load: Callable[[str, str], tuple[float, float, float] | str],
    path: str,
    until: str,
    loads: int,
) -> list[tuple[float, float, float]] | str:
    """`loads` loads of `path` after one warm-up load, or why the page could not be
    measured."""
    warm = load(path, until)
    if isinstance(warm, str):
        progress(f"dashboard: not measured: {warm}")
        return warm
    samples = []
    for _ in range(loads):
        sample = load(path, until)
        if isinstance(sample, str):
            return sample
        samples.append(sample)
    progress(f"dashboard: {path.split('/')[2]}: median "
             f"{statistics.median(s[0] for s in samples):.0f} ms, "
             f"{statistics.median(s[1] for s in samples):,.0f} bytes, first byte "
             f"{statistics.median(s[2] for s in samples):.0f} ms")  # fmt: skip
    return samples
