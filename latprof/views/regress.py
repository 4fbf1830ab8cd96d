"""``latprof compare`` and ``latprof ci``: the comparison table (or JSON), Markdown on request, CI messages."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from latprof.errors import LatprofError
from latprof.views.common import rows_without_samples


def show_compare(report: Any, as_json: bool = False, markdown_path: Path | None = None) -> int:
    """Print a ``CompareReport``; exit code 1 when a workload regressed (``report.exit_code()``)."""
    from latprof.console import print_json, stdout
    from latprof.regress.render import markdown, rich_table

    if as_json:
        print_json(report.as_dict())
    else:
        stdout.print(rich_table(report))
    if markdown_path:
        try:
            markdown_path.write_text(markdown(report))
        except OSError as exc:
            raise LatprofError(f"cannot write --markdown {markdown_path}: {exc.strerror or exc}") from None
    return report.exit_code()


def show_ci(outcome: Any, as_json: bool = False) -> int:
    """Print a ``CIOutcome``: the comparison (or this run alone when there is no baseline) and its messages."""
    from latprof.console import print_json, stdout
    from latprof.regress.ci import run_table
    from latprof.regress.render import rich_table

    if as_json:
        print_json({"hardware_id": outcome.hardware_id, "messages": outcome.messages,
                    "rows": rows_without_samples(outcome.rows),
                    "comparison": outcome.report.as_dict() if outcome.report else None})
    elif outcome.report:
        stdout.print(rich_table(outcome.report, outcome.notes))
    else:
        stdout.print(run_table(outcome.rows)[0])
    for m in outcome.messages:
        print(f"latprof ci: {m}", file=sys.stderr)
    print(f"latprof ci: results {outcome.results_path}; summary {', '.join(map(str, outcome.summary_paths))}",
          file=sys.stderr)
    return outcome.exit_code
