"""Measuring a backend's peaks for the roofline: peak compute on a large 1x1 conv, peak bandwidth on a large scale.

Peak compute is timed on a large 1x1 convolution (a GEMM, run through the same conv kernels the workloads use);
peak bandwidth on a large element-wise scale ``y = 1.5 * x`` (STREAM "scale": one read and one write per element,
arrays far larger than the caches). Both run through the backend's own ``prepare`` and the ``latprof.measure``
protocol, so threads, pinning and optimisation level are those of the rows they are set against. The record is
built by ``latprof.analysis.roofline.peaks_record`` (pure); the run engine's ``peaks`` unit calls ``measure_peaks``
in a worker (docs/architecture.md, "Units").
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from latprof.backends.base import DEFAULT_ORT_OPT, DEFAULT_TF32, BackendOptions
from latprof.backends.registry import create_backend
from latprof.measure.protocol import MeasureConfig, measure
from latprof.workloads.registry import Workload

FLOAT_BYTES = 4

# (conv channels, spatial side, copy elements) by backend device class: a few hundred ms of work in all on a laptop
# CPU, arrays well past the last-level cache. On a GPU these are starting sizes: ``measure_peaks`` grows each kernel
# until one call lasts at least ``MIN_KERNEL_S`` (an H200 runs the starting GEMM in about 0.1 ms in TF32, where
# launch and synchronisation overheads would be a tenth of the time).
DEFAULT_SIZES: dict[str, tuple[int, int, int]] = {
    "cpu": (512, 32, 8 * 1024 * 1024),
    "mobile": (512, 32, 8 * 1024 * 1024),
    "cuda": (2048, 64, 64 * 1024 * 1024),
}
# On a GPU every peak kernel call lasts at least this long (grown by batch, within ``MEMORY_SHARE`` of the free
# memory); the CPU sizes above already run for milliseconds.
MIN_KERNEL_S = 1e-3
MIN_KERNEL_S_BY_CLASS = {"cuda": MIN_KERNEL_S}
MEMORY_SHARE = 0.5
MAX_GROW_STEPS = 3

# Looser than a latency row's protocol: the peaks are a reference line, measured in a few seconds.
PEAKS_CONFIG = MeasureConfig(target_ci=0.03, max_time_s=1.5, min_samples=5, warmup_max_s=0.5)


def _tracing() -> bool:
    return bool(torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting() or torch.compiler.is_compiling())


class _Scale(nn.Module):
    """y = 1.5 * x: the smallest kernel that reads and writes every element once and cannot be folded away.

    Eager writes into one preallocated output: a fresh 32 MiB tensor per call would time the allocator's page
    faults, not the memory bus. Exporters and compilers see the plain expression (their runtimes reuse buffers).
    """

    def __init__(self) -> None:
        super().__init__()
        self._out: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _tracing():
            return x * 1.5
        if self._out is None or self._out.shape != x.shape or self._out.device != x.device:
            self._out = torch.empty_like(x)
        return torch.mul(x, 1.5, out=self._out)


def gemm_workload(channels: int, side: int, batch: int = 1) -> tuple[Workload, int]:
    """A 1x1 conv ``channels -> channels`` on ``batch x side x side`` and its mult_adds."""
    module = nn.Conv2d(channels, channels, 1, bias=False).eval()
    shape = (batch, channels, side, side)
    return Workload("roofline-gemm", module, shape, "block", source="roofline",
                    description="peak compute: 1x1 conv (GEMM)"), batch * channels * channels * side * side


def copy_workload(elements: int, batch: int = 1) -> tuple[Workload, int]:
    """``y = 1.5 * x`` over ``batch x elements`` floats and the bytes it moves (read + write)."""
    return Workload("roofline-copy", _Scale().eval(), (batch, elements), "block", source="roofline",
                    description="peak bandwidth: y = 1.5 * x"), 2 * batch * elements * FLOAT_BYTES


def grow_batch(time_at: Any, bytes_at: Any, budget_bytes: float | None, min_s: float = MIN_KERNEL_S,
               steps: int = MAX_GROW_STEPS) -> tuple[int, float, Any, str | None]:
    """The smallest batch (from 1) whose call lasts ``min_s``: measure, scale the batch by the shortfall (x1.5),
    measure again, at most ``steps`` times and never past ``budget_bytes`` of tensors.

    ``time_at(batch) -> (seconds per call, extra)`` measures; ``bytes_at(batch)`` is the memory a batch needs.
    Returns (batch, seconds, extra, note); the note says why a kernel stayed shorter than ``min_s``.
    """
    batch = 1
    seconds, extra = time_at(batch)
    for _ in range(steps):
        if seconds >= min_s:
            return batch, seconds, extra, None
        want = max(batch + 1, math.ceil(batch * min_s * 1.5 / max(seconds, 1e-9)))
        if budget_bytes is not None:
            want = min(want, int(budget_bytes // max(bytes_at(1), 1)))
        if want <= batch:
            return batch, seconds, extra, (f"{seconds * 1e3:.3g} ms per call, under {min_s * 1e3:g} ms: "
                                           "the free memory allows no larger kernel")
        batch = want
        seconds, extra = time_at(batch)
    note = None if seconds >= min_s else f"{seconds * 1e3:.3g} ms per call, under {min_s * 1e3:g} ms"
    return batch, seconds, extra, note


def _memory_budget(device_class: str) -> float | None:
    """Bytes of tensors a peak kernel may use: ``MEMORY_SHARE`` of the GPU's free memory, and never more than an
    eighth of the available RAM (the eager reference and the output check hold the input, the output and two
    float64 copies on the host)."""
    import psutil

    host = psutil.virtual_memory().available / 8
    if device_class == "cuda" and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info()
        return min(free * MEMORY_SHARE, host)
    return host


def median_s(backend_name: str, options: BackendOptions, workload: Workload, config: MeasureConfig) -> tuple[float, dict[str, Any]]:
    """Median seconds per call of ``workload`` on ``backend_name``, and the settings in force."""
    with create_backend(backend_name, options).prepare(workload) as run:
        m = measure(run.timer, config)
    return m.stats.median_ms / 1e3, run.settings


def measure_peaks(
    backend_name: str,
    threads: int | None = None,
    *,
    hardware_id: str | None = None,
    pin: bool = False,
    ort_opt: str = DEFAULT_ORT_OPT,
    tf32: str = DEFAULT_TF32,
    gemm_channels: int | None = None,
    gemm_side: int | None = None,
    copy_elements: int | None = None,
    config: MeasureConfig = PEAKS_CONFIG,
    min_kernel_s: float | None = None,
) -> dict[str, Any]:
    """Measure peak GFLOP/s and GB/s of ``backend_name`` with ``threads``; returns a ``record: "peaks"`` line.

    A backend that cannot run the kernels raises ``BackendError`` (as for any workload); an unknown or unavailable
    backend raises ``LatprofError``. Takes a few seconds with the defaults.
    """
    from latprof.analysis.roofline import peaks_record
    from latprof.measure import environment

    backend = create_backend(backend_name, BackendOptions(threads=threads, pin=pin, ort_opt=ort_opt, tf32=tf32))
    device_class = type(backend).device_class
    c, side, n = DEFAULT_SIZES.get(device_class, DEFAULT_SIZES["cpu"])
    c, side, n = gemm_channels or c, gemm_side or side, copy_elements or n
    budget = _memory_budget(device_class)
    min_s = min_kernel_s if min_kernel_s is not None else MIN_KERNEL_S_BY_CLASS.get(device_class, 0.0)

    def timed(make: Any) -> Any:
        def time_at(batch: int) -> tuple[float, dict[str, Any]]:
            options = BackendOptions(threads=threads, pin=pin, batch=batch, ort_opt=ort_opt, tf32=tf32)
            return median_s(backend_name, options, make(batch)[0], config)
        return time_at

    gemm_bytes = lambda b: (2 * b * c * side * side + c * c) * FLOAT_BYTES  # noqa: E731  (input, output, weight)
    gb, gemm_s, settings, gemm_note = grow_batch(timed(lambda b: gemm_workload(c, side, b)), gemm_bytes, budget, min_s)
    cb, copy_s, _, copy_note = grow_batch(timed(lambda b: copy_workload(n, b)), lambda b: 2 * b * n * FLOAT_BYTES,
                                          budget, min_s)
    mult_adds, moved = gemm_workload(c, side, gb)[1], copy_workload(n, cb)[1]
    precision = compute_precision(settings)
    record = peaks_record(
        backend_name,
        threads if threads is not None else settings.get("intra_op_threads", threads),
        hardware_id or environment.collect().hardware_id,
        mult_adds=mult_adds, gemm_s=gemm_s, moved_bytes=moved, copy_s=copy_s, settings=settings,
        method=(
            f"compute: median latency of a 1x1 conv {c}->{c} on {gb}x{side}x{side} {precision} ({mult_adds} "
            f"mult_adds, 2 FLOPs each); bandwidth: median latency of y = 1.5*x over {cb}x{n} fp32 elements "
            f"({moved} bytes read + written){f'; each kernel grown to at least {min_s * 1e3:g} ms per call' if min_s else ''}; "
            f"latprof.measure protocol on {backend_name}"
        ),
        compute_precision=precision,
    )
    notes = [f"{k}: {v}" for k, v in (("gemm", gemm_note), ("copy", copy_note)) if v]
    if notes:
        record["size_note"] = "; ".join(notes)
    return record


def compute_precision(settings: dict[str, Any]) -> str:
    """What the GEMM peak measures: "tf32" when the run had TF32 convolutions in force, else "fp32"."""
    return "tf32" if settings.get("tf32_conv") == "tf32" else "fp32"
