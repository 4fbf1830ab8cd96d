"""PyTorch eager backends: ``torch-cpu`` (wall clock) and ``torch-cuda`` (per-call latency, CUDA events beside it).

What they change in the process is held for the run and restored on ``PreparedRun.close()``: torch's intra-op
threads (``torch_threads``), ``cudnn.benchmark`` (``CUDNN_BENCHMARK``) and the TF32 switches (``tf32_held``), and
the module's move to the GPU (registered before the move, so a failed prepare leaves it on the CPU). Inter-op threads are the exception:
torch accepts them once per process, before any parallel work, and never again; the note in the settings says so.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from latprof.backends.base import (
    GPU_TIMING,
    TF32_TOLERANCE,
    Backend,
    BackendError,
    PreparedRun,
    SharedSetting,
    check_output,
    default_threads,
    pinning,
)
from latprof.backends.cuda_runtime import (
    CUDNN_BENCHMARK,
    TIMING_TEXT,
    CudaRuntime,
    cuda_timer,
    device_failures,
    on_device,
    tf32_held,
)
from latprof.backends.precision import check_fp16_output
from latprof.backends.registry import register_backend
from latprof.measure.protocol import wall_clock_timer
from latprof.workloads.registry import Workload, first_tensor

INTRA_OP_THREADS: SharedSetting[int] = SharedSetting(torch.get_num_threads, torch.set_num_threads)


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
    """PyTorch eager on CUDA: per-call latency (synchronised after each call), cuDNN benchmark mode on (as the
    paper), TF32 set from ``--tf32`` and read back, clocks sampled under load."""

    name = "torch-cuda"
    description = "PyTorch eager, CUDA, per-call latency (synchronised), cudnn.benchmark on, --tf32"
    device_class = "cuda"
    default_batch = 8  # the paper's GPU setting (Figure 1)
    runtime: Any = CudaRuntime()  # the device seam (latprof.backends.cuda_runtime); tests use a CPU fake
    precisions = ("fp32", "fp16")  # fp16: module.half() on half inputs, checked against eager FP32

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        if not torch.cuda.is_available():
            built = torch.version.cuda
            return False, "no CUDA device visible" if built else "this torch build has no CUDA support"
        return True, ""

    def prepare(self, workload: Workload) -> PreparedRun:
        rt = self.runtime
        reference = workload.reference_output()  # on the CPU, before the module moves to the GPU
        with device_failures(self.name, rt), contextlib.ExitStack() as stack:
            module = on_device(stack, _require_module(workload, self.name).eval(), rt.device)
            stack.enter_context(CUDNN_BENCHMARK.held(True))
            tf32 = stack.enter_context(tf32_held(self.options.tf32))
            settings: dict[str, Any] = {**rt.settings(), **tf32, "timing": TIMING_TEXT, "timing_semantics": GPU_TIMING,
                                        "timing_beside": "cuda_event_median_ms: CUDA events around each batch"}
            inputs = workload.make_inputs(device=rt.device)
            half = self.options.precision == "fp16"
            if half:  # back to float32 on close, before on_device's move back to the CPU
                module = on_half(stack, module)
                inputs = tuple(x.half() for x in inputs)
                settings["precision"] = "fp16"
            with torch.inference_mode():
                output = first_tensor(module(*inputs)).detach()
            rt.synchronize()
            check: dict[str, Any] = {}
            if half:  # the FP16 rule (backends/precision.py) against eager FP32
                check = check_fp16_output(self.name, output.float().cpu(), reference)
                settings["output_tolerance"] = "fp16"
                err = float((output.float().cpu() - reference).abs().max()) if reference.numel() else 0.0
            else:
                tolerance = TF32_TOLERANCE if tf32["tf32"] == "on" else None
                settings["output_tolerance"] = "tf32" if tolerance else "fp32"
                err = check_output(self.name, output.float().cpu(), reference, tolerance)
            events: list[float] = []
            timer = cuda_timer(lambda: module(*inputs), rt, events)
            stack.enter_context(rt.load_sampling(settings))
            return PreparedRun(timer, output.cpu(), settings, err, device_event_per_call_s=events, check=check,
                               stack=stack.pop_all())

    def profile_ops(self, workload: Workload, runs: int) -> Any:
        """Per-aten-op GPU times from ``torch.profiler``'s CUDA activity (device timestamps of the kernels)."""
        from latprof.backends.op_profiling import profile_torch

        rt = self.runtime
        with device_failures(self.name, rt), contextlib.ExitStack() as stack:
            module = on_device(stack, _require_module(workload, self.name).eval(), rt.device)
            stack.enter_context(CUDNN_BENCHMARK.held(True))
            stack.enter_context(tf32_held(self.options.tf32))
            inputs = workload.make_inputs(device=rt.device)
            return profile_torch(lambda: module(*inputs), runs, cuda=True, synchronize=rt.synchronize)


def on_cuda(stack: contextlib.ExitStack, module: torch.nn.Module) -> torch.nn.Module:
    """Move ``module`` to the GPU for as long as ``stack`` is open (``cuda_runtime.on_device``)."""
    return on_device(stack, module, "cuda")


def on_half(stack: contextlib.ExitStack, module: torch.nn.Module) -> torch.nn.Module:
    """``module`` in float16 for as long as ``stack`` is open (back to float32 on close)."""
    stack.callback(module.float)
    return module.half()
