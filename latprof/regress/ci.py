"""``latprof ci``: run the CI suite, compare with the committed baseline of this machine, confirm before failing.

Baselines live in ``<baseline_dir>/<hardware_id>/results.jsonl``: latency is only comparable on the same hardware.
A machine without a baseline is not gated; it gets its run's table and a hint to create one.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from latprof.console import fmt
from latprof.errors import LatprofError
from latprof.measure import environment
from latprof.regress.compare import CompareOptions, CompareReport, RowComparison, compare_files, environment_record, label
from latprof.regress.render import markdown
from latprof.regress.suite import Suite, load_suite, run_suite
from latprof.results import ResultStore, read_results
from latprof.rows import Record
from latprof.run.engine import RunOptions, default_out_dir


DEFAULT_SUITE = Path("benchmarks/ci_suite.toml")
DEFAULT_BASELINE_DIR = Path("benchmarks/baseline")  # holds <hardware_id>/results.jsonl


@dataclass(frozen=True)
class CIOptions:
    """What ``latprof ci`` takes; ``threshold``/``alpha`` of None mean: the suite's values."""

    suite: Path = DEFAULT_SUITE
    baseline_dir: Path = DEFAULT_BASELINE_DIR
    out: Path | None = None
    update_baseline: bool = False
    warn_only: bool = False
    threshold: float | None = None
    alpha: float | None = None
    confirm: bool = True
    run: RunOptions = field(default_factory=RunOptions)


@dataclass
class CIOutcome:
    """What a CI run did and found."""

    suite: Suite
    hardware_id: str
    out_dir: Path
    results_path: Path
    rows: list[dict[str, Any]]
    baseline_path: Path
    report: CompareReport | None = None
    notes: dict[str, str] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    markdown: str = ""
    summary_paths: list[Path] = field(default_factory=list)
    baseline_written: bool = False
    exit_code: int = 0


def baseline_path(baseline_dir: Path, hardware_id: str) -> Path:
    return Path(baseline_dir) / hardware_id / "results.jsonl"


def closest_baseline(baseline_dir: Path, env: dict[str, Any]) -> tuple[str, list[str]] | None:
    """Among the baselines in ``baseline_dir``, the one whose recorded hardware differs from ``env`` in the fewest
    hashed fields: ``(hardware_id, differences)``; None when no baseline has a readable environment record."""
    best: tuple[int, str, list[str]] | None = None
    for path in sorted(Path(baseline_dir).glob("*/results.jsonl")):
        try:
            record = environment_record(read_results(path, quiet=True), [path.parent.name])
        except (LatprofError, OSError, ValueError):
            continue
        if record is None:
            continue
        diffs = environment.hardware_differences(record, env)
        if best is None or len(diffs) < best[0]:
            best = (len(diffs), path.parent.name, diffs)
    return (best[1], best[2]) if best else None


def _measure(suite: Suite, path: Path, env: dict[str, Any], run: RunOptions) -> tuple[ResultStore, list[dict[str, Any]]]:
    store = ResultStore(path)
    store.append({"record": Record.ENVIRONMENT.value, **env})
    return store, run_suite(suite, store, env, run)


def confirm_regressions(
    report: CompareReport, suite: Suite, baseline: Path, out_dir: Path, env: dict[str, Any], options: CompareOptions,
    run: RunOptions | None = None,
) -> tuple[CompareReport, dict[str, str]]:
    """Re-measure the regressed rows once (with the reference); a row stays regressed only if it regresses again."""
    flagged = {str(r.key["variant"]) for r in report.regressed}
    confirm_path = out_dir / "confirm.jsonl"
    if confirm_path.exists():
        confirm_path.unlink()
    _measure(suite.only(flagged), confirm_path, env, run or RunOptions())
    second = {label(r.key): r for r in compare_files(baseline, confirm_path, options).rows}
    notes: dict[str, str] = {}
    rows: list[RowComparison] = []
    for r in report.rows:
        again = second.get(label(r.key)) if r.verdict == "regressed" else None
        if again is None:
            rows.append(r)
            continue
        first = f"first ratio {r.comparison.ratio:.3f}"
        confirmed = again.verdict == "regressed"
        notes[label(r.key)] = f"confirmed on re-measure ({first})" if confirmed else f"not confirmed on re-measure: {again.verdict} ({first})"
        rows.append(again)  # the re-measurement's figures and verdict
    return replace(report, rows=rows), notes


