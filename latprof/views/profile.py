"""``latprof profile`` (and ``--per-block``): the latency table, breakdowns, file paths; exit 2 if a row failed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.table import Table

from latprof.views.common import print_paths, report_failures, rows_without_samples


def result_table(rows: Sequence[dict[str, Any]], title: str = "Latency") -> Table:
    """One line per result row: what ran, where, its median latency with CI, and its counts when known."""
    from latprof.console import fmt, table

    cols = ["workload", "backend", "precision", "threads", "batch", "input", "median ms", "95% CI ms", "cv", "n",
            "mult_adds", "mem_access", "status"]
    body = []
    for r in rows:
        ok = r.get("status") == "ok"
        ci = f"{fmt(r.get('latency_ci_low_ms'))} – {fmt(r.get('latency_ci_high_ms'))}" if ok else "-"
        body.append([
            r.get("workload"), r.get("backend"), r.get("precision") or "fp32", r.get("threads"), r.get("batch"),
            r.get("input_shape"), r.get("latency_median_ms") if ok else None, ci, r.get("cv") if ok else None,
            r.get("n_samples") if ok else None, r.get("mult_adds"), r.get("mem_access"),
            r.get("status") if ok else f"error: {r.get('error')}",
        ])
    if any(r.get("node") for r in rows):  # a fleet run: which machine measured the row
        cols.insert(2, "node")
        for line, r in zip(body, rows):
            line.insert(2, r.get("node"))
    return table(title, cols, body)


def _files_line(files: Any) -> None:
    print_paths({"results": files.results_path, "csv": files.csv_path, "report": files.report_path})


def show_profile(files: Any, as_json: bool = False) -> int:
    """Print a ``RunFiles`` of ``run_profile``; exit code 2 when any row failed."""
    from latprof.console import print_json, stdout, warn
    from latprof.views.breakdown import print_breakdowns

    for note in files.notes:
        warn(note)
    if as_json:
        print_json(rows_without_samples(files.rows))
    else:
        stdout.print(result_table(files.rows))
        if files.skipped:
            stdout.print(f"{files.skipped} row(s) already present, skipped (--resume)")
        if files.per_op:
            print_breakdowns(files.per_op)
        _files_line(files)
    return report_failures(files.rows, lambda r: f"{r['workload']} on {r['backend']}")


def show_per_block(files: Any, as_json: bool = False) -> int:
    """Print a ``RunFiles`` of ``run_per_block``: per network x backend, its blocks and how they add up."""
    from latprof.console import print_json, stdout, table
    from latprof.per_block import BLOCK_TABLE_COLUMNS, block_table_rows, summary_line

    if as_json:
        print_json(rows_without_samples(files.rows))
    else:
        groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for r in files.rows:
            groups.setdefault((r["workload"], r["backend"]), []).append(r)
        for (model, backend), rows in groups.items():
            rows = sorted(rows, key=lambda r: r["block_index"])
            title = f"{model} on {backend}, {rows[0]['threads']} thread(s), batch {rows[0]['batch']}"
            stdout.print(table(title, BLOCK_TABLE_COLUMNS, block_table_rows(rows)))
            stdout.print(summary_line(rows))
        if files.skipped:
            stdout.print(f"{files.skipped} network(s) already present, skipped (--resume)")
        _files_line(files)
    return report_failures(files.rows, lambda r: f"{r['workload']} block {r['variant']} on {r['backend']}")
