"""CLI behaviour: --help everywhere, JSON answers, and every bad input exits 2 with one line and no traceback."""

import json
import os
import subprocess
import sys

import psutil
import pandas as pd
import pytest
import torch

from latprof.cli import COMMANDS, main


def _one_line_error(capsys, argv, match):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1, err
    assert "error" in err[0] and match in err[0], err[0]
    assert "Traceback" not in err[0]
    return err[0]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_help(command, capsys):
    assert main([command, "--help"]) == 0
    assert "usage: latprof" in capsys.readouterr().out


HEAVY = ("torch", "pandas", "matplotlib", "scipy", "onnxruntime", "sklearn")


@pytest.mark.parametrize("argv, code", [(["--help"], 0), (["--version"], 0), ([], 2), (["profiel"], 2)])
def test_top_level_answers_without_importing_heavy_libraries(argv, code):
    """`latprof --help`, `--version`, no command and an unknown command build no command's flags, so they import
    none of torch, pandas, matplotlib, scipy (seconds on a small machine); an unknown command is one line."""
    script = ("import sys; from latprof.cli import main; code = main(sys.argv[1:]); "
              f"print(code, sorted(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True, timeout=120)
    *err, last = proc.stderr.strip().splitlines()
    assert last == f"{code} []", proc.stderr
    if argv == ["--help"]:
        assert all(f"    {name}" in proc.stdout for name in COMMANDS), proc.stdout
    if argv == ["profiel"]:
        assert len(err) == 1 and "invalid choice: 'profiel'" in err[0], err


def test_only_the_named_command_gets_its_flags():
    from latprof.cli import build_parser

    args = build_parser(["count", "--model", "conv_bn_relu"]).parse_args(["count", "--model", "conv_bn_relu"])
    assert args.command == "count" and args.model == "conv_bn_relu"
    full = build_parser().parse_args(["sweep", "--guideline", "g1"])
    assert full.guideline == ["g1"] and full.command == "sweep"


def test_env_json(capsys):
    assert main(["env", "--json"]) == 0
    env = json.loads(capsys.readouterr().out)
    assert len(env["hardware_id"]) == 16


def test_list_models_json(capsys):
    assert main(["list", "models", "--json"]) == 0
    names = {m["name"] for m in json.loads(capsys.readouterr().out)}
    assert "conv_bn_relu" in names


def test_list_backends_json(capsys):
    assert main(["list", "backends", "--json"]) == 0
    backends = {b["name"]: b for b in json.loads(capsys.readouterr().out)}
    assert backends["torch-cpu"]["available"] is True
    assert backends["torch-cuda"]["available"] is torch.cuda.is_available()
    if not torch.cuda.is_available():
        assert backends["torch-cuda"]["reason"]


def test_unknown_model_suggests_close_names(capsys):
    line = _one_line_error(capsys, ["profile", "--model", "conv_bn_relo"], "unknown model 'conv_bn_relo'")
    assert "did you mean conv_bn_relu" in line


def test_unknown_backend(capsys):
    _one_line_error(capsys, ["profile", "--model", "conv_bn_relu", "--backend", "tensorrt"], "unknown backend 'tensorrt'")


def test_unknown_list_topic(capsys):
    line = _one_line_error(capsys, ["list", "modles"], "unknown list topic")
    assert "models" in line


@pytest.mark.parametrize("shape", ["1xax3", "0x3x8x8", "1,3,8,8", ""])
def test_malformed_input_shape(capsys, shape):
    _one_line_error(capsys, ["profile", "--model", "conv_bn_relu", "--input", shape], "input shape")


@pytest.mark.parametrize("threads", ["0", str(psutil.cpu_count(logical=True) + 1)])
def test_threads_out_of_range(capsys, threads):
    _one_line_error(capsys, ["profile", "--model", "conv_bn_relu", "--threads", threads], "--threads must be between 1 and")


def test_threads_not_a_number(capsys):
    _one_line_error(capsys, ["profile", "--model", "conv_bn_relu", "--threads", "two"], "expected an integer")


def test_unwritable_out(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _one_line_error(capsys, ["profile", "--model", "conv_bn_relu", "--out", str(blocker)], "not a directory")
    _one_line_error(capsys, ["profile", "--model", "conv_bn_relu", "--out", str(blocker / "sub")], "cannot write")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present here")
def test_cuda_absent_lists_available_backends(capsys):
    line = _one_line_error(capsys, ["profile", "--model", "conv_bn_relu", "--backend", "torch-cuda"], "torch-cuda")
    assert "not available here" in line and "available: torch-cpu" in line


def test_unknown_model_argument(capsys):
    _one_line_error(capsys, ["profile", "--model", "conv_bn_relu", "--arg", "channels=3"], "unknown argument of conv_bn_relu")


def test_input_shape_the_model_rejects(capsys, tmp_path):
    _one_line_error(capsys, ["profile", "--model", "conv_bn_relu", "--input", "1x5x8x8", "--out", str(tmp_path)],
                    "1x5x8x8")


def test_profile_writes_row_with_ci_around_median(tmp_path, capsys):
    code = main(["profile", "--model", "conv_bn_relu", "--input", "1x32x16x16", "--threads", "1", "--max-time", "1",
                 "--out", str(tmp_path)])
    assert code == 0
    df = pd.read_csv(tmp_path / "results.csv")
    assert len(df) == 1
    row = df.iloc[0]
    assert row["status"] == "ok"
    assert row["latency_ci_low_ms"] <= row["latency_median_ms"] <= row["latency_ci_high_ms"]
    assert row["threads"] == 1 and row["batch"] == 1 and row["input_shape"] == "1x32x16x16"


def test_console_script_error_has_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "latprof.cli", "profile", "--model", "nope"],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0
