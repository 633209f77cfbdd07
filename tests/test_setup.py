"""The README's two set-up commands each install what they need on a fresh machine,
from one list of Debian packages that CI installs too."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = "scripts/system-packages"


def _dry_run(target: str) -> str:
    make = shutil.which("make")
    if make is None:
        pytest.fail("make is not installed (scripts/system-packages installs it)")
    # -n prints every command the target would run, following its real prerequisites;
    # -B pretends nothing is built yet, as on a fresh clone.
    answer = subprocess.run(
        [make, "-n", "-B", target], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return answer.stdout


@pytest.mark.parametrize("target", ["demo", "test", "quick"])
def test_each_readme_command_installs_the_system_packages_first(target: str) -> None:
    commands = _dry_run(target).splitlines()
    installs = [n for n, line in enumerate(commands) if SCRIPT in line]
    assert installs, f"`make {target}` does not run {SCRIPT}"
    first_python = next(n for n, line in enumerate(commands) if "venv" in line or "bin/" in line)
    assert installs[0] < first_python


def test_ci_installs_from_the_same_list_and_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert SCRIPT in ci and "make test" in ci
    assert "apt-get" not in ci, "CI must not keep a package list of its own"
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme


def test_the_package_list_names_what_the_demo_needs() -> None:
    listed = subprocess.run(
        ["bash", str(ROOT / SCRIPT), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert "libusb-1.0-0" in listed  # Open3D links it: the demo's scan part needs it
    assert "make" in listed
