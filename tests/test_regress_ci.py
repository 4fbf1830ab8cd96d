"""`latprof ci`: suite parsing, baseline lookup per hardware_id, confirmation of regressions, summary and exit codes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from latprof.cli import main
from latprof.errors import LatprofError
from latprof.measure import environment
from latprof.regress import ci as ci_mod
from latprof.regress.ci import CIOptions, run_ci
from latprof.regress.suite import Suite, load_suite
from latprof.results import ResultStore, base_row, read_results

SUITE = """
[suite]
name = "tiny"
threads = 1
target_ci = 0.5
max_time = 0.5
min_rounds = 5

[reference]
name = "ref"
workload = "conv_bn_relu"
input = "1x8x8x8"
kwargs = { in_channels = 8, out_channels = 8 }

[[workloads]]
name = "a"
workload = "conv_bn_relu"
input = "1x8x8x8"
kwargs = { in_channels = 8, out_channels = 8 }

[[workloads]]
name = "b"
workload = "conv_bn_relu"
input = "1x8x12x12"
kwargs = { in_channels = 8, out_channels = 16, kernel_size = 1 }
"""


@pytest.fixture()
def suite_file(tmp_path: Path) -> Path:
    p = tmp_path / "suite.toml"
    p.write_text(SUITE)
    return p


@pytest.fixture(scope="module")
def hardware_id() -> str:
    return environment.collect().hardware_id


# ---------------------------------------------------------------- suite file
def test_load_suite(suite_file: Path) -> None:
    s = load_suite(suite_file)
    assert s.name == "tiny" and s.experiment == "ci:tiny"
    assert [e.name for e in s.entries] == ["a", "b"]
    assert s.entries[1].input_shape == (1, 8, 12, 12)
    assert s.entries[1].kwargs == {"in_channels": 8, "out_channels": 16, "kernel_size": 1}
    assert s.reference.name == "ref" and s.reference.backend == "torch-cpu" and s.reference.threads == 1
    assert (s.config.min_samples, s.config.max_time_s, s.threshold, s.alpha) == (5, 0.5, 0.05, 0.01)
    assert [e.name for e in s.only(["b"]).entries] == ["b"]


def test_thread_cpu_clock_is_recorded(tmp_path: Path, suite_file: Path) -> None:
    from latprof.regress.suite import run_suite

    suite_file.write_text(SUITE.replace("threads = 1", 'threads = 1\nclock = "thread_cpu"'))
    suite = load_suite(suite_file)
    assert suite.clock == "thread_cpu"
    rows = run_suite(suite.only(["a"]), ResultStore(tmp_path / "r.jsonl"), {"hardware_id": "hw"})
    assert [(r["variant"], r["clock"]) for r in rows] == [("ref", "thread_cpu"), ("a", "thread_cpu")]
    assert all("thread_time" in r["settings"]["timing"] and min(r["samples_ms"]) > 0 for r in rows)


def test_shipped_suite_parses() -> None:
    s = load_suite(Path(__file__).resolve().parents[1] / "benchmarks" / "ci_suite.toml")
    assert s.reference.workload == "conv_bn_relu"
    assert len(s.entries) >= 3 and all(e.backend == "torch-cpu" for e in s.entries)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (SUITE.replace('[reference]\nname = "ref"', '[ignored]\nname = "ref"'), "[reference] workload is required"),
        (SUITE.replace('name = "b"', 'name = "a"'), "repeated: a"),
        (SUITE.replace("min_rounds = 5", "rounds = 5"), "unknown [suite] key(s) rounds"),
        (SUITE.replace('input = "1x8x12x12"', 'input = "1x8x12x12"\nwork = 2'), "unknown key(s) work"),
        (SUITE.replace('name = "tiny"', 'name = "tiny'), "not a valid TOML suite"),
        (SUITE.replace("threads = 1", 'threads = 1\nclock = "cpu"'), "unknown"),
        (SUITE.replace("threads = 1", 'threads = 2\nclock = "thread_cpu"'), "needs threads = 1"),
    ],
)
def test_bad_suite_is_one_line_error(tmp_path: Path, text: str, message: str) -> None:
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(LatprofError) as exc:
        load_suite(p)
    assert message in str(exc.value)


def test_missing_suite_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ci", "--suite", str(tmp_path / "none.toml"), "--baseline", str(tmp_path)]) == 2
    assert "suite file not found" in capsys.readouterr().err


# ---------------------------------------------------------------- real tiny run (plumbing, not verdicts)
@pytest.mark.slow  # three real CI runs of the suite in worker processes (~10 s)
def test_ci_real_run_without_baseline_then_update(
    suite_file: Path, tmp_path: Path, hardware_id: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    step = tmp_path / "step.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step))
    base_dir = tmp_path / "baseline"
    assert main(["ci", "--suite", str(suite_file), "--baseline", str(base_dir), "--out", str(tmp_path / "o1")]) == 0
    err = capsys.readouterr().err
    assert f"no baseline for hardware_id {hardware_id}" in err and "--update-baseline" in err
    rows = read_results(tmp_path / "o1" / "results.jsonl").results
    assert sorted((r["variant"], r["reference"]) for r in rows) == [("a", False), ("b", False), ("ref", True)]
    assert len({r["interleave_group"] for r in rows}) == 1
    assert len({len(r["samples_ms"]) for r in rows}) == 1  # same rounds for all
    assert "not gated" in step.read_text() and "| conv_bn_relu/b |" in step.read_text()
    assert not base_dir.exists()

    assert main(["ci", "--suite", str(suite_file), "--baseline", str(base_dir), "--out", str(tmp_path / "o2"), "--update-baseline"]) == 0
    written = base_dir / hardware_id / "results.jsonl"
    assert {r["variant"] for r in read_results(written).results} == {"a", "b", "ref"}
    assert main(["ci", "--suite", str(suite_file), "--baseline", str(base_dir), "--out", str(tmp_path / "o3"), "--warn-only"]) == 0
    assert "Regression check: latency relative to the reference workload" in (tmp_path / "o3" / "summary.md").read_text()


# ---------------------------------------------------------------- deterministic flows with synthetic measurements
def _write(store: ResultStore, suite: Suite, hardware_id: str, medians: dict[str, float], seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    n = 60
    rounds = np.exp(rng.normal(0.0, 0.05, n))
    rows = []
    for entry in [suite.reference, *suite.entries]:
        samples = medians[entry.name] * rounds * np.exp(rng.normal(0.0, 0.02, n))
        row = base_row(
            experiment=suite.experiment, workload=entry.workload, variant=entry.name, backend="torch-cpu", threads=1,
            batch=1, input_shape="1x8x8x8", status="ok", error="", hardware_id=hardware_id,
            samples_ms=samples.tolist(), reference=entry is suite.reference, interleave_group=f"g{seed}",
        )
        store.append(row)
        rows.append(row)
    return rows


def fake_runs(monkeypatch: pytest.MonkeyPatch, plans: list[dict[str, float]]) -> list[list[str]]:
    """Replace the measuring with synthetic runs, one plan (medians by entry name) per call; return what ran."""
    calls: list[list[str]] = []
    plan_iter: Iterator[dict[str, float]] = iter(plans)

    def run_suite(suite: Suite, store: ResultStore, env: dict[str, Any], run: Any = None) -> list[dict[str, Any]]:
        calls.append([e.name for e in suite.entries])
        return _write(store, suite, env["hardware_id"], next(plan_iter), seed=len(calls) + 10)

    monkeypatch.setattr(ci_mod, "run_suite", run_suite)
    return calls


def make_baseline(tmp_path: Path, suite_file: Path, hardware_id: str) -> Path:
    base_dir = tmp_path / "baseline"
    store = ResultStore(base_dir / hardware_id / "results.jsonl")
    store.append({"record": "environment", "hardware_id": hardware_id})
    _write(store, load_suite(suite_file), hardware_id, {"ref": 1.0, "a": 2.0, "b": 3.0}, seed=1)
    return base_dir


SAME = {"ref": 1.0, "a": 2.0, "b": 3.0}
B_SLOWER = {"ref": 1.0, "a": 2.0, "b": 3.9}


def test_confirmed_regression_fails(suite_file: Path, tmp_path: Path, hardware_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    base_dir = make_baseline(tmp_path, suite_file, hardware_id)
    calls = fake_runs(monkeypatch, [B_SLOWER, B_SLOWER])
    out = run_ci(CIOptions(suite_file, base_dir, tmp_path / "out"))
    assert calls == [["a", "b"], ["b"]]  # only the flagged row is re-measured
    assert out.exit_code == 1
    assert {r.key["variant"]: r.verdict for r in out.report.rows} == {"a": "unchanged", "b": "regressed"}
    assert out.notes["conv_bn_relu/b"].startswith("confirmed on re-measure")
    assert "**regressed**" in out.markdown and "confirmed on re-measure" in (tmp_path / "out" / "summary.md").read_text()


def test_unconfirmed_regression_passes(suite_file: Path, tmp_path: Path, hardware_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    base_dir = make_baseline(tmp_path, suite_file, hardware_id)
    fake_runs(monkeypatch, [B_SLOWER, SAME])
    out = run_ci(CIOptions(suite_file, base_dir, tmp_path / "out"))
    assert out.exit_code == 0
    assert out.report.rows[1].verdict == "unchanged"
    assert out.notes["conv_bn_relu/b"].startswith("not confirmed on re-measure: unchanged")


def test_warn_only_and_no_confirm(suite_file: Path, tmp_path: Path, hardware_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    base_dir = make_baseline(tmp_path, suite_file, hardware_id)
    calls = fake_runs(monkeypatch, [B_SLOWER])
    out = run_ci(CIOptions(suite_file, base_dir, tmp_path / "out", warn_only=True, confirm=False))
    assert calls == [["a", "b"]]
    assert out.exit_code == 0
    assert [r.key["variant"] for r in out.report.regressed] == ["b"]
    assert any("warning only" in m for m in out.messages)


def test_cli_ci_exit_codes(
    suite_file: Path, tmp_path: Path, hardware_id: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    base_dir = make_baseline(tmp_path, suite_file, hardware_id)
    fake_runs(monkeypatch, [SAME, B_SLOWER, B_SLOWER, B_SLOWER, B_SLOWER])
    argv = ["ci", "--suite", str(suite_file), "--baseline", str(base_dir), "--out", str(tmp_path / "o")]
    assert main(argv) == 0
    assert main(argv) == 1
    assert "regressed" in capsys.readouterr().out
    assert main([*argv, "--warn-only"]) == 0


def test_update_baseline_replaces_it(suite_file: Path, tmp_path: Path, hardware_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    base_dir = make_baseline(tmp_path, suite_file, hardware_id)
    fake_runs(monkeypatch, [B_SLOWER, B_SLOWER])
    out = run_ci(CIOptions(suite_file, base_dir, tmp_path / "out", update_baseline=True))
    assert out.exit_code == 0 and out.baseline_written
    rows = read_results(base_dir / hardware_id / "results.jsonl").results
    assert {r["interleave_group"] for r in rows} == {"g11"}  # the new run, not the old baseline (g1)


def test_no_baseline_names_the_closest_one_and_its_differences(
    suite_file: Path, tmp_path: Path, hardware_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    here = environment.collect().as_dict()
    base_dir = tmp_path / "baseline"
    for hid, changes in (("far", {"cpu_family": -1, "memory_gib": -1}), ("near", {"cpu_stepping": -1})):
        store = ResultStore(base_dir / hid / "results.jsonl")
        store.append({"record": "environment", **here, "hardware_id": hid, "hardware": {**here["hardware"], **changes}})
        _write(store, load_suite(suite_file), hid, SAME, seed=1)
    fake_runs(monkeypatch, [SAME])
    monkeypatch.setattr(ci_mod, "run_table", lambda rows: (None, ""))  # synthetic rows lack the summary columns
    out = run_ci(CIOptions(suite_file, base_dir, tmp_path / "out"))
    assert out.exit_code == 0 and out.report is None
    msg = out.messages[0]
    assert f"no baseline for hardware_id {hardware_id}" in msg and "baselines exist for: far, near" in msg
    assert f"closest near differs in cpu_stepping: -1 != {here['hardware']['cpu_stepping']}" in msg
    assert "cpu_family" not in msg and "\n" not in msg
