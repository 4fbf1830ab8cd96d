"""How a comparison is shown: a rich table for the terminal / CI log, and Markdown for a PR or step summary."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from latprof.console import fmt
from latprof.regress.compare import CompareReport, RowComparison, label

COLUMNS = ["workload", "backend", "threads", "input", "baseline", "current", "ratio", "CI", "p", "verdict"]
_STYLE = {"regressed": "bold red", "improved": "green", "unchanged": "", "inconclusive": "yellow"}


def _cells(r: RowComparison) -> list[str]:
    c = r.comparison
    unit = "" if r.normalized else " ms"
    return [
        label(r.key),
        str(r.key.get("backend")),
        fmt(r.key.get("threads")),
        str(r.key.get("input_shape")),
        f"{fmt(c.baseline_median)}{unit}",
        f"{fmt(c.current_median)}{unit}",
        f"{c.ratio:.3f}",
        f"{c.ci_low:.3f} – {c.ci_high:.3f}",
        fmt(c.p_value, 2),
        c.verdict,
    ]


def title(report: CompareReport) -> str:
    o = report.options
    what = "latency relative to the reference workload" if report.normalized else "median latency"
    return f"Regression check: {what}; threshold ±{o.threshold:.0%}, alpha {o.alpha:g}"


def summary_line(report: CompareReport) -> str:
    counts = ", ".join(f"{n} {v}" for v, n in report.counts().items() if n)
    extra = []
    if report.only_in_baseline:
        extra.append(f"{len(report.only_in_baseline)} only in baseline")
    if report.only_in_current:
        extra.append(f"{len(report.only_in_current)} only in current")
    if report.not_ok:
        extra.append(f"{len(report.not_ok)} error row(s)")
    return f"{len(report.rows)} row(s) compared: {counts}" + (f" ({'; '.join(extra)})" if extra else "")


def rich_table(report: CompareReport, notes: dict[str, str] | None = None) -> Table:
    """Terminal table; ``notes`` adds a column (e.g. the confirmation result of `latprof ci`)."""
    t = Table(title=title(report), title_justify="left", caption=summary_line(report), caption_justify="left")
    for col in COLUMNS + (["note"] if notes else []):
        t.add_column(col, overflow="fold")
    for r in report.rows:
        cells = _cells(r) + ([notes.get(label(r.key), "")] if notes else [])
        t.add_row(*cells, style=_STYLE[r.verdict])
    return t


def _md_escape(text: Any) -> str:
    return str(text).replace("|", "\\|")


def markdown(report: CompareReport, heading: str = "latprof regression check", notes: dict[str, str] | None = None) -> str:
    """A Markdown section: heading, rule, table, and the rows that could not be compared."""
    lines = [f"## {heading}", "", f"{title(report)}.", "", summary_line(report), ""]
    cols = COLUMNS + (["note"] if notes else [])
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "---|" * len(cols))
    for r in report.rows:
        cells = _cells(r)
        if r.verdict == "regressed":
            cells[-1] = f"**{cells[-1]}**"
        if notes:
            cells.append(notes.get(label(r.key), ""))
        lines.append("| " + " | ".join(_md_escape(c) for c in cells) + " |")
    for what, rows in (("Only in baseline", report.only_in_baseline), ("Only in current", report.only_in_current)):
        if rows:
            lines += ["", f"{what}: " + ", ".join(f"`{label(k)}`" for k in rows)]
    if report.not_ok:
        lines += ["", "Error rows: " + "; ".join(f"`{label(k)}`: {_md_escape(k.get('error'))}" for k in report.not_ok)]
    lines += ["", f"Baseline: `{report.baseline_path}` · current: `{report.current_path}`", ""]
    return "\n".join(lines)
