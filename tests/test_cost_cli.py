"""``latprof count``: JSON contract, tables, CSV, and one-line errors with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from latprof.cli import main


def test_count_json_registered_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["count", "--model", "conv_bn_relu", "--input", "1x32x8x8", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["model"] == "conv_bn_relu" and d["input"] == [1, 32, 8, 8]
    assert d["totals"]["mult_adds"] == 64 * 64 * 32 * 9
    assert [layer["op"] for layer in d["layers"]] == ["convolution", "native_batch_norm", "relu_"]
    assert d["unsupported_ops"] == []


def test_count_fold_bn_and_args(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["count", "--model", "conv_bn_relu", "--arg", "in_channels=8", "--arg", "out_channels=4",
                 "--input", "1x8x5x5", "--fold-bn", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["totals"]["elementwise_ops"] == 4 * 25  # only the ReLU remains
    assert d["layers"][1]["op"] == "native_batch_norm (folded)"


def test_count_tables_and_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "layers.csv"
    assert main(["count", "--model", "conv_bn_relu", "--input", "1x32x8x8", "--per-layer", "--csv", str(out)]) == 0
    text = capsys.readouterr().out
    assert "convolution" in text and "mem_access" in text
    frame = pd.read_csv(out)
    assert list(frame["op"]) == ["convolution", "native_batch_norm", "relu_"]
    assert frame["output_shape"].iloc[0] == "1x64x8x8"
    assert main(["count", "--model", "conv_bn_relu", "--by", "op"]) == 0
    assert "calls" in capsys.readouterr().out


def test_count_rejected_shape_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["count", "--model", "conv_bn_relu", "--input", "1x16x8x8"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "1x16x8x8" in err and "32 channels" in err


def test_count_onnx_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["count", "--model", str(tmp_path / "none.onnx")]) == 2
    assert "not found" in capsys.readouterr().err
    bad = tmp_path / "bad.onnx"
    bad.write_text("garbage")
    assert main(["count", "--model", str(bad)]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0


def test_count_unknown_model_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["count", "--model", "conv_bn_relux"]) == 2
    assert "conv_bn_relu" in capsys.readouterr().err
