"""CLI and per-block profiling: list names every zoo network, unknown names suggest, profile --per-block."""

from __future__ import annotations

import json

import pytest
import torch

import latprof.cost
import latprof.per_block
from latprof.cli import main
from latprof.errors import LatprofError
from latprof.measure.protocol import MeasureConfig
from latprof.per_block import profile_blocks, summarize_blocks, summary_line
from latprof.results import read_results
from latprof.workloads import build_registered
from tests.test_workloads_blocks import BLOCKS
from tests.test_workloads_networks import NETWORKS, PUBLISHED

QUICK = ["--threads", "1", "--max-time", "0.05", "--target-ci", "0.5"]


def test_list_models_json_names_every_zoo_entry(capsys) -> None:
    assert main(["list", "models", "--json"]) == 0
    items = {it["name"]: it for it in json.loads(capsys.readouterr().out)}
    for name in NETWORKS:
        r = PUBLISHED[name].resolution  # 224, or the network's own (EfficientNet B1-B3, V2-S)
        assert items[name]["kind"] == "network" and items[name]["default_input"] == f"1x3x{r}x{r}"
        assert items[name]["description"] and items[name]["arguments"] == {"num_classes": 1000}
    for name in BLOCKS:
        assert items[name]["kind"] == "block"
    assert items["resnet_bottleneck"]["arguments"] == {
        "in_channels": 256, "mid_channels": 64, "out_channels": None, "stride": 1, "relu": True, "shortcut": True,
    }
    assert items["resnet_bottleneck"]["default_input"] == "1x256x56x56"


def test_unknown_model_suggests_close_names(capsys) -> None:
    assert main(["profile", "--model", "mobilenet_v2_x1", "--threads", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert "unknown model 'mobilenet_v2_x1' (did you mean " in err
    assert "mobilenet_v2_x1_0" in err.split("?)")[0] and "mobilenet_v2_x1_4" in err.split("?)")[0]


def test_profile_blocks_rows() -> None:
    config = MeasureConfig(target_ci=0.5, max_time_s=0.05, min_samples=3)
    rows = profile_blocks("resnet18", "torch-cpu", 1, config, input_shape=(1, 3, 32, 32))
    assert [r["block_index"] for r in rows] == list(range(-1, 10))
    assert [r["variant"] for r in rows][:3] == ["network", "stem", "layer1_0"] and rows[-1]["variant"] == "head"
    assert {r["experiment"] for r in rows} == {"blocks:resnet18"} and {r["workload"] for r in rows} == {"resnet18"}
    assert all(r["status"] == "ok" for r in rows)
    assert rows[1]["input_shape"] == "1x3x32x32" and rows[2]["input_shape"] == "1x64x8x8"
    assert rows[-1]["input_shape"] == "1x512x1x1"
    assert rows[0]["share_of_network"] == 1.0
    for r in rows[1:]:
        assert r["share_of_network"] == pytest.approx(r["latency_median_ms"] / rows[0]["latency_median_ms"])
    assert rows[0]["sum_of_blocks_ms"] == pytest.approx(sum(r["latency_median_ms"] for r in rows[1:]))
    assert rows[0]["sum_vs_network"] == pytest.approx(rows[0]["sum_of_blocks_ms"] / rows[0]["latency_median_ms"])
    whole = latprof.cost.count_model(build_registered("resnet18").module, (torch.randn(1, 3, 32, 32),)).totals
    assert rows[0]["mult_adds"] == whole["mult_adds"] and rows[0]["mem_access"] == whole["mem_access"]
    assert rows[0]["params"] == 11_689_512
    assert sum(r["mult_adds"] for r in rows[1:]) == rows[0]["mult_adds"]  # the blocks partition the network's work
    assert summary_line(rows).startswith("sum of blocks ")


def test_a_counting_failure_is_noted_and_the_latency_row_stays(monkeypatch) -> None:
    def broken(module, inputs, fold_bn=False):
        raise LatprofError("no rule for this op")

    monkeypatch.setattr(latprof.per_block, "count_model", broken)
    config = MeasureConfig(target_ci=0.5, max_time_s=0.05, min_samples=3)
    rows = profile_blocks("mobilenet_v1_x0_25", "torch-cpu", 1, config, input_shape=(1, 3, 32, 32))
    assert len(rows) == 1 + 15 and all("mult_adds" not in r for r in rows)
    assert all(r["status"] == "ok" and r["count_error"] == "no rule for this op" for r in rows)


def test_summary_needs_every_block() -> None:
    rows = [{"block_index": -1, "status": "ok", "latency_median_ms": 2.0, "blocks_total": 2},
            {"block_index": 0, "status": "ok", "latency_median_ms": 1.5}]
    assert summarize_blocks(rows).sum_of_blocks_ms is None  # one block missing (interrupted run)
    assert summary_line(rows).endswith("(0 row(s) failed, 1 block(s) not measured)")
    rows.append({"block_index": 1, "status": "error", "error": "x"})
    assert "not available (1 row(s) failed)" in summary_line(rows)
    rows[-1] = {"block_index": 1, "status": "ok", "latency_median_ms": 1.0}
    assert summarize_blocks(rows).ratio == pytest.approx(1.25)


@pytest.mark.slow  # a network and each of its blocks in worker processes (~9 s)
def test_cli_per_block_prints_table_and_stores_rows(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    code = main(["profile", "--model", "mobilenet_v3_small", "--per-block", "--input", "1x3x32x32", "--out", str(out), *QUICK])
    printed = capsys.readouterr().out
    assert code == 0
    assert "share of network" in printed and "block3" in printed and "sum of blocks" in printed
    rows = read_results(out).results
    assert len(rows) == 14 and {r["experiment"] for r in rows} == {"blocks:mobilenet_v3_small"}
    assert (out / "results.csv").read_text().count("blocks:mobilenet_v3_small") == 14
    # --resume: every row of that network is present, nothing is measured again
    assert main(["profile", "--model", "mobilenet_v3_small", "--per-block", "--input", "1x3x32x32", "--out", str(out),
                 "--resume", *QUICK]) == 0
    assert "1 network(s) already present" in capsys.readouterr().out
    assert len(read_results(out).results) == 14


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "conv5x5"], "conv5x5 is not a network with a block decomposition"),
        (["--model", "resnet18", "--input", "1x5x32x32"], "resnet18 rejects input 1x5x32x32"),
        (["--model", "resnet18", "--model", "resnet_19"], "unknown model 'resnet_19'"),
    ],
)
def test_cli_per_block_bad_request_is_one_line_before_any_file(tmp_path, capsys, argv, message) -> None:
    out = tmp_path / "never"
    assert main(["profile", "--per-block", *argv, "--out", str(out), *QUICK]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and message in err
    assert not out.exists()


def test_profile_blocks_rejects_unknown_backend() -> None:
    with pytest.raises(LatprofError, match="backend"):
        profile_blocks("resnet18", "torch-cpuu", 1)
