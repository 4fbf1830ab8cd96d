"""The regression gate's decision rule, file comparison, drift normalisation and the `compare` command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from latprof.cli import main
from latprof.errors import LatprofError
from latprof.regress import CompareOptions, compare_files, compare_samples
from latprof.regress.decision import verdict
from latprof.results import SCHEMA_VERSION, ResultStore, base_row

N = 60


def noisy(median: float, n: int = N, sigma: float = 0.02, seed: int = 0) -> np.ndarray:
    """Latency-like samples: lognormal noise around ``median``."""
    return median * np.exp(np.random.default_rng(seed).normal(0.0, sigma, n))


# ---------------------------------------------------------------- decision rule
def test_aa_is_unchanged() -> None:
    c = compare_samples(noisy(1.0, seed=1), noisy(1.0, seed=2))
    assert c.verdict == "unchanged"
    assert 0.98 < c.ratio < 1.02
    assert c.ci_low < 1 < c.ci_high


def test_20_percent_slower_is_regressed() -> None:
    c = compare_samples(noisy(1.0, seed=1), noisy(1.2, seed=2))
    assert c.verdict == "regressed"
    assert c.ratio == pytest.approx(1.2, rel=0.02)
    assert c.p_value < 1e-6
    assert c.ci_low > 1.05


def test_20_percent_faster_is_improved() -> None:
    c = compare_samples(noisy(1.0, seed=1), noisy(0.8, seed=2))
    assert c.verdict == "improved"
    assert c.ci_high < 1


def test_wide_noise_is_inconclusive() -> None:
    c = compare_samples(noisy(1.0, n=15, sigma=0.5, seed=1), noisy(1.0, n=15, sigma=0.5, seed=2))
    assert c.verdict == "inconclusive"
    assert c.ci_low < 1 / 1.05 or c.ci_high > 1.05


def test_wide_noise_hides_even_a_real_slowdown() -> None:
    c = compare_samples(noisy(1.0, n=10, sigma=0.5, seed=3), noisy(1.1, n=10, sigma=0.5, seed=4))
    assert c.verdict == "inconclusive"


def test_small_significant_change_below_threshold_is_unchanged() -> None:
    c = compare_samples(noisy(1.0, n=400, sigma=0.01, seed=1), noisy(1.02, n=400, sigma=0.01, seed=2))
    assert c.p_value < 1e-6  # significant, yet smaller than the 5% that counts
    assert c.verdict == "unchanged"


def test_threshold_decides_between_regressed_and_unchanged() -> None:
    b, c = noisy(1.0, n=200, sigma=0.01, seed=1), noisy(1.08, n=200, sigma=0.01, seed=2)
    assert compare_samples(b, c, threshold=0.05).verdict == "regressed"
    assert compare_samples(b, c, threshold=0.10).verdict == "unchanged"


def test_rule_needs_significance_and_effect() -> None:
    assert verdict(1.2, 1.1, 1.3, 0.001, 0.05, 0.01) == "regressed"
    assert verdict(1.2, 1.1, 1.3, 0.02, 0.05, 0.01) == "inconclusive"  # effect, but p >= alpha
    assert verdict(1.2, 0.99, 1.3, 0.001, 0.05, 0.01) == "inconclusive"  # CI reaches 1
    assert verdict(1.04, 1.01, 1.07, 0.001, 0.05, 0.01) == "inconclusive"  # below threshold, CI past it
    assert verdict(0.8, 0.7, 0.9, 0.001, 0.05, 0.01) == "improved"
    assert verdict(1.0, 0.96, 1.04, 0.5, 0.05, 0.01) == "unchanged"
    assert verdict(float("nan"), 0.9, 1.1, 0.5, 0.05, 0.01) == "inconclusive"


def test_identical_constant_samples_are_unchanged() -> None:
    assert compare_samples([2.0] * 10, [2.0] * 10).verdict == "unchanged"


def test_too_few_samples_are_inconclusive() -> None:
    assert compare_samples([1.0, 1.0], [2.0, 2.0]).verdict == "inconclusive"


def test_fixed_seed_gives_identical_results() -> None:
    b, c = noisy(1.0, seed=5), noisy(1.06, seed=6)
    assert compare_samples(b, c, seed=3) == compare_samples(b, c, seed=3)


# ---------------------------------------------------------------- results files
def write_run(
    path: Path,
    medians: dict[str, float],
    hardware_id: str = "hw-a",
    seed: int = 0,
    drift: float = 1.0,
    reference: float | None = 1.0,
    n: int = N,
    sigma: float = 0.02,
    hardware: dict[str, Any] | None = None,
) -> Path:
    """A synthetic `latprof ci`-style run: one row per workload plus a reference row, sample i from round i.

    Every round has its own machine-speed factor (shared by all rows of that round) times ``drift``.
    """
    rng = np.random.default_rng(seed)
    rounds = drift * np.exp(rng.normal(0.0, 0.05, n))
    store = ResultStore(path)
    store.append({"record": "environment", "hardware_id": hardware_id, **({"hardware": hardware} if hardware else {})})
    rows = dict(medians)
    if reference is not None:
        rows = {"reference": reference, **rows}
    for name, median in rows.items():
        samples = median * rounds * np.exp(rng.normal(0.0, sigma, n))
        store.append(base_row(
            experiment="ci:test", workload="conv_bn_relu", variant=name, backend="torch-cpu", threads=1, batch=1,
            input_shape="1x32x40x40", status="ok", error="", hardware_id=hardware_id,
            latency_median_ms=float(np.median(samples)), samples_ms=samples.tolist(),
            reference=name == "reference", interleave_group=f"g{seed}",
        ))
    return path


def test_compare_files_aa_and_regression(tmp_path: Path) -> None:
    base = write_run(tmp_path / "a.jsonl", {"w1": 2.0, "w2": 3.0}, seed=1)
    same = write_run(tmp_path / "b.jsonl", {"w1": 2.0, "w2": 3.0}, seed=2)
    slow = write_run(tmp_path / "c.jsonl", {"w1": 2.0, "w2": 3.9}, seed=3)  # w2: 30% more work
    aa = compare_files(base, same, CompareOptions(normalize=True))
    assert [r.verdict for r in aa.rows] == ["unchanged", "unchanged"]
    assert aa.exit_code() == 0
    ab = compare_files(base, slow, CompareOptions(normalize=True))
    assert {r.key["variant"]: r.verdict for r in ab.rows} == {"w1": "unchanged", "w2": "regressed"}
    assert ab.exit_code() == 1
    assert ab.counts() == {"regressed": 1, "improved": 0, "unchanged": 1, "inconclusive": 0}


def test_uniformly_slower_machine_flags_only_without_normalisation(tmp_path: Path) -> None:
    base = write_run(tmp_path / "a.jsonl", {"w1": 2.0, "w2": 3.0}, seed=1)
    slower = write_run(tmp_path / "b.jsonl", {"w1": 2.0, "w2": 3.0}, seed=2, drift=1.3)
    raw = compare_files(base, slower)
    assert {r.key["variant"]: r.verdict for r in raw.rows} == {"reference": "regressed", "w1": "regressed", "w2": "regressed"}
    norm = compare_files(base, slower, CompareOptions(normalize=True))
    assert {r.key["variant"]: r.verdict for r in norm.rows} == {"w1": "unchanged", "w2": "unchanged"}
    assert all(r.normalized for r in norm.rows)


def test_normalisation_still_sees_a_real_regression_on_a_slower_machine(tmp_path: Path) -> None:
    base = write_run(tmp_path / "a.jsonl", {"w1": 2.0, "w2": 3.0}, seed=1)
    cur = write_run(tmp_path / "b.jsonl", {"w1": 2.0, "w2": 3.6}, seed=2, drift=1.3)
    norm = compare_files(base, cur, CompareOptions(normalize=True))
    assert {r.key["variant"]: r.verdict for r in norm.rows} == {"w1": "unchanged", "w2": "regressed"}
    assert norm.rows[1].comparison.ratio == pytest.approx(1.2, rel=0.03)


def test_normalize_without_reference_rows_is_an_error(tmp_path: Path) -> None:
    base = write_run(tmp_path / "a.jsonl", {"w1": 2.0}, seed=1, reference=None)
    cur = write_run(tmp_path / "b.jsonl", {"w1": 2.0}, seed=2, reference=None)
    with pytest.raises(LatprofError, match="no reference row"):
        compare_files(base, cur, CompareOptions(normalize=True))


def test_hardware_mismatch_refused_then_allowed_normalized(tmp_path: Path) -> None:
    base = write_run(tmp_path / "a.jsonl", {"w1": 2.0}, hardware_id="hw-a", seed=1)
    other = write_run(tmp_path / "b.jsonl", {"w1": 2.0}, hardware_id="hw-b", seed=2, drift=0.6)
    with pytest.raises(LatprofError, match="hardware_id hw-a differs from current hw-b"):
        compare_files(base, other)
    report = compare_files(base, other, CompareOptions(allow_hardware_mismatch=True))
    assert report.normalized
    assert [r.key["variant"] for r in report.rows] == ["w1"]  # the reference itself is not compared
    assert report.rows[0].verdict == "unchanged"


HW = {
    "cpu_model": "AMD EPYC", "cpu_vendor": "AuthenticAMD", "cpu_family": 25, "cpu_model_number": 17, "cpu_stepping": 1,
    "cpu_isa_flags": ["avx2", "avx512f"], "cpu_caches_kib": {"L1d": 32, "L2": 1024}, "machine": "x86_64",
    "cpu_physical_cores": 2, "cpu_logical_cores": 2, "memory_gib": 24, "virtualized": True, "gpus": [],
}


def test_hardware_mismatch_names_the_differing_fields(tmp_path: Path) -> None:
    base = write_run(tmp_path / "a.jsonl", {"w1": 2.0}, hardware_id="hw-a", seed=1, hardware=HW)
    newer = write_run(tmp_path / "b.jsonl", {"w1": 2.0}, hardware_id="hw-b", seed=2,
                      hardware={**HW, "cpu_model_number": 1, "cpu_caches_kib": {"L1d": 32, "L2": 512}})
    with pytest.raises(LatprofError) as exc:
        compare_files(base, newer)
    msg = str(exc.value)
    assert "hardware_id hw-a differs from current hw-b" in msg and "--allow-hardware-mismatch" in msg
    assert "cpu_model_number: 17 != 1" in msg and "cpu_caches_kib: L2=1024 != L2=512" in msg
    assert "cpu_family" not in msg and "\n" not in msg
    # a baseline recorded before the fingerprint had these fields
    old = write_run(tmp_path / "old.jsonl", {"w1": 2.0}, hardware_id="hw-old", seed=3,
                    hardware={k: HW[k] for k in ("cpu_model", "machine", "cpu_physical_cores", "cpu_logical_cores", "memory_gib", "gpus")})
    with pytest.raises(LatprofError, match="cpu_family: missing in baseline"):
        compare_files(old, base)
    # same recorded hardware, ids from different versions of the hash
    same = write_run(tmp_path / "c.jsonl", {"w1": 2.0}, hardware_id="hw-c", seed=4, hardware=HW)
    with pytest.raises(LatprofError, match="different latprof versions"):
        compare_files(base, same)


def test_unmatched_rows_are_listed(tmp_path: Path) -> None:
    base = write_run(tmp_path / "a.jsonl", {"w1": 2.0, "old": 1.0}, seed=1)
    cur = write_run(tmp_path / "b.jsonl", {"w1": 2.0, "new": 1.0}, seed=2)
    report = compare_files(base, cur, CompareOptions(normalize=True))
    assert [r.key["variant"] for r in report.rows] == ["w1"]
    assert [k["variant"] for k in report.only_in_baseline] == ["old"]
    assert [k["variant"] for k in report.only_in_current] == ["new"]


def test_rows_timed_with_different_clocks_are_refused(tmp_path: Path) -> None:
    base = write_run(tmp_path / "a.jsonl", {"w1": 2.0}, seed=1)
    cur = tmp_path / "b.jsonl"
    lines = write_run(tmp_path / "tmp.jsonl", {"w1": 2.0}, seed=2).read_text().splitlines()
    cur.write_text("\n".join(line.replace('"status": "ok"', '"status": "ok", "clock": "thread_cpu"') for line in lines) + "\n")
    with pytest.raises(LatprofError, match="clock 'wall', current with 'thread_cpu'"):
        compare_files(base, cur)


def test_error_rows_are_reported_not_compared(tmp_path: Path) -> None:
    base = write_run(tmp_path / "a.jsonl", {"w1": 2.0}, seed=1)
    cur = write_run(tmp_path / "b.jsonl", {"w1": 2.0}, seed=2)
    ResultStore(cur).append(base_row(experiment="ci:test", workload="x", variant="broken", status="error", error="boom", hardware_id="hw-a"))
    report = compare_files(base, cur, CompareOptions(normalize=True))
    assert [(r["variant"], r["error"]) for r in report.not_ok] == [("broken", "boom")]
    assert len(report.rows) == 1


# ---------------------------------------------------------------- CLI
def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = write_run(tmp_path / "a.jsonl", {"w1": 2.0}, seed=1)
    same = write_run(tmp_path / "b.jsonl", {"w1": 2.0}, seed=2)
    slow = write_run(tmp_path / "c.jsonl", {"w1": 2.6}, seed=3)  # ~30% more work
    assert main(["compare", str(base), str(same)]) == 0
    assert main(["compare", str(base), str(slow)]) == 1
    out = capsys.readouterr().out
    assert "regressed" in out and "unchanged" in out
    assert main(["compare", str(base), str(slow), "--threshold", "0.5"]) == 0


def test_cli_json_and_markdown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = write_run(tmp_path / "a", {"w1": 2.0}, seed=1)
    slow = write_run(tmp_path / "b.jsonl", {"w1": 2.6}, seed=3)
    md = tmp_path / "cmp.md"
    assert main(["compare", str(base), str(slow), "--normalize", "--json", "--markdown", str(md)]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["normalized"] is True
    assert [(r["variant"], r["verdict"]) for r in data["rows"]] == [("w1", "regressed")]
    text = md.read_text()
    assert "| conv_bn_relu/w1 |" in text and "**regressed**" in text


def test_cli_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = write_run(tmp_path / "a.jsonl", {"w1": 2.0}, seed=1)
    other_hw = write_run(tmp_path / "hw.jsonl", {"w1": 2.0}, hardware_id="hw-b", seed=2)
    disjoint = write_run(tmp_path / "d.jsonl", {"zz": 2.0}, seed=2, reference=None)
    old = tmp_path / "old.jsonl"
    old.write_text(json.dumps({"record": "result", "schema_version": SCHEMA_VERSION + 1}) + "\n")
    cases = {
        "missing": (["compare", str(base), str(tmp_path / "nope.jsonl")], "results file not found"),
        "schema": (["compare", str(base), str(old)], "schema_version"),
        "hardware": (["compare", str(base), str(other_hw)], "--allow-hardware-mismatch"),
        "disjoint": (["compare", str(base), str(disjoint)], "no common rows"),
    }
    for argv, message in cases.values():
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err
        assert len(err.strip().splitlines()) == 1
    assert main(["compare", str(base), str(other_hw), "--allow-hardware-mismatch"]) == 0
    # argparse rejects the flag value itself, in one line
    assert main(["compare", str(base), str(base), "--threshold", "5"]) == 2
    assert "fraction between 0 and 1" in capsys.readouterr().err
