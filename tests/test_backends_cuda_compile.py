"""CUDA backends report unavailability cleanly (and run where a GPU exists); torch-compile keeps compile time apart."""

from __future__ import annotations

import json

import pytest
import torch

from latprof.backends import BackendError, BackendOptions, backend_names, create_backend, describe_backends
from latprof.errors import LatprofError
from tests.backend_models import tiny_workload

CUDA_BACKENDS = ("torch-cuda", "torch-compile-cuda", "ort-cuda")
ALL = ("torch-cpu", "torch-cuda", "torch-compile", "torch-compile-cuda", "ort-cpu", "ort-mobile", "ort-cuda")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def test_every_backend_is_listed_with_availability():
    listed = {d["name"]: d for d in describe_backends()}
    assert set(ALL) <= set(backend_names()) and set(ALL) <= set(listed)
    for d in listed.values():
        assert isinstance(d["available"], bool)
        assert (d["reason"] is None) == d["available"]
    assert listed["ort-mobile"]["default_batch"] == 1 and listed["ort-mobile"]["device_class"] == "mobile"
    assert listed["torch-cuda"]["default_batch"] == 8


def test_list_backends_json(capsys):
    from latprof.cli import main

    assert main(["list", "backends", "--json"]) == 0
    names = [d["name"] for d in json.loads(capsys.readouterr().out)]
    assert set(ALL) <= set(names)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
@pytest.mark.parametrize("name", ["torch-cuda", "torch-compile-cuda"])
def test_cuda_unavailable_is_one_line_error(name):
    with pytest.raises(LatprofError, match=r"not available here .*; available: .*torch-cpu"):
        create_backend(name, BackendOptions())


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_cli_cuda_request_exits_2_with_one_line(capsys, tmp_path):
    from latprof.cli import main

    rc = main(["profile", "--model", "conv_bn_relu", "--backend", "torch-cuda", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and "torch-cuda" in err and "available: torch-cpu" in err


def test_ort_cuda_availability_matches_providers():
    import onnxruntime

    ok, why = describe_backends_by_name()["ort-cuda"]
    assert ok == ("CUDAExecutionProvider" in onnxruntime.get_available_providers())
    assert ok or "CUDAExecutionProvider" in why


def describe_backends_by_name() -> dict[str, tuple[bool, str | None]]:
    return {d["name"]: (d["available"], d["reason"]) for d in describe_backends()}


@needs_cuda
def test_torch_cuda_runs_with_events_and_fingerprint():
    benchmark_before = torch.backends.cudnn.benchmark
    workload = tiny_workload(batch=8)
    run = create_backend("torch-cuda", BackendOptions()).prepare(workload)
    try:
        s = run.settings
        assert s["cudnn_benchmark"] is True and torch.backends.cudnn.benchmark is True
        assert s["tf32"] == "off" and s["tf32_conv"] == "ieee" and s["cuda_version"]
        assert s["timing_semantics"] == "per-call-sync"
        assert next(workload.module.parameters()).is_cuda
        assert run.timer(5) > 0 and len(run.device_event_per_call_s) == 1 and run.device_event_per_call_s[0] > 0
    finally:
        run.close()
    assert torch.backends.cudnn.benchmark is benchmark_before  # global state restored on close
    assert not next(workload.module.parameters()).is_cuda
    from latprof.measure.environment import collect

    assert "samples" in run.settings["gpu_under_load"] or "note" in run.settings["gpu_under_load"]
    gpus = collect().as_dict()["hardware"]["gpus"]
    assert gpus and gpus[0]["name"] and "clock_sm_mhz" in gpus[0] and "driver" in gpus[0] and gpus[0]["match"]


@needs_cuda
def test_ort_cuda_runs_on_the_gpu():
    if not describe_backends_by_name()["ort-cuda"][0]:
        pytest.skip("onnxruntime-gpu not installed")
    run = create_backend("ort-cuda", BackendOptions(extra={"exporter": "torchscript"})).prepare(tiny_workload(8))
    run.close()
    assert run.settings["providers"][0] == "CUDAExecutionProvider"
    assert run.settings["tf32"] == "off" and run.settings["provider_options"]["use_tf32"] == "0"
    assert run.settings["node_placement"].get("CUDAExecutionProvider", 0) > 0


# ------------------------------------------------------------------ torch-compile bookkeeping
def test_compile_time_kept_out_of_latency(monkeypatch):
    """With torch.compile stubbed by eager, the compile pass is timed once and recorded, and the timer still runs."""
    monkeypatch.setattr(torch, "compile", lambda module, **kw: module)
    run = create_backend("torch-compile", BackendOptions(threads=1)).prepare(tiny_workload())
    try:
        s = run.settings
        assert s["compile_time_s"] > 0 and "never part of the latency" in s["compile_time_note"]
        assert s["compile_backend"] == "inductor" and s["intra_op_threads"] == torch.get_num_threads() == 1
        assert run.max_abs_error == 0.0
        assert run.timer(2) > 0
    finally:
        run.close()


def test_compiled_output_mismatch_is_backend_error(monkeypatch):
    class Wrong(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x) * 2 + 1

    monkeypatch.setattr(torch, "compile", lambda module, **kw: Wrong(module))
    before = torch.get_num_threads()
    with pytest.raises(BackendError, match="differs from PyTorch eager"):
        create_backend("torch-compile", BackendOptions(threads=1)).prepare(tiny_workload())
    assert torch.get_num_threads() == before  # a failed prepare leaves nothing changed


def test_compile_failure_is_backend_error(monkeypatch):
    def broken(module, **kw):
        def call(*a):
            raise RuntimeError("inductor exploded")
        return call

    monkeypatch.setattr(torch, "compile", broken)
    with pytest.raises(BackendError, match="torch.compile failed: inductor exploded"):
        create_backend("torch-compile", BackendOptions(threads=1)).prepare(tiny_workload())


@pytest.mark.slow  # a real inductor compile (C++ toolchain): CI runs it; deselect with -m "not slow"
def test_real_inductor_compile():
    run = create_backend("torch-compile", BackendOptions(threads=1)).prepare(tiny_workload())
    run.close()
    assert run.settings["compile_time_s"] > 0 and run.max_abs_error is not None


def test_torch_cpu_threads_in_force_then_restored():
    before = torch.get_num_threads()
    with create_backend("torch-cpu", BackendOptions(threads=1)).prepare(tiny_workload()) as run:
        assert run.settings["intra_op_threads"] == torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
