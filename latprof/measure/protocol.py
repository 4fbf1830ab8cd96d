"""The timing protocol: warm-up until stable, calibrated samples, adaptive stop on the CI of the median.

It knows nothing about models. It times a *batch timer*, ``run(n) -> seconds`` for n back-to-back calls, so a
CPU wall clock and CUDA events plug in alike, and tests can drive it with synthetic timers and a fake clock.
"""

from __future__ import annotations

import contextlib
import gc
import math
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

from latprof.measure.counters import ProcessCounters, snapshot
from latprof.measure.stats import LatencyStats, RatioEstimate, speed_ratio, summarize

BatchTimer = Callable[[int], float]
Clock = Callable[[], float]

# The defaults of every command that measures; the CLI interpolates them into its help (README, "The protocol inside
# a worker"): stop when the 95% CI of the median is within ±2%, or at the time cap, sampling at least min_time.
DEFAULT_TARGET_CI = 0.02
DEFAULT_MAX_TIME_S = 10.0
DEFAULT_MIN_TIME_S = 0.5


@dataclass(frozen=True)
class MeasureConfig:
    """Knobs of the protocol: a ±``target_ci`` CI of the median at ``confidence``, or the time cap."""

    target_ci: float = DEFAULT_TARGET_CI
    max_time_s: float = DEFAULT_MAX_TIME_S
    min_samples: int = 10
    max_samples: int = 2000
    # Sampling lasts at least this long even when the CI target is met sooner: a CI from a fraction of a second of
    # one process says little about the next run (frequency, cache and allocator state drift on that time scale).
    min_time_s: float = DEFAULT_MIN_TIME_S
    min_sample_time_s: float = 0.002
    warmup_min_s: float = 0.2
    warmup_max_s: float = 2.0
    warmup_max_batches: int = 1000  # bounds slow-call warm-ups; warmup_max_s bounds the rest
    warmup_window: int = 3
    warmup_tolerance: float = 0.05
    confidence: float = 0.95

    def __post_init__(self) -> None:
        if not 0 < self.target_ci < 1:
            raise ValueError("target_ci must be in (0, 1)")
        if self.max_time_s <= 0:
            raise ValueError("max_time_s must be > 0")
        if self.min_time_s < 0:
            raise ValueError("min_time_s must be >= 0")
        if self.min_samples < 2:
            raise ValueError("min_samples must be >= 2")


@dataclass
class Measurement:
    """What the protocol observed for one callable: per-call samples (ms) and how it got them."""

    samples_ms: list[float]
    calls_per_sample: int
    stats: LatencyStats
    warmup_batches: int
    warmup_s: float
    warmup_stable: bool
    stop_reason: str
    wall_s: float
    # getrusage deltas around the timed samples only (warm-up and calibration excluded)
    counters: ProcessCounters = field(default_factory=ProcessCounters)

    def as_dict(self) -> dict[str, object]:
        return {
            "calls_per_sample": self.calls_per_sample,
            "warmup_batches": self.warmup_batches,
            "warmup_s": self.warmup_s,
            "warmup_stable": self.warmup_stable,
            "stop_reason": self.stop_reason,
            "measure_wall_s": self.wall_s,
            **self.counters.as_fields(),
            "counters_raw": self.counters.raw(),
        }


