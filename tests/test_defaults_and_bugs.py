"""Issue 13: every default in one place (and in the help), the three bugs, global state restored, analysis pure,
no references to files outside the repository, and a packaging list that matches the tree."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from latprof.backends.base import (
    DEFAULT_ORT_OPT,
    MOBILE_THREADS,
    ORT_OPT_LEVELS,
    BackendOptions,
    PreparedRun,
    SharedSetting,
    default_threads,
    logical_cores,
)
from latprof.backends.registry import backend_class, create_backend
from latprof.catalog import DEFAULT_TOPIC, TOPICS
from latprof.cli import build_parser, main
from latprof.measure.protocol import MeasureConfig
from tests.backend_models import tiny_workload

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[1]


def _one_line_error(capsys, argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    return err[0]


def _help(capsys, command: str) -> str:
    assert main([command, "--help"]) == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines anywhere


# ------------------------------------------------------------------ defaults: one source, shown in the help
def test_profile_flags_default_to_measure_config():
    args = build_parser().parse_args(["profile", "--model", "conv_bn_relu"])
    d = MeasureConfig()
    assert (args.target_ci, args.max_time, args.min_time) == (d.target_ci, d.max_time_s, d.min_time_s)
    assert args.ort_opt == DEFAULT_ORT_OPT == BackendOptions().ort_opt
    sweep = build_parser().parse_args(["sweep", "--guideline", "g1"])
    assert sweep.min_time == d.min_time_s and sweep.ort_opt == DEFAULT_ORT_OPT


def test_help_interpolates_the_real_defaults(capsys):
    from latprof.experiments.sweep import DEFAULT_UNIT_MAX_TIME_S, QUICK_MAX_TIME_S, QUICK_TARGET_CI

    d = MeasureConfig()
    profile = _help(capsys, "profile")
    assert f"(default {d.target_ci:g})" in profile and f"(default {d.max_time_s:g})" in profile
    assert f"(default {d.min_time_s:g})" in profile
    assert f"{{{','.join(ORT_OPT_LEVELS)}}}" in profile and f"(default {DEFAULT_ORT_OPT})" in profile
    assert f"all logical cores ({logical_cores()} here); {MOBILE_THREADS} on ort-mobile" in profile
    sweep = _help(capsys, "sweep")
    assert f"default {d.target_ci:g}; {QUICK_TARGET_CI:g} with --quick" in sweep
    assert f"default {DEFAULT_UNIT_MAX_TIME_S:g}, {QUICK_MAX_TIME_S:g} with --quick" in sweep
    listing = _help(capsys, "list")
    assert f"one of: {', '.join(TOPICS)} (default {DEFAULT_TOPIC})" in listing


def test_no_protocol_default_is_written_in_the_cli():
    source = (ROOT / "latprof" / "cli.py").read_text()
    for literal in ("0.02", "default=0.5", "default=10", '"none", "basic"', "LIST_TOPICS"):
        assert literal not in source, literal


def test_default_threads_rule():
    assert default_threads(backend_class("ort-mobile")) == MOBILE_THREADS == 1
    for name in ("torch-cpu", "ort-cpu"):
        assert default_threads(backend_class(name)) == logical_cores()


# ------------------------------------------------------------------ bug: --target-ci outside (0, 1)
@pytest.mark.parametrize("value", ["1.5", "1", "0", "-0.1"])
def test_target_ci_outside_0_1_is_one_line_exit_2(capsys, value):
    line = _one_line_error(capsys, ["profile", "--model", "conv_bn_relu", f"--target-ci={value}"])
    assert "--target-ci" in line and "between 0 and 1" in line


def test_sweep_target_ci_is_checked_at_parse_time_too(capsys):
    line = _one_line_error(capsys, ["sweep", "--guideline", "g1", "--target-ci", "1.5"])
    assert "--target-ci" in line and "between 0 and 1" in line


# ------------------------------------------------------------------ bug: tomllib on Python 3.10
def _load_fresh(relpath: str, monkeypatch) -> object:
    """Execute a module's source as a new module while ``tomllib`` cannot be imported (as on Python 3.10), with the
    standard library's parser standing in for the ``tomli`` backport."""
    monkeypatch.setitem(sys.modules, "tomllib", None)
    monkeypatch.setitem(sys.modules, "tomli", tomllib)
    name = f"_py310_{Path(relpath).stem}"
    spec = importlib.util.spec_from_file_location(name, ROOT / relpath)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_suite_falls_back_to_tomli(monkeypatch):
    suite = _load_fresh("latprof/regress/suite.py", monkeypatch)
    assert suite.tomllib is tomllib  # the stand-in "tomli"
    parsed = suite.load_suite(ROOT / "benchmarks" / "ci_suite.toml")
    assert parsed.entries and parsed.reference


