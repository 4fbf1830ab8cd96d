"""The latency predictor: kernel extraction (aten ops, ORT optimised graphs), the predictor file (round trip,
refusals), calibration through the run engine with an injected measure function, prediction without running,
and the evaluation's metrics and baselines."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

from latprof.cli import main
from latprof.errors import LatprofError
from latprof.predict import load
from latprof.predict.kernels import FEATURES
from latprof.predict.ort_kernels import graph_kernels
from latprof.predict.store import KIND, SCHEMA_VERSION, save
from latprof.predict.torch_kernels import replay_timer, torch_kernels

HW = "feedfacefeedface"


@pytest.fixture(autouse=True)
def _fixed_hardware(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("latprof.predict.predictor.this_hardware_id", lambda: HW)


def conv_bn_relu(cin: int = 8, cout: int = 16) -> nn.Module:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()).eval()


# ------------------------------------------------------------------ kernels: PyTorch eager (aten ops)
def test_torch_kernels_are_the_aten_ops_with_counts() -> None:
    kernels, calls = torch_kernels(conv_bn_relu(), (torch.zeros(1, 8, 10, 10),))
    ops = [k.op for k in kernels]
    assert ops[0] == "convolution" and "relu" in ops
    assert any("batch_norm" in op for op in ops)
    conv = kernels[0]
    assert conv.features["mult_adds"] == 16 * 10 * 10 * 8 * 9
    assert (conv.features["k_h"], conv.features["stride"], conv.features["groups"]) == (3, 1, 1)
    assert (conv.features["in_c"], conv.features["out_c"], conv.features["out_h"]) == (8, 16, 10)
    assert calls == 4  # the Sequential and its three children


def test_torch_kernels_dedupe_repeated_ops_and_split_depthwise() -> None:
    block = nn.Sequential(nn.ReLU(), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, groups=8)).eval()
    kernels, _ = torch_kernels(block, (torch.zeros(1, 8, 6, 6),))
    relu = [k for k in kernels if k.op == "relu"]
    assert len(relu) == 1 and relu[0].count == 2
    assert [k.op for k in kernels if "convolution" in k.op] == ["convolution_dw"]


def test_views_are_kernels_and_replay_runs_each_op_alone() -> None:
    class Shuffle(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            n, c, h, w = x.shape
            return x.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, c, h, w)

    kernels, _ = torch_kernels(Shuffle(), (torch.zeros(1, 8, 4, 4),))
    ops = [k.op for k in kernels]
    assert ops == ["view", "transpose", "clone", "view"]  # two views of different shapes: two kernels
    clone = kernels[ops.index("clone")]
    assert clone.spec["args"][0]["stride"] != [128, 16, 4, 1, 1]  # replayed on the non-contiguous input it copies
    for k in kernels:
        assert replay_timer(k.spec)(3) >= 0.0


# ------------------------------------------------------------------ kernels: ONNX Runtime optimised graph
def _fused_graph() -> onnx.ModelProto:
    """What ORT's optimiser writes for conv+bn+relu (+ residual), hand-built: NCHWc convs, a FusedConv, reorders."""
    w1 = helper.make_tensor("w1", TensorProto.FLOAT, [16, 8, 3, 3], np.zeros(16 * 8 * 9, np.float32))
    w2 = helper.make_tensor("w2", TensorProto.FLOAT, [16, 16, 1, 1], np.zeros(256, np.float32))
    w3 = helper.make_tensor("w3", TensorProto.FLOAT, [16, 1, 3, 3], np.zeros(144, np.float32))
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["t0"], domain="com.microsoft.nchwc", name="c1", kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1], strides=[2, 2], group=1, activation="Relu"),
        helper.make_node("Conv", ["t0", "w2", "", "t0"], ["t1"], domain="com.microsoft.nchwc", name="c2",
                         kernel_shape=[1, 1], group=1),
        helper.make_node("ReorderOutput", ["t1"], ["y0"], domain="com.microsoft.nchwc", name="r", channels=16),
        helper.make_node("FusedConv", ["y0", "w3"], ["y1"], domain="com.microsoft", name="dw", kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1], group=16, activation="Clip"),
        helper.make_node("GlobalAveragePool", ["y1"], ["y"], name="gap"),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 20, 20])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w1, w2, w3])
    return helper.make_model(graph)


def test_graph_kernels_read_fusions_and_propagate_shapes() -> None:
    kernels = {k.spec["node"]: k for k in graph_kernels(_fused_graph())}
    assert kernels["c1"].op == "nchwc.Conv+Relu"
    assert kernels["c2"].op == "nchwc.Conv+Add"  # a summand input: Conv+Add fused
    assert kernels["dw"].op == "FusedConv+Clip"
    assert kernels["c1"].features["mult_adds"] == 16 * 10 * 10 * 8 * 9
    assert (kernels["c2"].features["in_h"], kernels["c2"].features["out_c"]) == (10, 16)
    assert kernels["c2"].features["mult_adds"] == 16 * 10 * 10 * 16
    assert kernels["dw"].features["groups"] == 16 and kernels["dw"].features["cin_per_group"] == 1
    assert (kernels["gap"].features["out_h"], kernels["gap"].features["in_c"]) == (1, 16)


