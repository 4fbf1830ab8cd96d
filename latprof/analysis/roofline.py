"""Roofline: measured peak compute and peak memory bandwidth of one backend, and where each workload sits under it.

Peak compute is timed on a large 1x1 convolution (a GEMM, run through the same conv kernels the workloads use);
peak bandwidth on a large element-wise scale ``y = 1.5 * x`` (STREAM "scale": one read and one write per element,
arrays far larger than the caches). Both run through the backend's own ``prepare`` and the ``latprof.measure``
protocol, so threads, pinning and optimisation level are those of the rows they are set against.

Peaks are measured by ``latprof sweep`` (for every backend and thread count it runs) and by
``latprof profile --roofline``; plain ``profile`` does not measure them. Either writes a ``record: "peaks"`` line into
results.jsonl, which the report's roofline reads.
"""

from __future__ import annotations

import math
from typing import Any

from latprof.measure.protocol import MeasureConfig

# (conv channels, spatial side, copy elements) by backend device class: a few hundred ms of work in all on a laptop
# CPU, arrays well past the last-level cache; the CUDA sizes fill an H100 for milliseconds per call.
DEFAULT_SIZES: dict[str, tuple[int, int, int]] = {
    "cpu": (512, 32, 8 * 1024 * 1024),
    "mobile": (512, 32, 8 * 1024 * 1024),
    "cuda": (2048, 64, 64 * 1024 * 1024),
}

DEFAULT_CONFIG = MeasureConfig(target_ci=0.03, max_time_s=1.5, min_samples=5, warmup_max_s=0.5)


def measure_peaks(
    backend_name: str,
    threads: int | None = None,
    *,
    hardware_id: str | None = None,
    pin: bool = False,
    ort_opt: str = "all",
    gemm_channels: int | None = None,
    gemm_side: int | None = None,
    copy_elements: int | None = None,
    config: MeasureConfig = DEFAULT_CONFIG,
) -> dict[str, Any]:
    """Measure peak GFLOP/s and GB/s of ``backend_name`` with ``threads``; returns a ``record: "peaks"`` line.

    A backend that cannot run the kernels raises ``BackendError`` (as for any workload); an unknown or unavailable
    backend raises ``LatprofError``. Takes a few seconds with the defaults.
    """
    from latprof.analysis.peak_kernels import copy_workload, gemm_workload, median_s
    from latprof.backends import BackendOptions, create_backend
    from latprof.measure import environment

    backend = create_backend(backend_name, BackendOptions(threads=threads, pin=pin, ort_opt=ort_opt))
    c, side, n = DEFAULT_SIZES.get(type(backend).device_class, DEFAULT_SIZES["cpu"])
    c, side, n = gemm_channels or c, gemm_side or side, copy_elements or n
    options = BackendOptions(threads=threads, pin=pin, batch=1, ort_opt=ort_opt)
    gemm, mult_adds = gemm_workload(c, side)
    copy, moved = copy_workload(n)
    gemm_s, settings = median_s(backend_name, options, gemm, config)
    copy_s, _ = median_s(backend_name, options, copy, config)
    threads_in_force = settings.get("intra_op_threads", threads)
    return {
        "record": "peaks",
        "backend": backend_name,
        "threads": threads if threads is not None else threads_in_force,
        "hardware_id": hardware_id or environment.collect().hardware_id,
        "peak_gflops": 2 * mult_adds / gemm_s / 1e9,
        "peak_gbytes_per_s": moved / copy_s / 1e9,
        "method": (
            f"compute: median latency of a 1x1 conv {c}->{c} on {side}x{side} fp32 ({mult_adds} mult_adds, "
            f"2 FLOPs each); bandwidth: median latency of y = 1.5*x over {n} fp32 elements "
            f"({moved} bytes read + written); latprof.measure protocol on {backend_name}"
        ),
        "gemm_latency_ms": gemm_s * 1e3,
        "copy_latency_ms": copy_s * 1e3,
        "settings": settings,
    }


def roof_gflops(arithmetic_intensity: float, peak_gflops: float, peak_gbytes_per_s: float) -> float:
    """Attainable GFLOP/s at an arithmetic intensity (FLOPs per byte): min(compute roof, bandwidth * intensity)."""
    return min(peak_gflops, peak_gbytes_per_s * arithmetic_intensity)


def attained(mult_adds: float, mem_bytes: float, latency_ms: float, peak_gflops: float, peak_gbytes_per_s: float) -> dict[str, float]:
    """A workload's point on the roofline: intensity, attained GFLOP/s, the roof there, and the share attained."""
    intensity = 2 * mult_adds / mem_bytes if mem_bytes else math.nan
    gflops = 2 * mult_adds / (latency_ms / 1e3) / 1e9 if latency_ms else math.nan
    roof = roof_gflops(intensity, peak_gflops, peak_gbytes_per_s) if math.isfinite(intensity) else math.nan
    return {
        "arithmetic_intensity": intensity,
        "attained_gflops": gflops,
        "roof_gflops": roof,
        "share_of_roof": gflops / roof if roof and math.isfinite(roof) else math.nan,
    }
