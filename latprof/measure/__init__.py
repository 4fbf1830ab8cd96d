"""Measurement: the timing protocol, its statistics, and the environment fingerprint."""

from latprof.measure.protocol import (
    BatchTimer,
    InterleavedMeasurement,
    Measurement,
    MeasureConfig,
    measure,
    measure_interleaved,
    wall_clock_timer,
)
from latprof.measure.stats import LatencyStats, RatioEstimate, speed_ratio, summarize

__all__ = [
    "BatchTimer",
    "InterleavedMeasurement",
    "LatencyStats",
    "MeasureConfig",
    "Measurement",
    "RatioEstimate",
    "measure",
    "measure_interleaved",
    "speed_ratio",
    "summarize",
    "wall_clock_timer",
]
