"""Kernels that measure a backend's peaks: a large 1x1 conv (GEMM) and a large element-wise scale (copy).

Kept apart from ``roofline`` so that drawing a roofline (the report) never imports torch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from latprof.backends import BackendOptions, create_backend
from latprof.measure.protocol import MeasureConfig, measure
from latprof.workloads.registry import Workload

FLOAT_BYTES = 4


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
    run = create_backend(backend_name, options).prepare(workload)
    try:
        m = measure(run.timer, config)
    finally:
        run.close()
    return m.stats.median_ms / 1e3, run.settings


