"""Terminal view of per-op breakdowns (``latprof profile --per-op``): the tables come from the pure
``latprof.analysis.breakdown``; this module only prints them."""

from __future__ import annotations

from typing import Any

from latprof.analysis.breakdown import category_columns, category_rows


def print_breakdowns(records: list[dict[str, Any]]) -> None:
    """Print each backend's category table beside the paper's Figure 2 shares, and its reconciliation line."""
    from latprof.console import stdout, table

    for rec in records:
        title = f"Per-op breakdown: {rec.get('workload')} on {rec.get('backend')} ({rec.get('threads')} threads)"
        if rec.get("status") == "error":
            stdout.print(f"{title}: error: {rec.get('error')}")
            continue
        stdout.print(table(title, category_columns(), category_rows(rec)))
        stdout.print(f"  {rec['reconciliation']}")
    if records:
        stdout.print("  paper columns: ShuffleNet V2 Figure 2 (GTX 1080Ti / Snapdragon 810), for reference only")
