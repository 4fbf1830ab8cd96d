"""Console output helpers shared by the CLI commands: rich tables and one-line messages on stderr."""

from __future__ import annotations

import json
import math
import sys
import shutil
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

# Tables fit 120 columns (cells wrap; the CSVs keep every column), narrower when the terminal is.
_WIDTH = min(shutil.get_terminal_size((120, 40)).columns, 120) if sys.stdout.isatty() else 120
stdout = Console(soft_wrap=True, width=_WIDTH)
stderr = Console(stderr=True, soft_wrap=True, width=_WIDTH)


def warn(message: str) -> None:
    print(f"latprof: warning: {message}", file=sys.stderr)


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str, allow_nan=True))


def fmt(value: Any, digits: int = 4) -> str:
    """Human formatting for table cells: significant digits for floats, thousands separators for ints."""
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.{digits}g}"
    return str(value)


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
    t = Table(title=title, title_justify="left")
    for c in columns:
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(*[fmt(v) for v in r])
    return t
