"""The latency regression gate: ``compare`` two runs row by row, and ``ci`` (run a suite, compare, confirm)."""

from latprof.regress.compare import CompareOptions, CompareReport, RowComparison, compare_files, compare_results
from latprof.regress.decision import VERDICTS, Comparison, compare_samples

__all__ = [
    "VERDICTS",
    "CompareOptions",
    "CompareReport",
    "Comparison",
    "RowComparison",
    "compare_files",
    "compare_results",
    "compare_samples",
]
