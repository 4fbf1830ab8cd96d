"""The run engine: isolated workers, declared allocators, process counters, pooling over processes, crash rows,
output folders that never mix runs, one batch."""

from __future__ import annotations

import json
import mmap
from pathlib import Path

import numpy as np
import pytest

from latprof.errors import LatprofError
from latprof.measure.counters import ProcessCounters
from latprof.measure.protocol import MeasureConfig, timed_sample
from latprof.measure.stats import pooled_median_ci, pooled_speed_ratio, process_spread, speed_ratio, summarize
from latprof.profile import ProfileRequest, run_profile
from latprof.results import read_results
from latprof.run import allocators
from latprof.run.engine import RunOptions, open_output
from latprof.run.pool import pool_rows, sample_groups

KILLER = str(Path(__file__).parent / "data" / "killer_model.py") + ":build"
FAST = MeasureConfig(target_ci=0.2, max_time_s=0.6, min_time_s=0.05, warmup_min_s=0.02, warmup_max_s=0.1)
COUNTER_COLUMNS = ("minor_faults_per_call", "major_faults_per_call", "voluntary_ctx_switches_per_call",
                   "involuntary_ctx_switches_per_call", "cpu_util")


def _profile(tmp_path: Path, models: list[str], **kw) -> list[dict]:
    req = ProfileRequest(models=models, threads=1, config=FAST, out=tmp_path, **kw)
    run_profile(req)
    return read_results(tmp_path).results


def test_worker_rows_carry_allocator_counters_and_thread_env(tmp_path: Path) -> None:
    (row,) = _profile(tmp_path, ["conv_bn_relu"])
    assert row["status"] == "ok", row.get("error")
    assert row["allocator"] == "steady" and row["processes"] == 1 and row["process_spread"] is None
    for c in COUNTER_COLUMNS:
        assert row[c] is not None and row[c] >= 0, c
    cond = row["process_conditions"]
    assert cond["isolation"] == "worker"
    assert cond["thread_env"]["OMP_NUM_THREADS"] == "1"
    assert cond["thread_env"]["OMP_PROC_BIND"] == "true" and cond["thread_env"]["OMP_PLACES"] == "cores"
    assert cond["allocator_settings"] == allocators.STEADY_ENV
    header = (tmp_path / "results.csv").read_text().splitlines()[0].split(",")
    for col in (*COUNTER_COLUMNS, "processes", "process_spread", "allocator"):
        assert col in header


@pytest.mark.slow  # two worker processes (~9 s)
def test_system_allocator_and_several_processes_pool(tmp_path: Path) -> None:
    (row,) = _profile(tmp_path, ["conv_bn_relu"], run=RunOptions(allocator="system", processes=2))
    assert row["status"] == "ok", row.get("error")
    assert row["allocator"] == "system" and row["process_conditions"]["allocator_settings"] == {}
    assert row["processes"] == 2 and len(row["process_sample_counts"]) == 2
    assert sum(row["process_sample_counts"]) == row["n_samples"] == len(row["samples_ms"])
    assert row["process_spread"] >= 1.0
    assert row["latency_ci_low_ms"] <= row["latency_median_ms"] <= row["latency_ci_high_ms"]


@pytest.mark.slow  # two worker processes, one killed (~10 s)
def test_a_killed_worker_is_an_error_row_and_the_run_goes_on(tmp_path: Path) -> None:
    rows = {r["workload"]: r for r in _profile(tmp_path, [KILLER, "conv_bn_relu"])}
    assert len(rows) == 2
    killed = next(r for name, r in rows.items() if name != "conv_bn_relu")
    assert killed["status"] == "error" and "SIGKILL" in killed["error"]
    assert rows["conv_bn_relu"]["status"] == "ok"


def test_in_process_records_the_allocator_it_found(tmp_path: Path) -> None:
    (row,) = _profile(tmp_path, ["conv_bn_relu"], run=RunOptions(in_process=True))
    assert row["process_conditions"]["isolation"] == "in-process"
    assert row["allocator"] == allocators.allocator_in_force()["allocator"]
    with pytest.raises(LatprofError, match="--allocator applies to worker processes"):
        _profile(tmp_path / "b", ["conv_bn_relu"], run=RunOptions(in_process=True, allocator="steady"))


