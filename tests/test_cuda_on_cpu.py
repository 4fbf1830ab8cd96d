"""The CUDA backends' logic on a CPU: the real ``prepare`` code with a fake device (``cuda_runtime.CudaRuntime``'s
seam), so timer semantics, cleanup after a failed prepare, TF32 switches and compile bookkeeping are checked on a
machine without a GPU. Runs that need a real GPU are in test_backends_cuda_compile.py and skip here."""

from __future__ import annotations

import contextlib
import gc

import pytest
import torch
from torch import nn

from latprof.backends import BackendError, BackendOptions
from latprof.backends.base import GPU_TIMING, PreparedRun, default_threads
from latprof.backends.cuda_runtime import cuda_timer, tf32_held, tf32_state
from latprof.workloads.registry import Workload
from tests.backend_models import tiny_workload


class FakeEvent:
    """A CUDA event on a fake clock: ``record`` stamps the time, ``elapsed_time`` gives milliseconds."""

    def __init__(self, rt: FakeRuntime) -> None:
        self.rt, self.t = rt, None

    def record(self) -> None:
        self.rt.log.append("record")
        self.t = self.rt.now

    def synchronize(self) -> None:
        pass

    def elapsed_time(self, other: FakeEvent) -> float:
        return (other.t - self.t) * 1e3


class FakeRuntime:
    """The device seam on the CPU: logs every synchronise, counts cache frees, fixed settings, no sampler."""

    device = "cpu"

    def __init__(self) -> None:
        self.log: list[str] = []
        self.now = 0.0
        self.freed = 0
        self.gc_during_sync: list[bool] = []

    def synchronize(self) -> None:
        self.log.append("sync")
        self.gc_during_sync.append(gc.isenabled())
        self.now += 0.004  # the device finishes the call's kernels

    def event(self) -> FakeEvent:
        return FakeEvent(self)

    def empty_cache(self) -> None:
        self.freed += 1

    def settings(self) -> dict:
        return {"device": "fake GPU", "gpu_uuid": "GPU-fake", "cudnn_benchmark": torch.backends.cudnn.benchmark}

    def load_sampling(self, settings: dict) -> contextlib.AbstractContextManager[None]:
        settings["gpu_under_load"] = {"note": "fake"}
        return contextlib.nullcontext()


def torch_cuda(rt: FakeRuntime, **options) -> object:
    from latprof.backends.torch_backends import TorchCUDA

    backend = TorchCUDA(BackendOptions(**options))  # constructed directly: availability says no GPU here
    backend.runtime = rt
    return backend


# ------------------------------------------------------------------ timer semantics
def test_cuda_timer_synchronises_after_every_call_with_gc_paused():
    rt = FakeRuntime()
    clock_t = iter(range(100))
    calls = []

    def call():
        calls.append(gc.isenabled())
        rt.log.append("call")

    events: list[float] = []
    timer = cuda_timer(call, rt, events, clock=lambda: float(next(clock_t)))
    assert gc.isenabled()
    assert timer(3) == 1.0  # host clock read once before and once after the n calls
    assert rt.log == ["record", "call", "sync", "call", "sync", "call", "sync", "record"]
    assert calls == [False] * 3 and rt.gc_during_sync == [False] * 3 and gc.isenabled()
    assert events == [pytest.approx(3 * 0.004 / 3)]  # device time of the batch, per call


def test_timing_fields_keep_the_timed_samples_only():
    run = PreparedRun(lambda n: 0.0, None, {}, device_event_per_call_s=[9.0, 9.0, 9.0, 0.001, 0.003, 0.002])
    assert run.timing_fields(3) == {"cuda_event_median_ms": pytest.approx(2.0)}
    assert run.timing_fields(0) == {} and PreparedRun(lambda n: 0.0, None, {}).timing_fields(5) == {}


