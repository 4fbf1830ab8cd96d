"""Latency statistics: robust summaries, a distribution-free CI of the median, bootstrap CIs of speed ratios.

Kept apart from the timing loop (as pyperf does) so it can be tested on known samples.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as sps


@dataclass(frozen=True)
class LatencyStats:
    """Summary of per-call latencies in milliseconds (one value per sample of a calibrated call batch)."""

    median_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    p10_ms: float
    p90_ms: float
    iqr_ms: float
    ci_low_ms: float
    ci_high_ms: float
    confidence: float
    cv: float
    n_samples: int
    outliers_low: int
    outliers_high: int

    @property
    def ci_half_width(self) -> float:
        """Largest distance from the median to a CI bound, relative to the median."""
        if self.median_ms <= 0:
            return float("inf")
        return max(self.median_ms - self.ci_low_ms, self.ci_high_ms - self.median_ms) / self.median_ms

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def median_ci_ranks(n: int, confidence: float = 0.95) -> tuple[int, int]:
    """0-based order-statistic indices (lo, hi) bounding the median with at least ``confidence`` coverage.

    The number of samples below the true median is Binomial(n, 1/2); [x_(r), x_(n-r+1)] (1-based) covers the
    median with probability 1 - 2*P(B <= r-1). With too few samples for the requested coverage the bounds are
    the extremes (coverage then is 1 - 2**(1-n)).
    """
    if n < 1:
        raise ValueError("need at least one sample")
    alpha = 1.0 - confidence
    r = int(sps.binom.ppf(alpha / 2, n, 0.5))
    if r >= 1 and sps.binom.cdf(r - 1, n, 0.5) > alpha / 2:  # ppf rounds up; keep the coverage guarantee
        r -= 1
    r = max(r, 1)
    return r - 1, n - r


def summarize(samples_ms: np.ndarray | list[float], confidence: float = 0.95) -> LatencyStats:
    """Summary statistics of latency samples (ms). Outliers are counted by Tukey's fences, never dropped."""
    x = np.sort(np.asarray(samples_ms, dtype=float))
    if x.size == 0:
        raise ValueError("no samples")
    q1, q3 = np.percentile(x, [25, 75])
    iqr = q3 - q1
    lo_i, hi_i = median_ci_ranks(x.size, confidence)
    mean = float(np.mean(x))
    std = float(np.std(x, ddof=1)) if x.size > 1 else 0.0
    return LatencyStats(
        median_ms=float(np.median(x)),
        mean_ms=mean,
        std_ms=std,
        min_ms=float(x[0]),
        max_ms=float(x[-1]),
        p10_ms=float(np.percentile(x, 10)),
        p90_ms=float(np.percentile(x, 90)),
        iqr_ms=float(iqr),
        ci_low_ms=float(x[lo_i]),
        ci_high_ms=float(x[hi_i]),
        confidence=confidence,
        cv=std / mean if mean > 0 else float("nan"),
        n_samples=int(x.size),
        outliers_low=int(np.sum(x < q1 - 1.5 * iqr)),
        outliers_high=int(np.sum(x > q3 + 1.5 * iqr)),
    )


@dataclass(frozen=True)
class RatioEstimate:
    """Speed of a variant relative to a baseline: median(baseline) / median(variant), with its bootstrap CI.

    Values above 1 mean the variant is faster than the baseline.
    """

    ratio: float
    ci_low: float
    ci_high: float
    confidence: float


def _ratio_of_medians(base: np.ndarray, other: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.median(base, axis=axis) / np.median(other, axis=axis)


def speed_ratio(
    baseline_ms: np.ndarray | list[float],
    variant_ms: np.ndarray | list[float],
    confidence: float = 0.95,
    paired: bool = True,
    n_resamples: int = 2000,
    seed: int = 0,
) -> RatioEstimate:
    """Speed ratio baseline/variant with a percentile-bootstrap CI.

    ``paired`` resamples whole interleaved rounds (sample i of both came from the same round), so slow drift of a
    shared machine, which hits both alike, does not widen the interval.
    """
    b = np.asarray(baseline_ms, dtype=float)
    v = np.asarray(variant_ms, dtype=float)
    point = float(np.median(b) / np.median(v))
    if paired and b.size != v.size:
        paired = False
    if b.size < 2 or v.size < 2:
        return RatioEstimate(point, float("nan"), float("nan"), confidence)
    res = sps.bootstrap(
        (b, v),
        _ratio_of_medians,
        paired=paired,
        vectorized=True,
        n_resamples=n_resamples,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return RatioEstimate(point, float(res.confidence_interval.low), float(res.confidence_interval.high), confidence)
