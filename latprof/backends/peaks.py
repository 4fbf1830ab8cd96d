"""Measuring a backend's peaks for the roofline: peak compute on a large 1x1 conv, peak bandwidth on a large scale.

Peak compute is timed on a large 1x1 convolution (a GEMM, run through the same conv kernels the workloads use);
peak bandwidth on a large element-wise scale ``y = 1.5 * x`` (STREAM "scale": one read and one write per element,
arrays far larger than the caches). Both run through the backend's own ``prepare`` and the ``latprof.measure``
protocol, so threads, pinning and optimisation level are those of the rows they are set against. The record is
built by ``latprof.analysis.roofline.peaks_record`` (pure); the run engine's ``peaks`` unit calls ``measure_peaks``
in a worker (docs/architecture.md, "Units").
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from latprof.backends.base import DEFAULT_ORT_OPT, BackendOptions
from latprof.backends.registry import create_backend
from latprof.measure.protocol import MeasureConfig, measure
from latprof.workloads.registry import Workload

FLOAT_BYTES = 4

# (conv channels, spatial side, copy elements) by backend device class: a few hundred ms of work in all on a laptop
# CPU, arrays well past the last-level cache; the CUDA sizes fill an H100 for milliseconds per call.
DEFAULT_SIZES: dict[str, tuple[int, int, int]] = {
    "cpu": (512, 32, 8 * 1024 * 1024),
    "mobile": (512, 32, 8 * 1024 * 1024),
    "cuda": (2048, 64, 64 * 1024 * 1024),
}

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


def gemm_workload(channels: int, side: int) -> tuple[Workload, int]:
    """A 1x1 conv ``channels -> channels`` on ``side x side`` (batch 1) and its mult_adds."""
    module = nn.Conv2d(channels, channels, 1, bias=False).eval()
    shape = (1, channels, side, side)
    return Workload("roofline-gemm", module, shape, "block", source="roofline",
                    description="peak compute: 1x1 conv (GEMM)"), channels * channels * side * side


def copy_workload(elements: int) -> tuple[Workload, int]:
    """``y = 1.5 * x`` over ``elements`` floats and the bytes it moves (read + write)."""
    return Workload("roofline-copy", _Scale().eval(), (1, elements), "block", source="roofline",
                    description="peak bandwidth: y = 1.5 * x"), 2 * elements * FLOAT_BYTES


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
    gemm_channels: int | None = None,
    gemm_side: int | None = None,
    copy_elements: int | None = None,
    config: MeasureConfig = PEAKS_CONFIG,
) -> dict[str, Any]:
    """Measure peak GFLOP/s and GB/s of ``backend_name`` with ``threads``; returns a ``record: "peaks"`` line.

    A backend that cannot run the kernels raises ``BackendError`` (as for any workload); an unknown or unavailable
    backend raises ``LatprofError``. Takes a few seconds with the defaults.
    """
    from latprof.analysis.roofline import peaks_record
    from latprof.measure import environment

    backend = create_backend(backend_name, BackendOptions(threads=threads, pin=pin, ort_opt=ort_opt))
    c, side, n = DEFAULT_SIZES.get(type(backend).device_class, DEFAULT_SIZES["cpu"])
    c, side, n = gemm_channels or c, gemm_side or side, copy_elements or n
    options = BackendOptions(threads=threads, pin=pin, batch=1, ort_opt=ort_opt)
    gemm, mult_adds = gemm_workload(c, side)
    copy, moved = copy_workload(n)
    gemm_s, settings = median_s(backend_name, options, gemm, config)
    copy_s, _ = median_s(backend_name, options, copy, config)
    return peaks_record(
        backend_name,
        threads if threads is not None else settings.get("intra_op_threads", threads),
        hardware_id or environment.collect().hardware_id,
        mult_adds=mult_adds, gemm_s=gemm_s, moved_bytes=moved, copy_s=copy_s, settings=settings,
        method=(
            f"compute: median latency of a 1x1 conv {c}->{c} on {side}x{side} fp32 ({mult_adds} mult_adds, "
            f"2 FLOPs each); bandwidth: median latency of y = 1.5*x over {n} fp32 elements "
            f"({moved} bytes read + written); latprof.measure protocol on {backend_name}"
        ),
    )
