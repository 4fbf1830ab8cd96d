"""The tidy summary table (``--csv``): guideline rows with their ratios and verdicts first, other rows after."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from latprof.errors import LatprofError
from latprof.report.data import ReportData
from latprof.report.sections import GUIDELINE_COLUMNS, RESULT_COLUMNS

SUMMARY_COLUMNS = GUIDELINE_COLUMNS + [c for c in RESULT_COLUMNS if c not in GUIDELINE_COLUMNS] + ["status"]


def summary_frame(data: ReportData) -> pd.DataFrame:
    """One row per successful result: guideline rows carry ``guideline`` and the sweep columns, others leave them empty."""
    ok = data.ok
    if ok.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    g = ok[ok["_guideline"]].assign(guideline=lambda f: f["experiment"])
    other = ok[~ok["_guideline"]].assign(guideline="")
    return pd.concat([g, other]).reindex(columns=SUMMARY_COLUMNS)


def write_summary(data: ReportData, path: str | Path) -> Path:
    p = Path(path)
    try:
        summary_frame(data).to_csv(p, index=False)
    except OSError as exc:
        raise LatprofError(f"cannot write {p}: {exc.strerror or exc}") from None
    return p