def test_allocator_environment() -> None:
    base = {"PATH": "/bin", "LD_PRELOAD": "/x.so", "MALLOC_MMAP_THRESHOLD_": "1"}
    steady = allocators.allocator_env("steady", base)
    assert "LD_PRELOAD" not in steady and steady["MALLOC_MMAP_THRESHOLD_"] == str(64 * 1024 * 1024)
    assert allocators.allocator_in_force(steady)["allocator"] == "steady"
    system = allocators.allocator_env("system", base)
    assert system == {"PATH": "/bin"} and allocators.allocator_in_force(system)["allocator"] == "system"
    assert allocators.allocator_in_force({"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"})["allocator"] == "jemalloc"
    with pytest.raises(LatprofError, match="unknown --allocator"):
        allocators.allocator_env("mimalloc", base)


def test_missing_allocator_library_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocators, "find_library", lambda name: None)
    with pytest.raises(LatprofError, match="jemalloc library is not found.*available: steady, system"):
        allocators.validate_allocator("jemalloc")


def test_counters_see_page_faults_of_fresh_mappings() -> None:
    size, page = 64 * 1024 * 1024, mmap.PAGESIZE

    def timer(n: int) -> float:
        for _ in range(n):
            # A fresh anonymous mapping, each page touched: not a malloc'd buffer, which a long test process (a
            # pytest-xdist worker after a dynamo export) may serve from memory it already has, with no fault at all.
            with mmap.mmap(-1, size) as buf:
                if hasattr(mmap, "MADV_NOHUGEPAGE"):
                    buf.madvise(mmap.MADV_NOHUGEPAGE)  # 4 KiB pages, as the count below assumes
                for offset in range(0, size, page):
                    buf[offset] = 1
        return 1e-3

    counters = ProcessCounters()
    timed_sample(timer, 2, counters)
    fields = counters.as_fields()
    assert counters.calls == 2
    assert fields["minor_faults_per_call"] > 1000  # 64 MiB of zeroed pages, 4 KiB each


def test_pooled_ci_widens_with_process_spread() -> None:
    rng = np.random.default_rng(0)
    same = [list(1.0 + 0.01 * rng.standard_normal(200)) for _ in range(3)]
    apart = [list(m + 0.01 * rng.standard_normal(200)) for m in (1.0, 1.2, 1.4)]
    _, lo_same, hi_same = pooled_median_ci(same)
    _, lo_apart, hi_apart = pooled_median_ci(apart)
    assert hi_apart - lo_apart > 5 * (hi_same - lo_same)
    assert process_spread(apart) == pytest.approx(1.4, rel=0.02)
    single = pooled_median_ci(same[:1])
    s = summarize(same[0])
    assert single == (s.median_ms, s.ci_low_ms, s.ci_high_ms)  # one process: the order-statistic CI


