"""Formatting of numbers and tables for the page: every cell a plain string (jinja2 escapes it)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd


def fmt(value: Any, digits: int = 3) -> str:
    """Numbers to short readable text: counts with SI suffixes, floats to ``digits`` significant digits."""
    if value is None:
        return "—"
    if isinstance(value, float) and math.isnan(value):
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float)) or hasattr(value, "dtype"):
        v = float(value)
        if not math.isfinite(v):
            return str(v)
        if v == int(v) and abs(v) < 10_000:
            return str(int(v))
        for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
            if abs(v) >= size:
                return f"{v / size:.{digits}g} {unit}"
        return f"{v:.{digits}g}"
    return str(value)


def with_ci(value: Any, low: Any, high: Any) -> str:
    """``1.23 [1.20, 1.26]``; without a CI just the value."""
    text = fmt(value)
    if text == "—" or fmt(low) == "—" or fmt(high) == "—":
        return text
    return f"{text} [{fmt(low)}, {fmt(high)}]"


def table(df: pd.DataFrame, columns: Sequence[str] | None = None, headers: Sequence[str] | None = None) -> dict[str, Any]:
    """A table for the template: ``{"columns": [...], "rows": [[str, ...], ...]}``."""
    cols = list(columns) if columns is not None else list(df.columns)
    rows = [[fmt(v) for v in rec] for rec in df.reindex(columns=cols).itertuples(index=False, name=None)]
    return {"columns": list(headers) if headers is not None else cols, "rows": rows}
