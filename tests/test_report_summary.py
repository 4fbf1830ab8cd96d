"""The report's first screen (the verdict matrix) and its process conditions, from synthetic results files."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd
import pytest

from tests import report_fixture as fx
from latprof.report import build_report, load, summary_frame
from latprof.report.overview import (
    ALLOCATOR_BOUND,
    CONTENTION,
    allocator_effect,
    decided_share,
    flagged_rows,
    matrix_frame,
    process_flags,
    run_verdict,
)
from latprof.report.sections import add_config
from latprof.report.summary import PROCESS_COLUMNS, SUMMARY_COLUMNS

# (guideline, backend, scale) -> verdict, as tests/report_fixture.py writes them.
EXPECTED = {(g, b, s): fx.VERDICT_OVERRIDES.get((g, b, s), "holds" if g != "g3" else "inconclusive")
            for g in fx.GUIDELINES for b in ("torch-cpu", "ort-mobile") for s in (1, 2)}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = fx.built_full_report(tmp_path_factory)
    return out, out.read_text()


def _matrix(html: str) -> str:
    m = re.search(r'<table class="matrix">.*?</table>', html, re.S)
    assert m, "no verdict matrix"
    return m.group(0)


def test_matrix_is_the_first_section(built: tuple[Path, str]) -> None:
    _, html = built
    sections = re.findall(r'<section id="([^"]+)"', html)
    assert sections[0] == "summary"
    assert html.index('id="summary"') < html.index('id="environment"')
    assert html.index('class="matrix"') < html.index('id="guidelines"') < html.index('id="environment"')
    assert html.index('id="process_conditions"') < html.index('id="guidelines"')  # the note sits under the matrix


def test_cells_carry_verdict_text_and_class(built: tuple[Path, str]) -> None:
    _, html = built
    cells = re.findall(r'<td class="cell (v-[a-z-]+)"[^>]*><span class="verdict">([^<]+)</span>', _matrix(html))
    # rows: guideline in order, torch-cpu then ort-mobile; columns: scale 1, 2
    expected = [EXPECTED[(g, b, s)] for g in fx.GUIDELINES for b in ("torch-cpu", "ort-mobile") for s in (1, 2)]
    assert [v for _, v in cells] == expected
    assert all(cls == "v-" + v.replace(" ", "-") for cls, v in cells)
    assert {"v-holds", "v-does-not-hold", "v-no-effect", "v-inconclusive"} == {c for c, _ in cells}
    for cls in ("v-holds", "v-does-not-hold", "v-no-effect", "v-inconclusive"):
        assert f".{cls}" in html  # each verdict has its colour


def test_key_ratio_is_the_last_variant(built: tuple[Path, str]) -> None:
    out, html = built
    m = pd.read_csv(out.parent / "report_summary_matrix.csv")
    keys = m.groupby("guideline")["key_variant"].first().to_dict()
    assert keys == {"g1": "1:12", "g2": "g=8", "g3": "4-fragment-parallel", "g4": "none"}
    assert "key: 1:12 vs 1:1" in html and "key: 4-fragment-parallel vs 1-fragment" in html
    g1 = pd.read_csv(out.parent / "report_guideline_g1.csv")
    row = g1[(g1["variant"] == "1:12") & (g1["backend"] == "torch-cpu") & (g1["scale"] == 2)].iloc[0]
    cell = m[(m["guideline"] == "g1") & (m["backend"] == "torch-cpu") & (m["scale"] == 2)].iloc[0]
    assert cell["speed_vs_baseline"] == pytest.approx(row["speed_vs_baseline"])
    assert cell["paper_speed_vs_baseline"] == pytest.approx(row["paper_speed_vs_baseline"])
    text = f"{row['speed_vs_baseline']:.2f}× [{row['speed_vs_baseline_ci_low']:.2f}–{row['speed_vs_baseline_ci_high']:.2f}]"
    assert text in _matrix(html)


def test_answer_line_and_share_of_decided_cells(built: tuple[Path, str], tmp_path: Path) -> None:
    _, html = built
    assert ("On this machine: G1 holds on 2/2 backends; G2 holds on 1/2 backends (1 mixed); "
            "G3 holds on 0/2 backends (2 inconclusive); G4 holds on 1/2 backends (1 mixed).") in html
    values = list(EXPECTED.values())
    decided = sum(v in ("holds", "does not hold", "no effect") for v in values)
    assert (decided, len(values)) == (12, 16)
    assert "Decided cells: 12 of 16 (75%) — 10 holds, 1 does not hold, 1 no effect; 4 inconclusive." in html
    data = load([fx.full_fixture(tmp_path)])
    m = matrix_frame(data, lambda rows: add_config(rows, False))
    assert decided_share(m) == pytest.approx(0.75)
    # the answer sits under the matrix
    assert html.index("</table>", html.index('class="matrix"')) < html.index("On this machine:")


def test_run_verdict_over_scales() -> None:
    assert run_verdict(["holds", "inconclusive", "holds"]) == "holds"
    assert run_verdict(["holds", "does not hold"]) == "mixed"
    assert run_verdict(["inconclusive", "failed"]) == "inconclusive"
    assert run_verdict(["no effect"]) == "no effect"


def test_failed_unit_is_an_undecided_cell(tmp_path: Path) -> None:
    rows = fx.guideline_rows("ort-mobile", {})
    rows = [r for r in rows if r["experiment"] == "g1"]
    for r in rows:
        if r["scale"] == 2:
            r.update(status="error", error="export failed", verdict="inconclusive")
            r.pop("latency_median_ms")
    html = build_report([fx.write_jsonl(tmp_path / "r.jsonl", rows)], tmp_path / "r.html").read_text()
    cells = re.findall(r'<td class="cell (v-[a-z-]+)"[^>]*><span class="verdict">([^<]+)</span>', _matrix(html))
    assert cells == [("v-holds", "holds"), ("v-failed", "failed")]
    assert 'title="export failed"' in _matrix(html)
    assert "Decided cells: 1 of 2 (50%)" in html


def test_process_flag_thresholds() -> None:
    assert process_flags({}) == []
    assert process_flags({"minor_faults_per_call": 0.5, "major_faults_per_call": 0.0}) == []
    assert process_flags({"minor_faults_per_call": 0.3, "major_faults_per_call": 0.21}) == [ALLOCATOR_BOUND]
    assert process_flags({"major_faults_per_call": 0.6}) == [ALLOCATOR_BOUND]  # a missing minor count counts 0
    assert process_flags({"minor_faults_per_call": math.nan, "major_faults_per_call": math.nan}) == []
    assert process_flags({"involuntary_ctx_switches_per_call": 0.05}) == []
    assert process_flags({"involuntary_ctx_switches_per_call": 0.051}) == [CONTENTION]
    assert process_flags({"minor_faults_per_call": 1, "involuntary_ctx_switches_per_call": 1}) == [ALLOCATOR_BOUND, CONTENTION]


def test_flags_mark_exactly_the_rows_over_the_thresholds(built: tuple[Path, str], tmp_path: Path) -> None:
    _, html = built
    data = load([fx.full_fixture(tmp_path)])
    flagged = flagged_rows(data.ok)
    ident = {flag: {(r["experiment"], r["scale"], r["variant"]) for r in rows} for flag, rows in flagged.items()}
    assert ident[ALLOCATOR_BOUND] == fx.ALLOCATOR_BOUND_ROWS
    assert ident[CONTENTION] == fx.CONTENTION_ROWS
    assert all(r["backend"] == "torch-cpu" for rows in flagged.values() for r in rows)
    # badges in the guideline tables: one per flagged row and flag
    assert html.count(f'<span class="flag allocator-bound">{ALLOCATOR_BOUND}</span>') == len(fx.ALLOCATOR_BOUND_ROWS)
    assert html.count(f'<span class="flag contention">{CONTENTION}</span>') == len(fx.CONTENTION_ROWS)
    g1 = re.search(r'<section id="guideline_g1">.*?</section>', html, re.S).group(0)  # type: ignore[union-attr]
    badge_rows = [tr for tr in re.findall(r"<tr>.*?</tr>", g1, re.S) if 'class="flag' in tr]
    assert len(badge_rows) == 1 and "<td>1:12</td>" in badge_rows[0] and "torch-cpu" in badge_rows[0]
    # the short list under the matrix
    cond = re.search(r'<section id="process_conditions">.*?</section>', html, re.S).group(0)  # type: ignore[union-attr]
    assert "Allocator-bound (2 of" in cond and "Contention (2 of" in cond
    assert "g1 1:12" in cond and "g4 none" in cond and "g3 1-fragment" in cond
    assert "g2 g=4" not in cond and "g4 relu ·" not in cond  # exactly on a threshold: not flagged


def test_run_settings_show_allocator_and_processes(built: tuple[Path, str]) -> None:
    out, html = built
    s = pd.read_csv(out.parent / "report_settings.csv", keep_default_na=False)
    assert {"allocator", "processes"} <= set(s.columns)
    torch = s[(s["backend"] == "torch-cpu") & s["experiment"].str.contains("g1")]
    assert list(torch["allocator"]) == ["steady"] and list(torch["processes"].astype(str)) == ["2"]
    mobile = s[s["backend"] == "ort-mobile"]
    assert set(mobile["allocator"]) == {"—"} and set(mobile["processes"].astype(str)) == {"—"}
    env = re.search(r'<section id="environment">.*?</section>', html, re.S).group(0)  # type: ignore[union-attr]
    assert "<th>allocator</th>" in env and "<th>processes</th>" in env


def test_allocator_effect_table(built: tuple[Path, str]) -> None:
    out, html = built
    assert "Allocator effect: median latency (ms) per allocator" in html
    eff = pd.read_csv(out.parent / "report_allocator_effect.csv")
    assert len(eff) == 1
    row = eff.iloc[0]
    assert row["workload"] == "alloc_probe"
    ms = [c for c in eff.columns if c.endswith(" ms")]
    assert ms == ["system ms", "jemalloc ms", "tcmalloc ms"]
    assert (row["system ms"], row["jemalloc ms"], row["tcmalloc ms"]) == (4.0, 3.0, 3.2)
    assert row["slowest/fastest"] == pytest.approx(4 / 3) and row["fastest"] == "jemalloc"


def test_allocator_effect_needs_one_file(tmp_path: Path) -> None:
    a = fx.write_jsonl(tmp_path / "a.jsonl", [fx.result(workload="w", backend="torch-cpu", allocator="system", latency_median_ms=2.0)])
    b = fx.write_jsonl(tmp_path / "b.jsonl", [fx.result(workload="w", backend="torch-cpu", allocator="jemalloc", latency_median_ms=1.0)])
    assert allocator_effect(load([a, b]).ok).empty
    html = build_report([a, b], tmp_path / "r.html").read_text()
    assert "Allocator effect" not in html


def test_rows_without_process_columns(tmp_path: Path) -> None:
    src = fx.write_jsonl(tmp_path / "old.jsonl", [fx.environment("fixturehw0001"), *fx.guideline_rows("ort-mobile", {})])
    html = build_report([src], tmp_path / "old.html", csv_path=tmp_path / "s.csv").read_text()
    assert re.findall(r'<section id="([^"]+)"', html)[0] == "summary"
    assert "carry no page-fault or context-switch counts" in html
    assert 'class="flag' not in html
    s = pd.read_csv(tmp_path / "s.csv")
    assert list(s.columns[-len(PROCESS_COLUMNS):]) == PROCESS_COLUMNS
    assert s[PROCESS_COLUMNS].isna().all().all()


def test_summary_csv_process_columns(built: tuple[Path, str]) -> None:
    out, _ = built
    assert SUMMARY_COLUMNS[-len(PROCESS_COLUMNS):] == PROCESS_COLUMNS
    assert PROCESS_COLUMNS == ["allocator", "processes", "process_spread", "minor_faults_per_call", "major_faults_per_call",
                               "voluntary_ctx_switches_per_call", "involuntary_ctx_switches_per_call", "cpu_util"]
    s = pd.read_csv(out.parent / "summary.csv")
    assert list(s.columns) == SUMMARY_COLUMNS
    row = s[(s["guideline"] == "g1") & (s["variant"] == "1:12") & (s["backend"] == "torch-cpu") & (s["scale"] == 1)].iloc[0]
    assert row["allocator"] == "steady" and row["processes"] == 2
    assert row["minor_faults_per_call"] + row["major_faults_per_call"] == pytest.approx(0.6)
    assert s[s["backend"] == "ort-mobile"]["allocator"].isna().all()


def test_no_summary_without_guideline_rows(tmp_path: Path) -> None:
    src = fx.write_jsonl(tmp_path / "p.jsonl", fx.profile_rows())
    html = build_report([src], tmp_path / "p.html").read_text()
    assert 'id="summary"' not in html and 'class="matrix"' not in html
    assert re.findall(r'<section id="([^"]+)"', html)[0] == "environment"
    assert summary_frame(load([src])).shape[1] == len(SUMMARY_COLUMNS)