def run_table(rows: list[dict[str, Any]]) -> tuple[Table, str]:
    """This run's rows alone (no baseline to compare with): median, CI, and latency relative to the reference."""
    refs = {r.get("interleave_group"): r for r in rows if r.get("reference") and r.get("status") == "ok"}
    cols = ["workload", "backend", "threads", "input", "median ms", "95% CI ms", "cv", "n", "rel. to reference"]
    body = []
    for r in rows:
        if r.get("status") != "ok":
            body.append([label(r), r.get("backend"), r.get("threads"), r.get("input_shape"), "-", "-", "-", "-", f"error: {r.get('error')}"])
            continue
        ref = refs.get(r.get("interleave_group"))
        rel = float(np.median(np.asarray(r["samples_ms"]) / np.asarray(ref["samples_ms"]))) if ref and not r.get("reference") else None
        body.append([
            label(r) + (" (reference)" if r.get("reference") else ""), r["backend"], fmt(r["threads"]), r["input_shape"],
            fmt(r["latency_median_ms"]), f"{fmt(r['latency_ci_low_ms'])} – {fmt(r['latency_ci_high_ms'])}",
            fmt(r["cv"], 2), fmt(r["n_samples"]), fmt(rel),
        ])
    t = Table(title="This run (not compared)", title_justify="left")
    for c in cols:
        t.add_column(c, overflow="fold")
    for b in body:
        t.add_row(*[str(x) for x in b])
    md = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    md += ["| " + " | ".join(str(x).replace("|", "\\|") for x in b) + " |" for b in body]
    return t, "\n".join(md)


def write_summary(text: str, out_dir: Path) -> list[Path]:
    """Write the Markdown summary to the out dir, and append it to ``$GITHUB_STEP_SUMMARY`` when that is set."""
    paths = [out_dir / "summary.md"]
    paths[0].write_text(text)
    step = os.environ.get("GITHUB_STEP_SUMMARY")
    if step:
        with open(step, "a") as f:
            f.write(text + "\n")
        paths.append(Path(step))
    return paths


def run_ci(options: CIOptions) -> CIOutcome:
    """Measure the suite, compare with this machine's baseline, confirm regressions, write the summary."""
    suite = load_suite(options.suite)
    threshold = options.threshold if options.threshold is not None else suite.threshold
    alpha = options.alpha if options.alpha is not None else suite.alpha
    compare_options = CompareOptions(threshold=threshold, alpha=alpha, normalize=True)
    out_dir = Path(options.out) if options.out is not None else default_out_dir("ci-")
    if out_dir.exists() and not out_dir.is_dir():
        raise LatprofError(f"--out {out_dir} exists and is not a directory")
    results_path = out_dir / "results.jsonl"
    if results_path.exists():
        results_path.unlink()  # one CI run per folder: rows of an older run must not be mixed in
    env = environment.collect().as_dict()
    hw = env["hardware_id"]
    store, rows = _measure(suite, results_path, env, options.run)
    base = baseline_path(options.baseline_dir, hw)
    outcome = CIOutcome(suite, hw, out_dir, store.path, rows, base)
    heading = f"latprof ci: suite `{suite.name}` on `{hw}` ({env['hardware']['cpu_model']})"
    if base.exists():
        report = compare_files(base, store.path, compare_options)
        if report.regressed and options.confirm:
            report, outcome.notes = confirm_regressions(report, suite, base, out_dir, env, compare_options,
                                                            options.run)
        outcome.report = report
        outcome.markdown = markdown(report, heading, outcome.notes)
        if report.regressed:
            names = ", ".join(label(r.key) for r in report.regressed)
            mode = "warning only (--warn-only)" if options.warn_only else "not failing: the baseline is being replaced" if options.update_baseline else "failing"
            found = "confirmed on re-measure" if options.confirm else "found (not re-measured: --no-confirm)"
            outcome.messages.append(f"regression {found} in {names}; {mode}")
            outcome.exit_code = 0 if options.warn_only else 1
    else:
        known = sorted(p.parent.name for p in Path(options.baseline_dir).glob("*/results.jsonl"))
        closest = closest_baseline(options.baseline_dir, env) if known else None
        why = ""
        if closest is not None:
            diffs = "; ".join(closest[1]) or "no recorded hardware field differs: its id comes from another latprof version"
            why = f"; closest {closest[0]} differs in {diffs}"
        outcome.messages.append(
            f"no baseline for hardware_id {hw} in {options.baseline_dir}"
            + (f" (baselines exist for: {', '.join(known)}{why})" if known else "")
            + "; this run is not gated"
            + ("" if options.update_baseline else "; create one with --update-baseline")
        )
        _, md_table = run_table(rows)
        outcome.markdown = f"## {heading}\n\n{outcome.messages[-1]}.\n\n{md_table}\n"
    if options.update_baseline:
        base.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(store.path, base)
        outcome.baseline_written = True
        outcome.messages.append(f"baseline written: {base}")
        outcome.exit_code = 0
    outcome.summary_paths = write_summary(outcome.markdown, out_dir)
    return outcome
