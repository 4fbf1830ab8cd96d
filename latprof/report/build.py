"""Render the report: one self-contained HTML page (figures as PNG data URIs, inline CSS) and CSVs beside it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import jinja2

from latprof import __version__
from latprof.errors import LatprofError
from latprof.report.data import ReportData, from_results_files, load
from latprof.report.fleet import fleet_section
from latprof.report.sections import (
    Section,
    blocks_section,
    environment_section,
    errors_section,
    fits_section,
    guideline_sections,
    per_op_section,
    predictions_section,
    results_section,
    roofline_section,
    summary_section,
)
from latprof.report.summary import write_summary
from latprof.results import ResultsFile

DEFAULT_TITLE = "latprof report"


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("latprof.report", "templates"),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "j2"), default=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def sections(data: ReportData) -> list[Section]:
    """The page's sections in reading order; absent data leaves its section out or explains why.

    The first screen answers "which guidelines hold here?" (the verdict matrix); the guideline details follow, then
    the machines and run settings they were measured with, then the analyses.
    """
    candidates = [
        summary_section(data),
        fleet_section(data),
        guideline_sections(data),
        guideline_sections(data, claims=True),
        environment_section(data),
        fits_section(data),
        roofline_section(data),
        per_op_section(data),
        blocks_section(data),
        predictions_section(data),
        results_section(data),
        errors_section(data),
    ]
    return [s for s in candidates if s is not None]


def _write_csvs(secs: list[Section], out_html: Path) -> list[Path]:
    """``<stem>_<name>.csv`` beside the HTML for every figure's and table's numbers; links are relative names."""
    written = []
    for sec in secs:
        for sub in [sec, *sec.blocks]:
            for name, frame in sub.csv.items():
                path = out_html.with_name(f"{out_html.stem}_{name}.csv")
                frame.to_csv(path, index=False)
                sub.links.append(path.name)
                written.append(path)
    return written


def render_html(data: ReportData, out_html: str | Path, title: str | None = None) -> tuple[Path, list[Path]]:
    """Write the page and its CSVs; returns (html path, csv paths)."""
    out = Path(out_html)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        secs = sections(data)
        csvs = _write_csvs(secs, out)
        html = _environment().get_template("report.html.j2").render(
            title=title or DEFAULT_TITLE,
            generated=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            version=__version__,
            sections=secs,
            n_rows=len(data.rows),
            n_ok=len(data.ok),
        )
        out.write_text(html, encoding="utf-8")
    except OSError as exc:
        raise LatprofError(f"cannot write the report to {out}: {exc.strerror or exc}") from None
    return out, csvs


def render_report(
    results_files: Sequence[ResultsFile],
    out_html: str | Path,
    csv_path: str | Path | None = None,
    title: str | None = None,
) -> Path:
    """Report from already-loaded results files (what sweep and profile call); returns the HTML path."""
    data = from_results_files(results_files)
    path, _ = render_html(data, out_html, title)
    if csv_path is not None:
        write_summary(data, csv_path)
    return path


DEFAULT_REPORT_FILE = Path("report.html")


def build_report(
    paths: Sequence[str | Path],
    out_html: str | Path = DEFAULT_REPORT_FILE,
    csv_path: str | Path | None = None,
    title: str | None = None,
) -> Path:
    """Read results files (a folder means its results.jsonl) and write the report; bad input raises LatprofError."""
    if not paths:
        raise LatprofError("no results files given; pass one or more results.jsonl files or run folders")
    data = load(paths)
    path, _ = render_html(data, out_html, title)
    if csv_path is not None:
        write_summary(data, csv_path)
    return path
