"""Per-op breakdown: exact Figure 2 category assignment, trace parsing, and real profiles of a small model."""

from __future__ import annotations

import pytest

from latprof.analysis.breakdown import (
    CATEGORIES,
    PAPER_FIGURE2,
    breakdown_record,
    onnx_category,
    torch_category,
)
from latprof.backends import BackendOptions, create_backend
from latprof.backends.op_profiling import OpProfile, OpTime, parse_ort_trace, per_op_breakdown
from tests.backend_models import tiny_workload


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LATPROF_CACHE", str(tmp_path / "onnx-cache"))


@pytest.mark.parametrize("op, cat", [
    ("Conv", "Conv"), ("FusedConv", "Conv"), ("Gemm", "Conv"), ("MatMul", "Conv"),
    ("Relu", "Elemwise"), ("Add", "Elemwise"), ("BatchNormalization", "Elemwise"), ("Clip", "Elemwise"),
    ("HardSwish", "Elemwise"), ("Concat", "Data"), ("Slice", "Data"), ("Split", "Data"), ("Transpose", "Data"),
    ("Reshape", "Data"), ("ReorderInput", "Data"), ("ReorderOutput", "Data"), ("GlobalAveragePool", "Other"),
    ("MaxPool", "Other"), ("Softmax", "Other"), ("SomethingNew", "Other"),
])
def test_onnx_mapping(op, cat):
    assert onnx_category(op) == cat


@pytest.mark.parametrize("op, cat", [
    ("aten::conv2d", "Conv"), ("aten::mkldnn_convolution", "Conv"), ("aten::_slow_conv2d_forward", "Conv"),
    ("aten::cudnn_convolution", "Conv"), ("aten::addmm", "Conv"), ("aten::relu_", "Elemwise"),
    ("aten::add", "Elemwise"), ("aten::native_batch_norm", "Elemwise"), ("aten::_batch_norm_impl_index", "Elemwise"),
    ("aten::hardtanh_", "Elemwise"), ("aten::cat", "Data"), ("aten::copy_", "Data"), ("aten::clone", "Data"),
    ("aten::slice", "Data"), ("aten::channel_shuffle", "Shuffle"), ("aten::max_pool2d", "Other"),
    ("aten::adaptive_avg_pool2d", "Other"), ("cpp_fused_add_relu_0", "Elemwise"), ("cpp_fused_cat_1", "Data"),
])
def test_torch_mapping(op, cat):
    assert torch_category(op) == cat


def _event(name, ts, dur, op=None, shapes=None, cat="Node"):
    e = {"cat": cat, "name": name, "ts": ts, "dur": dur}
    if op:
        e["args"] = {"op_name": op, "input_type_shape": shapes or []}
    return e


def test_parse_ort_trace_exact():
    nodes = {
        "conv_relu": {"op_type": "FusedConv", "domain": "com.microsoft", "attrs": {"activation": "Relu"},
                      "inputs": ["x", "w", "b"], "outputs": ["y"]},
        "dw": {"op_type": "Conv", "domain": "", "attrs": {"group": 8}, "inputs": ["y", "w2"], "outputs": ["z"]},
        "r1": {"op_type": "Reshape", "domain": "", "attrs": {}, "inputs": ["z", "s"], "outputs": ["z5"]},
        "tr": {"op_type": "Transpose", "domain": "", "attrs": {"perm": [0, 2, 1, 3, 4]}, "inputs": ["z5"],
               "outputs": ["t5"]},
        "r2": {"op_type": "Reshape", "domain": "", "attrs": {}, "inputs": ["t5", "s2"], "outputs": ["o"]},
        "cat": {"op_type": "Concat", "domain": "", "attrs": {}, "inputs": ["o", "x"], "outputs": ["c"]},
    }
    shapes_dw = [{"float": [1, 8, 4, 4]}, {"float": [8, 1, 3, 3]}]
    events = []
    for run, t0 in enumerate((0, 1000, 2000)):  # run 0 is warm-up, dropped
        scale = 100 if run == 0 else 1
        events.append(_event("model_run", t0, 900, cat="Session"))
        events += [
            _event("conv_relu_kernel_time", t0 + 10, 400 * scale, "FusedConv", [{"float": [1, 3, 4, 4]}]),
            _event("dw_kernel_time", t0 + 420, 100, "Conv", shapes_dw),
            _event("dw_fence_before", t0 + 419, 1),
            _event("r1_kernel_time", t0 + 530, 10, "Reshape"),
            _event("tr_kernel_time", t0 + 541, 50, "Transpose"),
            _event("r2_kernel_time", t0 + 600, 10, "Reshape"),
            _event("cat_kernel_time", t0 + 620, 30, "Concat"),
        ]
    profile = parse_ort_trace(events, nodes, warmup=1)
    assert profile.runs == 2 and profile.profiled_run_ms == pytest.approx(0.9)
    rec = breakdown_record(profile, 1.0, workload="w", backend="ort-cpu")
    by_name = {o["name"]: o for o in rec["ops"]}
    assert by_name["conv_relu"]["category"] == "Conv" and by_name["conv_relu"]["fused_ops"] == ["Conv", "Relu"]
    assert by_name["dw"]["depthwise"] is True and by_name["dw"]["category"] == "Conv"
    assert {by_name[n]["category"] for n in ("r1", "tr", "r2")} == {"Shuffle"}
    assert by_name["cat"]["category"] == "Data"
    assert rec["categories_ms"] == pytest.approx({"Conv": 0.5, "Elemwise": 0.0, "Data": 0.03, "Shuffle": 0.07,
                                                  "Other": 0.0})
    assert rec["depthwise_ms"] == pytest.approx(0.1)
    assert rec["profiled_total_ms"] == pytest.approx(0.6)
    assert rec["op_sum_over_end_to_end"] == pytest.approx(0.6)
    assert sum(rec["categories_percent"].values()) == pytest.approx(100.0)
    assert "60.0% of the unprofiled end-to-end median" in rec["reconciliation"]


