"""Bits every view uses: rows without raw samples for ``--json``, and the error lines of failed rows."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import Any


def rows_without_samples(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Result rows for ``--json``: everything but ``samples_ms`` (the results.jsonl keeps those)."""
    return [{k: v for k, v in r.items() if k != "samples_ms"} for r in rows]


def report_failures(rows: Iterable[dict[str, Any]], describe: Callable[[dict[str, Any]], str]) -> int:
    """One ``latprof: error:`` line on stderr per failed row; exit code 2 when any failed, else 0."""
    failed = [r for r in rows if r.get("status") != "ok"]
    for r in failed:
        print(f"latprof: error: {describe(r)}: {r.get('error')}", file=sys.stderr)
    return 2 if failed else 0


def print_paths(paths: dict[str, Any]) -> None:
    """``results: ...  csv: ...  report: ...`` on one line."""
    from latprof.console import stdout

    stdout.print("  ".join(f"{k}: {v}" for k, v in paths.items() if v is not None))