@pytest.mark.slow
def test_ort_kernels_come_from_the_sessions_optimised_graph(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from latprof.backends import BackendOptions, create_backend
    from latprof.predict.ort_kernels import ort_kernels
    from latprof.workloads.registry import Workload

    monkeypatch.setenv("LATPROF_CACHE", str(tmp_path))
    backend = create_backend("ort-cpu", BackendOptions(threads=1))
    kernels = ort_kernels(backend, Workload("cbr", conv_bn_relu(16, 32), (1, 16, 12, 12), "block", {}, "test"))
    convs = [k for k in kernels if "Conv" in k.op]
    assert len(convs) == 1 and convs[0].op.endswith("+Relu")  # BN folded, ReLU fused: one kernel
    assert not any("BatchNormalization" in k.op or k.op == "Relu" for k in kernels)
    assert convs[0].features["mult_adds"] == 32 * 12 * 12 * 16 * 9


@pytest.mark.slow
def test_node_times_are_read_from_the_kernels_own_optimised_graph(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """ONNX Runtime names the nodes it inserts (NCHWc reorders) anew in every session: a profile of a fresh session
    matched to another session's graph gave reorders each other's times. The calibration profiles the saved graph."""
    from latprof.backends import BackendOptions, create_backend
    from latprof.predict.measure_cells import NodeTimes, misattributed, node_medians
    from latprof.predict.ort_kernels import optimized_model
    from latprof.workloads import create_workload

    monkeypatch.setenv("LATPROF_CACHE", str(tmp_path))
    backend = create_backend("ort-mobile", BackendOptions(threads=1))
    w = create_workload("mbconv", in_channels=32, out_channels=32, stride=1, expansion=4.0, kernel_size=3, se=True,
                        act="swish", input_shape=(1, 32, 14, 14))
    graph = tmp_path / "optimized.onnx"
    kernels = graph_kernels(optimized_model(backend, backend.export(w).path, save_to=graph))
    assert any(k.op == "nchwc.ReorderOutput" for k in kernels)  # the graph has nodes ONNX Runtime named itself
    times = node_medians(backend, graph, w, runs=2, optimized=True)
    named = [k for k in kernels if k.spec["node"]]
    assert named and all(k.spec["node"] in times and times[k.spec["node"]] >= 0 for k in named)
    assert misattributed(kernels, times) == []
    # the guard: a profile whose node of that name ran another op or size is named
    reorder = next(k for k in kernels if k.op == "nchwc.ReorderOutput")
    wrong = NodeTimes()
    wrong.ran = {**times.ran, reorder.spec["node"]: ("ReorderOutput", [1, 96, 56, 56])}
    assert misattributed(kernels, wrong) == [f"{reorder.spec['node']} ran as ReorderOutput [1, 96, 56, 56], the graph "
                                             f"has nchwc.ReorderOutput [1, 14, 14]"]
    wrong.ran = {**times.ran, reorder.spec["node"]: ("ReorderInput", times.ran[reorder.spec["node"]][1])}
    assert len(misattributed(kernels, wrong)) == 1


# ------------------------------------------------------------------ the predictor file
def _samples(n: int = 40) -> list[dict]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        ma = float(rng.integers(1e4, 1e7))
        for op in ("convolution", "relu"):
            f = {"mult_adds": ma if op == "convolution" else 0.0, "mem_access": ma / 10, "in_c": 16.0, "out_c": 16.0}
            out.append({"op": op, "label": op, "features": f, "latency_ms": 1e-3 + 1e-6 * ma + 1e-7 * ma / 10})
    return out


def predictor_data(**over: object) -> dict:
    data = {"schema_version": SCHEMA_VERSION, "kind": KIND, "backend": "torch-cpu", "threads": 1, "hardware_id": HW,
            "backend_settings": {"backend": "torch-cpu", "threads": 1}, "features": list(FEATURES),
            "model": {"regressor": "random_forest"}, "overhead": {"per_module_call_ms": 0.002, "per_run_ms": 0.0},
            "samples": _samples()}
    data.update(over)
    return data


def test_file_round_trip_refits_and_predicts_without_running(tmp_path: Path) -> None:
    path = save(predictor_data(), tmp_path / "p.json")
    assert json.loads(path.read_text())["kind"] == KIND  # plain JSON, no pickle
    p = load(path)
    net = conv_bn_relu()
    pred = p.predict(net, (1, 8, 10, 10))
    assert pred.kernels_ms > 0 and pred.predicted_ms == pytest.approx(pred.kernels_ms + 4 * 0.002)
    assert sum(k.count for k in pred.kernels) == len(torch_kernels(net, (torch.zeros(1, 8, 10, 10),))[0])
    assert set(p.model.families) == {"convolution", "relu"}  # refitted per family from the stored samples


def test_the_context_factor_scales_the_kernels_but_not_the_module_calls(tmp_path: Path) -> None:
    net = conv_bn_relu()
    plain = load(save(predictor_data(), tmp_path / "a.json")).predict(net, (1, 8, 10, 10))
    data = predictor_data(overhead={"per_module_call_ms": 0.002, "per_run_ms": 0.0, "context_factor": 1.5,
                                    "per_kernel_call_ms": 0.0005})
    scaled = load(save(data, tmp_path / "b.json")).predict(net, (1, 8, 10, 10))
    calls = sum(k.count for k in plain.kernels)
    assert scaled.kernels_ms == pytest.approx(1.5 * plain.kernels_ms + 0.0005 * calls)
    assert scaled.overhead_ms == plain.overhead_ms == pytest.approx(4 * 0.002)
    assert sum(k.ms for k in scaled.kernels) == pytest.approx(scaled.kernels_ms)


def test_context_fit_recovers_factor_and_per_call_term_despite_one_busy_cell() -> None:
    from latprof.predict.calibrate import context_fit

    def cell(kernels_ms: float, calls: int, modules: int, busy: float = 1.0) -> dict:
        return {"kernels_ms": kernels_ms, "kernel_calls": calls, "module_calls": modules,
                "latency_median_ms": busy * (1.1 * kernels_ms - 0.02 * calls + 0.001 * modules)}

    cells = [cell(1.0, 10, 12), cell(5.0, 30, 20), cell(20.0, 8, 9), cell(3.0, 90, 60), cell(0.8, 4, 5),
             cell(2.0, 40, 30, busy=3.0)]  # the last read during a busy spell
    factor, per_call = context_fit(cells, 0.001)
    assert factor == pytest.approx(1.1, rel=0.01) and per_call == pytest.approx(-0.02, rel=0.03)
    assert context_fit(cells[:1], 0.001) == (1.0, 0.0)


def test_predict_on_a_zoo_network_without_running_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from latprof.workloads import create_workload

    p = load(save(predictor_data(), tmp_path / "p.json"))

    def refuse(*a: object, **k: object) -> None:
        raise AssertionError("the network was run")

    w = create_workload("mobilenet_v1_x0_25", input_shape=(1, 3, 64, 64))
    monkeypatch.setattr(torch.nn.Conv2d, "_conv_forward", lambda self, x, w_, b: refuse() if x.device.type != "meta" else torch.nn.functional.conv2d(x, w_, b, self.stride, self.padding, self.dilation, self.groups))
    pred = p.predict_workload(w, per_block=True)
    assert pred.predicted_ms > 0 and len(pred.blocks) == len(w.module.blocks())
    assert all(b["predicted_ms"] > 0 for b in pred.blocks)


def test_cli_predict_json_prints_predicted_ms(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = save(predictor_data(), tmp_path / "p.json")
    assert main(["predict", "--model", "mobilenet_v1_x0_25", "--input", "1x3x64x64", "--predictor", str(path),
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out[0]["model"] == "mobilenet_v1_x0_25" and out[0]["predicted_ms"] > 0


@pytest.mark.parametrize("change, needle", [
    ({"hardware_id": "0000000000000000"}, "calibrated on hardware_id 0000000000000000"),
    ({"schema_version": 99}, "schema_version 99"),
    ({"schema_version": 1}, "schema_version 1, this latprof reads 2, 3, 4, 5, 6"),  # before the measured eager overhead
    ({"samples": []}, "no valid kernel samples"),
    ({"kind": "something"}, "not a latprof predictor file"),
])
def test_foreign_or_broken_files_are_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                         change: dict, needle: str) -> None:
    path = save(predictor_data(**change), tmp_path / "p.json")
    assert main(["predict", "--model", "resnet18", "--predictor", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1


def test_corrupt_and_missing_files_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"kind": "latprof-predictor", "samples": [')
    assert main(["predict", "--model", "resnet18", "--predictor", str(bad)]) == 2
    assert "not readable JSON" in capsys.readouterr().err
    assert main(["predict", "--model", "resnet18", "--predictor", str(tmp_path / "none.json")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_another_backend_or_thread_count_is_refused(tmp_path: Path) -> None:
    path = save(predictor_data(), tmp_path / "p.json")
    with pytest.raises(LatprofError, match="for backend torch-cpu, not ort-mobile"):
        load(path, backend="ort-mobile")
    with pytest.raises(LatprofError, match="for 1 thread"):
        load(path, threads=2)


# ------------------------------------------------------------------ calibration through the run engine
def test_calibrate_with_an_injected_measure_function(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from latprof.predict.calibrate import CalibrateRequest, calibrate
    from latprof.predict.model import REGRESSORS
    from latprof.run.engine import RunOptions
    from latprof.run.units import MEASURE_FUNCTIONS
    from tests.predict_fake import CONTEXT, PER_CALL_MS, kernel_ms

    monkeypatch.setitem(MEASURE_FUNCTIONS, "calibrate", "tests.predict_fake:measure")
    monkeypatch.setattr("latprof.predict.calibrate.CELLS_PER_UNIT", 4)
    rounds: list[int] = []
    result = calibrate(CalibrateRequest("torch-cpu", tmp_path / "p.json", threads=1, budget_s=0.01,
                                        out=tmp_path / "runs", peaks=False, run=RunOptions(in_process=True)),
                       on_round=lambda u, n, t: rounds.append(n))
    assert result.units == 1 and rounds == [result.samples]  # a tiny budget still runs one unit, then stops
    data = json.loads(result.path.read_text())
    assert data["backend"] == "torch-cpu" and data["threads"] == 1 and data["model"]["regressor"] in REGRESSORS
    assert len(data["samples"]) == result.samples > 0 and len(data["cells"]) == 4
    assert all(s["latency_ms"] == pytest.approx(kernel_ms(s["features"])) for s in data["samples"])
    assert data["overhead"]["per_module_call_ms"] == PER_CALL_MS  # the idle call as measured, not fitted
    assert data["overhead"]["context_factor"] == pytest.approx(CONTEXT)
    rows = (tmp_path / "runs" / "results.jsonl").read_text().splitlines()
    assert sum('"sample": "kernel"' in r for r in rows) == result.samples  # every reading stored by the engine


def test_a_predictor_is_rebuilt_from_stored_readings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from latprof.predict.calibrate import CalibrateRequest, calibrate
    from latprof.run.engine import RunOptions
    from latprof.run.units import MEASURE_FUNCTIONS

    monkeypatch.setitem(MEASURE_FUNCTIONS, "calibrate", "tests.predict_fake:measure")
    first = calibrate(CalibrateRequest("torch-cpu", tmp_path / "a.json", threads=1, budget_s=0.01,
                                       out=tmp_path / "runs", peaks=False, run=RunOptions(in_process=True)))
    assert main(["calibrate", "--from-readings", str(tmp_path / "runs"), "-o", str(tmp_path / "b.json")]) == 0
    a, b = (json.loads((tmp_path / n).read_text()) for n in ("a.json", "b.json"))
    assert b["samples"] == a["samples"] and b["cells"] == a["cells"] and b["overhead"] == a["overhead"]
    assert b["calibration"]["rebuilt_from_readings"] and len(b["samples"]) == first.samples


def test_calibrations_of_one_machine_merge_and_others_are_refused_in_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from latprof.predict.calibrate import CalibrateRequest, calibrate
    from latprof.run.engine import RunOptions
    from latprof.run.units import MEASURE_FUNCTIONS

    monkeypatch.setitem(MEASURE_FUNCTIONS, "calibrate", "tests.predict_fake:measure")
    runs = []
    for seed in (0, 1):
        calibrate(CalibrateRequest("torch-cpu", tmp_path / f"{seed}.json", threads=1, budget_s=0.01, seed=seed,
                                   out=tmp_path / f"runs{seed}", peaks=False, run=RunOptions(in_process=True)))
        runs.append(str(tmp_path / f"runs{seed}"))
    assert main(["calibrate", "--from-readings", *runs, "-o", str(tmp_path / "m.json")]) == 0
    one, two, merged = (json.loads((tmp_path / n).read_text()) for n in ("0.json", "1.json", "m.json"))
    assert len(merged["samples"]) == len(one["samples"]) + len(two["samples"])
    assert len(merged["cells"]) == len(one["cells"]) + len(two["cells"])  # ids restart at r0: prefixed, not lost
    assert {c["id"].split(".")[0] for c in merged["cells"]} == {"s0", "s1"}
    assert merged["calibration"]["merged_calibrations"] == 2 and merged["residency"]["chains"] == 2
    capsys.readouterr()

    other = tmp_path / "ort" / "results.jsonl"
    other.parent.mkdir()
    other.write_text((tmp_path / "runs1" / "results.jsonl").read_text().replace('"torch-cpu"', '"ort-mobile"'))
    assert main(["calibrate", "--from-readings", runs[0], str(other), "-o", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert "holds ort-mobile readings" in err and len(err.splitlines()) == 1 and not (tmp_path / "x.json").exists()


def test_ort_samples_add_the_signed_median_per_node_overhead_to_each_profiled_node() -> None:
    from latprof.predict.calibrate import MIN_NODE_MS, Readings

    def kernel(cell: str, ms: float) -> dict:
        return {"status": "ok", "sample": "kernel", "workload": cell, "latency_median_ms": ms, "profiled_ms": ms,
                "kernel": {"op": "Add", "label": "add", "features": {}}}

    def cell(name: str, timed: float, profiled: float) -> dict:
        return {"status": "ok", "sample": "cell", "workload": name, "latency_median_ms": timed, "session_ms": 0.002,
                "profiled_ms": profiled, "kernel_calls": 2}

    r = Readings("ort-mobile")
    # per-node excess: (0.012 - 0.002 - 0.006) / 2 = 0.002; (0.0142 - 0.002 - 0.008) / 2 = 0.0021; a cell timed
    # during a busy spell: (1.0 - 0.002 - 0.004) / 2 = 0.497. The median is 0.0021.
    r.add([kernel("a", 0.004), kernel("a", 0.002), cell("a", 0.012, 0.006),
           kernel("b", 0.008), kernel("b", 0.0), cell("b", 0.0142, 0.008),
           kernel("c", 0.004), kernel("c", 0.0), cell("c", 1.0, 0.004)])
    assert r.node_overhead_ms() == pytest.approx(0.0021)
    ms = [s["latency_ms"] for s in r.samples()]
    assert ms == pytest.approx([0.0061, 0.0041, 0.0101, 0.0021, 0.0061, 0.0021])

    # run back to back, the profiler costs a node more than the executor does: the overhead is negative and
    # lowers every sample, down to the floor (half the profiler's resolution), not below
    r = Readings("ort-mobile")  # per-node excess -0.001, -0.001 and a busy cell's +0.497: the median is -0.001
    r.add([kernel("a", 0.004), kernel("a", 0.0008), cell("a", 0.0048, 0.0048),
           kernel("b", 0.006), kernel("b", 0.002), cell("b", 0.0080, 0.008),
           kernel("c", 0.003), kernel("c", 0.001), cell("c", 1.0, 0.004)])
    assert r.node_overhead_ms() == pytest.approx(-0.001)
    ms = [s["latency_ms"] for s in r.samples()]
    assert ms == pytest.approx([0.003, MIN_NODE_MS, 0.005, 0.001, 0.002, MIN_NODE_MS])


def test_evaluate_on_earlier_readings_measures_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture) -> None:
    from latprof.results import ResultStore, base_row

    store = ResultStore(tmp_path / "old" / "results.jsonl")
    store.append({"record": "environment", "hardware_id": HW})
    nets = {"mobilenet_v1_x0_25": (1.0, 4.0e7, 5.0e6), "mobilenet_v1_x0_5": (2.0, 1.5e8, 1.0e7),
            "shufflenet_v2_x0_5": (1.5, 4.0e7, 9.0e6), "micronet_m0": (0.8, 5.0e6, 4.0e6)}
    for name, (ms, ma, mac) in nets.items():
        store.append(base_row(workload=name, backend="torch-cpu", threads=1, batch=1, input_shape="1x3x224x224",
                              status="ok", error="", latency_median_ms=ms, mult_adds=ma, mem_access=mac,
                              mem_bytes=4 * mac))
    monkeypatch.setattr("latprof.profile.run_profile", lambda *a, **k: pytest.fail("measured"))
    path = save(predictor_data(), tmp_path / "p.json")
    assert main(["predict", "--evaluate", "--predictor", str(path), "--model", ",".join(nets), "--readings",
                 str(tmp_path / "old"), "--out", str(tmp_path / "new"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [n["measured_ms"] for n in out["networks"]] == [v[0] for v in nets.values()]
    assert out["metrics"]["kernel"]["n"] == 4 and out["metrics"]["flops"]["n"] == 4
    records = [json.loads(x) for x in (tmp_path / "new" / "results.jsonl").read_text().splitlines()]
    assert out["metrics"]["flops+mac"]["n"] == 0  # three parameters cannot be fitted to the other three networks
    assert sum(r.get("record") == "prediction" for r in records) == 4 * 3  # kernel, flops, mac
    assert (tmp_path / "new" / "report.html").exists()


def test_calibrate_refuses_unsupported_backends_and_budgets(tmp_path: Path) -> None:
    from latprof.predict.calibrate import CalibrateRequest, calibrate

    with pytest.raises(LatprofError, match="unknown backend"):
        calibrate(CalibrateRequest("torch-gpu", tmp_path / "p.json"))
    with pytest.raises(LatprofError, match="--budget must be > 0"):
        calibrate(CalibrateRequest("torch-cpu", tmp_path / "p.json", budget_s=-1, peaks=False))


@pytest.mark.slow
def test_calibrate_unit_measures_kernels_and_the_cell_in_the_worker_function() -> None:
    from latprof.predict.measure_cells import measure_calibrate_unit

    cell = {"type": "chain", "input": [1, 8, 7, 7],
            "blocks": [{"name": "conv_bn_relu", "kwargs": {"in_channels": 8, "out_channels": 8, "kernel_size": 1}}]}
    rows = measure_calibrate_unit({"backend": "torch-cpu", "threads": 1, "cells": [["c0", cell]]})
    kinds = [r["sample"] for r in rows]
    assert kinds[0] == "overhead" and kinds[-1] == "cell" and kinds.count("kernel") >= 3
    assert all(r["status"] == "ok" and r["latency_median_ms"] > 0 for r in rows)
    assert rows[-1]["module_calls"] == 5  # Sequential(conv_bn_relu(Sequential(conv, bn, relu)))
    assert rows[-1]["state_engine"] == "torch" and rows[-1]["state_hot_ms"] > 0  # the state read before the cell


@pytest.mark.slow  # a real ONNX Runtime cell: exported, timed, profiled three ways (~10 s)
def test_an_ort_calibrate_unit_reads_the_state_in_a_session_of_its_backend() -> None:
    from latprof.predict.measure_cells import measure_calibrate_unit

    cell = {"type": "chain", "input": [1, 8, 7, 7],
            "blocks": [{"name": "conv_bn_relu", "kwargs": {"in_channels": 8, "out_channels": 8, "kernel_size": 1}}]}
    rows = measure_calibrate_unit({"backend": "ort-mobile", "threads": 1, "cells": [["c0", cell]]})
    assert all(r["status"] == "ok" for r in rows), [r.get("error") for r in rows]
    measured = [r for r in rows if r["sample"] in ("cell", "kernel")]
    assert measured[-1]["sample"] == "cell" and len(measured) >= 2
    for r in measured:  # every reading carries the one state read before its cell, on ONNX Runtime
        assert r["state_engine"] == "onnxruntime" and r["state_hot_ms"] == measured[-1]["state_hot_ms"] > 0


# ------------------------------------------------------------------ evaluation: metrics and baselines
def test_metrics_count_shares_rmspe_and_rank() -> None:
    from latprof.analysis.prediction import metrics

    m = metrics([1.04, 2.3, 2.9, 4.0], [1.0, 2.0, 3.0, 4.0])
    assert m["n"] == 4 and m["within_10"] == 0.75 and m["within_5"] == 0.75
    assert m["rmspe"] == pytest.approx(math.sqrt((0.04**2 + 0.15**2 + (0.1 / 3) ** 2) / 4))
    assert m["spearman"] == pytest.approx(1.0)


def test_pass_agreement_scores_each_pass_against_its_networks_other_passes() -> None:
    from latprof.analysis.prediction import pass_agreement

    # network a: 1.0 vs median(1.05, 1.3)=1.175 (-15%), 1.05 vs 1.15 (-9%), 1.3 vs 1.025 (+27%);
    # network b: 2.0 vs 2.1 (-5%), 2.1 vs 2.0 (+5%); network c, one pass, tells nothing
    a = pass_agreement([[1.0, 1.05, 1.3], [2.0, 2.1], [5.0], []])
    assert a["passes"] == 5 and a["within"] == pytest.approx(3 / 5)
    assert a["median_abs"] == pytest.approx(1 - 1.05 / 1.15)  # the middle of 0.048, 0.05, 0.087, 0.149, 0.268
    assert pass_agreement([[3.0]])["within"] is None


def test_leave_one_out_fits_never_see_the_network_they_predict() -> None:
    from latprof.analysis.prediction import loo_fit

    x = [1.0, 2.0, 3.0, 4.0, 100.0]
    y = [2.0, 4.0, 6.0, 8.0, 1000.0]  # the last network is far off the line the others make
    pred = loo_fit([x], y)
    assert pred[-1] == pytest.approx(200.0)  # from the other four: y = 2x exactly
    assert pred[0] != pytest.approx(2.0)  # the outlier moves the fit the others see


def test_report_shows_predicted_vs_measured(tmp_path: Path) -> None:
    from latprof.report.build import build_report
    from latprof.results import ResultStore, base_row

    store = ResultStore(tmp_path / "results.jsonl")
    store.append(base_row(workload="resnet18", backend="torch-cpu", threads=1, batch=1, input_shape="1x3x224x224",
                          status="ok", error="", latency_median_ms=10.0))
    for name, ms in (("kernel", 10.5), ("flops", 14.0)):
        store.append({"record": "prediction", "workload": "resnet18", "backend": "torch-cpu", "threads": 1,
                      "block_index": -1, "predictor": name, "predicted_ms": ms, "measured_ms": 10.0})
    html = build_report([tmp_path / "results.jsonl"], tmp_path / "r.html").read_text()
    assert "Predicted vs measured latency" in html and "Accuracy per predictor" in html
    assert (tmp_path / "r_predictions.csv").exists()
    assert "medians of each pass" not in html
    # measured in passes (--processes): the records carry their range and the figure draws it as a bar
    store.append({"record": "prediction", "workload": "resnet18", "backend": "torch-cpu", "threads": 1,
                  "block_index": -1, "predictor": "kernel", "predicted_ms": 10.5, "measured_ms": 10.0,
                  "measured_low_ms": 9.0, "measured_high_ms": 12.0})
    html = build_report([tmp_path / "results.jsonl"], tmp_path / "r2.html").read_text()
    assert "medians of each pass" in html


# ------------------------------------------------------------------ cache-cold readings
def test_cold_timer_evicts_before_every_call_and_times_only_the_calls() -> None:
    from latprof.predict.cold import cold_timer

    now = [0.0]
    events: list[str] = []

    def evict() -> None:
        events.append("evict")
        now[0] += 5.0  # an eviction takes long; it must not count

    def call() -> None:
        events.append("call")
        now[0] += 0.25

    def touch() -> None:
        events.append("touch")
        now[0] += 1.0  # reading the input back must not count either

    timer = cold_timer(call, evict, touch, clock=lambda: now[0])
    assert timer(3) == pytest.approx(0.75)
    assert events == ["evict", "touch", "call"] * 3


def test_reader_reads_the_first_tensor_argument() -> None:
    from latprof.predict.cold import reader

    x, w = torch.ones(2, 3), torch.zeros(4)
    assert float(reader([3, x, w])()) == 6.0  # the input x, not the weight
    assert reader([1, "a"]) is None


def test_evictor_writes_a_buffer_twice_the_last_level_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    from latprof.predict import cold

    monkeypatch.setattr(cold, "last_level_cache_bytes", lambda: 4096)
    e = cold.Evictor()
    assert e.buffer.numel() * 4 == 8192
    e()
    e()
    assert float(e.buffer[0]) == 2.0


@pytest.mark.parametrize("backend", ["torch-cpu", "ort-cpu"])
def test_a_calibrate_unit_measures_one_small_cell_cache_cold(backend: str, tmp_path: Path) -> None:
    from latprof.predict.measure_cells import export_ahead, measure_calibrate_unit

    cell = {"type": "chain", "input": [1, 8, 7, 7],
            "blocks": [{"name": "conv_bn_relu", "kwargs": {"in_channels": 8, "out_channels": 8, "kernel_size": 1,
                                                            "stride": 1}}]}
    config = {"target_ci": 0.5, "max_time_s": 0.05, "min_samples": 2, "max_samples": 3, "min_time_s": 0.0,
              "min_sample_time_s": 1e-9, "warmup_min_s": 0.0, "warmup_max_s": 0.01, "warmup_max_batches": 1}
    chain = {**cell, "blocks": cell["blocks"] * 2, "residency": True}
    payload = {"backend": backend, "threads": 1, "cells": [["c0", cell]], "config": config, "chains": [["h0", chain]]}
    if backend != "torch-cpu":  # ONNX Runtime: the calibration's process exports the cells ahead of the worker
        assert export_ahead(payload, tmp_path) == 2 and len(list(tmp_path.glob("*.onnx"))) == 2
        payload["export_cache"] = str(tmp_path)
    rows = measure_calibrate_unit(payload)
    if backend != "torch-cpu":  # and the worker ran those files, exporting nothing itself
        assert [r["export"]["onnx_cached"] for r in rows if r["sample"] in ("cell", "chain")] == [True, True]
        assert len(list(tmp_path.glob("*.onnx"))) == 2
    kinds = [r.get("sample") for r in rows]
    assert kinds.count("cell") == 1 and kinds.count("overhead") == 1 and kinds.count("kernel") >= 1
    cell_row = next(r for r in rows if r["sample"] == "cell")
    assert cell_row["status"] == "ok" and cell_row["latency_median_ms"] > 0 and cell_row["warm_ms"] > 0
    measured = kinds.count("kernel")  # eager: each distinct kernel once, however often the cell calls it
    assert cell_row["kernel_calls"] == measured if backend != "torch-cpu" else cell_row["kernel_calls"] >= measured
    warm_key = "warm_ms" if backend == "torch-cpu" else "warm_profiled_ms"  # every kernel read warm as well
    assert all(r[warm_key] is not None and r[warm_key] >= 0 for r in rows if r["sample"] == "kernel")
    # and inside the cell's forward, cold, warm and hot (eager: torch.profiler; ORT: its node profile)
    assert all(r[k] >= 0 for r in rows if r["sample"] == "kernel"
               for k in ("profiled_ms", "warm_profiled_ms", "hot_profiled_ms"))
    assert cell_row["hot_ms"] > 0 and cell_row["hot_profiled_ms"] > 0
    assert all(r["state_cold_ms"] > 0 and r["state_warm_ms"] > 0 for r in rows if r["sample"] != "overhead")
    # process counters in every row (a kernel read inside its cell's profile: those profiled forwards'), kept
    # through pooling over processes
    from latprof.run.pool import pool_rows

    for r in pool_rows([rows]):
        assert r["minor_faults_per_call"] is not None and r["involuntary_ctx_switches_per_call"] is not None, r
        assert r["counters_raw"]["calls"] >= 1
    chain_row = next(r for r in rows if r["sample"] == "chain")  # timed in a loop, with its kernels and footprint
    assert chain_row["status"] == "ok" and chain_row["latency_median_ms"] > 0 and chain_row["kernels"]
    weights = 2 * (8 * 8 + 4 * 8 + 1)  # two 1x1 convs, their batch norms (weight, bias, mean, var, batch count)
    eager = 4 * (weights + 2 * 8 * 7 * 7)  # + the largest activation twice
    if backend == "torch-cpu":
        assert chain_row["footprint_bytes"] == eager
    else:  # ONNX Runtime's blocked layout pads the channels to its vector width
        assert eager <= chain_row["footprint_bytes"] <= 4 * (weights + 2 * 16 * 7 * 7)


# ------------------------------------------------------------------ cache residency: warm vs cold, fitted on chains
def test_footprint_is_the_weights_once_plus_the_largest_activation_twice() -> None:
    from latprof.predict.residency import footprint_bytes

    net = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.Conv2d(16, 4, 1)).eval()
    kernels, _ = torch_kernels(net, (torch.zeros(1, 8, 10, 10),))
    weights = 16 * 8 * 9 + 4 * 16 + 4
    assert footprint_bytes(net, kernels) == 4 * (weights + 2 * 16 * 10 * 10)


def test_weight_share_is_the_weights_part_of_a_kernels_memory_traffic() -> None:
    from latprof.predict.residency import weight_share

    conv, _, bn, relu = torch_kernels(conv_bn_relu(), (torch.zeros(1, 8, 10, 10),))[0]
    assert weight_share(conv.op, conv.features) == pytest.approx(16 * 8 * 9 / (8 * 100 + 16 * 100 + 16 * 8 * 9))
    assert weight_share(bn.op, bn.features) == 0.0 and weight_share(relu.op, relu.features) == 0.0
    fused = {"mem_access": 1000.0, "in_numel": 100.0, "out_numel": 200.0}  # ONNX Runtime: the added tensor read too
    assert weight_share("nchwc.Conv+Add+Relu", fused) == pytest.approx(0.5)
    assert weight_share("FusedGemm+Relu", fused) == pytest.approx(0.7)


def test_residency_share_runs_from_its_floor_to_one_across_the_centre() -> None:
    from latprof.predict.residency import SPLIT, Residency

    r = Residency(centre_log2=24.0, width_log2=1.0, floor=-0.2)  # a schema-3 fit: whole kernels by the footprint
    assert r.share(2 ** 24) == pytest.approx(0.4)  # halfway between the floor and 1
    assert r.share(2 ** 14) == pytest.approx(-0.2, abs=1e-3) and r.share(2 ** 34) == pytest.approx(1.0, abs=1e-3)
    assert r.mix(1.0, 3.0, footprint=2 ** 24, weights=1.0, shares=0.3) == pytest.approx(1.8)
    r.per_kernel_call_ms = 0.01
    assert r.mix(1.0, 3.0, footprint=2 ** 24, weights=1.0, kernel_calls=20) == pytest.approx(2.0)
    assert Residency.from_dict(None).share(1.0) == 1.0  # no fit: every kernel cold
    split = Residency(centre_log2=24.0, width_log2=1.0, floor=-0.2, form=SPLIT, activation_factor=0.1)
    ms = split.mix(np.array([1.0, 1.0]), np.array([3.0, 3.0]), footprint=2 ** 40, weights=2 ** 24,
                   shares=np.array([1.0, 0.25]))  # p read at the weight bytes, not the footprint
    assert ms == pytest.approx([1.0 + 0.4 * 2, 1.0 + (0.4 * 0.25 + 0.1 * 0.75) * 2])


def _chains(share: Callable[[float], float], activation: float, per_call: float) -> list:
    from latprof.predict.residency import ChainSums

    chains = []
    for i, log2 in enumerate(np.linspace(21, 28, 30)):
        warm, dw, da, calls = 2.0 + i, 2.0 + 1.5 * i, 1.0 + 0.5 * (i % 3), 50.0 + 37 * (i % 4)
        ms = warm + share(2 ** log2) * dw + activation * da + per_call * calls
        chains.append(ChainSums(2 ** log2, ms, warm, dw, da, calls))
    return chains


def test_residency_fit_recovers_the_curve_despite_one_busy_chain() -> None:
    from latprof.predict.residency import MIN_CHAINS, SPLIT, fit_residency

    def share(s: float) -> float:
        return 0.1 + 0.9 / (1.0 + math.exp(-(math.log2(s) - 25.0) / 0.7))

    chains = _chains(share, 0.3, 0.004)
    chains[14] = chains[14]._replace(measured_ms=2.5 * chains[14].measured_ms)  # read during a busy spell
    r = fit_residency(chains)
    assert r.form == SPLIT and r.centre_log2 == pytest.approx(25.0, abs=0.1)
    assert r.width_log2 == pytest.approx(0.7, abs=0.1) and r.floor == pytest.approx(0.1, abs=0.03)
    assert r.activation_factor == pytest.approx(0.3, abs=0.05)
    assert r.per_kernel_call_ms == pytest.approx(0.004, abs=1e-3)  # it predicts left-out chains better: kept
    assert r.loo_rmspe == r.loo_rmspe_with_call_term < r.loo_rmspe_without_call_term
    assert r.chains == 30 and r.fit_within_10 == pytest.approx(29 / 30)
    assert fit_residency(chains[: MIN_CHAINS - 1]).floor == 1.0  # too few chains: cold, unfitted


def test_the_weights_move_to_memory_between_the_l2_and_twice_the_last_level_cache() -> None:
    from latprof.predict.residency import centre_bounds, fit_residency

    assert centre_bounds({"L1d": 32, "L2": 1024, "L3": 32768}) == (20.0, 26.0)  # 1 MiB .. 64 MiB
    assert centre_bounds({"L2": 2048, "L3": 480 * 1024}) == (21.0, 28.0)  # a 480 MiB L3: up to the cold cap
    assert centre_bounds(None) is None and centre_bounds({"L1d": 32}) is None
    inside = _chains(lambda s: 0.1 + 0.9 / (1.0 + math.exp(-(math.log2(s) - 25.0) / 0.7)), 0.3, 0.0)
    assert fit_residency(inside, (20.0, 26.0)).centre_log2 == pytest.approx(25.0, abs=0.1)  # bounds change nothing
    below = _chains(lambda s: 1.0, 0.3, 0.0)  # every chain fully cold: any centre below the chains fits them
    free, bounded = fit_residency(below), fit_residency(below, (22.0, 26.0))
    assert free.centre_bounds_log2 is None and bounded.centre_bounds_log2 == [22.0, 26.0]
    assert 22.0 <= bounded.centre_log2 <= 26.0 and bounded.fit_rmspe == pytest.approx(0.0, abs=0.01)


def test_residency_fit_drops_a_per_call_term_the_chains_do_not_need() -> None:
    from latprof.predict.residency import fit_residency

    rng = np.random.default_rng(0)
    chains = [c._replace(measured_ms=c.measured_ms * (1 + rng.normal(0, 0.03)))  # readings with a little noise
              for c in _chains(lambda s: 1.0 / (1.0 + math.exp(-(math.log2(s) - 24.0))), -0.2, 0.0)]
    r = fit_residency(chains)
    assert r.loo_rmspe == r.loo_rmspe_without_call_term <= r.loo_rmspe_with_call_term
    assert r.per_kernel_call_ms == 0.0 and r.activation_factor == pytest.approx(-0.2, abs=0.15)


def test_prediction_mixes_each_kernels_weights_by_the_networks_weight_bytes(tmp_path: Path) -> None:
    from latprof.predict.residency import weight_share

    samples = [{**s, "warm_ms": 0.25 * s["latency_ms"]} for s in _samples()]
    net = conv_bn_relu()
    cold_only = load(save(predictor_data(), tmp_path / "c.json")).predict(net, (1, 8, 10, 10))
    weights = 4 * (16 * 8 * 9 + 4 * 16 + 1)
    fp = cold_only.footprint_bytes
    assert fp == weights + 4 * 2 * 16 * 10 * 10 and cold_only.weight_bytes == weights
    assert cold_only.cold_share == 1.0
    kernels = torch_kernels(net, (torch.zeros(1, 8, 10, 10),))[0]
    shares = np.array([weight_share(k.op, k.features) for k in kernels])
    assert 0 < shares[0] < 1 and not shares[1:].any()  # the convolution reads weights, the rest do not
    for centre, expected in ((math.log2(weights), 0.5), (math.log2(weights) + 40, 0.0),
                             (math.log2(weights) - 40, 1.0)):
        residency = {"centre_log2": centre, "width_log2": 1.0, "floor": 0.0, "per_kernel_call_ms": 0.001,
                     "form": "split", "activation_factor": 0.3}
        p = load(save(predictor_data(samples=samples, residency=residency), tmp_path / "m.json"))
        pred = p.predict(net, (1, 8, 10, 10))
        warm, cold = p.warm_and_cold([k.op for k in kernels], [k.features for k in kernels])
        counts = np.array([k.count for k in pred.kernels])
        factor = expected * shares + 0.3 * (1 - shares)
        assert pred.cold_share == pytest.approx(expected, abs=1e-9)
        assert pred.kernels_ms == pytest.approx(float(counts @ (warm + factor * (cold - warm) + 0.001)))
    assert np.all(warm < cold)  # the warm regressor learned the warm readings


def test_a_schema_3_predictor_still_mixes_whole_kernels_by_the_footprint(tmp_path: Path) -> None:
    samples = [{**s, "warm_ms": 0.25 * s["latency_ms"]} for s in _samples()]
    net = conv_bn_relu()
    fp = load(save(predictor_data(), tmp_path / "c.json")).predict(net, (1, 8, 10, 10)).footprint_bytes
    data = predictor_data(schema_version=3, samples=samples, residency={
        "centre_log2": math.log2(fp), "width_log2": 1.0, "floor": 0.0, "per_kernel_call_ms": 0.001})
    p = load(save(data, tmp_path / "m.json"))
    pred = p.predict(net, (1, 8, 10, 10))
    kernels = torch_kernels(net, (torch.zeros(1, 8, 10, 10),))[0]
    warm, cold = p.warm_and_cold([k.op for k in kernels], [k.features for k in kernels])
    counts = np.array([k.count for k in pred.kernels])
    assert pred.cold_share == pytest.approx(0.5)
    assert pred.kernels_ms == pytest.approx(float(counts @ (warm + 0.5 * (cold - warm) + 0.001)))


def test_calibration_fits_the_residency_curve_on_its_chains(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from latprof.predict.calibrate import CalibrateRequest, calibrate
    from latprof.run.engine import RunOptions
    from latprof.run.units import MEASURE_FUNCTIONS
    from tests.predict_fake import TRUE_CENTRE_LOG2, WARM_CONTEXT

    monkeypatch.setitem(MEASURE_FUNCTIONS, "calibrate", "tests.predict_fake:measure")
    monkeypatch.setattr("latprof.predict.calibrate.CELLS_PER_UNIT", 12)
    monkeypatch.setattr("latprof.predict.calibrate.CHAINS_PER_UNIT", 7)  # one chain per footprint, 2-128 MiB
    # the regressor chosen by accuracy alone: refits timed near the load budget must not choose differently twice
    monkeypatch.setattr("latprof.predict.model.LOAD_BUDGET_CPU_S", 1e9)
    result = calibrate(CalibrateRequest("torch-cpu", tmp_path / "p.json", threads=1, budget_s=0.01,
                                        out=tmp_path / "runs", peaks=False, run=RunOptions(in_process=True)))
    data = json.loads(result.path.read_text())
    assert all(s["warm_ms"] < s["latency_ms"] for s in data["samples"])
    assert data["overhead"]["warm_context_factor"] == pytest.approx(WARM_CONTEXT)
    res = data["residency"]
    assert res["chains"] == len(data["chains"]) == 7 and res == result.residency and res["form"] == "split"
    assert abs(res["centre_log2"] - TRUE_CENTRE_LOG2) < 2.5  # through regressors fitted on a dozen cells
    assert all(0 < c["weight_bytes"] < c["footprint_bytes"] for c in data["chains"])

    def rmspe(key: str) -> float:
        return float(np.sqrt(np.mean([((c[key] - c["measured_ms"]) / c["measured_ms"]) ** 2 for c in data["chains"]])))

    assert res["fit_rmspe"] == pytest.approx(rmspe("predicted_ms"))
    assert rmspe("predicted_ms") < min(rmspe("predicted_warm_ms"), rmspe("predicted_cold_ms"))  # the mix wins
    assert all(c["predicted_warm_ms"] < c["predicted_cold_ms"] for c in data["chains"])
    assert main(["calibrate", "--from-readings", str(tmp_path / "runs"), "-o", str(tmp_path / "b.json")]) == 0
    assert json.loads((tmp_path / "b.json").read_text())["residency"] == res  # rebuilt from the stored readings


def test_a_schema_2_predictor_still_reads_and_predicts_every_kernel_cold(tmp_path: Path) -> None:
    p = load(save(predictor_data(schema_version=2), tmp_path / "p.json"))
    pred = p.predict(conv_bn_relu(), (1, 8, 10, 10))
    assert not p.has_warm and pred.cold_share == 1.0 and pred.predicted_ms > 0


def test_ort_warm_samples_take_the_warm_per_node_overhead() -> None:
    from latprof.predict.calibrate import Readings

    r = Readings("ort-mobile")
    r.add([{"status": "ok", "sample": "kernel", "workload": "a", "latency_median_ms": 0.004, "profiled_ms": 0.004,
            "warm_profiled_ms": 0.001, "kernel": {"op": "Add", "label": "add", "features": {}}},
           {"status": "ok", "sample": "cell", "workload": "a", "latency_median_ms": 0.010, "session_ms": 0.002,
            "profiled_ms": 0.004, "kernel_calls": 1, "warm_ms": 0.004, "warm_profiled_ms": 0.001}])
    assert r.has_warm and r.node_overhead_ms() == pytest.approx(0.004)
    assert r.node_overhead_ms(warm=True) == pytest.approx(0.001)
    (s,) = r.samples()
    assert s["latency_ms"] == pytest.approx(0.008) and s["warm_ms"] == pytest.approx(0.002)


def test_calibration_chains_feed_each_block_the_previous_blocks_output_near_their_footprint() -> None:
    import random

    from latprof.predict.space import (CHAIN_BLOCKS, MAX_CHAIN_MULT_ADDS, build_cell, chain_estimate, chain_size,
                                       sample_chain)

    rng = random.Random(3)
    for target in (21, 24, 27):
        spec = sample_chain(rng, target)
        footprint, mult_adds = chain_size(spec)  # the tracer's count, as the calibration worker records it
        assert abs(math.log2(footprint) - target) <= 1.5 and mult_adds <= MAX_CHAIN_MULT_ADDS
        estimate, estimated_mult_adds = chain_estimate(spec)  # what the draw used
        assert estimated_mult_adds == mult_adds and abs(math.log2(estimate / footprint)) < 0.25
        assert CHAIN_BLOCKS[0] <= len(spec["blocks"]) <= CHAIN_BLOCKS[1] or len(spec["blocks"]) >= 1
        with torch.device("meta"):
            module, shape = build_cell(spec)
        assert module(torch.zeros(shape, device="meta")).dim() == 4  # the blocks compose


def test_the_regressor_is_chosen_by_accuracy_among_those_that_refit_within_the_load_budget(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from latprof.predict import model

    cv = {"random_forest": 0.30, "gradient_boosting": 0.20}
    monkeypatch.setattr(model, "cross_validate", lambda s, name: {"rmspe": cv[name], "relative_errors": []})
    cost = {"random_forest": 0.2, "gradient_boosting": 0.3}
    monkeypatch.setattr(model, "refit_cpu_s", lambda s, name: cost[name])
    assert model.select_regressor([])[0] == "gradient_boosting"  # the more accurate, fast enough
    cost["gradient_boosting"] = model.LOAD_BUDGET_CPU_S + 1.0
    chosen, figures = model.select_regressor([])
    assert chosen == "random_forest" and figures["gradient_boosting"]["refit_cpu_s"] > model.LOAD_BUDGET_CPU_S
    cost["random_forest"] = model.LOAD_BUDGET_CPU_S + 2.0  # none fits the budget: the fastest to refit
    assert model.select_regressor([])[0] == "gradient_boosting"


def test_chains_and_cells_track_the_real_resolution_and_never_stride_below_7x7() -> None:
    import random

    from latprof.predict.space import build_cell, sample_cell, sample_chain

    rng = random.Random(5)
    specs = [sample_chain(rng, t) for t in (22, 25)] + [sample_cell(rng, "inverted_residual") for _ in range(8)]
    for spec in specs:
        with torch.device("meta"):
            module, shape = build_cell(spec)
        x = torch.zeros(shape, device="meta")
        for block, b in zip(module, spec["blocks"]):
            if b["kwargs"].get("stride", 1) == 2:
                assert x.shape[2] > 7, spec  # the zoo's last stage is 7x7: no stride below it
            x = block(x)


def test_coverage_cells_realise_every_structural_option_of_the_space() -> None:
    import random

    from latprof.predict.space import BLOCKS, build_cell, cell_type, coverage_cells, valid_cell

    cells = coverage_cells(random.Random(3))
    assert all(valid_cell(c) for c in cells)
    stems = [c for c in cells if c["type"] == "stem"]
    heads = [c for c in cells if c["type"] == "head"]
    assert any(s["maxpool"] and not s["micro"] for s in stems) and any(s["micro"] for s in stems)
    assert any(not s["maxpool"] and not s["micro"] for s in stems)
    assert any(h["hidden"] and not h["micro"] for h in heads) and any(h["micro"] for h in heads)
    assert any(h["conv_channels"] and not h["micro"] for h in heads)
    blocks = [c for c in cells if c["type"] == "chain"]
    for stride in (2, 1):  # every block at both strides
        assert sorted(cell_type(c) for c in blocks if c["blocks"][0]["kwargs"]["stride"] == stride) == sorted(BLOCKS)
    v2 = next(c for c in blocks if cell_type(c) == "shufflenet_v2_unit" and c["blocks"][0]["kwargs"]["stride"] == 1)
    assert "split" in {k.op for k in torch_kernels(*_cell_and_input(v2))[0]}  # its channel split
    v1 = next(c for c in blocks if cell_type(c) == "shufflenet_v1_unit")  # its stride-2 shortcut: an average pool
    assert any(isinstance(m, nn.AvgPool2d) for m in build_cell(v1)[0].modules())
    stem = next(s for s in stems if s["maxpool"] and not s["micro"])
    ops = [k.op for k in torch_kernels(*_cell_and_input(stem))[0]]
    assert "max_pool2d_with_indices" in ops


def _cell_and_input(spec: dict) -> tuple[nn.Module, tuple[torch.Tensor]]:
    from latprof.predict.space import build_cell

    module, shape = build_cell(spec)
    return module, (torch.zeros(shape, device="meta"),)


def test_a_stride_2_shufflenet_v1_unit_doubles_its_channels_as_the_zoo_does() -> None:
    import random

    from latprof.predict.space import _block_kwargs, valid_cell

    rng = random.Random(0)
    for _ in range(20):
        kw = _block_kwargs("shufflenet_v1_unit", 240, 28, rng)
        assert kw["out_channels"] == kw["in_channels"] * kw["stride"]
        assert valid_cell({"type": "chain", "input": [1, kw["in_channels"], 28, 28],
                           "blocks": [{"name": "shufflenet_v1_unit", "kwargs": kw}]})


def test_a_neighbour_keeps_the_cells_structure_and_varies_its_width_and_resolution() -> None:
    import random

    from latprof.predict.space import mutate_cell

    rng = random.Random(1)
    stem = {"type": "stem", "input": [1, 3, 224, 224], "out_channels": 24, "kernel_size": 3, "act": "relu",
            "maxpool": True, "micro": False}
    mbconv = {"type": "chain", "input": [1, 40, 28, 28], "blocks": [{"name": "mbconv", "kwargs": dict(
        in_channels=40, out_channels=80, stride=2, expansion=6.0, kernel_size=5, se=True, act="swish")}]}
    v1 = {"type": "chain", "input": [1, 240, 28, 28], "blocks": [{"name": "shufflenet_v1_unit", "kwargs": dict(
        in_channels=240, out_channels=480, stride=2, groups=3)}]}
    for spec, kept in ((mbconv, ("stride", "kernel_size", "se", "act")), (v1, ("stride", "groups"))):
        neighbours = [mutate_cell(spec, rng) for _ in range(6)]
        for n in neighbours:
            kw = n["blocks"][0]["kwargs"]
            assert n["blocks"][0]["name"] == spec["blocks"][0]["name"]
            assert {k: kw[k] for k in kept} == {k: spec["blocks"][0]["kwargs"][k] for k in kept}
        assert {n["input"][1] for n in neighbours} != {spec["input"][1]}  # the width moves
    v2 = {"type": "chain", "input": [1, 48, 112, 112], "blocks": [{"name": "shufflenet_v2_unit", "kwargs": dict(
        in_channels=48, out_channels=48, stride=1)}]}
    resolutions = {mutate_cell(v2, rng)["input"][2] for _ in range(12)}
    assert resolutions == {112, 56}  # its own resolution or the next one: a family is read at more than one
    stems = [mutate_cell(stem, rng) for _ in range(6)]
    assert all(s["maxpool"] and not s["micro"] and s["kernel_size"] == 3 and s["act"] == "relu" for s in stems)
    assert len({(s["input"][2], s["out_channels"]) for s in stems}) > 1


def test_a_round_takes_coverage_cells_then_a_neighbour_of_a_scarce_familys_cell(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import random

    from latprof.predict.calibrate import _next_cells, scarce_families

    monkeypatch.setattr("latprof.predict.calibrate.MIN_FAMILY_SAMPLES", 3)
    samples = ([{"op": "convolution", "cell": f"c{i}"} for i in range(5)]
               + [{"op": "max_pool2d_with_indices", "cell": "stem1"}] * 2)
    assert scarce_families(samples) == {"max_pool2d_with_indices": ["stem1"]}
    assert scarce_families(samples * 2) == {}
    stem = {"type": "stem", "input": [1, 3, 224, 224], "out_channels": 24, "kernel_size": 3, "act": "relu",
            "maxpool": True, "micro": False}
    pending = [{"type": "head", "n": i} for i in range(3)]
    monkeypatch.setattr("latprof.predict.calibrate.CELLS_PER_UNIT", 4)
    cells = _next_cells(random.Random(0), None, [], {"stem1": {"cell": stem}}, pending,
                        scarce_families(samples))
    assert cells[:2] == [{"type": "head", "n": 0}, {"type": "head", "n": 1}] and pending == [{"type": "head", "n": 2}]
    assert cells[2]["type"] == "stem" and cells[2]["maxpool"] and len(cells) == 4
    assert cells[3] not in pending  # the last is drawn by kind


def test_coverage_cells_are_paced_to_be_measured_within_the_first_half_of_the_budget() -> None:
    from latprof.predict.calibrate import CELLS_PER_UNIT, coverage_per_round

    assert CELLS_PER_UNIT == 3
    assert coverage_per_round(32, None) == 1  # before any round: half a round, as before
    assert coverage_per_round(32, 40.0) == 1  # a fast machine: one a round finishes them in time
    assert coverage_per_round(32, 9.0) == 2  # a slow one (19 rounds in 900 s): two a round, one cell left to draw
    assert coverage_per_round(32, -3.0) == 2  # past half the budget: as many as a round spares
    assert coverage_per_round(1, 2.0) == 1 and coverage_per_round(0, 2.0) == 0


def test_a_round_takes_as_many_coverage_cells_as_it_is_told() -> None:
    import random

    from latprof.predict.calibrate import _next_cells

    pending = [{"type": "head", "n": i} for i in range(4)]
    cells = _next_cells(random.Random(0), None, [], {}, pending, {}, 2)
    assert cells[:2] == [{"type": "head", "n": 0}, {"type": "head", "n": 1}] and len(cells) == 3
    assert pending == [{"type": "head", "n": 2}, {"type": "head", "n": 3}]


def test_a_cold_reading_writes_through_twice_the_last_level_cache_at_most_256_mib(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from latprof.predict import cold

    for llc_mib, expected_mib in ((32, 64), (480, 256), (None, 64)):
        monkeypatch.setattr(cold, "cache_bytes", lambda level, _l=llc_mib: (_l << 20) if level == 3 and _l else 0)
        assert cold.cold_evict_bytes() == expected_mib << 20  # unknown caches: the 32 MiB fallback
    monkeypatch.setattr(cold, "cache_bytes", lambda level: 2 << 20 if level == 2 else 0)
    assert cold.Evictor.warm().nbytes == 4 << 20 and cold.Evictor(1 << 20).nbytes == 1 << 20


CHAIN_WITH_SE_SECOND = {"type": "chain", "input": [1, 12, 56, 56], "blocks": [
    {"name": "conv_bn_relu", "kwargs": {"in_channels": 12, "out_channels": 16, "kernel_size": 1, "stride": 2}},
    {"name": "mbconv", "kwargs": {"in_channels": 16, "out_channels": 16, "stride": 2, "expansion": 6.0,
                                  "kernel_size": 3, "se": True, "act": "relu"}},
    {"name": "mbconv", "kwargs": {"in_channels": 16, "out_channels": 16, "stride": 1, "expansion": 3.0,
                                  "kernel_size": 3, "se": False, "act": "swish"}}]}


def test_a_chains_blocks_stand_alone_at_the_input_they_get_in_the_chain() -> None:
    from latprof.predict.space import block_cells, producing_blocks, valid_cell

    parts = block_cells(CHAIN_WITH_SE_SECOND)
    assert [p["input"] for p in parts] == [[1, 12, 56, 56], [1, 16, 28, 28], [1, 16, 14, 14]]
    assert [p["blocks"] for p in parts] == [[b] for b in CHAIN_WITH_SE_SECOND["blocks"]]
    assert all(valid_cell(p) for p in parts)
    assert producing_blocks(CHAIN_WITH_SE_SECOND, "hardsigmoid") == [1]  # the squeeze-excite's gate
    assert producing_blocks(CHAIN_WITH_SE_SECOND, "silu") == [2]
    assert producing_blocks(CHAIN_WITH_SE_SECOND, "convolution_dw") == [1, 2]
    assert producing_blocks(CHAIN_WITH_SE_SECOND, "nchwc.Conv+HardSigmoid") == []  # another backend's family
    stem = {"type": "stem", "input": [1, 3, 224, 224], "out_channels": 24, "kernel_size": 3, "act": "relu",
            "maxpool": True, "micro": False}
    assert block_cells(stem) == [stem]


def test_a_scarce_familys_neighbour_is_of_the_block_that_produced_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import random

    from latprof.predict.calibrate import _next_cells
    from latprof.predict.space import mutate_cell

    rng = random.Random(0)
    for _ in range(5):
        n = mutate_cell(CHAIN_WITH_SE_SECOND, rng, [1])
        (block,) = n["blocks"]
        assert block["name"] == "mbconv" and block["kwargs"]["se"] and block["kwargs"]["act"] == "relu"
        assert n["input"][2] in (14, 28, 56) and block["kwargs"]["stride"] == 2  # at the block's input or next to it
    monkeypatch.setattr("latprof.predict.calibrate.CELLS_PER_UNIT", 2)
    for seed in range(4):
        cells = _next_cells(random.Random(seed), None, [], {"r0c1": {"cell": CHAIN_WITH_SE_SECOND}}, [],
                            {"hardsigmoid": ["r0c1"]})
        assert cells[0]["blocks"][0]["name"] == "mbconv" and cells[0]["blocks"][0]["kwargs"]["se"]


# ------------------------------------------------------------------ the machine's state (latprof.predict.state)
def test_state_factors_compare_a_reading_with_the_reference_within_bounds() -> None:
    from latprof.predict.state import StateFactors, reference_state, spread

    states = [{"state_cold_ms": c, "state_warm_ms": w} for c, w in ((1.0, 0.5), (1.2, 0.6), (0.9, 0.4))]
    ref = reference_state([*states, None])
    # the median of each, missing readings ignored; read on PyTorch (readings before the engine was recorded)
    assert ref == {"state_cold_ms": 1.0, "state_warm_ms": 0.5, "state_engine": "torch"}
    assert StateFactors.of(states[1], ref) == StateFactors(warm=pytest.approx(1.2), cold=pytest.approx(1.2))
    assert StateFactors.of(states[1], ref).loop == pytest.approx(1.2)  # no hot reading: a loop follows warm
    assert StateFactors.of(None, ref) == StateFactors.of(states[1], None) == StateFactors(1.0, 1.0)
    broken = {"state_cold_ms": 100.0, "state_warm_ms": 0.01}
    assert StateFactors.of(broken, ref) == StateFactors(0.5, 2.0)  # a broken reading is no machine state
    sp = spread(states, ref)
    assert sp["readings"] == 3 and sp["cold_p10"] < 1.0 < sp["cold_p90"]
    assert reference_state([None]) is None and spread([], None) == {}


def test_a_hot_state_reading_scales_hot_readings_and_one_engine_makes_a_reference() -> None:
    from latprof.errors import LatprofError
    from latprof.predict.state import StateFactors, fit_state_power, reference_state, spread

    states = [{"state_cold_ms": c, "state_warm_ms": w, "state_hot_ms": h, "state_engine": "onnxruntime"}
              for c, w, h in ((1.0, 0.5, 0.2), (1.2, 0.6, 0.3), (0.9, 0.4, 0.1))]
    ref = reference_state(states)
    assert ref == {"state_cold_ms": 1.0, "state_warm_ms": 0.5, "state_hot_ms": 0.2, "state_engine": "onnxruntime"}
    f = StateFactors.of(states[1], ref)
    assert (f.warm, f.cold, f.hot, f.loop, f.overall) == pytest.approx((1.2, 1.2, 1.5, 1.5, 1.5))
    assert f.power(0.5).hot == pytest.approx(1.5 ** 0.5) and f.as_dict()["hot"] == pytest.approx(1.5)
    assert spread(states, ref)["hot_p90"] == pytest.approx(1.4)  # of 0.5, 1, 1.5
    # one state without a hot reading: the reference has none, hot readings follow warm
    assert "state_hot_ms" not in reference_state([*states, {**states[0], "state_hot_ms": None}])
    with pytest.raises(LatprofError, match="onnxruntime and torch"):  # two engines' blocks are not one measure
        reference_state([*states, {"state_cold_ms": 1.0, "state_warm_ms": 0.5}])
    # the power is fitted on the hot factor where read: chains that followed it whole give 1, warm ones nothing
    rng = np.random.default_rng(3)
    hot = rng.uniform(0.7, 1.4, 24)
    factors = [StateFactors(1.0, 1.0, h) for h in hot]
    assert fit_state_power(factors, list(hot), [2.0 ** 20] * 24).beta == pytest.approx(1.0)


def test_readings_are_scaled_to_the_median_machine_state() -> None:
    from latprof.predict.calibrate import Readings

    def rows(cell: str, cold: float, warm: float, factor: float) -> list[dict]:
        state = {"state_cold_ms": cold, "state_warm_ms": warm}
        return [{"status": "ok", "sample": "kernel", "workload": cell, "latency_median_ms": 0.4 * factor,
                 "warm_ms": 0.2 * factor, "kernel": {"op": "relu", "label": "relu", "features": {}}, **state},
                {"status": "ok", "sample": "cell", "workload": cell, "latency_median_ms": 0.5 * factor,
                 "kernels_ms": 0.4 * factor, "warm_ms": 0.25 * factor, "warm_kernels_ms": 0.2 * factor, **state}]

    raw = [*rows("a", 1.0, 0.5, 1.0), *rows("b", 1.5, 0.75, 1.5), *rows("c", 0.8, 0.5, 0.8)]
    r = Readings("torch-cpu")
    r.add(raw)
    assert r.reference_state == {"state_cold_ms": 1.0, "state_warm_ms": 0.5, "state_engine": "torch"}
    samples = r.samples()
    assert [s["latency_ms"] for s in samples] == pytest.approx([0.4, 0.4, 0.4])  # the drift taken out
    # warm readings by the warm factor: cell c's warm state was as usual, so its faster warm reading stays
    assert [s["warm_ms"] for s in samples] == pytest.approx([0.2, 0.2, 0.16])
    assert samples[1]["state_factors"] == pytest.approx([1.5, 1.5, 1.5])  # warm, cold, and hot as warm
    assert r.normalised_cells()["b"]["latency_median_ms"] == pytest.approx(0.5)
    assert r.state_summary()["corrected"] and "batch norm" in r.state_summary()["block"]
    plain = Readings("torch-cpu", correct_state=False)
    plain.add(raw)
    assert [s["latency_ms"] for s in plain.samples()] == pytest.approx([0.4, 0.6, 0.32])  # as read
    assert not plain.state_summary()["corrected"] and "state_factors" not in plain.samples()[0]


def test_calibration_on_a_drifting_machine_learns_the_kernels_not_the_drift(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from latprof.predict.calibrate import CalibrateRequest, calibrate, rebuild
    from latprof.run.engine import RunOptions
    from latprof.run.units import MEASURE_FUNCTIONS
    from tests.predict_fake import kernel_ms

    monkeypatch.setitem(MEASURE_FUNCTIONS, "calibrate", "tests.predict_fake:measure")
    monkeypatch.setattr("tests.predict_fake.DRIFT", (0.8, 1.0, 1.25))  # cell by cell: fast, as usual, slow
    monkeypatch.setattr("latprof.predict.calibrate.CELLS_PER_UNIT", 6)
    result = calibrate(CalibrateRequest("torch-cpu", tmp_path / "p.json", threads=1, budget_s=0.01,
                                        out=tmp_path / "runs", peaks=False, run=RunOptions(in_process=True)))
    data = json.loads(result.path.read_text())
    assert all(s["latency_ms"] == pytest.approx(kernel_ms(s["features"])) for s in data["samples"])
    assert data["state"]["corrected"] and data["state"]["reference"]["state_cold_ms"] == pytest.approx(1.0)
    assert data["state"]["spread"]["cold_p10"] < 0.9 and data["state"]["spread"]["cold_p90"] > 1.1
    raw = json.loads(rebuild(tmp_path / "runs", tmp_path / "raw.json", correct_state=False).path.read_text())
    off = [s["latency_ms"] / kernel_ms(s["features"]) for s in raw["samples"]]
    assert min(off) == pytest.approx(0.8) and max(off) == pytest.approx(1.25)  # uncorrected: the drift learnt
    assert not raw["state"]["corrected"]


@pytest.mark.parametrize("follows", [0.0, 0.5, 1.0])
def test_readings_are_corrected_by_the_power_of_the_state_the_chains_followed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, follows: float) -> None:
    """The state reading swings x0.8..x1.25 and the readings follow it to the power ``follows``. The power is
    fitted on the chains as read and as summed from *uncorrected* kernels (here the fit is stood in for: twelve
    chains of this fake predict too roughly to fit a slope on), and the kernels are corrected by it: exactly what
    they cost. A state given to predict applies to the same power."""
    from latprof.predict import calibrate as calibration
    from latprof.predict.calibrate import CalibrateRequest, calibrate
    from latprof.predict.predictor import load
    from latprof.predict.state import StateFactors, StatePower
    from latprof.run.engine import RunOptions
    from latprof.run.units import MEASURE_FUNCTIONS
    from tests.predict_fake import kernel_ms

    monkeypatch.setitem(MEASURE_FUNCTIONS, "calibrate", "tests.predict_fake:measure")
    monkeypatch.setattr("tests.predict_fake.DRIFT", (0.8, 1.0, 1.25))
    monkeypatch.setattr("tests.predict_fake.STATE_FOLLOWS", follows)
    monkeypatch.setattr("latprof.predict.calibrate.CELLS_PER_UNIT", 6)
    monkeypatch.setattr("latprof.predict.calibrate.CHAINS_PER_UNIT", 12)
    seen = {}

    def stand_in(factors, ratios, weights):
        seen.update(factors=factors, ratios=ratios, weights=weights)
        return StatePower(follows, len(factors), 0.9, follows)

    monkeypatch.setattr(calibration, "fit_state_power", stand_in)
    result = calibrate(CalibrateRequest("torch-cpu", tmp_path / "p.json", threads=1, budget_s=0.01,
                                        out=tmp_path / "runs", peaks=False, run=RunOptions(in_process=True)))
    data = json.loads(result.path.read_text())
    # the fit saw each chain's own factor, raw, and its ratio to a kernel sum at the reference state
    assert sorted({round(f.cold, 6) for f in seen["factors"]}) == [0.8, 1.0, 1.25]
    assert len(seen["ratios"]) == len(seen["weights"]) == 12 and all(r > 0 for r in seen["ratios"])
    assert data["state"]["power"]["beta"] == follows and data["state"]["corrected"] == (follows > 0)
    assert all(s["latency_ms"] == pytest.approx(kernel_ms(s["features"])) for s in data["samples"])
    assert {round(c["state_factors"]["cold"], 6) for c in data["chains"]} == {round(x ** follows, 6)
                                                                              for x in (0.8, 1.0, 1.25)}
    p, whole = load(result.path, check_hardware=False), load(result.path, check_hardware=False)
    whole.data["state"]["power"] = None  # a file from before the fit: factors apply whole
    assert p.state_power == follows and whole.state_power == 1.0
    conv = torch.nn.Conv2d(8, 8, 3, padding=1)
    slow = p.predict(conv, (1, 8, 14, 14), state=StateFactors(2.0, 2.0)).kernels_ms
    assert slow == pytest.approx(whole.predict(conv, (1, 8, 14, 14), state=StateFactors(2.0 ** follows,
                                                                                         2.0 ** follows)).kernels_ms)


def test_the_state_power_is_the_chains_slope_on_their_factors_clipped_to_0_1() -> None:
    from latprof.predict.state import MIN_POWER_CHAINS, StateFactors, fit_state_power

    rng = np.random.default_rng(0)
    f = [StateFactors(x, x) for x in rng.uniform(0.7, 1.4, 48)]  # as many chains as a 900 s calibration reads
    weights = list(2.0 ** rng.uniform(16, 28, 48))  # 64 KiB to 256 MiB of weights, in no order of the state
    cached = [1.0 + 0.8 / (1 + math.exp(-(math.log2(w) - 22) / 2)) for w in weights]  # x1 to x1.8 of the hot sum
    fitted = fit_state_power(f, [x.warm ** 0.4 * c for x, c in zip(f, cached)], weights)
    assert fitted.beta == pytest.approx(0.4, abs=0.03) and fitted.correlation > 0.9  # the weights' part taken out
    assert fit_state_power(f, [x.warm ** 1.5 for x in f], weights).beta == 1.0  # clipped, the slope kept beside it
    assert fit_state_power(f, [x.warm ** 1.5 for x in f], weights).slope == pytest.approx(1.5)
    assert fit_state_power(f, [1 / x.warm for x in f], weights).beta == 0.0
    n = MIN_POWER_CHAINS - 1
    few = fit_state_power(f[:n], [1.0] * n, weights[:n])
    assert few.beta == 1.0 and few.correlation is None  # too few chains to say: the factors apply whole
    assert fit_state_power([StateFactors()] * 12, [1.1] * 12, weights).beta == 1.0  # a state that never moved


def test_a_prediction_at_a_machine_state_scales_warm_and_cold_kernels_not_the_overhead(tmp_path: Path) -> None:
    from latprof.predict.state import StateFactors

    p = load(save(predictor_data(), tmp_path / "p.json"))
    net = conv_bn_relu()
    ref = p.predict(net, (1, 8, 10, 10))
    slow = p.predict(net, (1, 8, 10, 10), state=StateFactors(2.0, 2.0))
    assert slow.kernels_ms == pytest.approx(2.0 * ref.kernels_ms) and slow.overhead_ms == ref.overhead_ms
    assert slow.state_factors == {"warm": 2.0, "cold": 2.0} and ref.state_factors == {"warm": 1.0, "cold": 1.0}


def test_a_network_takes_the_state_read_before_and_after_it() -> None:
    from latprof.predict.evaluate import state_near

    ref = {"state_cold_ms": 1.0, "state_warm_ms": 1.0}
    states = [{"after_units": 0, "state_cold_ms": 1.0, "state_warm_ms": 1.0},
              {"after_units": 4, "state_cold_ms": 1.21, "state_warm_ms": 1.0}]
    assert state_near(states, 2, ref).cold == pytest.approx(1.1)  # geometric mean of the two around it
    assert state_near(states, 5, ref).cold == pytest.approx(1.21)  # after the last reading: the last
    assert state_near([], 0, ref) is None and state_near(states, 0, None) is None
    # Measured in two passes (--processes 2) of 4 networks: steps 2 and 6, around each the readings near it.
    assert state_near(states, [2, 6], ref).cold == pytest.approx((1.0 * 1.21 * 1.21) ** (1 / 3))


def test_evaluate_scores_the_predictor_at_the_state_read_beside_the_measurements(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from latprof.predict.state import StateFactors
    from latprof.results import ResultStore, base_row
    from latprof.workloads import create_workload

    store = ResultStore(tmp_path / "old" / "results.jsonl")
    store.append({"record": "environment", "hardware_id": HW})
    store.append({"record": "machine_state", "status": "ok", "after_units": 0, "state_cold_ms": 1.5,
                  "state_warm_ms": 0.5})
    for name in ("mobilenet_v1_x0_25", "micronet_m0"):
        store.append(base_row(workload=name, backend="torch-cpu", threads=1, batch=1, input_shape="1x3x224x224",
                              status="ok", error="", latency_median_ms=1.0, mult_adds=1e7, mem_access=1e6))
    reference = {"state_cold_ms": 1.0, "state_warm_ms": 0.5}
    path = save(predictor_data(state={"reference": reference, "corrected": True}), tmp_path / "p.json")
    assert main(["predict", "--evaluate", "--predictor", str(path), "--model", "mobilenet_v1_x0_25,micronet_m0",
                 "--readings", str(tmp_path / "old"), "--out", str(tmp_path / "new"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["metrics"]["kernel@state"]["n"] == 2
    p = load(path)
    w = create_workload("micronet_m0", batch=1)
    expected = p.predict(w.module, w.input_shape, state=StateFactors(1.0, 1.5)).predicted_ms
    net = next(n for n in out["networks"] if n["workload"] == "micronet_m0")
    assert net["state_factors"] == {"warm": 1.0, "cold": 1.5} and net["kernel@state_ms"] == pytest.approx(expected)
    assert net["kernel@state_ms"] > net["kernel_ms"]  # memory slower than at calibration
    # a predictor calibrated with the state read on ONNX Runtime cannot take PyTorch readings for its own
    onnx = save(predictor_data(state={"reference": {**reference, "state_engine": "onnxruntime"}, "corrected": True}),
                tmp_path / "p_onnx.json")
    assert main(["predict", "--evaluate", "--predictor", str(onnx), "--model", "micronet_m0",
                 "--readings", str(tmp_path / "old"), "--out", str(tmp_path / "new2"), "--json"]) == 0
    assert "kernel@state" not in json.loads(capsys.readouterr().out)["metrics"]
    records = [json.loads(x) for x in (tmp_path / "new" / "results.jsonl").read_text().splitlines()]
    assert sum(r.get("record") == "machine_state" for r in records) == 1  # carried into the new folder


@pytest.mark.parametrize("engine", [{}, {"engine": "onnxruntime", "backend": "ort-mobile", "pin": False}])
def test_a_state_unit_reads_the_fixed_block_cold_warm_and_hot_on_its_engine(engine: dict) -> None:
    from latprof.predict.state import measure_state_unit

    (rec,) = measure_state_unit({**engine, "threads": 1, "sequence": 3, "after_units": 8})
    assert rec["record"] == "machine_state" and rec["status"] == "ok" and rec["after_units"] == 8
    assert rec["state_cold_ms"] > 0 and rec["state_warm_ms"] > 0 and rec["state_hot_ms"] > 0
    assert rec["state_engine"] == engine.get("engine", "torch")
    (bad,) = measure_state_unit({"engine": "onnxruntime", "backend": "ort-nonesuch", "threads": 1})
    assert bad["status"] == "error" and "ort-nonesuch" in bad["error"]  # one line, no traceback


def test_a_predictor_reads_the_state_as_its_calibration_did() -> None:
    from latprof.predict.predictor import Predictor

    data = predictor_data(state={"reference": {"state_cold_ms": 1.0, "state_warm_ms": 0.5, "state_hot_ms": 0.2,
                                               "state_engine": "onnxruntime"}})
    data["backend"], data["backend_options"] = "ort-mobile", {"pin": True, "ort_opt": "extended"}
    assert Predictor(data).state_reading == {"engine": "onnxruntime", "backend": "ort-mobile", "pin": True,
                                             "ort_opt": "extended"}
    assert Predictor(predictor_data()).state_reading == {"engine": "torch"}  # no state: as before, PyTorch


def test_predict_state_now_predicts_at_the_state_read_now_or_refuses_in_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from latprof.predict.state import StateFactors

    old = save(predictor_data(), tmp_path / "old.json")  # calibrated before state readings
    assert main(["predict", "--model", "micronet_m0", "--predictor", str(old), "--state-now"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no reference machine state" in err and len(err.splitlines()) == 1
    reads: list[dict] = []

    def fake_read(reference: dict, threads: int, run: object = None, engine: dict | None = None) -> StateFactors:
        reads.append(reference)
        assert engine == {"engine": "torch"}  # as a file from before the engine was recorded read it
        return StateFactors(1.0, 2.0)

    monkeypatch.setattr("latprof.predict.state.read_state_now", fake_read)
    ref = {"state_cold_ms": 1.0, "state_warm_ms": 0.5}
    path = save(predictor_data(state={"reference": ref, "corrected": True}), tmp_path / "p.json")
    assert main(["predict", "--model", "micronet_m0", "--predictor", str(path), "--state-now", "--json"]) == 0
    (out,) = json.loads(capsys.readouterr().out)
    assert reads == [ref] and out["state_now"] == {"warm": 1.0, "cold": 2.0}
    assert out["predicted_now_ms"] > out["predicted_ms"]  # every kernel's cold part twice as slow
    halfway = save(predictor_data(state={"reference": ref, "corrected": True, "power": {"beta": 0.5}}),
                   tmp_path / "half.json")  # the chains followed half of their state factors
    assert main(["predict", "--model", "micronet_m0", "--predictor", str(halfway), "--state-now", "--json"]) == 0
    (half,) = json.loads(capsys.readouterr().out)
    assert half["predicted_ms"] < half["predicted_now_ms"] < out["predicted_now_ms"]
    assert main(["predict", "--model", "micronet_m0", "--predictor", str(halfway), "--state-now"]) == 0
    assert "applied to the power 0.50" in capsys.readouterr().out


def test_evaluate_reads_the_state_before_the_first_network_every_fourth_and_after_the_last(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from latprof.predict.evaluate import EvaluateRequest, evaluate
    from latprof.predict.state import StateLog
    from latprof.profile import RunFiles
    from latprof.results import ResultStore, base_row

    models = ["mobilenet_v1_x0_25", "micronet_m0", "micronet_m1", "shufflenet_v2_x0_5", "mobilenet_v1_x0_5"]

    def fake_read(self: StateLog, after_units: int) -> None:  # memory slower at every reading
        self.records.append({"record": "machine_state", "status": "ok", "after_units": after_units,
                             "state_cold_ms": 1.0 + 0.1 * len(self.records), "state_warm_ms": 0.5})

    def fake_run(request: object, after_unit: Callable[[int, int], None] | None = None) -> RunFiles:
        out = Path(request.out)  # type: ignore[attr-defined]
        store = ResultStore(out / "results.jsonl")
        store.append({"record": "environment", "hardware_id": HW})
        rows = []
        for i, name in enumerate(models):
            rows.append(base_row(workload=name, backend="torch-cpu", threads=1, batch=1, input_shape="1x3x224x224",
                                 status="ok", error="", latency_median_ms=1.0 + i, mult_adds=1e7 * (i + 1),
                                 mem_access=1e6, mem_bytes=4e6))
            store.append(rows[-1])
            assert after_unit is not None
            after_unit(i, len(models))
        return RunFiles(out, out / "results.jsonl", out / "results.csv", rows)

    monkeypatch.setattr(StateLog, "read", fake_read)
    monkeypatch.setattr("latprof.profile.run_profile", fake_run)
    ref = {"state_cold_ms": 1.0, "state_warm_ms": 0.5}
    p = load(save(predictor_data(state={"reference": ref, "corrected": True}), tmp_path / "p.json"))
    e = evaluate(EvaluateRequest(p, models, out=tmp_path / "ev"))
    cold = [n["state_factors"]["cold"] for n in e.networks]
    # readings after 0, 4 and 5 networks (cold 1.0, 1.1, 1.2): the first four between the first two, the last after
    assert cold == pytest.approx([math.sqrt(1.1)] * 4 + [math.sqrt(1.1 * 1.2)])
    assert e.metrics["kernel@state"]["n"] == 5
    records = [json.loads(x) for x in (tmp_path / "ev" / "results.jsonl").read_text().splitlines()]
    assert [r["after_units"] for r in records if r.get("record") == "machine_state"] == [0, 4, 5]
    # Read again from those readings as if measured in two passes (--processes 2: rows of two processes, steps
    # j and j + 5): the fifth network ran at steps 4 and 9, both after the last reading (cold 1.2).
    rows = [json.loads(x) for x in (tmp_path / "ev" / "results.jsonl").read_text().splitlines()]
    twice = tmp_path / "twice"
    twice.mkdir()
    passes = {"processes": 2}
    (twice / "results.jsonl").write_text("".join(json.dumps(
        {**r, **passes, "process_medians_ms": [0.9 * r["latency_median_ms"], 1.2 * r["latency_median_ms"]]}
        if r.get("record") == "result" else r) + "\n" for r in rows))
    e2 = evaluate(EvaluateRequest(p, models, readings=twice, out=tmp_path / "ev2"))
    assert e2.networks[0]["process_medians_ms"] == pytest.approx([0.9, 1.2])
    kernel = [json.loads(x) for x in (tmp_path / "ev2" / "results.jsonl").read_text().splitlines()
              if '"prediction"' in x and '"kernel"' in x]
    assert (kernel[0]["measured_low_ms"], kernel[0]["measured_high_ms"]) == pytest.approx((0.9, 1.2))
    from latprof.views.predict import show_evaluation

    capsys.readouterr()
    show_evaluation(e2)
    out = capsys.readouterr().out
    assert "the median of 2 passes per network" in out and "x1.33..x1.33" in out  # 1.2 / 0.9 for every network
    assert e2.networks[4]["state_factors"]["cold"] == pytest.approx((1.1 * 1.2 * 1.2) ** (1 / 3))
    assert e2.networks[0]["state_factors"]["cold"] == pytest.approx((1.0 * 1.1 * 1.2) ** (1 / 3))


def test_remeasure_scores_a_second_pass_of_the_same_networks_as_the_ceiling_beside_the_predictors(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from latprof.predict.evaluate import REMEASURE_DIR, EvaluateRequest, evaluate
    from latprof.profile import RunFiles
    from latprof.results import ResultStore, base_row

    models = ["mobilenet_v1_x0_25", "micronet_m0", "shufflenet_v2_x0_5", "mobilenet_v1_x0_5"]
    passes: list[Path] = []

    def fake_run(request: object, after_unit: Callable[[int, int], None] | None = None) -> RunFiles:
        out = Path(request.out)  # type: ignore[attr-defined]
        passes.append(out)
        drift = [1.0, 1.0, 1.0, 1.0] if len(passes) == 1 else [1.04, 0.97, 1.25, 1.0]  # one network 25% slower
        store = ResultStore(out / "results.jsonl")
        rows = [base_row(workload=name, backend="torch-cpu", threads=1, batch=1, input_shape="1x3x224x224",
                         status="ok", error="", latency_median_ms=(1.0 + i) * drift[i], mult_adds=1e7 * (i + 1),
                         mem_access=1e6, mem_bytes=4e6) for i, name in enumerate(models)]
        store.append_many(rows)
        return RunFiles(out, out / "results.jsonl", out / "results.csv", rows)

    monkeypatch.setattr("latprof.profile.run_profile", fake_run)
    p = load(save(predictor_data(), tmp_path / "p.json"))
    e = evaluate(EvaluateRequest(p, models, out=tmp_path / "ev", remeasure=True))
    assert passes == [tmp_path / "ev", tmp_path / "ev" / REMEASURE_DIR]
    assert [n["remeasured_ms"] for n in e.networks] == pytest.approx([1.04, 1.94, 3.75, 4.0])
    assert e.metrics["remeasured"]["n"] == 4 and e.metrics["remeasured"]["within_10"] == 0.75
    assert e.metrics["remeasured"]["within_5"] == 0.75
    # without --remeasure there is no such row; re-scored from the readings, the second pass comes along
    assert "remeasured" not in evaluate(EvaluateRequest(p, models, out=tmp_path / "plain")).metrics
    monkeypatch.setattr("latprof.profile.run_profile", lambda *a, **k: pytest.fail("measured"))
    again = evaluate(EvaluateRequest(p, models, readings=tmp_path / "ev", out=tmp_path / "again"))
    assert again.metrics["remeasured"] == e.metrics["remeasured"]
    assert main(["predict", "--evaluate", "--remeasure", "--readings", str(tmp_path / "ev"), "--predictor",
                 str(tmp_path / "p.json"), "--model", ",".join(models)]) == 2
    err = capsys.readouterr().err.strip()
    assert "--remeasure" in err and len(err.splitlines()) == 1
    for extra in (["--processes", "0"], ["--processes", "2", "--readings", str(tmp_path / "ev")]):
        assert main(["predict", "--evaluate", *extra, "--predictor", str(tmp_path / "p.json"), "--model",
                     ",".join(models)]) == 2
        err = capsys.readouterr().err.strip()
        assert "--processes" in err and len(err.splitlines()) == 1


def test_a_rare_family_scales_its_own_readings_by_work_instead_of_borrowing_other_families() -> None:
    from latprof.predict.model import MIN_FAMILY_SAMPLES, KernelModel, work

    pool = {"elementwise_ops": 497664.0, "mem_access": 276480.0}  # one max-pool reading, as in a calibration
    rare = [{"op": "max_pool2d_with_indices", "features": pool, "latency_ms": 1.5},
            {"op": "view", "features": {}, "latency_ms": 0.002}]  # no work at all: its median reading
    model = KernelModel().fit(_samples() + rare)
    assert len(rare) < MIN_FAMILY_SAMPLES and "max_pool2d_with_indices" not in model.families
    bigger = {"elementwise_ops": 677376.0, "mem_access": 376320.0}  # the same pool at 112x112
    ms = model.predict(["max_pool2d_with_indices", "view", "sigmoid"], [bigger, {}, {"elementwise_ops": 1e5}])
    assert ms[0] == pytest.approx(1.5 * work(bigger) / work(pool))  # the family's own rate x the work
    assert ms[1] == pytest.approx(0.002)
    assert ms[2] > 0  # a family never sampled: the fallback regressor over all samples


def test_a_family_is_predicted_per_unit_of_work_beyond_its_largest_sample_and_never_below_its_fastest(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import latprof.predict.model as model_module
    from latprof.predict.model import KernelModel

    rng = np.random.default_rng(1)
    samples = []
    for _ in range(30):  # a convolution family read at up to 1e6 multiply-adds: 2 ns each, plus 10 us per call
        ma = float(rng.integers(1e4, 1e6))
        f = {"mult_adds": ma, "mem_access": ma / 10, "in_c": 16.0, "out_c": 16.0}
        samples.append({"op": "convolution", "label": "c", "features": f, "latency_ms": 0.01 + 2e-6 * ma})
    big = {"mult_adds": 1e8, "mem_access": 1e7, "in_c": 16.0, "out_c": 16.0}  # 100x the largest sample
    tiny = {"mult_adds": 10.0, "mem_access": 1.0, "in_c": 16.0, "out_c": 16.0}
    fastest = min(s["latency_ms"] for s in samples)
    per_work = KernelModel().fit(samples)
    ms_big, ms_tiny = per_work.predict(["convolution"] * 2, [big, tiny])
    assert ms_big == pytest.approx(0.01 + 2e-6 * 1e8, rel=0.25)  # scaled with the work: about 200 ms
    assert ms_tiny == pytest.approx(fastest)  # not below the family's fastest reading
    monkeypatch.setattr(model_module, "RATE_TARGET", False)
    capped = KernelModel().fit(samples).predict(["convolution"], [big])[0]
    assert capped <= max(s["latency_ms"] for s in samples) * 1.001  # the forest alone stops at its largest target


def test_a_kernel_in_a_forward_is_never_below_a_tenth_of_its_warm_time() -> None:
    from latprof.predict.residency import MIN_WARM_SHARE, SPLIT, Residency

    r = Residency(centre_log2=22.0, width_log2=1.0, floor=0.0, per_kernel_call_ms=-0.005, chains=10, form=SPLIT,
                  activation_factor=0.1)
    warm, cold = np.array([0.004, 1.0]), np.array([0.006, 1.5])
    ms = r.mix(warm, cold, footprint=2e6, weights=1e6, shares=np.array([0.0, 0.5]), kernel_calls=1)
    assert ms[0] == pytest.approx(MIN_WARM_SHARE * 0.004)  # the per-call term alone would make it negative
    p = r.share(1e6)
    assert ms[1] == pytest.approx(1.0 + (p * 0.5 + 0.1 * 0.5) * 0.5 - 0.005)  # a large kernel: as before


# ------------------------------------------------------------------ in-forward kernel times (PyTorch eager)
def test_traced_calls_give_every_call_of_the_forward_its_kernel_in_dispatch_order() -> None:
    from latprof.predict.torch_kernels import traced_calls

    block = nn.Sequential(nn.ReLU(), nn.Conv2d(8, 8, 1), nn.ReLU(), nn.ReLU()).eval()
    kernels, calls, order = traced_calls(block, (torch.zeros(1, 8, 6, 6),))
    same, same_calls = torch_kernels(block, (torch.zeros(1, 8, 6, 6),))
    assert [(k.op, k.count) for k in kernels] == [(k.op, k.count) for k in same] == [("relu", 3), ("convolution", 1)]
    assert calls == same_calls == 5
    assert [kernels[i].op for i in order] == ["relu", "convolution", "relu", "relu"]
    assert order[0] == order[2] == order[3] and len(order) == sum(k.count for k in kernels)


def test_in_forward_times_are_each_kernels_share_of_the_profiled_forward() -> None:
    from latprof.predict.torch_kernels import traced_calls
    from latprof.predict.torch_profile import profiled_kernel_ms

    module, x = conv_bn_relu(), torch.randn(1, 8, 10, 10)
    kernels, _, order = traced_calls(module, (x,))
    evictions: list[int] = []
    ms = profiled_kernel_ms(module, x, kernels, order, evict=lambda: evictions.append(1), runs=3, warmup=1)
    assert len(ms) == len(kernels) and all(m > 0 for m in ms)
    assert len(evictions) == 3  # before every profiled forward, not the warm-up ones


def test_a_forward_that_dispatches_other_ops_than_traced_gets_no_in_forward_times() -> None:
    from latprof.predict.torch_kernels import traced_calls
    from latprof.predict.torch_profile import ProfileMismatch, profiled_kernel_ms

    class Flips(nn.Module):  # relu while traced, sigmoid ever after: the profile cannot be the trace's
        def __init__(self) -> None:
            super().__init__()
            self.traced = False

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = torch.sigmoid(x) if self.traced else torch.relu(x)
            self.traced = True
            return out

    module, x = Flips(), torch.randn(1, 4)
    kernels, _, order = traced_calls(module, (x,))
    with pytest.raises(ProfileMismatch, match="first difference at call 0"):
        profiled_kernel_ms(module, x, kernels, order, evict=None, runs=2, warmup=0)


def _eager_rows() -> list[dict]:
    """Two cells of eager readings: replayed kernels (one a repeat the worker did not replay again) with their
    in-forward times."""
    def kernel(cell: str, replayed: float, profiled: float, again: bool = False) -> dict:
        return {"status": "ok", "sample": "kernel", "workload": cell, "latency_median_ms": replayed,
                "warm_ms": replayed / 2, "profiled_ms": profiled, "warm_profiled_ms": profiled / 2,
                "replayed": not again, "kernel": {"op": "add", "label": "aten.add.Tensor", "features": {}}}

    def cell(name: str, timed: float, replayed: float, profiled: float) -> dict:
        return {"status": "ok", "sample": "cell", "workload": name, "latency_median_ms": timed, "warm_ms": timed / 2,
                "kernels_ms": replayed, "warm_kernels_ms": replayed / 2, "profiled_ms": profiled,
                "warm_profiled_ms": profiled / 2, "kernel_calls": 2, "module_calls": 1}

    return [kernel("a", 0.010, 0.004), kernel("a", 0.020, 0.006), cell("a", 0.0110, 0.030, 0.010),
            kernel("b", 0.010, 0.005, again=True), kernel("b", 0.040, 0.015), cell("b", 0.0220, 0.050, 0.020),
            kernel("c", 0.030, 0.012), cell("c", 0.0132, 0.030, 0.012)]


def test_eager_samples_are_replayed_or_in_forward_as_the_attribution_says() -> None:
    from latprof.predict.calibrate import PROFILED, REPLAY, Readings, _overhead

    replay, in_forward, auto = Readings("torch-cpu", False, REPLAY), Readings("torch-cpu", False, PROFILED), \
        Readings("torch-cpu", False)
    for r in (replay, in_forward, auto):
        r.add(_eager_rows())
    assert [s["latency_ms"] for s in replay.samples()] == [0.010, 0.020, 0.040, 0.030]  # no repeat
    assert [s["warm_ms"] for s in replay.samples()] == [0.005, 0.010, 0.020, 0.015]
    assert [s["latency_ms"] for s in in_forward.samples()] == [0.004, 0.006, 0.005, 0.015, 0.012]  # every cell's
    assert [s["warm_ms"] for s in in_forward.samples()] == [0.002, 0.003, 0.0025, 0.0075, 0.006]
    assert auto.in_forward and auto.samples() == in_forward.samples()  # readings with profiles: in-forward
    assert not Readings("ort-mobile", False, PROFILED).in_forward  # ONNX Runtime's nodes are profiled anyway
    # cells = 1.1 x their kernels (in-forward sums), every cell alike: the context fit finds 1.1 and no call term
    rows = [{"module_call_ms": 0.0}]
    o = _overhead("torch-cpu", in_forward.normalised_cells(), rows, warm=True, in_forward=True)
    assert (o["context_factor"], o["per_kernel_call_ms"]) == (pytest.approx(1.1), pytest.approx(0.0, abs=1e-7))
    assert o["warm_context_factor"] == pytest.approx(1.1)
    replayed = _overhead("torch-cpu", replay.normalised_cells(), rows, warm=True)
    assert replayed["context_factor"] != pytest.approx(1.1)  # the same cells against their replays


def test_auto_attribution_keeps_the_samples_that_predict_the_chains_better(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from latprof.predict.calibrate import CalibrateRequest, calibrate
    from latprof.run.engine import RunOptions
    from latprof.run.units import MEASURE_FUNCTIONS
    from tests.predict_fake import CONTEXT, kernel_ms

    monkeypatch.setitem(MEASURE_FUNCTIONS, "calibrate", "tests.predict_fake:measure")
    monkeypatch.setattr("tests.predict_fake.IN_FORWARD", True)  # replays miss the in-forward times kernel by kernel
    monkeypatch.setattr("latprof.predict.calibrate.CELLS_PER_UNIT", 12)
    monkeypatch.setattr("latprof.predict.calibrate.CHAINS_PER_UNIT", 7)
    result = calibrate(CalibrateRequest("torch-cpu", tmp_path / "p.json", threads=1, budget_s=0.01,
                                        out=tmp_path / "runs", peaks=False, run=RunOptions(in_process=True),
                                        attribution="auto"))
    data = json.loads(result.path.read_text())
    chosen = data["calibration"]["attribution"]
    assert chosen["chosen"] == "profiled" and data["calibration"]["kernel_samples"] == "profiled"
    assert chosen["profiled"]["chain_loo_rmspe"] < chosen["replay"]["chain_loo_rmspe"]
    assert all(s["latency_ms"] == pytest.approx(CONTEXT * kernel_ms(s["features"])) for s in data["samples"])
    assert data["overhead"]["context_factor"] == pytest.approx(1.0)  # the cells are their in-forward kernels
    assert main(["calibrate", "--from-readings", str(tmp_path / "runs"), "--attribution", "replay",
                 "-o", str(tmp_path / "r.json")]) == 0
    replayed = json.loads((tmp_path / "r.json").read_text())
    assert replayed["calibration"]["kernel_samples"] == "replayed" and "attribution" not in replayed["calibration"]
    assert replayed["residency"]["loo_rmspe"] == pytest.approx(chosen["replay"]["chain_loo_rmspe"])


# ------------------------------------------------------------------ hot, warm and cold (residency form "hot")
def test_a_hot_residency_runs_each_kernel_from_hot_through_warm_to_cold_never_below_hot() -> None:
    from latprof.predict.residency import HOT, Residency

    r = Residency(centre_log2=26.0, width_log2=1.0, floor=0.0, form=HOT, hot_centre_log2=21.0, hot_width_log2=1.0)
    hot, warm, cold = np.array([1.0, 1.0]), np.array([2.0, 2.0]), np.array([4.0, 4.0])
    shares = np.array([1.0, 0.0])  # a kernel of weights only, one without any: cold - warm is the weights' part
    small = r.mix(warm, cold, footprint=0, weights=2 ** 10, shares=shares, hot_ms=hot)
    assert small == pytest.approx([1.0, 1.0], abs=1e-3)  # weights in the core's L2: hot
    at_l2 = r.mix(warm, cold, footprint=0, weights=2 ** 21, shares=shares, hot_ms=hot)
    assert at_l2 == pytest.approx([1.5 + 2.0 / (1.0 + math.exp(5.0)), 1.5])  # halfway to warm; p(2 MiB) small
    at_centre = r.mix(warm, cold, footprint=0, weights=2 ** 26, shares=shares, hot_ms=hot)
    assert at_centre == pytest.approx([2.0 + 0.5 * 2.0, 2.0], abs=1e-2)  # warm, plus half the weights' cold part
    r.per_kernel_call_ms = -5.0  # a kernel in a forward is never below a tenth of its hot time
    assert r.mix(warm, cold, footprint=0, weights=2 ** 10, shares=shares, kernel_calls=1, hot_ms=hot) == \
        pytest.approx([0.1, 0.1])
    with pytest.raises(ValueError, match="hot time"):
        r.mix(warm, cold, footprint=0, weights=1.0)


def _hot_chains(q: Callable[[float], float], p: Callable[[float], float]) -> list:
    from latprof.predict.residency import ChainSums

    chains = []
    for i, log2 in enumerate(np.linspace(17, 27, 30)):
        hot, warm, dw = 1.0 + 0.5 * i, 2.0 + i, 2.0 + 1.5 * (i % 5)
        ms = hot + q(2 ** log2) * (warm - hot) + p(2 ** log2) * dw
        chains.append(ChainSums(2 ** log2, ms, warm, dw, 9.9, 50.0, hot))  # an activations' part the form ignores
    return chains


def test_chains_with_hot_sums_fit_the_hot_form_when_it_predicts_left_out_chains_better() -> None:
    from latprof.predict.residency import HOT, SPLIT, fit_residency

    def logistic(centre: float, width: float) -> Callable[[float], float]:
        return lambda s: 1.0 / (1.0 + math.exp(-(math.log2(s) - centre) / width))

    chains = _hot_chains(logistic(21.0, 0.8), logistic(25.0, 0.7))
    r = fit_residency(chains, (21.0, 28.0))
    assert r.form == HOT and r.floor == 0.0 and r.activation_factor == 0.0
    assert r.hot_centre_log2 == pytest.approx(21.0, abs=0.1) and r.hot_width_log2 == pytest.approx(0.8, abs=0.1)
    assert r.centre_log2 == pytest.approx(25.0, abs=0.1) and r.width_log2 == pytest.approx(0.7, abs=0.1)
    assert r.loo_rmspe == r.loo_rmspe_hot < r.loo_rmspe_split and r.fit_rmspe == pytest.approx(0.0, abs=1e-3)
    without_hot = fit_residency([c._replace(hot_ms=0.0) for c in chains], (21.0, 28.0))
    assert without_hot.form == SPLIT and without_hot.loo_rmspe_hot is None  # no hot readings: the split form


def test_hot_samples_take_the_hot_per_node_overhead_or_the_in_forward_hot_time() -> None:
    from latprof.predict.calibrate import PROFILED, Readings

    def kernel(cell: str, ms: float) -> dict:
        return {"status": "ok", "sample": "kernel", "workload": cell, "latency_median_ms": ms, "profiled_ms": ms,
                "warm_profiled_ms": ms / 2, "hot_profiled_ms": ms / 4, "warm_ms": ms, "replayed": True,
                "kernel": {"op": "Add", "label": "aten.add.Tensor", "features": {}}}

    def cell(name: str, hot: float) -> dict:
        return {"status": "ok", "sample": "cell", "workload": name, "latency_median_ms": 1.0, "warm_ms": 0.5,
                "hot_ms": hot, "session_ms": 0.002, "profiled_ms": 0.008, "warm_profiled_ms": 0.004,
                "hot_profiled_ms": 0.002, "kernel_calls": 2, "module_calls": 1, "kernels_ms": 0.008}

    rows = [kernel("a", 0.004), kernel("a", 0.004), cell("a", 0.010), kernel("b", 0.004), kernel("b", 0.004),
            cell("b", 0.012), kernel("c", 0.004), kernel("c", 0.004), cell("c", 0.014)]
    ort = Readings("ort-mobile", False)
    ort.add(rows)
    # hot per-node excess: (0.010 - 0.002 - 0.002) / 2 = 0.003, 0.004, 0.005: median 0.004
    assert ort.has_hot and ort.node_overhead_ms(hot=True) == pytest.approx(0.004)
    assert all(s["hot_ms"] == pytest.approx(0.001 + 0.004) for s in ort.samples())
    eager = Readings("torch-cpu", False, PROFILED)
    eager.add(rows)
    assert eager.has_hot and all(s["hot_ms"] == pytest.approx(0.001) for s in eager.samples())  # no executor
    replayed = Readings("torch-cpu", False, "replay")
    replayed.add(rows)
    assert not replayed.has_hot and all("hot_ms" not in s for s in replayed.samples())


def test_an_in_forward_calibration_unit_profiles_every_kernel_and_replays_none() -> None:
    from latprof.predict.calibrate import PROFILED, REPLAY, Readings
    from latprof.predict.measure_cells import measure_calibrate_unit

    cell = {"type": "chain", "input": [1, 8, 7, 7],
            "blocks": [{"name": "conv_bn_relu", "kwargs": {"in_channels": 8, "out_channels": 8, "kernel_size": 1,
                                                            "stride": 1}}] * 2}
    config = {"target_ci": 0.5, "max_time_s": 0.05, "min_samples": 2, "max_samples": 3, "min_time_s": 0.0,
              "min_sample_time_s": 1e-9, "warmup_min_s": 0.0, "warmup_max_s": 0.01, "warmup_max_batches": 1}
    rows = measure_calibrate_unit({"backend": "torch-cpu", "threads": 1, "cells": [["c0", cell]], "config": config,
                                   "replay": False, "state": False})
    kernels = [r for r in rows if r.get("sample") == "kernel"]
    cell_row = next(r for r in rows if r.get("sample") == "cell")
    assert kernels and not any(r["replayed"] for r in kernels) and "kernels_ms" not in cell_row
    assert all(r["latency_median_ms"] == r["profiled_ms"] and r["warm_ms"] == r["warm_profiled_ms"] for r in kernels)
    assert cell_row["kernel_calls"] > len(kernels)  # the two blocks' identical kernels: one row each, counted twice
    readings = Readings("torch-cpu", False)
    readings.add(rows)
    assert not readings.has_replays and readings.in_forward and len(readings.samples()) == len(kernels)
    replays = Readings("torch-cpu", False, REPLAY)
    replays.add(rows)
    assert not replays.in_forward and replays.samples() == []  # nothing replayed to learn from
    assert Readings("torch-cpu", False, PROFILED).attribution == PROFILED


def test_a_calibration_profiles_kernels_in_the_forward_and_replays_them_only_when_asked(tmp_path: Path) -> None:
    from latprof.predict.calibrate import CalibrateRequest, Readings, _unit

    cell = ("c0", {"type": "chain", "input": [1, 8, 7, 7], "blocks": []})
    assert _unit(CalibrateRequest("torch-cpu", tmp_path / "p.json"), 1, [cell]).payload["replay"] is False
    assert _unit(CalibrateRequest("torch-cpu", tmp_path / "p.json", attribution="auto"), 1, [cell]).payload["replay"]
    old = Readings("torch-cpu", False, "profiled")  # readings from before in-forward profiles: their replays
    old.add([{"status": "ok", "sample": "kernel", "workload": "a", "latency_median_ms": 0.01, "warm_ms": 0.005,
              "kernel": {"op": "add", "label": "aten.add.Tensor", "features": {}}}])
    assert not old.in_forward and [s["latency_ms"] for s in old.samples()] == [0.01]


def test_every_units_overhead_reading_survives_in_the_results_file(tmp_path: Path) -> None:
    from latprof.predict.measure_cells import overhead_ident
    from latprof.results import ResultStore, base_row, read_results

    store = ResultStore(tmp_path / "results.jsonl")
    for unit, idle in (("r0", 0.0007), ("r1", 0.0009), ("r2", 0.0008)):
        payload = {"backend": "torch-cpu", "threads": 1, "cells": [[f"{unit}c0", {}]], "chains": [[f"{unit}h0", {}]]}
        store.append(base_row(**overhead_ident(payload, "module_call", [1]), status="ok", error="", kind="calibrate",
                              sample="overhead", latency_median_ms=0.05, module_call_ms=idle))
    kept = [r["module_call_ms"] for r in read_results(store.path, quiet=True).results]
    assert kept == [0.0007, 0.0009, 0.0008]  # one identity per unit: none superseded, the median is over all three


@pytest.mark.parametrize("regressor", ["random_forest", "gradient_boosting"])
def test_one_fit_serves_the_cold_warm_and_hot_readings_and_the_fallback_waits_for_a_family_never_sampled(
        regressor: str) -> None:
    from latprof.predict.model import KernelModel, sample_targets

    samples = [{**s, "warm_ms": s["latency_ms"] / 2, "hot_ms": s["latency_ms"] / 4} for s in _samples()]
    targets = sample_targets(samples)
    assert targets == ("latency_ms", "warm_ms", "hot_ms")
    assert sample_targets(samples, hot=False) == ("latency_ms", "warm_ms")
    assert sample_targets(_samples()) == ("latency_ms",)
    model = KernelModel(regressor, targets).fit(samples)
    if regressor == "random_forest":  # one multi-output forest per family
        assert model.families["convolution"].n_outputs_ == 3
    f = samples[10]["features"]
    ms = model.predict_all(["convolution"], [f])[0]
    assert ms[0] == pytest.approx(samples[10]["latency_ms"], rel=0.2)
    assert ms[1] / ms[0] == pytest.approx(0.5, rel=0.05) and ms[2] / ms[0] == pytest.approx(0.25, rel=0.05)
    assert model.predict(["convolution"], [f], "warm_ms")[0] == pytest.approx(ms[1])
    assert model._fallback is None  # not fitted at load
    never = model.predict_all(["sigmoid"], [{"elementwise_ops": 1e5, "mem_access": 2e5}])[0]
    assert model._fallback is not None and np.all(never > 0)


def test_beyond_its_samples_a_data_movement_family_takes_the_marginal_cost_of_those_that_span_the_sizes() -> None:
    from latprof.predict.model import KernelModel

    rng = np.random.default_rng(3)

    def family(op: str, lo: float, hi: float, fixed_ms: float, per_work_ms: float, macs: float = 0.0) -> list:
        out = []
        for n in np.exp(rng.uniform(np.log(lo), np.log(hi), 30)):
            f = {"elementwise_ops": n, "mem_access": 2 * n, "mult_adds": macs * n}
            out.append({"op": op, "label": op, "features": f,
                        "latency_ms": (fixed_ms + per_work_ms * 3 * n) * rng.uniform(0.95, 1.05)})
        return out

    # ONNX Runtime's splits read only on a MicroNet's 1x1 vectors (p31): 12 us a call, and their noise alone gives
    # them a marginal cost of about 3 ns per element; adds and transposes read from 1k to 1M elements, 0.16 ns
    small_splits = [{**s, "latency_ms": 0.012 + 3e-6 * s["features"]["elementwise_ops"] * rng.uniform(0, 2)}
                    for s in family("Split", 20, 1500, 0.012, 0.0)]
    spanning = family("Add", 1e3, 1e6, 0.01, 1.6e-7) + family("Transpose", 1e3, 1e6, 0.005, 1.6e-7)
    model = KernelModel().fit(small_splits + spanning)
    assert model.movement == {"Split", "Add", "Transpose"} and model.movement_slope is not None
    assert model.movement_slope[0] == pytest.approx(1.6e-7, rel=0.2)
    big = {"elementwise_ops": 1.8e5, "mem_access": 3.6e5}  # a ShuffleNet V2 split at 28x28, 120x the largest sample
    ms = model.predict(["Split"], [big])[0]
    a = model.beyond["Split"][1][0]
    assert ms == pytest.approx(a + 1.6e-7 * 5.4e5, rel=0.25)  # its own fixed cost, the others' marginal cost
    alone = KernelModel().fit(small_splits).predict(["Split"], [big])[0]
    assert alone > 5 * ms  # its own line: its noisy slope over a thousand elements, carried 120x further
    small = {"elementwise_ops": 1000.0, "mem_access": 2000.0}  # among its own samples: their fixed cost
    assert model.predict(["Split"], [small])[0] == pytest.approx(0.012, rel=0.25)
    # one large split read too (p32: a stride-1 ShuffleNet V2 unit at 112x112): a forest of the rate per unit of work
    # puts a kernel between the small ones and it near one side's rate; the line holds it at every size
    large = {"op": "Split", "label": "Split", "features": {"elementwise_ops": 4.5e5, "mem_access": 9e5},
             "latency_ms": 0.012 + 1.6e-7 * 1.35e6}
    with_large = KernelModel().fit(small_splits + [large] + spanning)
    line = with_large.beyond["Split"][1][0] + with_large.beyond["Split"][2][0] * 5.4e5
    assert with_large.predict(["Split"], [big])[0] <= line * (1 + 1e-9)
    assert KernelModel().fit(small_splits + [large]).predict(["Split"], [big])[0] > 2 * line
    # a family that multiplies-adds keeps its own line, and one spanning family is not enough to pool
    convs = family("Conv", 20, 1500, 0.02, 1e-5, macs=9.0)
    with_convs = KernelModel().fit(small_splits + spanning + convs)
    assert "Conv" not in with_convs.movement
    big_conv = {**big, "mult_adds": 9 * 1.8e5}
    assert with_convs.predict(["Conv"], [big_conv])[0] == pytest.approx(
        KernelModel().fit(small_splits + convs).predict(["Conv"], [big_conv])[0], rel=1e-9)
    one = KernelModel().fit(small_splits + spanning[:30])
    assert one.movement_slope is None and one.predict(["Split"], [big])[0] == pytest.approx(alone, rel=1e-9)


def test_a_rare_fused_family_is_predicted_from_its_base_family_times_its_own_ratio() -> None:
    from latprof.predict.model import KernelModel, borrowed

    base = [s for s in _samples() if s["op"] == "convolution"]
    # two readings of the convolution with a residual add fused in, both 1.3x the convolution alone, both small
    fused = [{**s, "op": "nchwc.Conv+Add", "latency_ms": 1.3 * s["latency_ms"]} for s in base[:2]]
    model = KernelModel().fit([{**s, "op": "nchwc.Conv"} for s in base] + fused)
    big = max((s["features"] for s in base), key=lambda f: f["mult_adds"])
    conv = model.predict(["nchwc.Conv"], [big])[0]
    assert model.borrow["nchwc.Conv+Add"][0] == "nchwc.Conv"
    ratio = 1.3 * np.array([s["latency_ms"] for s in base[:2]]) / model.predict(["nchwc.Conv"] * 2,
                                                                              [s["features"] for s in base[:2]])
    assert model.predict(["nchwc.Conv+Add"], [big])[0] == pytest.approx(conv * np.median(ratio))
    assert model.predict(["nchwc.Conv+Relu"], [big])[0] == pytest.approx(conv)  # never sampled: its base, x 1
    # the base keeps as many fused parts as a fitted family has
    assert borrowed("nchwc.Conv+Add+Relu", {"nchwc.Conv": 1, "nchwc.Conv+Relu": 1}) == "nchwc.Conv+Relu"
    assert borrowed("nchwc.Conv+Add+Relu", {"nchwc.Conv": 1}) == "nchwc.Conv"
    assert borrowed("nchwc.Conv", {"nchwc.Conv": 1}) is None and borrowed("Relu", {}) is None


def test_beyond_its_largest_sample_a_family_is_predicted_no_higher_than_its_marginal_line(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import latprof.predict.model as model_module
    from latprof.predict.model import KernelModel, marginal_line, work

    rng = np.random.default_rng(2)
    samples = []
    for _ in range(40):  # a split read only on small vectors: 7 us a call whatever its size, 1 ns per element
        n = float(rng.integers(16, 1024))
        samples.append({"op": "Split", "label": "s", "features": {"elementwise_ops": n, "mem_access": 2 * n},
                        "latency_ms": 0.007 + 1e-6 * n * rng.uniform(0.9, 1.1)})
    a, b = marginal_line(np.array([work(s["features"]) for s in samples]),
                         np.array([[s["latency_ms"]] for s in samples]))
    assert a[0] == pytest.approx(0.007, rel=0.05) and b[0] == pytest.approx(1e-6 / 3, rel=0.2)
    big = {"elementwise_ops": 1e5, "mem_access": 2e5}  # a network's channel split, 100x the largest sample
    ms = KernelModel().fit(samples).predict(["Split"], [big])[0]
    assert ms == pytest.approx(0.007 + 0.1, rel=0.2)  # the line: 7 us + 100k x 1 ns
    monkeypatch.setattr(model_module, "marginal_line", lambda w, t, top=64: (t.max(axis=0) * 1e9, t[0] * 0))
    unguarded = KernelModel().fit(samples).predict(["Split"], [big])[0]
    assert unguarded > 5 * ms  # scaled by work alone: the small splits' fixed cost grows with the size
