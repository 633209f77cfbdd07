"""`import lidar_capture` is cheap: NumPy, SciPy, Open3D and PyAV load only when needed.

So `coherency --help` and the CLI's option lists (the library's own constants) need no
``capture`` extra. Each check runs in a fresh interpreter, where nothing is imported yet.
"""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("numpy", "scipy", "open3d", "av", "contourpy", "onnxruntime", "torch")


def _python(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_import_lidar_capture_loads_no_heavy_package() -> None:
    out = _python(
        "import json, sys\n"
        "import lidar_capture\n"
        "names = (lidar_capture.SURFACES, lidar_capture.FUSION_METHODS,\n"
        "         lidar_capture.MeasureOptions(), lidar_capture.MeasurementRefused)\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    assert json.loads(out) == []


def test_a_heavy_name_loads_on_first_use() -> None:
    out = _python(
        "import sys\n"
        "import lidar_capture\n"
        "before = 'numpy' in sys.modules\n"
        "lidar_capture.measure\n"
        "print(before, 'numpy' in sys.modules, 'lidar_capture.measure' in dir(lidar_capture))\n"
    )
    assert out.split() == ["False", "True", "False"]


def test_coherency_help_works_without_the_capture_extra() -> None:
    # Blocked as if not installed: the CLI's option lists come from lidar_capture itself.
    out = _python(
        "import sys\n"
        f"for name in {HEAVY!r}:\n"
        "    sys.modules[name] = None\n"
        "from click.testing import CliRunner\n"
        "from cli.main import cli\n"
        "for args in (['--help'], ['scan', 'synth', '--help'], ['scan', 'measure', '--help'],\n"
        "             ['models', '--help']):\n"
        "    result = CliRunner().invoke(cli, args)\n"
        "    assert result.exit_code == 0, (args, result.output)\n"
        "    print(result.output)\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('lidar_capture'))\n"
        "print('LOADED', ' '.join(loaded))\n"
    )
    assert "[plane|calf|heel|sacrum]" in out
    assert "[points|tsdf]" in out
    loaded = out.split("LOADED", 1)[1].split()
    # Only the plain-Python part of the package: errors, options, the synthetic spec.
    assert set(loaded) <= {
        "lidar_capture",
        "lidar_capture._errors",
        "lidar_capture._options",
        "lidar_capture._synthetic_spec",
    }


def test_coherency_help_loads_no_capture_package() -> None:
    # NumPy itself is left out: sqlite-utils (a base dependency, through edge_sdk) loads
    # it whenever it is installed, for its own optional NumPy support.
    out = _python(
        "import json, sys\n"
        "from click.testing import CliRunner\n"
        "from cli.main import cli\n"
        "assert CliRunner().invoke(cli, ['--help']).exit_code == 0\n"
        f"print(json.dumps([m for m in {HEAVY[1:]!r} if m in sys.modules]))\n"
    )
    assert json.loads(out) == []
