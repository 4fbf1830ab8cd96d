"""``latprof sweep``: a progress bar while it runs, then the verdict table, notes, paths and the decided share."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.table import Table

from latprof.views.common import print_paths

OnUnit = Callable[[int, int, Any, Any], None]


@contextmanager
def unit_progress(total: int, label: str = "sweep") -> Iterator[OnUnit]:
    """An ``on_unit`` callback for the run engine: a rich progress bar with ETA on a terminal, one log line per
    finished unit otherwise (CI logs, pipes)."""
    if not sys.stderr.isatty():
        from latprof.run.engine import log_unit

        yield log_unit
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("ETA"), TimeRemainingColumn(), transient=True) as bar:
        task = bar.add_task(label, total=total)

        def on_unit(i: int, n: int, unit: Any, rows: Any) -> None:
            bar.update(task, total=n, advance=1, description=unit.label)  # n counts every pass of --processes

        yield on_unit


def _ci(row: dict[str, Any]) -> str:
    from latprof.console import fmt

    if row.get("speed_vs_baseline") is None:
        return "-"
    return (f"{row['speed_vs_baseline']:.3f} [{fmt(row.get('speed_vs_baseline_ci_low'), 3)}, "
            f"{fmt(row.get('speed_vs_baseline_ci_high'), 3)}]")


def _backend_text(row: dict[str, Any]) -> str:
    """The backend, with the sweep's --precision when it is not FP32 (a variant's own precision is in its name)."""
    precision = row.get("sweep_precision")
    return f"{row['backend']} {precision}" if precision not in (None, "", "fp32") else str(row["backend"])


def verdict_table(rows: Sequence[dict[str, Any]]) -> Table:
    """Per guideline × backend × scale: each variant's speed vs the baseline with CI, the paper's and MAC's ratio."""
    from latprof.console import fmt
    from latprof.experiments.outputs import is_guideline_row

    t = Table(title="Guideline verdicts (speed relative to the baseline variant; > 1 is faster)", title_justify="left")
    fleet = any(r.get("node") for r in rows)  # a fleet run: one group per machine too
    for c in ("guideline", "backend", *(("node",) if fleet else ()), "scale", "variant", "speed [95% CI]", "paper",
              "MAC", "FLOPs ratio", "outcome", "verdict"):
        t.add_column(c)
    last = None
    for r in sorted((r for r in rows if is_guideline_row(r)),
                    key=lambda r: (r["experiment"], r["backend"], r.get("node") or "", r.get("scale") or 0,
                                   r.get("sweep_precision") or "")):
        group = (r["experiment"], r["backend"], r.get("node"), r.get("scale"), r.get("sweep_precision"))
        if last is not None and group != last:
            t.add_section()
        ok = r.get("status") == "ok"
        first = group != last
        t.add_row(
            r["experiment"] if first else "", _backend_text(r) if first else "",
            *((str(r.get("node") or "") if first else "",) if fleet else ()), f"x{r.get('scale')}" if first else "",
            r["variant"], _ci(r) if ok else f"error: {r.get('error')}",
            fmt(r.get("paper_speed_vs_baseline"), 3), fmt(r.get("mac_predicted_speed_vs_baseline"), 3),
            fmt(r.get("mult_adds_vs_baseline"), 3), fmt(r.get("variant_outcome") or ("baseline" if ok else "")),
            fmt(r.get("verdict")) if first else "",
        )
        last = group
    return t


def show_sweep(outcome: Any, as_json: bool = False) -> int:
    """Print a ``SweepOutcome``: warnings, the verdict table (or summary JSON), paths, and the decided share."""
    from latprof.console import print_json, stdout, warn
    from latprof.experiments.outputs import summary_records

    for w in outcome.flops_warnings:
        warn(f"FLOPs not constant: {w}")
    for note in outcome.notes:
        warn(note)
    if as_json:
        print_json(summary_records(outcome.rows))
    else:
        stdout.print(verdict_table(outcome.rows))
        if outcome.units_skipped:
            stdout.print(f"{outcome.units_skipped} unit(s) already present, skipped (--resume)")
        print_paths(outcome.paths)
    decided, cells = outcome.decided_share()
    if cells:
        extra = (f", {outcome.extra_processes} extra worker process(es) for undecided units"
                 if outcome.extra_processes else "")
        print(f"latprof: decided {decided} of {cells} guideline x backend x scale cells ({decided / cells:.0%}: "
              f"holds, does not hold or no effect) in {outcome.wall_s:.0f} s{extra}", file=sys.stderr)
    return 0
