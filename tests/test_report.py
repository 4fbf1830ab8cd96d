"""The HTML report and its CSVs, built from synthetic results files (tests/report_fixture.py)."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from tests import report_fixture as fx
from latprof.cli import main
from latprof.report import build_report, render_report
from latprof.results import read_results

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = fx.built_full_report(tmp_path_factory)
    return out, out.read_text()


def test_every_section_present(built: tuple[Path, str]) -> None:
    _, html = built
    for key in ("summary", "process_conditions", "environment", "guidelines", "guideline_g1", "guideline_g2", "guideline_g3", "guideline_g4",
                "fits", "roofline", "per_op", "blocks", "results", "errors"):
        assert f'id="{key}"' in html, key
    assert "fixturehw0001" in html and "Fixture CPU 3000" in html
    assert "graph_optimization_level=ORT_ENABLE_ALL" in html and "onnx_exporter=dynamo" in html
    assert "predicts latency better" in html
    assert "paper: ShuffleNet v1, ARM (Snapdragon 810)" in html
    assert "Whole network 12 ms" in html


def test_no_external_references(built: tuple[Path, str]) -> None:
    out, html = built
    assert "http://" not in html and "https://" not in html
    assert not re.search(r"<(script|link)\b", html)
    for uri in re.findall(r'src="data:image/png;base64,([^"]+)"', html):
        assert b"http" not in base64.b64decode(uri)
    for csv in out.parent.glob("*.csv"):
        assert "http://" not in csv.read_text()


def test_every_figure_decodes(built: tuple[Path, str]) -> None:
    _, html = built
    srcs = re.findall(r'<img src="([^"]+)"', html)
    assert len(srcs) >= 8  # 4 guidelines, fits, roofline, per-op, blocks
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert data.startswith(PNG_SIGNATURE)


def test_user_names_are_escaped(built: tuple[Path, str]) -> None:
    _, html = built
    assert fx.XSS not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_csv_files_beside_html(built: tuple[Path, str]) -> None:
    out, html = built
    names = {p.name for p in out.parent.glob("report_*.csv")}
    for name in ("report_summary_matrix.csv", "report_allocator_effect.csv", "report_guideline_g1.csv", "report_fits.csv", "report_roofline.csv", "report_per_op.csv",
                 "report_blocks.csv", "report_errors.csv", "report_settings.csv", "report_results.csv"):
        assert name in names
        assert f'href="{name}"' in html
    g1 = pd.read_csv(out.parent / "report_guideline_g1.csv")
    assert {"speed_vs_baseline", "paper_speed_vs_baseline", "mac_predicted_speed_vs_baseline", "verdict"} <= set(g1.columns)
    assert len(g1) == 2 * 2 * 4  # backends x scales x variants
    roof = pd.read_csv(out.parent / "report_roofline.csv")
    row = roof.iloc[0]
    assert row["attained_gflops"] == pytest.approx(2 * row["mult_adds"] / (row["latency_median_ms"] / 1e3) / 1e9)
    assert row["share_of_roof"] == pytest.approx(row["attained_gflops"] / row["roof_gflops"])


def test_summary_csv(built: tuple[Path, str]) -> None:
    out, _ = built
    s = pd.read_csv(out.parent / "summary.csv")
    expected = ["guideline", "variant", "backend", "scale", "threads", "batch", "mult_adds", "mem_access",
                "latency_median_ms", "latency_ci_low_ms", "latency_ci_high_ms", "speed_vs_baseline",
                "speed_vs_baseline_ci_low", "speed_vs_baseline_ci_high", "paper_speed_vs_baseline",
                "mac_predicted_speed_vs_baseline", "verdict"]
    assert list(s.columns[: len(expected)]) == expected
    guideline = s[s["guideline"].notna()]
    assert sorted(guideline["guideline"].unique()) == ["g1", "g2", "g3", "g4"]
    assert len(guideline) == 2 * 2 * (4 + 4 + 5 + 4)
    assert (s["workload"] == fx.XSS).sum() == 1  # other rows follow
    broken = s[s["workload"] == "broken_model"]  # failed rows are listed with their error, never silently dropped
    assert len(broken) == 1 and broken.iloc[0]["status"] == "error" and broken.iloc[0]["error"]


def test_single_row_and_partial_data(tmp_path: Path) -> None:
    only = fx.write_jsonl(tmp_path / "one.jsonl", [fx.result(workload="solo", backend="torch-cpu", latency_median_ms=2.0)])
    html = render_report([read_results(only)], tmp_path / "one.html").read_text()
    assert "solo" in html
    assert "without mult_adds or mem_access counts are left out" in html
    assert "No peaks records" in html


def test_merges_machines(tmp_path: Path) -> None:
    a = fx.write_jsonl(tmp_path / "a.jsonl", [fx.environment("machineA"), fx.result(
        workload="m", backend="torch-cpu", hardware_id="machineA", latency_median_ms=1.0, **fx.counts(1e6, 1e5))])
    b = fx.write_jsonl(tmp_path / "b.jsonl", [fx.environment("machineB"), fx.result(
        workload="m", backend="torch-cpu", hardware_id="machineB", latency_median_ms=3.0, **fx.counts(1e6, 1e5))])
    html = build_report([a, b], tmp_path / "m.html").read_text()
    assert "Machine machineA" in html and "Machine machineB" in html


def test_cli_writes_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = fx.write_jsonl(tmp_path / "r.jsonl", [fx.result(workload="w", backend="torch-cpu", latency_median_ms=1.0)])
    assert main(["report", str(src), "-o", str(tmp_path / "x.html"), "--csv", str(tmp_path / "s.csv"), "--title", "T"]) == 0
    assert (tmp_path / "x.html").exists() and (tmp_path / "s.csv").exists()


@pytest.mark.parametrize("content", [None, "not json\n{}\n", json.dumps({"schema_version": 999, "record": "result"}) + "\n"])
def test_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None) -> None:
    path = tmp_path / "bad.jsonl"
    if content is not None:
        path.write_text(content)
    assert main(["report", str(path), "-o", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("latprof: error:") and "\n" not in err
    assert not (tmp_path / "r.html").exists()


def test_single_scale_guideline_legend_fits(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The legend of a one-panel guideline chart (``sweep --quick``) lies inside the saved image, not clipped."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from latprof.report import figures
    from latprof.report.data import load
    from latprof.report.sections import guideline_frame

    rows = [r for b in ("torch-cpu", "ort-cpu", "ort-mobile") for r in fx.guideline_rows(b, {})
            if r["experiment"] == "g1" and r["scale"] == 1]
    g = guideline_frame(load([fx.write_jsonl(tmp_path / "q.jsonl", rows)]))
    captured = []
    real = figures.png_data_uri
    monkeypatch.setattr(figures, "png_data_uri", lambda fig: captured.append(fig) or real(fig))
    uri = figures.guideline_figure(g, list(dict.fromkeys(g["variant"])), "G1: equal channel width minimizes memory access cost")
    fig = captured[0]
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    legend = fig.legends[0].get_window_extent(renderer)
    assert legend.x0 >= 0 and legend.x1 <= fig.bbox.x1  # within the figure's width: nothing cut at either side
    assert len(fig.legends[0].get_texts()) == 3 + 2  # three runs, the paper, MAC-predicted
    assert base64.b64decode(uri.split(",", 1)[1]).startswith(PNG_SIGNATURE)
