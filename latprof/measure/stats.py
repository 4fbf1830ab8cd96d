"""Latency statistics: robust summaries, a distribution-free CI of the median, bootstrap CIs of speed ratios.

Kept apart from the timing loop (as pyperf does) so it can be tested on known samples.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from fractions import Fraction

import numpy as np


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
    median with probability 1 - 2*P(B <= r-1): r is the largest with P(B <= r-1) <= (1 - confidence) / 2, summed
    in exact integer arithmetic (C(n, i) / 2**n; no scipy import in every worker process). With too few samples
    for the requested coverage the bounds are the extremes (coverage then is 1 - 2**(1-n)).
    """
    if n < 1:
        raise ValueError("need at least one sample")
    tail = Fraction(1.0 - confidence) / 2 * 2 ** n  # the allowed P(B <= r-1), times 2**n
    r, below, term = 0, 0, 1  # below = sum of C(n, i) for i < r; term = C(n, r)
    while r < n and below + term <= tail:
        below += term
        term = term * (n - r) // (r + 1)
        r += 1
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
    from scipy import stats as sps  # here, not at import: every worker process imports this module

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


# ------------------------------------------------------------------ several processes per reading
def process_weighted_median(groups: list[np.ndarray]) -> float:
    """The median of samples from several processes, each process weighing the same however many samples it took.

    A time-capped process takes more samples when the machine is fast, so a plain pooled median leans toward the
    fastest process (on a drifting VM, 2026-12-02: three passes of MicroNet M0 read 11.9, 6.8 and 8.7 ms and the
    pooled median was 7.1). Weighting each sample by 1/(its process's sample count) makes the process, not the
    sample, the unit of replication, as pyperf's fixed count per process does. With equal counts it is the plain
    pooled median."""
    sizes = {g.size for g in groups}
    if len(sizes) == 1:
        return float(np.median(np.concatenate(groups)))
    x = np.concatenate(groups)
    w = np.concatenate([np.full(g.size, 1.0 / g.size) for g in groups])
    order = np.argsort(x, kind="stable")
    x, cw = x[order], np.cumsum(w[order])
    half = cw[-1] / 2
    i = int(np.searchsorted(cw, half * (1 - 1e-12)))  # the first sample at or past half the weight
    if np.isclose(cw[i], half) and i + 1 < x.size:  # the halfway point falls between two samples: their midpoint
        return float((x[i] + x[i + 1]) / 2)
    return float(x[i])


def _resampled_pooled_medians(
    groups: list[np.ndarray], rng: np.random.Generator, n_resamples: int, partner: list[np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Two-level bootstrap: draw processes with replacement, then samples within each drawn process; the pooled
    median of each resample (each process weighing the same). With ``partner`` (same shapes: paired rounds), the
    same indices resample it too."""
    p = len(groups)
    out = np.empty(n_resamples)
    out_partner = np.empty(n_resamples) if partner is not None else None
    picks = rng.integers(0, p, size=(n_resamples, p))
    for b in range(n_resamples):
        parts, partner_parts = [], []
        for g in picks[b]:
            x = groups[g]
            idx = rng.integers(0, x.size, size=x.size)
            parts.append(x[idx])
            if partner is not None:
                partner_parts.append(partner[g][idx])
        out[b] = process_weighted_median(parts)
        if out_partner is not None:
            out_partner[b] = process_weighted_median(partner_parts)
    return out, out_partner


def pooled_median_ci(
    groups_ms: list[list[float]], confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """(median, low, high) of samples from several processes; the CI covers process-to-process variation.

    One process: the distribution-free order-statistic CI of ``summarize``. Several: a hierarchical bootstrap
    (resample processes, then samples within each), so a spread between processes widens the interval instead of
    hiding in a pooled sample count.
    """
    groups = [np.asarray(g, dtype=float) for g in groups_ms if len(g)]
    if not groups:
        raise ValueError("no samples")
    if len(groups) == 1:
        s = summarize(groups[0], confidence)
        return s.median_ms, s.ci_low_ms, s.ci_high_ms
    medians, _ = _resampled_pooled_medians(groups, np.random.default_rng(seed), n_resamples)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(medians, [alpha, 1 - alpha])
    return process_weighted_median(groups), float(low), float(high)


def pooled_speed_ratio(
    baseline_groups_ms: list[list[float]],
    variant_groups_ms: list[list[float]],
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> RatioEstimate:
    """Speed ratio baseline/variant over several processes, each holding paired interleaved rounds.

    One process: ``speed_ratio`` (paired bootstrap over rounds). Several: a hierarchical paired bootstrap — draw
    processes, then rounds within each (the same rounds for baseline and variant, so drift shared by both cancels).
    """
    base = [np.asarray(g, dtype=float) for g in baseline_groups_ms]
    var = [np.asarray(g, dtype=float) for g in variant_groups_ms]
    if len(base) == 1:
        return speed_ratio(base[0], var[0], confidence, paired=True, n_resamples=n_resamples, seed=seed)
    point = process_weighted_median(base) / process_weighted_median(var)
    paired = all(b.size == v.size for b, v in zip(base, var))
    rng = np.random.default_rng(seed)
    if paired:
        mb, mv = _resampled_pooled_medians(base, rng, n_resamples, partner=var)
    else:
        mb, _ = _resampled_pooled_medians(base, rng, n_resamples)
        mv, _ = _resampled_pooled_medians(var, rng, n_resamples)
    ratios = mb / mv
    alpha = (1 - confidence) / 2
    low, high = np.quantile(ratios, [alpha, 1 - alpha])
    return RatioEstimate(point, float(low), float(high), confidence)


def process_spread(groups_ms: list[list[float]]) -> float | None:
    """max/min of the per-process medians (1.0 = every process read the same); None with one process."""
    medians = [float(np.median(g)) for g in groups_ms if len(g)]
    if len(medians) < 2 or min(medians) <= 0:
        return None
    return max(medians) / min(medians)