def test_record_follows_contract():
    prof = OpProfile([OpTime("a", "aten::relu", 1.0, 1.0)], "torch", 5, 1.2, "m")
    rec = breakdown_record(prof, 2.0, workload="w", backend="torch-cpu", threads=1, batch=1, input_shape="1x3x4x4",
                           hardware_id="h")
    for key in ("record", "workload", "backend", "threads", "batch", "input_shape", "hardware_id", "categories_ms",
                "categories_percent", "depthwise_ms", "ops", "profiled_total_ms", "end_to_end_median_ms",
                "reconciliation"):
        assert key in rec
    assert rec["record"] == "per_op" and list(rec["categories_ms"]) == list(CATEGORIES)
    assert set(rec["ops"][0]) >= {"name", "op_type", "category", "time_ms", "calls"}
    assert "latency_median_ms" not in rec  # profiled timings never become latency fields
    assert all(len(v) == len(CATEGORIES) for v in PAPER_FIGURE2.values())


def test_ort_profile_of_small_model():
    w = tiny_workload()
    backend = create_backend("ort-cpu", BackendOptions(threads=1, ort_opt="extended", extra={"exporter": "torchscript"}))
    rec = per_op_breakdown(backend, w, None, runs=3, workload=w.name, backend="ort-cpu")
    cats = {}
    for op in rec["ops"]:
        cats.setdefault(op["op_type"], set()).add(op["category"])
    assert cats["Concat"] == {"Data"}
    assert cats["Transpose"] == {"Shuffle"}
    assert cats["Gemm"] == {"Conv"}
    convs = [o for o in rec["ops"] if o["op_type"] in ("Conv", "FusedConv")]
    assert len(convs) == 3 and sum(1 for o in convs if o.get("depthwise")) == 1
    assert sum(1 for o in convs if o.get("fused_ops")) == 2  # stem and pointwise conv fused with their ReLU
    assert rec["depthwise_ms"] > 0 and rec["categories_ms"]["Shuffle"] > 0


def test_torch_profile_of_small_model():
    w = tiny_workload()
    backend = create_backend("torch-cpu", BackendOptions(threads=1))
    rec = per_op_breakdown(backend, w, 1.0, runs=2, workload=w.name, backend="torch-cpu")
    shuffle = [o for o in rec["ops"] if o["category"] == "Shuffle"]
    assert shuffle and all(o["op_type"] in ("aten::copy_", "aten::clone", "aten::contiguous")
                       and "[1, 16, 2, 16, 16]" in o["name"] for o in shuffle)
    assert any(o["op_type"] == "aten::copy_" for o in shuffle)
    assert any(o.get("depthwise") for o in rec["ops"])
    assert rec["categories_ms"]["Conv"] > 0 and rec["categories_ms"]["Elemwise"] > 0
    assert any(o["op_type"] == "aten::cat" and o["category"] == "Data" for o in rec["ops"])