def test_every_process_weighs_the_same_in_the_pooled_median() -> None:
    """A fast process takes more samples in the same time; it must not pull the reading toward itself. Three passes
    of 90, 30 and 45 samples around 6.8, 11.9 and 8.7 ms read 8.7 ms (their middle), not the pooled 6.9-ish."""
    rng = np.random.default_rng(2)
    groups = [list(m * (1 + 0.01 * rng.standard_normal(n))) for m, n in ((6.8, 90), (11.9, 30), (8.7, 45))]
    median, low, high = pooled_median_ci(groups)
    assert median == pytest.approx(8.7, rel=0.02) and np.median(np.concatenate(groups)) < 7.2
    assert low < median < high
    # against the definition: every process's samples repeated to one common count, then the plain median
    big = np.concatenate([np.repeat(g, 90 // len(g)) for g in groups])
    assert median == pytest.approx(float(np.median(big)))
    equal = [list(rng.standard_normal(50)) for _ in range(3)]  # equal counts: the plain pooled median
    assert pooled_median_ci(equal)[0] == pytest.approx(float(np.median(np.concatenate(equal))))
    (row,) = pool_rows([[{"record": "result", "workload": "w", "backend": "b", "status": "ok", "samples_ms": g}]
                        for g in groups])
    assert row["latency_median_ms"] == pytest.approx(median)


def test_pooled_ratio_is_paired_within_processes() -> None:
    rng = np.random.default_rng(1)
    drift = [np.linspace(1, 2, 100), np.linspace(2, 1, 100)]
    base = [list(d * (1 + 0.005 * rng.standard_normal(100))) for d in drift]
    var = [list(1.25 * d * (1 + 0.005 * rng.standard_normal(100))) for d in drift]
    r = pooled_speed_ratio(base, var)
    assert r.ci_low < 0.8 < r.ci_high and r.ci_high - r.ci_low < 0.02  # drift shared by both cancels
    one = pooled_speed_ratio(base[:1], var[:1])
    assert one == speed_ratio(base[0], var[0], paired=True)


def test_pool_rows_keeps_groups_and_marks_partial_failures() -> None:
    def row(samples, status="ok"):
        return {"record": "result", "workload": "w", "backend": "b", "status": status, "error": "boom" if status != "ok" else "",
                "samples_ms": samples, "counters_raw": {"calls": 10, "minor_faults": 5, "major_faults": 0, "voluntary": 1,
                                                        "involuntary": 0, "cpu_s": 0.01, "wall_s": 0.01}}

    (pooled,) = pool_rows([[row([1.0, 1.1])], [row([2.0, 2.1, 2.2])], [row([], "error")]])
    assert sample_groups(pooled) == [[1.0, 1.1], [2.0, 2.1, 2.2]]
    assert pooled["processes"] == 2 and pooled["process_errors"] == ["boom"]
    assert pooled["minor_faults_per_call"] == pytest.approx(0.5)
    (again,) = pool_rows([[pooled], [row([3.0])]])  # a later pass adds a process to a pooled row
    assert again["processes"] == 3 and again["process_sample_counts"] == [2, 3, 1]


def test_output_folder_never_mixes_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out, store = open_output(tmp_path / "o", False, False)
    store.append({"record": "result", "workload": "x"})
    with pytest.raises(LatprofError, match="already holds results; add --resume .* --append"):
        open_output(out, False, False)
    open_output(out, True, False)
    open_output(out, False, True)
    monkeypatch.chdir(tmp_path)
    first, s1 = open_output(None, False, False)
    s1.append({"record": "result", "workload": "x"})
    second, _ = open_output(None, False, False)
    assert first != second and first.parent == second.parent == Path("reports")


def test_leading_dimension_of_input_is_the_batch(tmp_path: Path) -> None:
    (row,) = _profile(tmp_path, ["conv_bn_relu"], input_shape=(8, 32, 28, 28), run=RunOptions(in_process=True))
    assert row["batch"] == 8 and row["input_shape"] == "8x32x28x28"
    with pytest.raises(LatprofError, match="--batch 4 disagrees with --input 8x32x28x28"):
        _profile(tmp_path / "b", ["conv_bn_relu"], input_shape=(8, 32, 28, 28), batch=4)


def test_worker_unit_message_is_plain_json(tmp_path: Path) -> None:
    from latprof.profile import profile_plan

    plan = profile_plan(ProfileRequest(models=["conv_bn_relu"], threads=1, config=FAST))
    json.dumps(plan.units[0].as_message())  # what crosses the process boundary is data, not pickles


def test_openmp_binding_only_for_pytorch_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    from latprof.run.executors import WorkerExecutor

    monkeypatch.setenv("OMP_PROC_BIND", "spread")  # the parent's own OpenMP settings never leak into a worker
    ex = WorkerExecutor()
    torch_env, ort_env = ex.environment(2, "torch-cpu"), ex.environment(2, "ort-cpu")
    assert torch_env["OMP_PROC_BIND"] == "true" and torch_env["OMP_PLACES"] == "cores"
    assert "OMP_PROC_BIND" not in ort_env and ort_env["OMP_NUM_THREADS"] == "2"
    assert "OMP_PROC_BIND" not in WorkerExecutor(bind_threads=False).environment(2, "torch-cpu")


class _SlowStartExecutor:
    """A worker that measures for ``measure_s`` but takes ``wall_s`` in all (start-up, export, prepare), like a
    fresh process on a loaded machine; it counts the processes it started."""

    allocator = "steady"

    def __init__(self, wall_s: float, measure_s: float) -> None:
        self.wall_s, self.measure_s, self.started = wall_s, measure_s, 0

    def run(self, unit):
        import time as _time

        self.started += 1
        _time.sleep(self.wall_s)
        return [{**t, "record": "result", "status": "ok", "samples_ms": [1.0, 1.1, 0.9], "n_samples": 3,
                 "latency_median_ms": 1.0, "measure_wall_s": self.measure_s} for t in unit.templates]


def test_adaptive_passes_stay_within_the_budget_counting_whole_worker_time(tmp_path, monkeypatch) -> None:
    """Extra processes start while one more worker, as long as this unit's workers really took, still fits in the
    budget: here a worker takes 0.6 s and measures 0.05 s, the budget is 2 s, so 1-2 extra processes after the
    first pass. A guess from measure_wall_s plus a fixed start-up allowance is wrong both ways: it starts none here,
    and overruns the budget where start-up takes longer than the allowance (a loaded machine, a slow export)."""
    from latprof.results import ResultStore, base_row
    from latprof.run import engine
    from latprof.run.engine import Plan, RunOptions, execute
    from latprof.run.units import Unit

    fake = _SlowStartExecutor(wall_s=0.6, measure_s=0.05)
    monkeypatch.setattr(engine, "make_executor", lambda *a, **k: fake)
    unit = Unit("profile", "slow", {}, [base_row(workload="w", backend="torch-cpu", threads=1, batch=1,
                                                 input_shape="1x3x8x8")], time_s=0.05)
    plan = Plan([unit], undecided=lambda rows: 1.0, budget_s=2.0)  # never decided: only the budget stops it
    result = execute(plan, ResultStore(tmp_path / "results.jsonl"), {"hardware_id": "h"}, RunOptions())
    assert 1 <= result.extra_processes <= 2
    assert fake.started == 1 + result.extra_processes
    assert result.wall_s <= 2.0 + 0.3  # the last process was expected to fit, and did


class _RecordingExecutor:
    """A worker that answers at once and remembers which unit each process it started was for."""

    allocator = "steady"

    def __init__(self) -> None:
        self.order: list[str] = []

    def run(self, unit):
        self.order.append(unit.label)
        median = float(len(self.order))  # each process reads differently: its place in the run
        return [{**t, "record": "result", "status": "ok", "samples_ms": [median] * 3, "n_samples": 3,
                 "latency_median_ms": median, "measure_wall_s": 0.01} for t in unit.templates]


def test_several_processes_run_in_passes_and_each_pass_is_stored(tmp_path, monkeypatch) -> None:
    """--processes 3 over two units runs a1 b1 a2 b2 a3 b3, not a1 a2 a3 b1 b2 b3: one unit's processes lie a pass
    apart. Every pass stores the re-pooled rows (the last supersedes), the run's rows keep the plan's order, and
    the progress callback counts every pass."""
    from latprof.results import ResultStore, base_row
    from latprof.run import engine
    from latprof.run.engine import Plan, RunOptions, execute
    from latprof.run.units import Unit

    fake = _RecordingExecutor()
    monkeypatch.setattr(engine, "make_executor", lambda *a, **k: fake)
    units = [Unit("profile", name, {}, [base_row(workload=name, backend="torch-cpu", threads=1, batch=1,
                                                 input_shape="1x3x8x8")], time_s=0.01) for name in ("a", "b")]
    calls: list[tuple[int, int, str]] = []
    store = ResultStore(tmp_path / "results.jsonl")
    result = execute(Plan(units), store, {"hardware_id": "h"}, RunOptions(processes=3),
                     on_unit=lambda i, n, unit, rows: calls.append((i, n, unit.label)))
    assert fake.order == ["a", "b", "a", "b", "a", "b"]
    assert calls == [(0, 6, "a"), (1, 6, "b"), (2, 6, "a"), (3, 6, "b"), (4, 6, "a"), (5, 6, "b")]
    assert result.units_run == 2 and [r["workload"] for r in result.rows] == ["a", "b"]
    a, b = result.rows
    assert a["processes"] == 3 and a["process_medians_ms"] == [1.0, 3.0, 5.0] and a["latency_median_ms"] == 3.0
    assert b["process_medians_ms"] == [2.0, 4.0, 6.0]
    lines = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["processes"] for r in lines] == [1, 1, 2, 2, 3, 3]  # each pass stored: Ctrl-C keeps what finished
    assert read_results(tmp_path).results == result.rows  # a reader takes the last pass's rows


def test_resume_completes_the_passes_a_stopped_run_lacked(tmp_path, monkeypatch) -> None:
    """A run stopped after its first pass (here: run with one process) and resumed with --processes 3 gives every
    unit the two passes it lacks, pooled with the stored one, still in passes; resumed again, it runs nothing. A
    unit stored as failed is not measured again."""
    from latprof.results import ResultStore, base_row
    from latprof.run import engine
    from latprof.run.engine import Plan, RunOptions, execute
    from latprof.run.units import Unit

    fake = _RecordingExecutor()
    monkeypatch.setattr(engine, "make_executor", lambda *a, **k: fake)

    def units() -> list[Unit]:
        return [Unit("profile", name, {}, [base_row(workload=name, backend="torch-cpu", threads=1, batch=1,
                                                    input_shape="1x3x8x8")], time_s=0.01) for name in ("a", "b", "c")]

    store = ResultStore(tmp_path / "results.jsonl")
    first = units()
    store.append({**first[2].templates[0], "allocator": "steady", "hardware_id": "h", "record": "result",
                  "status": "error", "error": "boom"})  # c failed in an earlier run
    execute(Plan(first[:2]), store, {"hardware_id": "h"}, RunOptions(processes=1))
    assert fake.order == ["a", "b"]
    calls: list[tuple[int, int, str]] = []
    result = execute(Plan(units()), store, {"hardware_id": "h"}, RunOptions(processes=3), resume=True,
                     on_unit=lambda i, n, unit, rows: calls.append((i, n, unit.label)))
    assert fake.order == ["a", "b", "a", "b", "a", "b"]
    assert calls == [(0, 5, "c"), (1, 5, "a"), (2, 5, "b"), (3, 5, "a"), (4, 5, "b")]
    assert result.units_run == 2 and result.units_skipped == 1
    by = {r["workload"]: r for r in read_results(tmp_path).results}
    assert by["a"]["process_medians_ms"] == [1.0, 3.0, 5.0] and by["b"]["process_medians_ms"] == [2.0, 4.0, 6.0]
    assert by["c"]["status"] == "error"
    again = execute(Plan(units()), store, {"hardware_id": "h"}, RunOptions(processes=3), resume=True)
    assert again.units_run == 0 and again.units_skipped == 3 and len(fake.order) == 6


def test_adaptive_passes_after_resume_count_the_stored_processes_toward_the_cap(tmp_path, monkeypatch) -> None:
    """A unit stored with 3 processes, resumed with --processes 4 and a budget left, gets its fourth process and then
    adaptive ones up to ``max_processes`` (5) in all, not 5 more on top of the stored rows (which sit in one raw
    entry)."""
    from latprof.results import ResultStore, base_row
    from latprof.run import engine
    from latprof.run.engine import Plan, RunOptions, execute
    from latprof.run.units import Unit

    fake = _RecordingExecutor()
    monkeypatch.setattr(engine, "make_executor", lambda *a, **k: fake)

    def plan() -> Plan:
        unit = Unit("profile", "a", {}, [base_row(workload="a", backend="torch-cpu", threads=1, batch=1,
                                                  input_shape="1x3x8x8")], time_s=0.01)
        return Plan([unit], undecided=lambda rows: 1.0, budget_s=30.0, max_processes=5)  # never decided

    store = ResultStore(tmp_path / "results.jsonl")
    execute(Plan(plan().units), store, {"hardware_id": "h"}, RunOptions(processes=3))
    assert len(fake.order) == 3
    result = execute(plan(), store, {"hardware_id": "h"}, RunOptions(processes=4), resume=True)
    assert len(fake.order) == 5  # one pass lacking, one adaptive: five in all
    assert result.extra_processes == 1 and read_results(tmp_path).results[0]["processes"] == 5
