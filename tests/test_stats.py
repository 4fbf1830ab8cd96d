import numpy as np
import pytest
from scipy import stats as sps

from latprof.measure.stats import median_ci_ranks, speed_ratio, summarize


def test_summary_matches_numpy_on_known_samples():
    x = np.array([5.0, 1.0, 3.0, 2.0, 4.0, 100.0, 3.5, 2.5, 3.2, 2.8])
    s = summarize(x)
    assert s.median_ms == pytest.approx(np.median(x))
    assert s.mean_ms == pytest.approx(np.mean(x))
    assert s.std_ms == pytest.approx(np.std(x, ddof=1))
    assert s.p10_ms == pytest.approx(np.percentile(x, 10))
    assert s.p90_ms == pytest.approx(np.percentile(x, 90))
    q1, q3 = np.percentile(x, [25, 75])
    assert s.iqr_ms == pytest.approx(q3 - q1)
    assert s.cv == pytest.approx(np.std(x, ddof=1) / np.mean(x))
    assert s.n_samples == 10
    assert (s.min_ms, s.max_ms) == (1.0, 100.0)


def test_tukey_outliers_counted_not_dropped():
    # 1..11 plus two strays: q1 = 3, q3 = 9 (linear interpolation), fences at 3 - 9 = -6 and 9 + 9 = 18
    x = [float(v) for v in range(1, 12)] + [100.0, -50.0]
    s = summarize(x)
    assert s.iqr_ms == 6.0
    assert s.outliers_high == 1
    assert s.outliers_low == 1
    assert s.n_samples == len(x)
    assert s.mean_ms == pytest.approx(np.mean(x))  # nothing removed


@pytest.mark.parametrize("n", [6, 10, 11, 25, 50, 101, 400])
def test_median_ci_matches_scipy_quantile_test(n):
    rng = np.random.default_rng(n)
    x = np.sort(rng.lognormal(0, 0.2, n))
    s = summarize(x)
    ref = sps.quantile_test(x, q=float(np.median(x)), p=0.5).confidence_interval(0.95)
    assert s.ci_low_ms == pytest.approx(ref.low)
    assert s.ci_high_ms == pytest.approx(ref.high)
    assert s.ci_low_ms <= s.median_ms <= s.ci_high_ms


@pytest.mark.parametrize("n", [5, 10, 30, 100, 1000])
def test_median_ci_ranks_keep_coverage(n):
    lo, hi = median_ci_ranks(n, 0.95)
    r = lo + 1  # 1-based rank of the lower bound
    coverage = 1 - 2 * sps.binom.cdf(r - 1, n, 0.5)
    assert coverage >= 0.95 or (lo, hi) == (0, n - 1)
    assert hi == n - 1 - lo  # symmetric


def test_small_sample_ci_falls_back_to_extremes():
    assert median_ci_ranks(3) == (0, 2)


def test_speed_ratio_point_and_ci():
    rng = np.random.default_rng(1)
    base = 10 * (1 + 0.01 * rng.standard_normal(60))
    slow = 12 * (1 + 0.01 * rng.standard_normal(60))
    r = speed_ratio(base, slow)
    assert r.ratio == pytest.approx(np.median(base) / np.median(slow))
    assert r.ci_low < r.ratio < r.ci_high
    assert r.ci_high < 1.0  # the variant is confidently slower
    assert speed_ratio(base, slow) == r  # seeded: deterministic


def test_paired_ratio_removes_shared_drift():
    drift = np.linspace(1.0, 1.5, 80)  # the machine slows down during the run, for both variants alike
    rng = np.random.default_rng(2)
    base = 10 * drift * (1 + 0.005 * rng.standard_normal(80))
    var = 11 * drift * (1 + 0.005 * rng.standard_normal(80))
    paired = speed_ratio(base, var, paired=True)
    unpaired = speed_ratio(base, var, paired=False)
    assert (paired.ci_high - paired.ci_low) < (unpaired.ci_high - unpaired.ci_low) / 3
    assert paired.ci_low < 10 / 11 < paired.ci_high


def test_ratio_ci_covers_the_true_ratio_at_about_the_stated_rate():
    """Over many independent runs, the 95% bootstrap CI of the ratio of medians contains the true ratio."""
    true_ratio = 1.25
    hits = 0
    runs = 200
    for seed in range(runs):
        rng = np.random.default_rng(seed)
        base = rng.lognormal(np.log(1.0), 0.03, 60)
        variant = rng.lognormal(np.log(1.0 / true_ratio), 0.03, 60)
        r = speed_ratio(base, variant, paired=False, n_resamples=1000, seed=seed)
        hits += r.ci_low <= true_ratio <= r.ci_high
    assert 0.88 <= hits / runs <= 1.0


@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_median_ci_ranks_equal_scipys_binomial_quantile_rule(confidence):
    """The exact integer sum gives the ranks the scipy binomial rule gave (ppf, then one down where the cdf at
    r - 1 exceeds the tail), for every sample count the protocol takes and some far beyond."""
    alpha = 1.0 - confidence
    for n in [*range(1, 700), 1000, 2047, 4096, 10000]:
        r = int(sps.binom.ppf(alpha / 2, n, 0.5))
        if r >= 1 and sps.binom.cdf(r - 1, n, 0.5) > alpha / 2:
            r -= 1
        r = max(r, 1)
        assert median_ci_ranks(n, confidence) == (r - 1, n - r), n


@pytest.mark.parametrize("module", ["latprof.profile", "latprof.experiments.sweep", "latprof.per_block",
                                    "latprof.predict.measure_cells"])
def test_a_worker_s_measure_function_imports_neither_scipy_nor_pandas(module):
    """Every worker process imports its unit's measure module; scipy (0.5-1 s) loads only where a ratio's bootstrap
    runs and pandas (0.3 s) where a table is built."""
    import subprocess
    import sys

    code = f"import sys, {module}; print('scipy' in sys.modules, 'pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False False"
