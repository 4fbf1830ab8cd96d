"""``torch.compile`` (inductor) backends, CPU and CUDA: does graph compilation erase the guidelines' penalties?

Compile time is measured on its own (the first call, which compiles and runs once) and stored in the settings as
``compile_time_s``; it never enters a latency sample. The compiled output is checked against PyTorch eager.

Compiled code is kept per variant: a sweep prepares every variant before measuring any, so resetting dynamo at each
prepare (as an earlier version did) threw away the earlier variants' code, which then recompiled inside calibration,
and ``compile_time_s`` described code that was discarded. Now nothing is reset; while runs are open dynamo's
recompile limit is raised (``RECOMPILE_LIMIT``) and hitting it is an error, not a silent fall-back to eager. Each
run records how many frames it compiled, whether inductor's on-disk FX graph cache served them (a rerun's
``compile_time_s`` is then a cache load), and whether anything recompiled while it was timed.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import torch

from latprof.backends.base import (
    GPU_TIMING, TF32_TOLERANCE, Backend, BackendError, PreparedRun, SharedSetting, check_output, pinning,
)
from latprof.backends.registry import register_backend
from latprof.backends.cuda_runtime import (
    CUDNN_BENCHMARK,
    TIMING_TEXT,
    CudaRuntime,
    cuda_timer,
    device_failures,
    on_device,
    tf32_held,
)
from latprof.backends.torch_backends import TorchCUDA, _require_module, thread_counts, torch_threads
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


# Recompiles allowed per code object while compiled runs are open: a network's blocks of one class at many shapes
# (per-block) or a sweep's variants each add cache entries to the same forward; dynamo's default (8) would fall back
# to eager silently past it.
RECOMPILE_LIMIT = 256


def _dynamo_config() -> Any:
    import torch._dynamo.config as config

    return config


# Each setting by its current name, then its name before torch 2.6 (cache_size_limit...).
_LIMIT_NAMES = (("recompile_limit", "cache_size_limit"), ("accumulated_recompile_limit", "accumulated_cache_size_limit"),
                ("fail_on_recompile_limit_hit", "fail_on_cache_limit_hit"))


def _limit_keys() -> tuple[str, ...]:
    cfg = _dynamo_config()
    return tuple(next(n for n in names if hasattr(cfg, n)) for names in _LIMIT_NAMES
                 if any(hasattr(cfg, n) for n in names))


def _read_limits() -> tuple[Any, ...]:
    return tuple(getattr(_dynamo_config(), k) for k in _limit_keys())


def _write_limits(values: tuple[Any, ...]) -> None:
    for k, v in zip(_limit_keys(), values):
        setattr(_dynamo_config(), k, v)


DYNAMO_LIMITS: SharedSetting[tuple[Any, ...]] = SharedSetting(_read_limits, _write_limits)


def compile_limits_held() -> Any:
    """Raise the recompile limits and make hitting them an error, for as long as a compiled run is open."""
    limit, accumulated, fail = RECOMPILE_LIMIT, max(RECOMPILE_LIMIT, 1024), True
    wanted = {"recompile_limit": limit, "cache_size_limit": limit, "accumulated_recompile_limit": accumulated,
              "accumulated_cache_size_limit": accumulated, "fail_on_recompile_limit_hit": fail,
              "fail_on_cache_limit_hit": fail}
    return DYNAMO_LIMITS.held(tuple(wanted[k] for k in _limit_keys()))


def _compile_counters() -> dict[str, int]:
    from torch._dynamo.utils import counters

    return {"frames_compiled": int(counters["frames"]["ok"]), "graphs": int(counters["stats"]["unique_graphs"]),
            "fx_cache_hits": int(counters["inductor"]["fxgraph_cache_hit"]),
            "fx_cache_misses": int(counters["inductor"]["fxgraph_cache_miss"])}


def compile_module(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], name: str,
                   synchronize: Any = None) -> tuple[Any, Any, float, dict[str, Any]]:
    """Compile and run once; returns (compiled, first output, seconds of that first call = compile + one run, what
    the compile did: frames compiled, FX graph cache hits / misses). Call with ``compile_limits_held`` open."""
    before = _compile_counters()
    compiled = torch.compile(module, backend="inductor", mode=COMPILE_MODE, dynamic=False)
    try:
        with torch.inference_mode():
            t0 = time.perf_counter()
            out = first_tensor(compiled(*inputs)).detach()
            if synchronize is not None:
                synchronize()
            elapsed = time.perf_counter() - t0
    except Exception as exc:  # dynamo/inductor/compiler failure (also the recompile limit) → error row
        raise BackendError(f"{name}: torch.compile failed: {one_line(exc)[:300]}") from None
    after = _compile_counters()
    done = {k: after[k] - before[k] for k in after}
    cache = ("FX graph cache hit: compile_time_s is mostly a cache load" if done["fx_cache_hits"] and not done["fx_cache_misses"]
             else "compiled now (FX graph cache miss)" if done["fx_cache_misses"]
             else "no new graph: code compiled for an earlier workload of this process was reused"
             if not done["frames_compiled"] else "compiled now")
    return compiled, out, elapsed, {"compile": done, "compile_cache": cache,
                                    "compile_cache_scope": "per variant: compiled code kept while its run is open "
                                                           "(no dynamo reset)"}


def _recompiles_after(settings: dict[str, Any]) -> Any:
    """On close: frames dynamo compiled after prepare (during calibration, warm-up or samples); should be 0."""
    start = _compile_counters()["frames_compiled"]

    def record() -> None:
        settings["recompiles_after_prepare"] = _compile_counters()["frames_compiled"] - start

    return record


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
            stack.enter_context(compile_limits_held())
            compiled, output, compile_s, info = compile_module(module, inputs, self.name)
            settings.update(info)
            settings["compile_time_s"] = compile_s
            settings["compile_time_note"] = "first call: compilation plus one run; never part of the latency samples"
            settings["timing"] = "wall clock (time.perf_counter), GC paused"
            err = check_output(self.name, output, reference)

            def call() -> Any:
                with torch.inference_mode():
                    return compiled(*inputs)

            settings["pinned_cores"] = stack.enter_context(pinning(self.options.pin, intra))
            stack.callback(_recompiles_after(settings))
            return PreparedRun(wall_clock_timer(call), output, settings, err, stack=stack.pop_all())

    def profile_ops(self, workload: Workload, runs: int) -> Any:
        """torch.profiler over the compiled module: extern kernels by aten name, fused C++ kernels as one region."""
        from latprof.backends.op_profiling import profile_torch

        module = _require_module(workload, self.name).eval()
        with torch_threads(*thread_counts(self)), compile_limits_held():
            inputs = workload.make_inputs()
            compiled, _, _, _ = compile_module(module, inputs, self.name)
            return profile_torch(lambda: compiled(*inputs), runs)


@register_backend
class TorchCompileCUDA(Backend):
    """Inductor on CUDA (Triton kernels); timing, TF32 and cuDNN settings as ``torch-cuda``."""

    name = "torch-compile-cuda"
    default_in_sweep = False  # inductor compiles every variant: minutes, not seconds
    description = "torch.compile (inductor), CUDA, per-call latency (synchronised); compile time reported separately"
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

    runtime: Any = CudaRuntime()  # the device seam (latprof.backends.cuda_runtime); tests use a CPU fake

    def prepare(self, workload: Workload) -> PreparedRun:
        rt = self.runtime
        reference = workload.reference_output()  # on the CPU, before the module moves
        with device_failures(self.name, rt), contextlib.ExitStack() as stack:
            module = on_device(stack, _require_module(workload, self.name).eval(), rt.device)
            stack.enter_context(CUDNN_BENCHMARK.held(True))
            tf32 = stack.enter_context(tf32_held(self.options.tf32))
            stack.enter_context(compile_limits_held())
            inputs = workload.make_inputs(device=rt.device)
            compiled, output, compile_s, info = compile_module(module, inputs, self.name, rt.synchronize)
            settings: dict[str, Any] = {
                **rt.settings(), **_inductor_settings(), **tf32, **info,
                "compile_time_s": compile_s,
                "compile_time_note": "first call: compilation plus one run; never part of the latency samples",
                "timing": TIMING_TEXT, "timing_semantics": GPU_TIMING,
                "timing_beside": "cuda_event_median_ms: CUDA events around each batch",
            }
            tolerance = TF32_TOLERANCE if tf32["tf32"] == "on" else None
            settings["output_tolerance"] = "tf32" if tolerance else "fp32"
            err = check_output(self.name, output.float().cpu(), reference, tolerance)
            events: list[float] = []
            timer = cuda_timer(lambda: compiled(*inputs), rt, events)
            stack.enter_context(rt.load_sampling(settings))
            stack.callback(_recompiles_after(settings))
            return PreparedRun(timer, output.cpu(), settings, err, device_event_per_call_s=events,
                               stack=stack.pop_all())

    def profile_ops(self, workload: Workload, runs: int) -> Any:
        from latprof.backends.op_profiling import profile_torch

        rt = self.runtime
        with device_failures(self.name, rt), contextlib.ExitStack() as stack:
            module = on_device(stack, _require_module(workload, self.name).eval(), rt.device)
            stack.enter_context(CUDNN_BENCHMARK.held(True))
            stack.enter_context(tf32_held(self.options.tf32))
            stack.enter_context(compile_limits_held())
            inputs = workload.make_inputs(device=rt.device)
            compiled, _, _, _ = compile_module(module, inputs, self.name, rt.synchronize)
            return profile_torch(lambda: compiled(*inputs), runs, cuda=True, synchronize=rt.synchronize, kernels=True)
