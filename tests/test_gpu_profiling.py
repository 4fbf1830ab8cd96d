"""GPU per-op times and node placement, on recorded traces and fake profiler output: what an op time means on each
runtime (device timestamps for torch, host launch times for ONNX Runtime's stock CUDA build), CPU fallback in
ort-cuda, the same IO binding in profiled and timed runs, and the roofline's peak kernels."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from torch.autograd import DeviceType

from latprof.analysis.breakdown import breakdown_record
from latprof.backends import BackendError, BackendOptions, create_backend
from latprof.backends.op_profiling import (
    UNATTRIBUTED_GPU,
    node_placement,
    parse_ort_trace,
    placement_fallback,
    torch_ops,
)
from latprof.backends.peaks import compute_precision, grow_batch
from tests.backend_models import tiny_workload


def node(name, ts, dur, op, provider="CUDAExecutionProvider"):
    return {"cat": "Node", "name": f"{name}_kernel_time", "ts": ts, "dur": dur,
            "args": {"op_name": op, "provider": provider, "input_type_shape": []}}


def cuda_trace(kernels: bool = False, fallback: bool = False) -> list[dict]:
    """Two runs of conv -> relu -> concat on the CUDA provider (run 0 is warm-up); optionally a CPU fallback node and
    the kernel events a CUDA-profiling build adds."""
    events = []
    for t0 in (0, 1000):
        events.append({"cat": "Session", "name": "model_run", "ts": t0, "dur": 800})
        events += [node("conv", t0 + 10, 20, "Conv"), node("relu", t0 + 40, 8, "Relu"),
                   node("cat", t0 + 60, 12, "Concat"), node("shape", t0 + 80, 2, "Shape", "CPUExecutionProvider")]
        if fallback:
            events.append(node("nms", t0 + 90, 50, "NonMaxSuppression", "CPUExecutionProvider"))
        if kernels:
            events += [{"cat": "Kernel", "name": "implicit_convolve_sgemm", "ts": t0 + 15, "dur": 300,
                        "args": {"op_name": "Conv", "parent_name": "conv_kernel_time"}},
                       {"cat": "Kernel", "name": "elementwise_kernel", "ts": t0 + 45, "dur": 40,
                        "args": {"op_name": "Relu", "parent_name": "relu"}}]
    return events


def test_node_placement_and_fallback():
    nodes = node_placement(cuda_trace(fallback=True))
    assert nodes["conv"] == {"provider": "CUDAExecutionProvider", "op_type": "Conv"}
    assert placement_fallback(node_placement(cuda_trace()), "CUDAExecutionProvider") is None  # Shape may stay on CPU
    msg = placement_fallback(nodes, "CUDAExecutionProvider")
    assert msg == ("1 of 5 nodes did not run on CUDAExecutionProvider (fallback, timings would mix devices): "
                   "CPUExecutionProvider: NonMaxSuppression (nms)")
    assert "could not be checked" in placement_fallback({}, "CUDAExecutionProvider")


def test_stock_ort_cuda_node_times_are_called_launch_times():
    profile = parse_ort_trace(cuda_trace(), {}, warmup=1, clock="host-launch")
    assert profile.clock == "host-launch" and "launch times, not GPU times" in profile.method
    rec = breakdown_record(profile, 0.5, workload="w", backend="ort-cuda")
    assert rec["op_clock"] == "host-launch"
    assert "measure launch cost, not GPU execution" in rec["reconciliation"]
    assert "session.run setup" not in rec["reconciliation"]


def test_kernel_events_give_gpu_time_per_node():
    profile = parse_ort_trace(cuda_trace(kernels=True), {}, warmup=1, clock="host-launch")
    by_name = {o.name: o for o in profile.ops}
    assert profile.clock == "gpu" and set(by_name) == {"conv", "relu"}
    assert by_name["conv"].time_ms == pytest.approx(0.3) and by_name["conv"].op_type == "Conv"
    assert by_name["relu"].time_ms == pytest.approx(0.04)
    rec = breakdown_record(profile, 0.5, workload="w", backend="ort-cuda")
    assert "GPU sat idle between kernels" in rec["reconciliation"]


def avg(key, device_type, self_cpu=0.0, self_device=0.0, count=2, shapes=None):
    return SimpleNamespace(key=key, device_type=device_type, self_cpu_time_total=self_cpu,
                           self_device_time_total=self_device, count=count, input_shapes=shapes or [])


# key_averages of 2 profiled calls on CUDA: aten ops with the device time of their kernels, the kernels themselves,
# and 30 us of kernels no op claims (launched from a C++ extension, say).
TORCH_CUDA_AVERAGES = [
    avg("aten::cudnn_convolution", DeviceType.CPU, self_cpu=40, self_device=200, shapes=[[8, 3, 16, 16], [16, 3, 3, 3]]),
    avg("aten::relu", DeviceType.CPU, self_cpu=10, self_device=50),
    avg("aten::view", DeviceType.CPU, self_cpu=4, self_device=0),
    avg("sm80_xmma_fprop_implicit_gemm", DeviceType.CUDA, self_device=200),
    avg("triton_poi_fused_relu_0", DeviceType.CUDA, self_device=50),
    avg("vectorized_elementwise_kernel", DeviceType.CUDA, self_device=30),
    avg("ProfilerStep#1", DeviceType.CPU, self_cpu=500),
]


def test_torch_cuda_ops_use_device_time_and_keep_unattributed_kernels():
    ops = {o.op_type: o for o in torch_ops(TORCH_CUDA_AVERAGES, runs=2, cuda=True)}
    assert set(ops) == {"aten::cudnn_convolution", "aten::relu", UNATTRIBUTED_GPU}
    assert ops["aten::cudnn_convolution"].time_ms == pytest.approx(0.1)  # 200 us device time over 2 calls
    assert ops[UNATTRIBUTED_GPU].time_ms == pytest.approx(0.015)
    assert sum(o.time_ms for o in ops.values()) == pytest.approx(0.14)  # the GPU's whole busy time per call


def test_torch_kernels_mode_lists_kernels_and_cpu_mode_cpu_time():
    kernels = {o.op_type: o.time_ms for o in torch_ops(TORCH_CUDA_AVERAGES, runs=2, cuda=True, kernels=True)}
    assert kernels == {"sm80_xmma_fprop_implicit_gemm": pytest.approx(0.1), "triton_poi_fused_relu_0": pytest.approx(0.025),
                       "vectorized_elementwise_kernel": pytest.approx(0.015)}
    cpu = {o.op_type: o.time_ms for o in torch_ops(TORCH_CUDA_AVERAGES[:3], runs=2, cuda=False)}
    assert cpu == {"aten::cudnn_convolution": pytest.approx(0.02), "aten::relu": pytest.approx(0.005),
                   "aten::view": pytest.approx(0.002)}


def test_ort_profile_uses_the_timed_runs_io_binding():
    backend = create_backend("ort-cpu", BackendOptions(threads=1, extra={"exporter": "torchscript"}))
    profile = backend.profile_ops(tiny_workload(), 3)
    assert profile.clock == "cpu" and "IO binding as in the timed runs" in profile.method


def test_placement_check_reads_the_first_run_only(monkeypatch):
    """With ``check_placement`` (ort-cuda's setting) on the CPU provider: every node's placement is read from the
    first run's profile and recorded; the provider options are read back (the CPU provider has none)."""
    backend = create_backend("ort-cpu", BackendOptions(threads=1, extra={"exporter": "torchscript"}))
    monkeypatch.setattr(type(backend), "check_placement", True)
    with backend.prepare(tiny_workload()) as run:
        placement = run.settings["node_placement"]
        assert list(placement) == ["CPUExecutionProvider"] and placement["CPUExecutionProvider"] >= 5
        assert run.settings["provider_options"] == {}
        run.timer(3)


def test_ort_cuda_placement_fallback_is_an_error(tmp_path):
    import json

    from latprof.backends.onnxruntime_backends import OrtCUDA

    class Session:  # what end_profiling leaves behind after the first run
        def __init__(self, events):
            self.events = events

        def end_profiling(self):
            path = tmp_path / "trace.json"
            path.write_text(json.dumps(self.events))
            return str(path)

    backend = OrtCUDA(BackendOptions())  # constructed directly: no GPU here
    assert backend.placement(Session(cuda_trace())) == {"CUDAExecutionProvider": 3, "CPUExecutionProvider": 1}
    with pytest.raises(BackendError, match=r"^ort-cuda: 1 of 5 nodes did not run on CUDAExecutionProvider"):
        backend.placement(Session(cuda_trace(fallback=True)))


# ------------------------------------------------------------------ roofline peaks
def test_grow_batch_reaches_the_minimum_within_memory():
    seen = []

    def time_at(batch):
        seen.append(batch)
        return 0.0002 * batch, {"batch": batch}

    batch, seconds, extra, note = grow_batch(time_at, lambda b: 1000 * b, budget_bytes=1e9)
    assert seen == [1, 8] and batch == 8 and seconds == pytest.approx(0.0016) and note is None
    assert extra == {"batch": 8}
    seen.clear()
    batch, seconds, _, note = grow_batch(time_at, lambda b: 1000 * b, budget_bytes=3000)
    assert seen == [1, 3] and batch == 3 and "free memory allows no larger kernel" in note
    assert grow_batch(time_at, lambda b: 1, None, min_s=0.0)[0] == 1  # CPU: no growth


def test_gemm_peak_precision_label():
    assert compute_precision({"tf32": "on", "tf32_conv": "tf32"}) == "tf32"
    assert compute_precision({"tf32": "off", "tf32_conv": "ieee"}) == "fp32" and compute_precision({}) == "fp32"
