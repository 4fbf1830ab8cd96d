"""What a sweep leaves behind: the tidy summary, the verdict table, merged shards, and the written files."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from latprof.console import fmt
from latprof.errors import LatprofError
from latprof.results import ResultStore, dedupe_results, read_results, write_csv

def is_guideline_row(row: dict[str, Any]) -> bool:
    from latprof.report.data import is_guideline_row as report_rule

    return report_rule(row) and bool(row.get("baseline_variant"))


def summary_records(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The summary.csv columns of sweep rows, as dicts (for ``--json``)."""
    from latprof.report.summary import SUMMARY_COLUMNS

    return [{c: (r.get("experiment") if c == "guideline" else r.get(c)) for c in SUMMARY_COLUMNS}
            for r in rows if is_guideline_row(r)]


def _ci(row: dict[str, Any]) -> str:
    if row.get("speed_vs_baseline") is None:
        return "-"
    return f"{row['speed_vs_baseline']:.3f} [{fmt(row.get('speed_vs_baseline_ci_low'), 3)}, {fmt(row.get('speed_vs_baseline_ci_high'), 3)}]"


def verdict_table(rows: Sequence[dict[str, Any]]) -> Table:
    """Per guideline × backend × scale: each variant's speed vs the baseline with CI, the paper's and MAC's ratio."""
    t = Table(title="Guideline verdicts (speed relative to the baseline variant; > 1 is faster)", title_justify="left")
    for c in ("guideline", "backend", "scale", "variant", "speed [95% CI]", "paper", "MAC", "FLOPs ratio",
              "outcome", "verdict"):
        t.add_column(c)
    last = None
    for r in sorted((r for r in rows if is_guideline_row(r)),
                    key=lambda r: (r["experiment"], r["backend"], r.get("scale") or 0)):
        group = (r["experiment"], r["backend"], r.get("scale"))
        if last is not None and group != last:
            t.add_section()
        ok = r.get("status") == "ok"
        t.add_row(
            r["experiment"] if group != last else "", r["backend"] if group != last else "",
            f"x{r.get('scale')}" if group != last else "", r["variant"], _ci(r) if ok else f"error: {r.get('error')}",
            fmt(r.get("paper_speed_vs_baseline"), 3), fmt(r.get("mac_predicted_speed_vs_baseline"), 3),
            fmt(r.get("mult_adds_vs_baseline"), 3), fmt(r.get("variant_outcome") or ("baseline" if ok else "")),
            fmt(r.get("verdict")) if group != last else "",
        )
        last = group
    return t


def write_outputs(out_dir: Path, title: str | None = None) -> dict[str, Path]:
    """From ``out_dir/results.jsonl`` write results.csv, summary.csv and report.html; returns their paths."""
    from latprof.report import render_report

    results = read_results(out_dir / "results.jsonl", quiet=True)
    paths = {
        "results": out_dir / "results.jsonl",
        "csv": write_csv(results.results, out_dir / "results.csv"),
        "summary": out_dir / "summary.csv",
    }
    paths["report"] = render_report([results], out_dir / "report.html", csv_path=paths["summary"], title=title)
    return paths


def merge_runs(sources: Sequence[str | Path], out_dir: Path) -> tuple[Path, int]:
    """Join results of several runs (e.g. ``--shard`` parts from several machines) into ``out_dir``.

    Rows are deduplicated by key, the later source winning; environment and other records are kept.
    """
    files = [read_results(s) for s in sources]
    if not files:
        raise LatprofError("merge needs at least one results file or folder")
    target = Path(out_dir) / "results.jsonl"
    if any(Path(f.path).resolve() == target.resolve() for f in files):
        raise LatprofError(f"--out {out_dir} is one of the inputs; choose a new folder")
    if target.exists() and target.stat().st_size:
        raise LatprofError(f"{target} already exists; merge writes a new folder")
    store = ResultStore(target)
    envs = {hid: env for f in files for hid, env in f.environments.items()}
    rows = dedupe_results(r for f in files for r in f.results)
    store.append_many([*envs.values(), *(o for f in files for o in f.other), *rows])
    return target, len(rows)
