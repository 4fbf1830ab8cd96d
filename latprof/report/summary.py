"""The tidy summary table (``--csv``): guideline rows with their ratios and verdicts first, other rows after."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from latprof.errors import LatprofError
from latprof.report.data import ReportData
from latprof.report.sections import CLAIM_COLUMNS, GUIDELINE_COLUMNS, RESULT_COLUMNS

# The sweep's own columns beyond the guideline table: channel set, how FLOPs compare, each variant's outcome.
SWEEP_COLUMNS = ["channels", "input_shape", "flops_predicted_speed_vs_baseline", "mult_adds_vs_baseline", "variant_outcome"]
# The measurement engine's process conditions (empty for rows of older files), after every earlier column.
PROCESS_COLUMNS = ["allocator", "processes", "process_spread", "minor_faults_per_call", "major_faults_per_call",
                   "voluntary_ctx_switches_per_call", "involuntary_ctx_switches_per_call", "cpu_util"]
SUMMARY_COLUMNS = (
    GUIDELINE_COLUMNS + SWEEP_COLUMNS
    + [c for c in RESULT_COLUMNS if c not in GUIDELINE_COLUMNS + SWEEP_COLUMNS] + ["status", "error"]
    + CLAIM_COLUMNS  # claim experiments' own columns (docs/claims.md), empty for the others
    + PROCESS_COLUMNS
)


def summary_frame(data: ReportData) -> pd.DataFrame:
    """One row per result (failed ones too, with their error): guideline rows first, carrying ``guideline`` and the
    sweep columns (one row per guideline × variant × backend × scale), then other rows with those left empty."""
    rows = data.rows
    if rows.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    g = rows[rows["_guideline"]].assign(guideline=lambda f: f["experiment"])
    other = rows[~rows["_guideline"]].assign(guideline="")
    return pd.concat([g, other]).reindex(columns=SUMMARY_COLUMNS)


def write_summary(data: ReportData, path: str | Path) -> Path:
    p = Path(path)
    try:
        summary_frame(data).to_csv(p, index=False)
    except OSError as exc:
        raise LatprofError(f"cannot write {p}: {exc.strerror or exc}") from None
    return p
