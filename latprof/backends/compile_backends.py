"""``torch.compile`` (inductor) backends, CPU and CUDA: does graph compilation erase the guidelines' penalties?

Compile time is measured on its own (the first call, which compiles and runs once) and stored in the settings as
``compile_time_s``; it never enters a latency sample. The compiled output is checked against PyTorch eager.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import torch

from latprof.backends.base import Backend, BackendError, PreparedRun, check_output, pinning
from latprof.backends.registry import register_backend
from latprof.backends.torch_backends import (
    CUDNN_BENCHMARK,
    TorchCUDA,
    _require_module,
    cuda_event_timer,
    cuda_settings,
    on_cuda,
    thread_counts,
    torch_threads,
)
from latprof.errors import one_line
from latprof.measure.protocol import wall_clock_timer
from latprof.workloads.registry import Workload, first_tensor

COMPILE_MODE = "default"


def _inductor_settings() -> dict[str, Any]:
    from torch._inductor import config

    return {
        "compiler": "torch.compile",
        "compile_backend": "inductor",
        "compile_mode": COMPILE_MODE,
        "compile_dynamic": False,
        "inductor_freezing": bool(config.freezing),
        "inductor_cpp_wrapper": bool(config.cpp_wrapper),
        "torch_version": torch.__version__,
    }


def compile_module(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], name: str) -> tuple[Any, Any, float]:
    """Compile and run once; returns (compiled, first output, seconds of that first call = compile + one run)."""
    torch._dynamo.reset()  # a fresh cache per workload: no recompile limit, compile time not shared
    compiled = torch.compile(module, backend="inductor", mode=COMPILE_MODE, dynamic=False)
    try:
        with torch.inference_mode():
            t0 = time.perf_counter()
            out = first_tensor(compiled(*inputs)).detach()
            if out.is_cuda:
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - t0
    except Exception as exc:  # dynamo/inductor/compiler failure → error row
        raise BackendError(f"{name}: torch.compile failed: {one_line(exc)[:300]}") from None
    return compiled, out, elapsed


@register_backend
class TorchCompileCPU(Backend):
    """Inductor on the CPU (C++/OpenMP kernels, needs a C++ compiler); wall-clock timing like ``torch-cpu``."""

    name = "torch-compile"
    default_in_sweep = False  # inductor compiles every variant: minutes, not seconds
    description = "torch.compile (inductor), CPU; compile time reported separately (compile_time_s)"
    device_class = "cpu"
    default_batch = 1

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        import shutil

        if not any(shutil.which(c) for c in ("g++", "c++", "clang++", "gcc")):
            return False, "no C++ compiler on PATH (inductor's CPU backend needs one)"
        return True, ""

    def prepare(self, workload: Workload) -> PreparedRun:
        module = _require_module(workload, self.name).eval()
        intra, inter = thread_counts(self)
        with contextlib.ExitStack() as stack:
            settings: dict[str, Any] = {"device": "cpu", **stack.enter_context(torch_threads(intra, inter)),
                                        **_inductor_settings()}
            reference = workload.reference_output()
            inputs = workload.make_inputs()
            compiled, output, compile_s = compile_module(module, inputs, self.name)
            settings["compile_time_s"] = compile_s
            settings["compile_time_note"] = "first call: compilation plus one run; never part of the latency samples"
            settings["timing"] = "wall clock (time.perf_counter), GC paused"
            err = check_output(self.name, output, reference)

            def call() -> Any:
                with torch.inference_mode():
                    return compiled(*inputs)

            settings["pinned_cores"] = stack.enter_context(pinning(self.options.pin, intra))
            return PreparedRun(wall_clock_timer(call), output, settings, err, stack=stack.pop_all())

    def profile_ops(self, workload: Workload, runs: int) -> Any:
        """torch.profiler over the compiled module: extern kernels by aten name, fused C++ kernels as one region."""
        from latprof.backends.op_profiling import profile_torch

        module = _require_module(workload, self.name).eval()
        with torch_threads(*thread_counts(self)):
            inputs = workload.make_inputs()
            compiled, _, _ = compile_module(module, inputs, self.name)
            return profile_torch(lambda: compiled(*inputs), runs)


@register_backend
class TorchCompileCUDA(Backend):
    """Inductor on CUDA (Triton kernels); CUDA-event timing and cuDNN settings as ``torch-cuda``."""

    name = "torch-compile-cuda"
    default_in_sweep = False  # inductor compiles every variant: minutes, not seconds
    description = "torch.compile (inductor), CUDA, CUDA-event timing; compile time reported separately"
    device_class = "cuda"
    default_batch = 8

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        ok, why = TorchCUDA.availability()
        if not ok:
            return ok, why
        try:
            import triton  # noqa: F401
        except ImportError:
            return False, "triton is not installed (inductor's CUDA backend needs it)"
        return True, ""

    def prepare(self, workload: Workload) -> PreparedRun:
        reference = workload.reference_output()
        with contextlib.ExitStack() as stack:
            module = on_cuda(stack, _require_module(workload, self.name).eval())
            stack.enter_context(CUDNN_BENCHMARK.held(True))
            inputs = workload.make_inputs(device="cuda")
            compiled, output, compile_s = compile_module(module, inputs, self.name)
            settings: dict[str, Any] = {
                **cuda_settings(), **_inductor_settings(),
                "compile_time_s": compile_s,
                "compile_time_note": "first call: compilation plus one run; never part of the latency samples",
                "timing": "CUDA events around each batch of calls, then synchronize",
            }
            err = check_output(self.name, output.float().cpu(), reference)
            host_wall: list[float] = []
            return PreparedRun(cuda_event_timer(lambda: compiled(*inputs), host_wall), output.cpu(), settings, err,
                               host_wall_per_call_s=host_wall, stack=stack.pop_all())

    def profile_ops(self, workload: Workload, runs: int) -> Any:
        from latprof.backends.op_profiling import profile_torch

        with contextlib.ExitStack() as stack:
            module = on_cuda(stack, _require_module(workload, self.name).eval())
            stack.enter_context(CUDNN_BENCHMARK.held(True))
            inputs = workload.make_inputs(device="cuda")
            compiled, _, _ = compile_module(module, inputs, self.name)
            return profile_torch(lambda: compiled(*inputs), runs, cuda=True)
