"""``latprof count``: totals, and per layer / per module / per op when asked; optional CSV."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def show_count(report: Any, by: str | None = None, per_layer: bool = False, csv: Path | None = None,
               as_json: bool = False) -> int:
    """Print a ``CountReport`` (and write ``csv``: the layer rows, or the ``by`` rows)."""
    from latprof.console import print_json, stdout, table, warn
    from latprof.cost import COUNT_COLUMNS
    from latprof.cost.report import write_csv
    from latprof.shapes import format_shape

    rows = report.aggregate(by) if by else [r.as_dict() for r in report.layers]
    if csv:
        write_csv(rows, csv)
    if as_json:
        print_json(report.as_dict())
    else:
        cols = [*COUNT_COLUMNS, "arithmetic_intensity"]
        if per_layer or by:
            key = ["name", "op"] if not by else [by if by == "op" else "name", "calls"]
            extra = ["output_shape"] if not by else []
            shown = key + cols[:-1] + extra
            body = [[(format_shape(r[k]) if r[k] else "-") if k == "output_shape" else r[k] for k in shown]
                    for r in rows]
            stdout.print(table(f"{report.model} per {by or 'layer'}", shown, body))
        shapes = ", ".join(format_shape(s) for s in report.input_shapes)
        title = f"{report.model} ({shapes}{', BN folded' if report.fold_bn else ''})"
        stdout.print(table(title, cols, [[report.totals[c] for c in cols]]))
        if csv:
            stdout.print(f"csv: {csv}")
    if report.unsupported_ops:
        warn(f"no cost rule for op(s) {', '.join(report.unsupported_ops)}: their tensor traffic is counted, "
             "their arithmetic is not")
    return 0