def test_every_tomllib_import_has_a_fallback():
    for path in sorted((ROOT / "latprof").rglob("*.py")):
        text = path.read_text()
        if re.search(r"^\s*import tomllib", text, re.MULTILINE):
            assert "import tomli as tomllib" in text, path


# ------------------------------------------------------------------ bug: a report from a file without results
def test_report_on_a_torn_only_file_is_one_line_exit_2(capsys, tmp_path):
    torn = tmp_path / "torn.jsonl"
    torn.write_text('{"not": "a result"')
    out = tmp_path / "r.html"
    line = _one_line_error(capsys, ["report", str(torn), "-o", str(out)])
    assert "torn.jsonl" in line and "holds no result rows" in line
    assert not out.exists()


def test_report_on_an_empty_file_is_one_line_exit_2(capsys, tmp_path):
    empty = tmp_path / "results.jsonl"
    empty.write_text("")
    line = _one_line_error(capsys, ["report", str(tmp_path), "-o", str(tmp_path / "r.html")])
    assert "results.jsonl holds no result rows" in line


# ------------------------------------------------------------------ global state restored
def test_shared_setting_restores_the_original_whatever_the_closing_order():
    state = {"v": "original"}
    setting = SharedSetting(lambda: state["v"], lambda v: state.update(v=v))
    a, b = setting.held("a"), setting.held("b")
    a.__enter__()
    b.__enter__()
    assert state["v"] == "b" and setting.original() == "original"
    a.__exit__(None, None, None)  # first in, first out (a sweep closes its variants in order)
    assert state["v"] == "b"
    b.__exit__(None, None, None)
    assert state["v"] == "original"


@pytest.mark.skipif(logical_cores() < 2, reason="needs two cores to tell thread counts apart")
def test_torch_threads_restored_after_overlapping_runs():
    before = torch.get_num_threads()
    other = 1 if before != 1 else 2
    one = create_backend("torch-cpu", BackendOptions(threads=other)).prepare(tiny_workload())
    two = create_backend("torch-cpu", BackendOptions(threads=other)).prepare(tiny_workload())
    assert torch.get_num_threads() == other
    one.close()
    assert torch.get_num_threads() == other  # the run still open keeps its threads
    two.close()
    assert torch.get_num_threads() == before


def test_cudnn_benchmark_held_then_restored():
    from latprof.backends.torch_backends import CUDNN_BENCHMARK

    before = torch.backends.cudnn.benchmark
    with CUDNN_BENCHMARK.held(not before):
        assert torch.backends.cudnn.benchmark is (not before)
    assert torch.backends.cudnn.benchmark is before


def test_prepared_run_closes_its_stack_once_newest_first():
    calls: list[str] = []
    run = PreparedRun(lambda n: 0.0, None, {})
    run.stack.callback(calls.append, "first")
    run.stack.callback(calls.append, "second")
    with run:
        pass
    run.close()
    assert calls == ["second", "first"]


def test_no_module_reaches_into_a_prepared_run():
    for path in sorted((ROOT / "latprof").rglob("*.py")):
        assert "_cleanup" not in path.read_text(), path


# ------------------------------------------------------------------ analysis is pure
def test_analysis_imports_neither_backends_nor_torch():
    code = ("import sys, latprof.analysis.roofline, latprof.analysis.breakdown; "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('latprof.backends')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_peaks_record_is_built_from_measured_numbers():
    from latprof.analysis.roofline import peaks_record

    rec = peaks_record("torch-cpu", 2, "hw", mult_adds=1e9, gemm_s=0.01, moved_bytes=2e9, copy_s=0.1,
                       settings={"intra_op_threads": 2}, method="m")
    assert rec["record"] == "peaks" and rec["peak_gflops"] == pytest.approx(200.0)
    assert rec["peak_gbytes_per_s"] == pytest.approx(20.0) and rec["gemm_latency_ms"] == pytest.approx(10.0)


# ------------------------------------------------------------------ the repository stands on its own
def test_no_reference_to_files_outside_the_repository():
    outside = [name + ".md" for name in ("DESIGN", "HELPERS")]
    for folder in ("latprof", "tests"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix in (".py", ".md", ".toml", ".j2") and path.is_file():
                text = path.read_text()
                cited = [o for o in outside if o in text]
                assert not cited, f"{path} cites {cited}: cite docs/architecture.md or a README section instead"


def test_pyproject_packages_match_the_tree():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = set(config["packages"])
    found = {".".join(p.relative_to(ROOT).parent.parts) for p in (ROOT / "latprof").rglob("*.py")
             if "__pycache__" not in p.parts}
    assert found <= packages, sorted(found - packages)
    dirs = {name: ROOT / config.get("package-dir", {}).get(name, name.replace(".", "/")) for name in packages}
    assert all(d.is_dir() for d in dirs.values()), [n for n, d in dirs.items() if not d.is_dir()]
    for name, globs in config["package-data"].items():
        for pattern in globs:
            assert list(dirs[name].glob(pattern)), f"{name}: {pattern} matches no file"
