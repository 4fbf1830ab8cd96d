import pytest

from latprof.measure.protocol import MeasureConfig, calibrate, measure, measure_interleaved, warm_up
from tests.conftest import SyntheticTimer


def test_calibration_makes_samples_dwarf_timer_overhead(clock):
    timer = SyntheticTimer(clock, per_call_s=1e-4)
    n = calibrate(timer, min_sample_time_s=0.002)
    assert n * 1e-4 >= 0.002
    assert n <= 0.002 / 1e-4 * 1.5  # not wildly more than needed


def test_slow_call_needs_one_call_per_sample(clock):
    assert calibrate(SyntheticTimer(clock, per_call_s=0.05), 0.002) == 1


def test_noise_free_timer_stops_on_ci_target_at_min_samples(clock):
    cfg = MeasureConfig(target_ci=0.02, max_time_s=100, min_samples=10, min_time_s=0)
    m = measure(SyntheticTimer(clock, 1e-3), cfg, clock=clock)
    assert m.stop_reason == "ci_target"
    assert m.stats.n_samples == 10
    assert m.stats.median_ms == pytest.approx(1.0)
    assert m.warmup_stable


def test_sampling_lasts_at_least_min_time_even_when_the_ci_is_met(clock):
    cfg = MeasureConfig(target_ci=0.02, max_time_s=100, min_samples=10, min_time_s=0.5)
    timer = SyntheticTimer(clock, 1e-3)
    m = measure(timer, cfg, clock=clock)
    assert m.stop_reason == "ci_target"
    sampled_s = sum(m.samples_ms) * m.calls_per_sample / 1e3
    assert 0.5 <= sampled_s < 0.5 + 0.01  # stops within one sample after the minimum
    assert m.stats.n_samples > 10


def test_time_cap_wins_over_min_time(clock):
    cfg = MeasureConfig(target_ci=0.02, max_time_s=0.3, min_samples=5, min_time_s=10)
    m = measure(SyntheticTimer(clock, 1e-3), cfg, clock=clock)
    assert m.stop_reason == "max_time"
    assert m.wall_s < 0.35


def test_moderate_noise_stops_when_ci_within_target(clock):
    cfg = MeasureConfig(target_ci=0.02, max_time_s=1000, min_samples=10)
    m = measure(SyntheticTimer(clock, 1e-3, noise=0.25, seed=3), cfg, clock=clock)
    assert m.stop_reason == "ci_target"
    assert m.stats.ci_half_width <= 0.02
    assert m.stats.n_samples > 10  # noise needed more samples than the minimum


def test_heavy_noise_stops_on_time_cap(clock):
    cfg = MeasureConfig(target_ci=0.001, max_time_s=0.5, min_samples=10)
    m = measure(SyntheticTimer(clock, 1e-3, noise=0.3, seed=4), cfg, clock=clock)
    assert m.stop_reason == "max_time"
    assert m.wall_s >= 0.5
    assert m.wall_s < 0.5 + 0.05  # stops within about one sample of the cap
    assert m.stats.ci_half_width > 0.001


def test_sample_cap(clock):
    cfg = MeasureConfig(target_ci=0.0001, max_time_s=1e9, min_samples=5, max_samples=40)
    m = measure(SyntheticTimer(clock, 1e-3, noise=0.2, seed=5), cfg, clock=clock)
    assert m.stop_reason == "max_samples"
    assert m.stats.n_samples == 40


def test_warm_up_runs_until_stable(clock):
    # cold calls start 3x slower and recover with a time constant of 20 calls; warm-up must outlast the transient
    timer = SyntheticTimer(clock, 1e-3, warmup_calls=20, warmup_factor=3.0)
    cfg = MeasureConfig(warmup_min_s=0, warmup_max_s=10, warmup_max_batches=100)
    per_call, seconds, stable = warm_up(timer, n=5, config=cfg, clock=clock)
    assert stable
    assert timer.calls >= 40  # the slowdown was still > 25% before then
    assert per_call[-1] == pytest.approx(1e-3, rel=2 * cfg.warmup_tolerance)
    assert seconds > 0


