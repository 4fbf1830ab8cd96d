"""Latency-vs-count fits and the roofline: exact arithmetic on known inputs, and the peaks record on torch-cpu."""

from __future__ import annotations

import math

import pytest

from latprof.analysis.fits import better_predictor, fit_latency
from latprof.analysis.roofline import attained, roof_gflops
from latprof.backends.peaks import measure_peaks
from latprof.measure.protocol import MeasureConfig


def test_fit_exact_line() -> None:
    fit = fit_latency("mem_access", [1, 2, 3, 4], [3, 5, 7, 9])
    assert fit is not None
    assert fit.slope_ms == pytest.approx(2) and fit.intercept_ms == pytest.approx(1)
    assert fit.r2 == pytest.approx(1) and fit.spearman_rho == pytest.approx(1) and fit.n == 4


def test_fit_needs_spread() -> None:
    assert fit_latency("mult_adds", [5, 5, 5], [1, 2, 3]) is None
    assert fit_latency("mult_adds", [1, 2], [1, 2]) is None
    assert fit_latency("mult_adds", [1, 2, math.nan, 4], [1, 2, 3, 4]).n == 3  # type: ignore[union-attr]


def test_better_predictor_words() -> None:
    good = fit_latency("mem_access", [1, 2, 3, 4, 5], [1, 2, 3, 4, 5])
    poor = fit_latency("mult_adds", [1, 2, 3, 4, 5], [1, 5, 2, 4, 3])
    winner, sentence = better_predictor({"mult_adds": poor, "mem_access": good})
    assert winner == "mem_access" and sentence.startswith("mem_access predicts latency better than mult_adds")
    assert better_predictor({"mult_adds": None, "mem_access": good})[0] is None


def test_roofline_arithmetic() -> None:
    assert roof_gflops(1.0, 100.0, 10.0) == 10.0
    assert roof_gflops(50.0, 100.0, 10.0) == 100.0
    p = attained(mult_adds=1e9, mem_bytes=1e8, latency_ms=100.0, peak_gflops=100.0, peak_gbytes_per_s=10.0)
    assert p["arithmetic_intensity"] == pytest.approx(20.0)
    assert p["attained_gflops"] == pytest.approx(20.0)
    assert p["roof_gflops"] == pytest.approx(100.0)
    assert p["share_of_roof"] == pytest.approx(0.2)


def test_measure_peaks_record_on_torch_cpu() -> None:
    rec = measure_peaks("torch-cpu", 1, hardware_id="hw", gemm_channels=32, gemm_side=8, copy_elements=4096,
                        config=MeasureConfig(target_ci=0.2, max_time_s=0.3, min_samples=3, warmup_max_s=0.05))
    assert rec["record"] == "peaks" and rec["backend"] == "torch-cpu" and rec["threads"] == 1 and rec["hardware_id"] == "hw"
    assert rec["peak_gflops"] > 0 and rec["peak_gbytes_per_s"] > 0
    assert rec["peak_gflops"] == pytest.approx(2 * 32 * 32 * 8 * 8 / (rec["gemm_latency_ms"] / 1e3) / 1e9)
    assert rec["peak_gbytes_per_s"] == pytest.approx(2 * 4096 * 4 / (rec["copy_latency_ms"] / 1e3) / 1e9)
    assert "1x1 conv 32->32" in rec["method"]


def test_per_block_fits_leave_out_the_whole_network(tmp_path) -> None:
    """A per-block run's whole-network row (block_index -1) sits far beyond its blocks; it stays out of the fits."""
    import pandas as pd

    from latprof.report import build_report
    from tests import report_fixture as fx

    rows = [r for r in fx.profile_rows() if str(r.get("experiment", "")).startswith("blocks:")]
    assert [r["block_index"] for r in rows if r["variant"] == "network"] == [-1]
    out = build_report([fx.write_jsonl(tmp_path / "blocks.jsonl", rows)], tmp_path / "report.html")
    fits = pd.read_csv(tmp_path / "report_fits.csv")
    points = pd.read_csv(tmp_path / "report_fit_points.csv")
    blocks = [r for r in rows if r["block_index"] >= 0]
    assert "network" not in set(points["variant"]) and len(points) == len(blocks)
    for predictor in ("mult_adds", "mem_access"):
        expected = fit_latency(predictor, [r[predictor] for r in blocks], [r["latency_median_ms"] for r in blocks])
        got = fits[fits["predictor"] == predictor].iloc[0]
        if expected is None:
            assert pd.isna(got.get("n"))
        else:
            assert got["n"] == len(blocks) and got["r2"] == pytest.approx(expected.r2)
    assert "1 whole-network row(s) of block-by-block runs are left out of the fits" in out.read_text()