@dataclass
class InterleavedMeasurement:
    """Per-variant measurements taken in shuffled rounds, and each variant's speed ratio to the baseline."""

    baseline: str
    measurements: dict[str, Measurement]
    ratios: dict[str, RatioEstimate] = field(default_factory=dict)
    rounds: int = 0
    stop_reason: str = ""


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """The garbage collector paused for a timed batch (a collection mid-sample is not the model's time), and
    restored to what it was."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if gc_was_enabled:
            gc.enable()


def wall_clock_timer(fn: Callable[[], object], clock: Clock = time.perf_counter) -> BatchTimer:
    """Batch timer for a host-synchronous callable: wall time of n calls with the garbage collector paused."""

    def run(n: int) -> float:
        with gc_paused():
            start = clock()
            for _ in range(n):
                fn()
            return clock() - start

    return run


def timed_sample(timer: BatchTimer, n: int, counters: ProcessCounters) -> float:
    """One sample of ``n`` calls (ms per call), with the process counters read around it."""
    before = snapshot()
    seconds = timer(n)
    counters.add(before, snapshot(), n)
    return seconds / n * 1e3


def calibrate(timer: BatchTimer, min_sample_time_s: float, max_calls: int = 1_000_000) -> int:
    """Smallest call count whose batch lasts at least ``min_sample_time_s`` (so timer overhead is negligible)."""
    n = 1
    while True:
        t = timer(n)
        if t >= min_sample_time_s or n >= max_calls:
            return n
        grow = min_sample_time_s / t * 1.25 if t > 0 else 10.0
        n = min(max_calls, max(n + 1, math.ceil(n * min(grow, 10.0))))


def _stable(per_call: list[float], window: int, tolerance: float) -> bool:
    """No drift: the medians of the last two windows of batches agree within ``tolerance``.

    Comparing consecutive windows (not the spread inside one) catches a slow downward trend, such as caches and
    allocators warming up, that looks flat batch to batch; medians keep single noisy batches from deciding.
    """
    if len(per_call) < 2 * window:
        return False
    last = float(np.median(per_call[-window:]))
    prev = float(np.median(per_call[-2 * window : -window]))
    return last > 0 and abs(prev - last) / last <= tolerance


def warm_up(
    timer: BatchTimer, n: int, config: MeasureConfig, clock: Clock = time.perf_counter
) -> tuple[list[float], float, bool]:
    """Run batches until the per-call time stops drifting (at least ``warmup_min_s``; bounded in batches and seconds)."""
    start = clock()
    per_call: list[float] = []
    budget = min(config.warmup_max_s, config.max_time_s / 4)
    stable = False
    while len(per_call) < config.warmup_max_batches:
        per_call.append(timer(n) / n)
        elapsed = clock() - start
        if elapsed >= config.warmup_min_s and _stable(per_call, config.warmup_window, config.warmup_tolerance):
            stable = True
            break
        if elapsed >= budget:
            break
    return per_call, clock() - start, stable


def _recalibrated(n: int, per_call: list[float], min_sample_time_s: float) -> int:
    recent = float(np.median(per_call[-3:])) if per_call else 0.0
    if recent <= 0:
        return n
    return max(1, math.ceil(min_sample_time_s / recent))


def measure(timer: BatchTimer, config: MeasureConfig = MeasureConfig(), clock: Clock = time.perf_counter) -> Measurement:
    """Measure one callable: calibrate, warm up, then sample (at least ``min_time_s``) until the median's CI meets
    the target or the time cap is hit."""
    t0 = clock()
    n = calibrate(timer, config.min_sample_time_s)
    warm, warm_s, stable = warm_up(timer, n, config, clock)
    n = _recalibrated(n, warm, config.min_sample_time_s)
    samples: list[float] = []
    counters = ProcessCounters()
    reason = "max_samples"
    sampling_start = clock()
    while len(samples) < config.max_samples:
        samples.append(timed_sample(timer, n, counters))
        if len(samples) >= config.min_samples:
            now = clock()
            long_enough = now - sampling_start >= config.min_time_s
            if long_enough and summarize(samples, config.confidence).ci_half_width <= config.target_ci:
                reason = "ci_target"
                break
            if now - t0 >= config.max_time_s:
                reason = "max_time"
                break
    return Measurement(samples, n, summarize(samples, config.confidence), len(warm), warm_s, stable, reason,
                       clock() - t0, counters)


def measure_interleaved(
    timers: Mapping[str, BatchTimer],
    baseline: str | None = None,
    config: MeasureConfig = MeasureConfig(),
    clock: Clock = time.perf_counter,
    seed: int = 0,
) -> InterleavedMeasurement:
    """Measure several variants in shuffled rounds (one sample of each per round) so drift hits all alike.

    Stops when every variant's median CI meets the target or the time cap (shared by all variants) is hit.
    Returns per-variant measurements and each variant's speed ratio to ``baseline`` (default: the first).
    """
    names = list(timers)
    if not names:
        raise ValueError("no variants to measure")
    baseline = baseline if baseline is not None else names[0]
    if baseline not in timers:
        raise ValueError(f"baseline {baseline!r} is not among the variants {names}")
    t0 = clock()
    calls: dict[str, int] = {}
    warm: dict[str, tuple[list[float], float, bool]] = {}
    for name in names:
        n = calibrate(timers[name], config.min_sample_time_s)
        warm[name] = warm_up(timers[name], n, config, clock)
        calls[name] = _recalibrated(n, warm[name][0], config.min_sample_time_s)
    rng = random.Random(seed)
    samples: dict[str, list[float]] = {name: [] for name in names}
    counters = {name: ProcessCounters() for name in names}
    order = list(names)
    reason = "max_samples"
    rounds = 0
    sampling_start = clock()
    while rounds < config.max_samples:
        rng.shuffle(order)
        for name in order:
            samples[name].append(timed_sample(timers[name], calls[name], counters[name]))
        rounds += 1
        if rounds >= config.min_samples:
            now = clock()
            long_enough = now - sampling_start >= config.min_time_s
            if long_enough and all(summarize(s, config.confidence).ci_half_width <= config.target_ci
                                   for s in samples.values()):
                reason = "ci_target"
                break
            if now - t0 >= config.max_time_s:
                reason = "max_time"
                break
    wall = clock() - t0
    measurements = {
        name: Measurement(
            samples[name],
            calls[name],
            summarize(samples[name], config.confidence),
            len(warm[name][0]),
            warm[name][1],
            warm[name][2],
            reason,
            wall,
            counters[name],
        )
        for name in names
    }
    ratios = {
        name: speed_ratio(samples[baseline], samples[name], config.confidence, paired=True, seed=seed)
        for name in names
    }
    return InterleavedMeasurement(baseline, measurements, ratios, rounds, reason)
