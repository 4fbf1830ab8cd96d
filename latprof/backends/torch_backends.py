"""PyTorch eager backends: ``torch-cpu`` (wall clock) and ``torch-cuda`` (CUDA events).

What they change in the process is held for the run and restored on ``PreparedRun.close()``: torch's intra-op
threads (``torch_threads``) and ``cudnn.benchmark`` (``CUDNN_BENCHMARK``). Inter-op threads are the exception:
torch accepts them once per process, before any parallel work, and never again; the note in the settings says so.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import torch

from latprof.backends.base import (
    Backend,
    BackendError,
    PreparedRun,
    SharedSetting,
    check_output,
    default_threads,
    pinning,
)
from latprof.backends.registry import register_backend
from latprof.measure.protocol import wall_clock_timer
from latprof.workloads.registry import Workload, first_tensor

INTRA_OP_THREADS: SharedSetting[int] = SharedSetting(torch.get_num_threads, torch.set_num_threads)


def _set_cudnn_benchmark(on: bool) -> None:
    torch.backends.cudnn.benchmark = on


CUDNN_BENCHMARK: SharedSetting[bool] = SharedSetting(lambda: bool(torch.backends.cudnn.benchmark), _set_cudnn_benchmark)

INTEROP_NOTE = "inter-op threads fixed once parallel work has started in this process"


def _interop(inter: int | None) -> str | None:
    """Ask for ``inter`` inter-op threads; a note when torch no longer accepts it (once per process)."""
    if inter is None or inter == torch.get_num_interop_threads():
        return None
    try:
        torch.set_num_interop_threads(inter)
    except RuntimeError:
        return INTEROP_NOTE
    return None


@contextlib.contextmanager
def torch_threads(intra: int | None, inter: int | None) -> Iterator[dict[str, Any]]:
    """Hold torch's intra-op threads at ``intra`` for the block (restored after) and ask for ``inter`` inter-op
    threads; yields what is in force."""
    with INTRA_OP_THREADS.held(intra) if intra is not None else contextlib.nullcontext():
        note = _interop(inter)
        out: dict[str, Any] = {"intra_op_threads": torch.get_num_threads(),
                               "inter_op_threads": torch.get_num_interop_threads()}
        if note:
            out["inter_op_note"] = note
        yield out


def thread_counts(backend: Backend) -> tuple[int, int]:
    """(intra-op, inter-op) threads a torch backend asks for: ``--threads`` or ``default_threads``, and one inter-op."""
    return backend.options.threads or default_threads(type(backend)), backend.options.interop_threads or 1


def _require_module(workload: Workload, backend: str) -> torch.nn.Module:
    if workload.module is None:
        raise BackendError(f"{workload.name}: an ONNX file runs only on ONNX Runtime backends, not {backend}")
    return workload.module


@register_backend
class TorchCPU(Backend):
    """PyTorch eager on the CPU: eval + inference_mode, explicit intra/inter-op threads, optional pinning."""

    name = "torch-cpu"
    description = "PyTorch eager, CPU, wall-clock timing"
    device_class = "cpu"
    default_batch = 1

    def prepare(self, workload: Workload) -> PreparedRun:
        module = _require_module(workload, self.name).eval()
        intra, inter = thread_counts(self)
        with contextlib.ExitStack() as stack:
            settings: dict[str, Any] = {
                "device": "cpu",
                **stack.enter_context(torch_threads(intra, inter)),
                "mkldnn_enabled": torch.backends.mkldnn.enabled,
                "timing": "wall clock (time.perf_counter), GC paused",
            }
            inputs = workload.make_inputs()

            def call() -> Any:
                with torch.inference_mode():
                    return module(*inputs)

            with torch.inference_mode():
                output = first_tensor(module(*inputs)).detach()
            err = check_output(self.name, output, workload.reference_output())
            settings["pinned_cores"] = stack.enter_context(pinning(self.options.pin, intra))
            return PreparedRun(wall_clock_timer(call), output, settings, err, stack=stack.pop_all())

    def profile_ops(self, workload: Workload, runs: int) -> Any:
        """Per-aten-op self CPU times from ``torch.profiler`` (``latprof.backends.op_profiling``)."""
        from latprof.backends.op_profiling import profile_torch

        module = _require_module(workload, self.name).eval()
        with torch_threads(*thread_counts(self)):
            inputs = workload.make_inputs()
            return profile_torch(lambda: module(*inputs), runs)


@register_backend
class TorchCUDA(Backend):
    """PyTorch eager on CUDA: CUDA events around calls, cuDNN benchmark mode on (as the paper), TF32 recorded."""

    name = "torch-cuda"
    description = "PyTorch eager, CUDA, CUDA-event timing, cudnn.benchmark on"
    device_class = "cuda"
    default_batch = 8  # the paper's GPU setting (Figure 1)

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        if not torch.cuda.is_available():
            built = torch.version.cuda
            return False, "no CUDA device visible" if built else "this torch build has no CUDA support"
        return True, ""

    def prepare(self, workload: Workload) -> PreparedRun:
        reference = workload.reference_output()  # on the CPU, before the module moves to the GPU
        with contextlib.ExitStack() as stack:
            module = on_cuda(stack, _require_module(workload, self.name).eval())
            stack.enter_context(CUDNN_BENCHMARK.held(True))
            settings: dict[str, Any] = {
                **cuda_settings(),
                "timing": "CUDA events around each batch of calls, then synchronize",
            }
            inputs = workload.make_inputs(device="cuda")
            with torch.inference_mode():
                output = first_tensor(module(*inputs)).detach()
            torch.cuda.synchronize()
            err = check_output(self.name, output.float().cpu(), reference)
            host_wall: list[float] = []
            timer = cuda_event_timer(lambda: module(*inputs), host_wall)
            return PreparedRun(timer, output.cpu(), settings, err, host_wall_per_call_s=host_wall,
                               stack=stack.pop_all())

    def profile_ops(self, workload: Workload, runs: int) -> Any:
        """Per-aten-op self CUDA times from ``torch.profiler``."""
        from latprof.backends.op_profiling import profile_torch

        with contextlib.ExitStack() as stack:
            module = on_cuda(stack, _require_module(workload, self.name).eval())
            stack.enter_context(CUDNN_BENCHMARK.held(True))
            inputs = workload.make_inputs(device="cuda")
            return profile_torch(lambda: module(*inputs), runs, cuda=True)


def on_cuda(stack: contextlib.ExitStack, module: torch.nn.Module) -> torch.nn.Module:
    """Move ``module`` to the GPU for as long as ``stack`` is open (it goes back to the CPU on close)."""
    stack.callback(module.to, "cpu")
    return module.to("cuda")


def cuda_settings() -> dict[str, Any]:
    """cuDNN / TF32 switches in force and the device, driver, CUDA version and clocks (``environment.gpu_info``)."""
    from latprof.measure.environment import gpu_info

    index = torch.cuda.current_device()
    gpu = next((g for g in gpu_info() if g["index"] == index), {})
    return {
        "device": torch.cuda.get_device_name(index),
        "cuda_version": torch.version.cuda,
        "cudnn_version": torch.backends.cudnn.version(),
        "driver": gpu.get("driver"),
        "clock_sm_mhz": gpu.get("clock_sm_mhz"),
        "clock_sm_max_mhz": gpu.get("clock_sm_max_mhz"),
        "clock_mem_mhz": gpu.get("clock_mem_mhz"),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_enabled": torch.backends.cudnn.enabled,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
    }


def cuda_event_timer(call: Any, host_wall: list[float]) -> Any:
    """Batch timer: CUDA events around n calls, then synchronise; appends the host wall time per call to ``host_wall``."""

    def timer(n: int) -> float:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        with torch.inference_mode():
            t0 = time.perf_counter()
            start.record()
            for _ in range(n):
                call()
            end.record()
            end.synchronize()
            host_wall.append((time.perf_counter() - t0) / n)
        return start.elapsed_time(end) / 1e3

    return timer
