"""The decision rule of the regression gate: is CURRENT slower than BASELINE, beyond noise and beyond a threshold?

The rule (documented in docs/ci.md) combines an effect size with two significance checks, as asv does:

* ``ratio`` = median(current) / median(baseline)  (> 1 means slower);
* ``[ci_low, ci_high]`` = percentile-bootstrap CI of that ratio at confidence ``1 - alpha``
  (``scipy.stats.bootstrap``; the two runs are resampled independently);
* ``p_value`` = two-sided Mann–Whitney U test of current vs baseline samples (as asv and Google Benchmark use);
* band = ``[1/(1+threshold), 1+threshold]`` (symmetric in log space).

Verdicts:

* ``regressed``: ``ratio > 1+threshold`` and ``ci_low > 1`` and ``p_value < alpha``;
* ``improved``: ``ratio < 1/(1+threshold)`` and ``ci_high < 1`` and ``p_value < alpha``;
* ``unchanged``: the whole CI lies inside the band (any change is smaller than the threshold, with confidence);
* ``inconclusive``: anything else — the CI reaches past a band edge but the evidence for a change that large is
  missing (too few or too noisy samples).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as sps

from latprof.measure.stats import speed_ratio

VERDICTS = ("regressed", "improved", "unchanged", "inconclusive")


@dataclass(frozen=True)
class Comparison:
    """One comparison of two sample sets and its verdict."""

    ratio: float
    ci_low: float
    ci_high: float
    p_value: float
    verdict: str
    n_baseline: int
    n_current: int
    baseline_median: float
    current_median: float

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def ratio_ci(
    baseline: np.ndarray, current: np.ndarray, confidence: float, n_resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile-bootstrap CI of median(current)/median(baseline), the two sets resampled independently
    (runs of separate processes share no rounds, so they are not paired)."""
    est = speed_ratio(current, baseline, confidence, paired=False, n_resamples=n_resamples, seed=seed)
    return est.ci_low, est.ci_high


def verdict(ratio: float, ci_low: float, ci_high: float, p_value: float, threshold: float, alpha: float) -> str:
    """Apply the rule in the module docstring to an already computed ratio, CI and p-value."""
    upper, lower = 1.0 + threshold, 1.0 / (1.0 + threshold)
    if not all(np.isfinite([ratio, ci_low, ci_high, p_value])):
        return "inconclusive"
    significant = p_value < alpha
    if ratio > upper and ci_low > 1.0 and significant:
        return "regressed"
    if ratio < lower and ci_high < 1.0 and significant:
        return "improved"
    if lower <= ci_low and ci_high <= upper:
        return "unchanged"
    return "inconclusive"


def compare_samples(
    baseline: np.ndarray | list[float],
    current: np.ndarray | list[float],
    threshold: float = 0.05,
    alpha: float = 0.01,
    n_resamples: int = 2000,
    seed: int = 0,
) -> Comparison:
    """Compare two sets of latency samples (or normalised latency samples) and classify the change."""
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    b = np.asarray(baseline, dtype=float)
    c = np.asarray(current, dtype=float)
    b, c = b[np.isfinite(b)], c[np.isfinite(c)]
    if b.size == 0 or c.size == 0:
        raise ValueError("need at least one finite sample on each side")
    b_med, c_med = float(np.median(b)), float(np.median(c))
    ratio = c_med / b_med if b_med > 0 else float("nan")
    if b.size < 3 or c.size < 3 or np.ptp(np.concatenate([b, c])) == 0:
        lo = hi = p = float("nan")
        if b.size >= 3 and c.size >= 3:  # all samples identical: no change at all
            lo = hi = ratio
            p = 1.0
    else:
        lo, hi = ratio_ci(b, c, 1.0 - alpha, n_resamples, seed)
        p = float(sps.mannwhitneyu(c, b, alternative="two-sided").pvalue)
    return Comparison(ratio, lo, hi, p, verdict(ratio, lo, hi, p, threshold, alpha), int(b.size), int(c.size), b_med, c_med)
