"""`coherency models ...`: verify, evaluate and bench the bundled model from the command line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import cli

pytest.importorskip("onnxruntime")

from models import BUNDLED_MODEL_DIR


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_verify_the_bundled_model_and_refuse_a_tampered_copy(tmp_path: Path) -> None:
    code, out, _ = run("models", "verify", "--json")
    assert code == 0, out
    shown = json.loads(out)
    assert shown["ok"] is True and shown["model_id"] == "wound_seg"
    copy = tmp_path / "int8"
    shutil.copytree(BUNDLED_MODEL_DIR, copy)
    onnx_file = next(copy.glob("*.onnx"))
    data = bytearray(onnx_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx_file.write_bytes(bytes(data))
    code, _, err = run("models", "verify", str(copy))
    assert code == 6
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and "sha256" in err
    (copy / "manifest.json").unlink()
    code, _, err = run("models", "verify", str(copy))
    assert code == 5 and "manifest.json" in err


@pytest.mark.slow
def test_evaluate_and_bench_print_their_figures() -> None:
    code, out, err = run("models", "evaluate", "--seeds", "30000:30002", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["scans"] >= 1 and 0.8 <= result["wound"]["dice"] <= 1.0
    code, out, err = run("models", "bench", "--json")
    assert code == 0, err
    timing = json.loads(out)
    assert set(timing["fp32_ms"]) == {"1", "2"} and all(v > 0 for v in timing["int8_ms"].values())


def test_every_models_command_has_help() -> None:
    group = cli.commands["models"]
    assert group.help
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        assert command.help, name
        for param in command.params:
            if param.param_type_name == "option":
                assert param.help, f"{name} {param.name}"


def test_bad_seed_ranges_are_usage_errors() -> None:
    code, _, err = run("models", "evaluate", "--seeds", "5:2")
    assert code == 2 and "START:STOP" in err
