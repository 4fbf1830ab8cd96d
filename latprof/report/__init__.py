"""Reports: one self-contained HTML page for people, CSV tables for machines."""

from latprof.report.build import build_report, render_html, render_report
from latprof.report.data import ReportData, from_results_files, load
from latprof.report.summary import summary_frame, write_summary

__all__ = [
    "ReportData",
    "build_report",
    "from_results_files",
    "load",
    "render_html",
    "render_report",
    "summary_frame",
    "write_summary",
]
