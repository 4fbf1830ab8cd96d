"""Roofline: a backend's peak compute and bandwidth as a record, and where each workload sits under them. Pure:
it takes measured numbers and returns records; the measuring is ``latprof.backends.peaks.measure_peaks``.

Peaks are measured by ``latprof sweep`` (for every backend and thread count it runs) and by
``latprof profile --roofline``; plain ``profile`` does not measure them. Either writes a ``record: "peaks"`` line into
results.jsonl, which the report's roofline reads.
"""

from __future__ import annotations

import math
from typing import Any

from latprof.rows import Record


def peaks_record(
    backend: str, threads: int | None, hardware_id: str, /, *, mult_adds: float, gemm_s: float, moved_bytes: float,
    copy_s: float, settings: dict[str, Any], method: str, compute_precision: str = "fp32",
) -> dict[str, Any]:
    """The ``record: "peaks"`` line of one backend x threads: ``mult_adds`` of the GEMM kernel timed at ``gemm_s``
    per call, ``moved_bytes`` (read + written) of the bandwidth kernel timed at ``copy_s``."""
    return {
        "record": Record.PEAKS.value,
        "backend": backend,
        "threads": threads,
        "hardware_id": hardware_id,
        "peak_gflops": 2 * mult_adds / gemm_s / 1e9,
        "peak_gbytes_per_s": moved_bytes / copy_s / 1e9,
        # the GEMM peak's arithmetic: "tf32" on a GPU with TF32 convolutions in force is not an fp32 peak
        "compute_precision": compute_precision,
        "tf32": settings.get("tf32"),
        "method": method,
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