# ------------------------------------------------------------------ torch-cuda prepare on the fake device
def test_torch_cuda_prepare_records_semantics_tf32_and_restores_switches():
    rt = FakeRuntime()
    bench_before, tf32_before = torch.backends.cudnn.benchmark, tf32_state()
    run = torch_cuda(rt, tf32="off").prepare(tiny_workload(batch=2))
    try:
        s = run.settings
        assert s["timing_semantics"] == GPU_TIMING == "per-call-sync" and "synchronisation" in s["timing"]
        assert s["tf32"] == "off" and s["tf32_conv"] == s["tf32_matmul"] == "ieee" and s["output_tolerance"] == "fp32"
        assert torch.backends.cudnn.benchmark is True and s["cudnn_benchmark"] is True
        from latprof.measure.protocol import MeasureConfig, measure

        m = measure(run.timer, MeasureConfig(max_time_s=0.2, min_time_s=0.0, min_samples=3, warmup_max_s=0.02,
                                             min_sample_time_s=0.0005))
        assert rt.log.count("sync") >= sum(1 for _ in m.samples_ms)  # at least one synchronised call per sample
        events = run.device_event_per_call_s
        assert len(events) > len(m.samples_ms)  # calibration and warm-up batches recorded too...
        tail = sorted(events[-len(m.samples_ms):])
        assert run.timing_fields(len(m.samples_ms))["cuda_event_median_ms"] == pytest.approx(
            (tail[(len(tail) - 1) // 2] + tail[len(tail) // 2]) / 2 * 1e3)  # ...but only the samples' enter the row
    finally:
        run.close()
    assert torch.backends.cudnn.benchmark is bench_before and tf32_state() == tf32_before
    assert run.settings["gpu_under_load"] == {"note": "fake"}


def test_tf32_on_switches_both_and_loosens_the_check():
    before = tf32_state()
    with torch_cuda(FakeRuntime(), tf32="on").prepare(tiny_workload()) as run:
        assert run.settings["tf32"] == "on" and run.settings["tf32_conv"] == run.settings["tf32_matmul"] == "tf32"
        assert run.settings["output_tolerance"] == "tf32" and run.settings["tf32_api"] == "fp32_precision"
        assert torch.backends.cudnn.conv.fp32_precision == "tf32"
    assert tf32_state() == before


def test_tf32_held_restores_and_rejects_unknown_choices():
    before = (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision)
    with tf32_held("on") as on, tf32_held("off") as off:  # overlapping holds: the newest is in force
        assert on["tf32"] == "on" and off["tf32"] == "off"
        assert torch.backends.cuda.matmul.fp32_precision == "ieee"
    assert (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision) == before
    with pytest.raises(BackendError, match="--tf32 'maybe' is not one of on, off"):
        with tf32_held("maybe"):
            pass


class MovesBadly(nn.Module):
    """Logs every ``.to``; once "on the device" it computes something else, or runs out of memory."""

    def __init__(self, failure: str) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.failure, self.on_device, self.moves = failure, False, []

    def to(self, device):  # noqa: D102  (the move the backend makes, observed)
        self.moves.append(str(device))
        self.on_device = str(device) != "cpu"
        return self

    def forward(self, x):
        if self.on_device and self.failure == "oom":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        if self.on_device and self.failure == "runtime":
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return self.conv(x) + (1.0 if self.on_device else 0.0)


class OnFakeDevice(FakeRuntime):
    device = "fake-gpu"  # a name only MovesBadly.to accepts; inputs stay on the CPU

    def __init__(self) -> None:
        super().__init__()


@pytest.mark.parametrize(("failure", "message"), [
    ("mismatch", "differs from PyTorch eager"),
    ("oom", "CUDA out of memory while preparing"),
    ("runtime", "prepare failed: RuntimeError: CUDA error: an illegal memory access"),
])
def test_failed_prepare_puts_everything_back(monkeypatch, failure, message):
    rt = OnFakeDevice()
    monkeypatch.setattr(Workload, "make_inputs", lambda self, seed=0, device="cpu": (torch.randn(self.input_shape),))
    module = MovesBadly(failure).eval()
    workload = Workload("moves_badly", module, (2, 3, 8, 8))
    bench_before, tf32_before = torch.backends.cudnn.benchmark, tf32_state()
    with pytest.raises(BackendError, match=message):
        torch_cuda(rt).prepare(workload)
    assert module.moves == ["fake-gpu", "cpu"] and not module.on_device  # back on the CPU for the next block
    assert rt.freed == 1  # the allocator's cache freed for the next workload
    assert torch.backends.cudnn.benchmark is bench_before and tf32_state() == tf32_before


def test_profile_and_per_block_turn_any_prepare_failure_into_an_error_row(monkeypatch):
    from latprof import per_block, profile

    class Exploding:
        name = "torch-cpu"

        def prepare(self, workload):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(profile, "create_backend", lambda name, options: Exploding())
    payload = {"model": "conv_bn_relu", "kwargs": {}, "input_shape": [1, 32, 16, 16], "backend": "torch-cpu",
               "threads": 1, "options": {"threads": 1, "batch": 1}, "config": {"max_time_s": 0.1}}
    [row] = profile.measure_profile_unit(payload)
    assert row["status"] == "error" and row["error"].startswith("OutOfMemoryError: CUDA out of memory")
    from latprof.measure.protocol import MeasureConfig

    block = per_block._measure_one(tiny_workload(), {"workload": "tiny", "variant": "stem", "backend": "torch-cpu"},
                                   "torch-cpu", BackendOptions(threads=1), MeasureConfig(max_time_s=0.1))
    assert block["status"] == "error" and block["error"].startswith("OutOfMemoryError: CUDA out of memory")
    assert block["variant"] == "stem" and block["mult_adds"] > 0  # the block's row and counts are kept


# ------------------------------------------------------------------ torch-compile-cuda: caches kept per variant
def test_compile_keeps_code_per_variant_and_holds_recompile_limits(monkeypatch):
    import torch._dynamo
    import torch._dynamo.config as dynamo_config

    from latprof.backends.compile_backends import RECOMPILE_LIMIT, TorchCompileCUDA

    monkeypatch.setattr(torch, "compile", lambda module, **kw: module)
    monkeypatch.setattr(torch._dynamo, "reset", lambda: pytest.fail("dynamo reset would drop other variants' code"))
    limit_before = dynamo_config.recompile_limit
    runs = []
    for batch in (1, 2):  # two variants prepared before either is measured, as in a sweep
        backend = TorchCompileCUDA(BackendOptions())
        backend.runtime = FakeRuntime()
        runs.append(backend.prepare(tiny_workload(batch)))
    assert dynamo_config.recompile_limit == RECOMPILE_LIMIT and dynamo_config.fail_on_recompile_limit_hit is True
    for run in runs:
        s = run.settings
        assert s["timing_semantics"] == GPU_TIMING and s["compile_time_s"] > 0
        assert set(s["compile"]) == {"frames_compiled", "graphs", "fx_cache_hits", "fx_cache_misses"}
        assert "per variant" in s["compile_cache_scope"] and s["compile_cache"]
        run.timer(2)
    runs[0].close()
    assert dynamo_config.recompile_limit == RECOMPILE_LIMIT  # still held by the second run
    runs[1].close()
    assert dynamo_config.recompile_limit == limit_before
    assert [r.settings["recompiles_after_prepare"] for r in runs] == [0, 0]


# ------------------------------------------------------------------ ort-cuda settings that need no GPU
def test_ort_cuda_asks_for_one_thread_tf32_and_a_synchronised_run():
    from latprof.backends.onnxruntime_backends import OrtCUDA, provider_settings

    assert default_threads(OrtCUDA) == 1
    on, off = OrtCUDA(BackendOptions(tf32="on")), OrtCUDA(BackendOptions())
    assert on.provider_list()[0] == ("CUDAExecutionProvider", {
        "device_id": "0", "cudnn_conv_algo_search": "EXHAUSTIVE", "do_copy_in_default_stream": "1", "use_tf32": "1"})
    assert off.provider_list()[0][1]["use_tf32"] == "0" and off.provider_list()[1] == "CPUExecutionProvider"
    assert off.run_options().get_run_config_entry("disable_synchronize_execution_providers") == "0"
    assert on.output_tolerance() is not None and off.output_tolerance() is None

    class Session:  # what get_provider_options returns on a GPU build: strings
        def get_provider_options(self):
            return {"CUDAExecutionProvider": {"device_id": "0", "use_tf32": "0", "cudnn_conv_algo_search": "EXHAUSTIVE",
                                              "do_copy_in_default_stream": "1", "gpu_external_alloc": "0"}}

    s = provider_settings(Session(), "CUDAExecutionProvider")
    assert s["tf32"] == "off" and s["tf32_conv"] == "ieee"
    assert s["provider_options"] == {"device_id": "0", "use_tf32": "0", "cudnn_conv_algo_search": "EXHAUSTIVE",
                                     "do_copy_in_default_stream": "1"}


def test_tf32_tolerance_and_the_flag_reach_every_worker():
    from latprof.backends.base import TF32_TOLERANCE, check_output
    from latprof.per_block import blocks_plan
    from latprof.profile import ProfileRequest, profile_plan

    ref = torch.ones(4) * 10.0
    off_by = ref * (1 + 5e-3)  # a TF32-sized error: too much for fp32, within the TF32 tolerance
    with pytest.raises(BackendError, match="differs from PyTorch eager"):
        check_output("x", off_by, ref)
    assert check_output("x", off_by, ref, TF32_TOLERANCE) == pytest.approx(0.05, rel=1e-5)  # float32 rounding
    with pytest.raises(BackendError):
        check_output("x", ref * 1.5, ref, TF32_TOLERANCE)  # a wrong result still fails
    request = ProfileRequest(models=["mobilenet_v1_x0_25"], backends=["torch-cpu"], tf32="on")
    assert profile_plan(request).units[0].payload["options"]["tf32"] == "on"
    assert blocks_plan(request).units[0].payload["tf32"] == "on"


def test_tf32_through_the_legacy_flags_where_torch_has_no_fp32_precision(monkeypatch):
    from latprof.backends import cuda_runtime

    monkeypatch.setattr(cuda_runtime, "_has_precision_api", lambda: False)
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    with tf32_held("on") as on:
        assert on["tf32"] == "on" and on["tf32_api"] == "allow_tf32 (legacy)"
        assert torch.backends.cuda.matmul.allow_tf32 is True and torch.backends.cudnn.allow_tf32 is True
        with tf32_held("off") as off:
            assert off["tf32_conv"] == off["tf32_matmul"] == "ieee" and torch.backends.cudnn.allow_tf32 is False
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


def test_torch_cuda_fp16_runs_half_checks_against_fp32_and_puts_the_module_back():
    w = tiny_workload()
    with torch_cuda(FakeRuntime(), precision="fp16").prepare(w) as run:
        assert run.settings["precision"] == "fp16" and run.settings["output_tolerance"] == "fp16"
        assert run.output.dtype == torch.float16
        assert run.check["output_check"].startswith("fp16: |out - ref| <= ") and run.check["output_sqnr_db"] > 30
        assert next(w.module.parameters()).dtype == torch.float16
    assert next(w.module.parameters()).dtype == torch.float32  # float32 again, back on the CPU
