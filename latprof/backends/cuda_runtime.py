"""What the PyTorch CUDA backends (``torch-cuda``, ``torch-compile-cuda``) share: the device seam, TF32, the timer,
failure handling, and the clocks-under-load sampling that ``ort-cuda`` uses too.

**Timing** (docs/backends.md, "Timing on the GPU"). Every GPU backend measures per-call latency: the host wall clock
around each call followed by a device synchronisation, n such calls per sample, garbage collector paused. ONNX
Runtime's ``Run()`` ends each call with a stream synchronisation; ``cuda_timer`` synchronises after each torch call
too, so call k+1's launch never overlaps call k's kernels and ``torch-cuda`` / ``ort-cuda`` ratios compare like
with like. CUDA events around each batch give the device's view of the same interval, kept beside the latency as
``cuda_event_median_ms`` (the difference is the host's share: Python before the first launch, the synchronisation's
wake-up).

**The device seam.** ``CudaRuntime`` is everything the backends ask of the device (synchronise, events, free cached
memory, device settings, the load sampler). Tests put a CPU fake in its place to run the real ``prepare`` code
(cleanup on failure, timer semantics, TF32 switches) on a machine without a GPU.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

from latprof.backends.base import DEFAULT_TF32, TF32_CHOICES, BackendError, SharedSetting
from latprof.errors import one_line
from latprof.measure.protocol import gc_paused

TIMING_TEXT = ("per-call latency: host wall clock (time.perf_counter) around each call followed by a device "
               "synchronisation, n calls per sample, GC paused")


def _set_cudnn_benchmark(on: bool) -> None:
    torch.backends.cudnn.benchmark = on


# cudnn.benchmark is process-wide: held on for a run, restored when the last run holding it closes.
CUDNN_BENCHMARK: SharedSetting[bool] = SharedSetting(lambda: bool(torch.backends.cudnn.benchmark), _set_cudnn_benchmark)


# ------------------------------------------------------------------ TF32
def _has_precision_api() -> bool:
    """torch >= 2.9: ``fp32_precision`` per backend and op ("ieee", "tf32", or "none" = inherit the parent's)."""
    return hasattr(torch.backends.cuda.matmul, "fp32_precision") and hasattr(torch.backends.cudnn, "conv")


def _effective(*levels: Any) -> str | None:
    """The first value that is not "none", walking from the op up to the global setting."""
    return next((str(v) for v in levels if v is not None and str(v) != "none"), None)


def tf32_state() -> dict[str, str]:
    """TF32 in force for fp32 matmuls and cuDNN convolutions ("tf32" or "ieee"), read back, and which API says so.

    With the ``fp32_precision`` API present it is the one read: the legacy ``allow_tf32`` flags raise once the new
    API has been used in the process.
    """
    if _has_precision_api():
        top = getattr(torch.backends, "fp32_precision", None)
        matmul = _effective(torch.backends.cuda.matmul.fp32_precision, top)
        conv = _effective(torch.backends.cudnn.conv.fp32_precision, getattr(torch.backends.cudnn, "fp32_precision", None), top)
        if matmul is None or conv is None:  # all "none": torch's built-in defaults, read through the legacy flags
            with contextlib.suppress(RuntimeError):
                matmul = matmul or ("tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee")
                conv = conv or ("tf32" if torch.backends.cudnn.allow_tf32 else "ieee")
        return {"tf32_matmul": matmul or "unknown", "tf32_conv": conv or "unknown", "tf32_api": "fp32_precision"}
    return {"tf32_matmul": "tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee",
            "tf32_conv": "tf32" if torch.backends.cudnn.allow_tf32 else "ieee", "tf32_api": "allow_tf32 (legacy)"}


def _read_tf32_raw() -> tuple[Any, Any]:
    if _has_precision_api():
        return torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision
    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32


def _write_tf32_raw(value: tuple[Any, Any]) -> None:
    matmul, conv = value
    if _has_precision_api():
        torch.backends.cuda.matmul.fp32_precision = matmul
        torch.backends.cudnn.conv.fp32_precision = conv
    else:
        torch.backends.cuda.matmul.allow_tf32 = matmul
        torch.backends.cudnn.allow_tf32 = conv


TF32_SWITCHES: SharedSetting[tuple[Any, Any]] = SharedSetting(_read_tf32_raw, _write_tf32_raw)


def check_tf32(choice: str) -> str:
    if choice not in TF32_CHOICES:
        raise BackendError(f"--tf32 {choice!r} is not one of {', '.join(TF32_CHOICES)}")
    return choice


@contextlib.contextmanager
def tf32_held(choice: str = DEFAULT_TF32) -> Iterator[dict[str, str]]:
    """Set TF32 for fp32 matmuls and cuDNN convolutions on or off for the block (restored after); yields what is in
    force, read back: ``tf32`` ("on" only when both run TF32), ``tf32_matmul``, ``tf32_conv``, ``tf32_api``."""
    on = check_tf32(choice) == "on"
    raw = ("tf32" if on else "ieee",) * 2 if _has_precision_api() else (on, on)
    with TF32_SWITCHES.held(raw):
        state = tf32_state()
        both = state["tf32_matmul"] == state["tf32_conv"] == "tf32"
        yield {"tf32": "on" if both else "off", "tf32_requested": choice, **state}


# ------------------------------------------------------------------ the device seam
class CudaRuntime:
    """The CUDA device as the backends use it; tests substitute a CPU fake with the same methods."""

    device = "cuda"

    def synchronize(self) -> None:
        torch.cuda.synchronize()

    def event(self) -> Any:
        return torch.cuda.Event(enable_timing=True)

    def empty_cache(self) -> None:
        torch.cuda.empty_cache()

    def settings(self) -> dict[str, Any]:
        return cuda_settings()

    def load_sampling(self, settings: dict[str, Any]) -> contextlib.AbstractContextManager[None]:
        return sampled_under_load(settings, gpu_for_sampling(settings))


def cuda_settings() -> dict[str, Any]:
    """The current device as the fingerprint matched it (by UUID, ``latprof.measure.gpu``), the CUDA / cuDNN build,
    and the cuDNN switches in force."""
    from latprof.measure.gpu import process_gpus

    index = torch.cuda.current_device()
    gpu = next((g for g in process_gpus() if g["index"] == index), {})
    return {
        "device": torch.cuda.get_device_name(index),
        "device_index": index,
        "gpu_uuid": gpu.get("gpu_uuid"),  # nvidia-smi's, of the physical GPU
        "cuda_device_uuid": gpu.get("uuid"),
        "gpu_match": gpu.get("match"),
        "mig_profile": gpu.get("mig_profile"),
        "capability": gpu.get("capability"),
        "cuda_version": torch.version.cuda,
        "cudnn_version": torch.backends.cudnn.version(),
        "driver": gpu.get("driver"),
        "clock_sm_idle_mhz": gpu.get("clock_sm_mhz"),
        "clock_sm_max_mhz": gpu.get("clock_sm_max_mhz"),
        "clock_sm_application_mhz": gpu.get("clock_sm_application_mhz"),
        "power_limit_w": gpu.get("power_limit_w"),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_enabled": torch.backends.cudnn.enabled,
    }


def gpu_for_sampling(settings: dict[str, Any]) -> str | None:
    """What nvidia-smi's ``-i`` should name: the physical GPU's UUID (clocks are per GPU, also for a MIG slice)."""
    uuid = settings.get("gpu_uuid")
    return str(uuid) if uuid else None


@contextlib.contextmanager
def sampled_under_load(settings: dict[str, Any], gpu: str | None) -> Iterator[None]:
    """Sample the GPU's clocks, power and throttle reasons while the block runs (the run's warm-up and samples) and
    store the summary in ``settings["gpu_under_load"]`` when it ends."""
    from latprof.measure.gpu import load_sampler

    if gpu is None:
        settings["gpu_under_load"] = {"note": "not sampled: the device was not matched to an nvidia-smi GPU"}
        yield
        return
    sampler = load_sampler(gpu)
    token = sampler.hold()
    try:
        yield
    finally:
        settings["gpu_under_load"] = sampler.release(token)


# ------------------------------------------------------------------ timer and failures
def cuda_timer(call: Callable[[], Any], runtime: Any, events_per_call: list[float],
               clock: Callable[[], float] = time.perf_counter) -> Callable[[int], float]:
    """Batch timer with per-call semantics: n times (call, synchronise) under the host wall clock, GC paused and
    inference mode on; CUDA events around the batch append the device's time per call to ``events_per_call``."""

    def run(n: int) -> float:
        with gc_paused():
            with torch.inference_mode():
                start, end = runtime.event(), runtime.event()
                start.record()
                t0 = clock()
                for _ in range(n):
                    call()
                    runtime.synchronize()
                elapsed = clock() - t0
                end.record()
            end.synchronize()
            events_per_call.append(start.elapsed_time(end) / 1e3 / n)
            return elapsed

    return run


@contextlib.contextmanager
def device_failures(name: str, runtime: Any) -> Iterator[None]:
    """Turn what the device raises while preparing (out of memory, a CUDA error, a kernel that cannot run) into a
    ``BackendError``, so it becomes an error row; the run's stack has already put the module back on the CPU, and
    the allocator's cached blocks are freed for the next workload."""
    try:
        yield
    except BackendError:
        runtime.empty_cache()
        raise
    except torch.cuda.OutOfMemoryError as exc:
        runtime.empty_cache()
        raise BackendError(f"{name}: CUDA out of memory while preparing: {one_line(exc)[:200]}") from None
    except (RuntimeError, ValueError, TypeError, AssertionError) as exc:
        runtime.empty_cache()
        raise BackendError(f"{name}: prepare failed: {type(exc).__name__}: {one_line(exc)[:300]}") from None


def on_device(stack: contextlib.ExitStack, module: torch.nn.Module, device: str) -> torch.nn.Module:
    """Move ``module`` to ``device`` for as long as ``stack`` is open. The move back is registered *before* the
    move, so a failure at any later point (or during the move itself) leaves the module on the CPU: ``--per-block``
    blocks share submodules with their network."""
    stack.callback(module.to, "cpu")
    return module.to(device)