def test_slow_drift_is_not_mistaken_for_stability(clock):
    # a decay that changes only ~3% from one batch to the next (a window-range test of 5% would stop at once)
    # but more than 5% between consecutive windows must keep the warm-up going until it flattens
    timer = SyntheticTimer(clock, 1e-3, warmup_calls=20, warmup_factor=2.0)
    cfg = MeasureConfig(warmup_min_s=0, warmup_max_s=10, warmup_max_batches=1000)
    per_call, _, stable = warm_up(timer, n=2, config=cfg, clock=clock)
    assert stable
    assert per_call[-1] < 1.25e-3  # the run kept warming up well into the decay


def test_warm_up_is_bounded(clock):
    cfg = MeasureConfig(warmup_max_s=10, warmup_max_batches=7)
    per_call, _, stable = warm_up(SyntheticTimer(clock, 1e-3, noise=0.5, seed=6), 2, cfg, clock=clock)
    assert len(per_call) <= 7
    assert not stable


def test_samples_after_warm_up_exclude_cold_calls(clock):
    # a realistic cold start: the first calls are up to 5x slower, recovering within a few tens of calls
    timer = SyntheticTimer(clock, 1e-3, warmup_calls=5, warmup_factor=5.0)
    m = measure(timer, MeasureConfig(max_time_s=100), clock=clock)
    assert max(m.samples_ms) < 1.05  # cold calls up to 5 ms stayed in the warm-up
    assert m.stats.median_ms == pytest.approx(1.0, rel=0.01)


def test_interleaved_rounds_ratios_and_stop(clock):
    timers = {
        "base": SyntheticTimer(clock, 1e-3, noise=0.02, seed=1),
        "slow": SyntheticTimer(clock, 1.25e-3, noise=0.02, seed=2),
        "fast": SyntheticTimer(clock, 0.8e-3, noise=0.02, seed=3),
    }
    im = measure_interleaved(timers, "base", MeasureConfig(max_time_s=1000), clock=clock)
    assert im.stop_reason == "ci_target"
    counts = {len(m.samples_ms) for m in im.measurements.values()}
    assert counts == {im.rounds}  # one sample of every variant per round
    assert im.ratios["base"].ratio == pytest.approx(1.0)
    # one seeded run: the estimates sit near the truth and are confidently on the right side of 1
    # (how often a CI covers the truth is tested over many seeds in test_stats)
    assert im.ratios["slow"].ratio == pytest.approx(0.8, rel=0.015)
    assert im.ratios["slow"].ci_high < 1
    assert im.ratios["fast"].ratio == pytest.approx(1.25, rel=0.015)
    assert im.ratios["fast"].ci_low > 1
    for m in im.measurements.values():
        assert m.stats.ci_half_width <= 0.02


def test_interleaved_shares_the_time_cap(clock):
    timers = {"a": SyntheticTimer(clock, 1e-3, noise=0.4, seed=1), "b": SyntheticTimer(clock, 1e-3, noise=0.4, seed=2)}
    im = measure_interleaved(timers, config=MeasureConfig(target_ci=0.001, max_time_s=1.0), clock=clock)
    assert im.stop_reason == "max_time"
    assert im.baseline == "a"
    assert clock.now < 1.1


def test_interleaved_rejects_unknown_baseline(clock):
    with pytest.raises(ValueError):
        measure_interleaved({"a": SyntheticTimer(clock, 1e-3)}, baseline="zzz")


def test_config_validation():
    with pytest.raises(ValueError):
        MeasureConfig(target_ci=0)
    with pytest.raises(ValueError):
        MeasureConfig(max_time_s=-1)


def test_defaults_are_the_module_constants():
    from latprof.measure.protocol import DEFAULT_MAX_TIME_S, DEFAULT_MIN_TIME_S, DEFAULT_TARGET_CI

    d = MeasureConfig()
    assert (d.target_ci, d.max_time_s, d.min_time_s) == (DEFAULT_TARGET_CI, DEFAULT_MAX_TIME_S, DEFAULT_MIN_TIME_S)
    with pytest.raises(ValueError, match="min_time_s"):
        MeasureConfig(min_time_s=-1)
