"""The wheel installs alone: `import edge_sdk` needs nothing but the base install."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(ROOT),
        ],
        check=True,
        timeout=300,
    )
    (found,) = out.glob("coherency-*.whl")
    return found


def test_wheel_ships_packages_and_type_markers(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in (
        "crdt",
        "edge_sdk",
        "cli",
        "cli/demo",
        "lidar_capture",
        "models",
        "sync_server",
    ):
        assert f"{package}/__init__.py" in names
    assert "crdt/py.typed" in names and "edge_sdk/py.typed" in names
    assert "lidar_capture/py.typed" in names
    # sync_server's domain packages, and its migrations, ship too.
    domains = ("audit", "blobs", "blobs/backends", "bookings", "identity", "intents")
    for domain in (*domains, "models", "ops", "sync"):
        assert f"sync_server/{domain}/__init__.py" in names, domain
    assert "sync_server/migrations/env.py" in names
    assert not any(n.startswith(("tests/", "benchmarks/", "examples/")) for n in names)
    if os.environ.get("COHERENCY_PURE_PYTHON") != "1":  # the compiled reader (setup.py)
        assert any(n.startswith("crdt/_columnar_native.") and n.endswith(".so") for n in names)


@pytest.mark.slow
def test_base_install_imports_without_extras(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    # Away from the checkout: with it on the path pip would find the project
    # "already installed" and install nothing.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", str(wheel)],
        check=True,
        timeout=600,
        cwd=tmp_path,
        env=env,
    )
    probe = (
        "import importlib.util, edge_sdk, crdt\n"
        "heavy = [m for m in ('open3d', 'onnxruntime', 'fastapi', 'torch')"
        " if importlib.util.find_spec(m)]\n"
        "assert not heavy, heavy\n"
        "import crdt._columnar\n"
        "print('ok', len(edge_sdk.__all__), crdt._columnar.backend())\n"
    )
    result = subprocess.run(
        [str(python), "-c", probe],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok")
    if os.environ.get("COHERENCY_PURE_PYTHON") != "1":  # installed, and its hash matches
        assert result.stdout.split()[-1] == "mypyc", result.stdout
    help_run = subprocess.run(
        [str(venv / "bin" / "coherency"), "--help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
        check=False,
    )
    assert help_run.returncode == 0, help_run.stderr
