"""What a sweep leaves behind: the tidy summary records, merged shards, and the written files."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any


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
