"""The report's claims section: for each seed-paper claim (``kernels/`` specs with ``group = "claims"``) and run, what
the technique saves in FLOPs, what memory access cost predicts, and what the clock says.

One row per claim × run × scale: the claim's **key variant** against its baseline (``key_variant`` of the spec, else
the last variant), with the FLOPs-predicted ratio (baseline mult_adds / variant mult_adds), the MAC-predicted ratio,
the measured speed ratio with its 95% CI, the verdict (a curve's verdict weighs every step, see
``latprof.analysis.verdicts``), and the paper's own figure. Ratios are speeds: > 1 means the key variant is faster
(or predicted faster) than the baseline.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from latprof.report.overview import key_variants, ratio_text
from latprof.report.sections import Section
from latprof.report.tables import fmt, table

CLAIMS_TABLE = ["claim", "source", "run", "scale", "key variant vs baseline", "FLOPs-predicted", "MAC-predicted",
                "measured [95% CI]", "verdict", "paper"]


def paper_text(row: Any) -> str:
    """The paper's own figure: its words, and its ratio with what it is a ratio of."""
    parts = [str(row.get("paper_figure") or "")]
    ratio, metric = row.get("paper_ratio"), row.get("paper_ratio_metric") or ""
    if fmt(ratio) != "—" and metric:
        parts.append(f"paper ratio {float(ratio):.2f}× ({metric.replace('_', '-')})")
    return "; ".join(p for p in parts if p) or "—"


def claims_frame(g: pd.DataFrame) -> pd.DataFrame:
    """One row per claim × run × scale × channels, from sweep rows labelled with ``config``."""
    keys = key_variants(g)
    cells: list[dict[str, Any]] = []
    for (gid, cfg, scale, channels), grp in g.groupby(["experiment", "config", "scale", "channels"], sort=False,
                                                     dropna=False):
        key, baseline = keys.get(gid, ("", ""))
        k = grp[grp["variant"] == key]
        r = k.iloc[-1].to_dict() if not k.empty else {}
        curve = str(r.get("curve", "")).lower() == "true" or r.get("curve") is True
        verdicts = [v for v in grp["verdict"] if v]
        cells.append({
            "experiment": gid, "title": next((t for t in grp["guideline_title"] if t), gid),
            "claim": next((c for c in grp["claim"] if c), ""), "source": next((s for s in grp["source"] if s), ""),
            "run": cfg, "backend": grp["backend"].iloc[0], "scale": scale, "channels": channels,
            "key_variant": key, "baseline_variant": baseline, "curve": curve,
            "flops_predicted_speed_vs_baseline": r.get("flops_predicted_speed_vs_baseline"),
            "mac_predicted_speed_vs_baseline": r.get("mac_predicted_speed_vs_baseline"),
            "speed_vs_baseline": r.get("speed_vs_baseline"),
            "speed_vs_baseline_ci_low": r.get("speed_vs_baseline_ci_low"),
            "speed_vs_baseline_ci_high": r.get("speed_vs_baseline_ci_high"),
            "verdict": verdicts[-1] if verdicts else "—",
            "paper_figure": r.get("paper_figure", ""), "paper_ratio": r.get("paper_ratio"),
            "paper_ratio_metric": r.get("paper_ratio_metric", ""),
        })
    return pd.DataFrame(cells)


def claims_section(g: pd.DataFrame) -> Section:
    """The claims table and its CSV; the caller adds one sub-section (chart, verdicts, numbers) per experiment."""
    sec = Section("claims", "Seed-paper claims: what FLOPs predict, what MAC predicts, what the clock says")
    c = claims_frame(g)
    sec.notes.append("One row per claim, run and scale: the claim's key variant against its baseline. FLOPs-predicted = "
                     "baseline mult_adds / variant mult_adds; MAC-predicted = baseline mem_access / variant mem_access; "
                     "measured = baseline median / variant median with its paired 95% CI (> 1× is faster). A curve "
                     "(α, ρ, compound scaling, depth) holds only when every step along it moves the predicted way.")
    view = pd.DataFrame({
        "claim": [f"{e}: {t}" for e, t in zip(c["experiment"], c["title"])],
        "source": c["source"], "run": c["run"], "scale": c["scale"],
        "key variant vs baseline": [f"{k} vs {b}" + (" (curve)" if cv else "")
                                    for k, b, cv in zip(c["key_variant"], c["baseline_variant"], c["curve"])],
        "FLOPs-predicted": [ratio_text(v, None, None) for v in c["flops_predicted_speed_vs_baseline"]],
        "MAC-predicted": [ratio_text(v, None, None) for v in c["mac_predicted_speed_vs_baseline"]],
        "measured [95% CI]": [ratio_text(*v) for v in zip(c["speed_vs_baseline"], c["speed_vs_baseline_ci_low"],
                                                          c["speed_vs_baseline_ci_high"])],
        "verdict": c["verdict"],
        "paper": [paper_text(r) for r in c.to_dict("records")],
    })
    sec.tables.append({"title": "Claims", **table(view, CLAIMS_TABLE)})
    sec.csv["claims"] = c
    return sec
