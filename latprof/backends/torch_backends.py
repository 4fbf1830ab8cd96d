"""PyTorch eager backends: ``torch-cpu`` (wall clock) and ``torch-cuda`` (CUDA events)."""

from __future__ import annotations

import time
from typing import Any

import torch

from latprof.backends.base import Backend, BackendError, PreparedRun, apply_pinning, check_output, logical_cores
from latprof.backends.registry import register_backend
from latprof.measure.protocol import wall_clock_timer
from latprof.workloads.registry import Workload, first_tensor


def set_torch_threads(intra: int | None, inter: int | None) -> dict[str, Any]:
    """Set torch's intra/inter-op threads; return what is in force (inter-op can only be set before first use)."""
    if intra is not None:
        torch.set_num_threads(intra)
    inter_note = None
    if inter is not None and inter != torch.get_num_interop_threads():
        try:
            torch.set_num_interop_threads(inter)
        except RuntimeError:
            inter_note = "inter-op threads fixed once parallel work has started in this process"
    out: dict[str, Any] = {"intra_op_threads": torch.get_num_threads(), "inter_op_threads": torch.get_num_interop_threads()}
    if inter_note:
        out["inter_op_note"] = inter_note
    return out


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
        threads = self.options.threads or logical_cores()
        settings: dict[str, Any] = {
            "device": "cpu",
            **set_torch_threads(threads, self.options.interop_threads or 1),
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
        run = PreparedRun(wall_clock_timer(call), output, settings, err)
        apply_pinning(run, self.options.pin, threads)
        return run

    def profile_ops(self, workload: Workload, runs: int) -> Any:
        """Per-aten-op self CPU times from ``torch.profiler`` (``latprof.backends.op_profiling``)."""
        from latprof.backends.op_profiling import profile_torch

        module = _require_module(workload, self.name).eval()
        set_torch_threads(self.options.threads or logical_cores(), self.options.interop_threads or 1)
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
        module = _require_module(workload, self.name).eval().to("cuda")
        torch.backends.cudnn.benchmark = True
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

        run = PreparedRun(timer, output.cpu(), settings, err, host_wall_per_call_s=host_wall)
        run._cleanup.append(lambda: module.to("cpu"))
        return run

    def profile_ops(self, workload: Workload, runs: int) -> Any:
        """Per-aten-op self CUDA times from ``torch.profiler``."""
        from latprof.backends.op_profiling import profile_torch

        module = _require_module(workload, self.name).eval().to("cuda")
        torch.backends.cudnn.benchmark = True
        inputs = workload.make_inputs(device="cuda")
        try:
            return profile_torch(lambda: module(*inputs), runs, cuda=True)
        finally:
            module.to("cpu")


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
