"""The report's fleet section: one column per machine, each machine's fingerprint, what was skipped where.

Rows of a fleet run (``--executor ray``) carry ``node``, the machine that measured them. The point of such a run
is comparing machines, so the section sets them side by side: per guideline × backend × scale the verdict and key
ratio on each node; per profiled workload × backend the median latency on each node; then each node's
fingerprint (hardware_id, CPU, cores, memory, software), the units a node skipped and why, and rows lost with a
node that left the fleet mid-run.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from latprof.report import overview
from latprof.report.data import ReportData
from latprof.report.tables import fmt, table, with_ci

FINGERPRINT_FIELDS = (
    ("hardware_id", None), ("CPU", ("hardware", "cpu_model")), ("family/model", None),
    ("logical cores", ("hardware", "cpu_logical_cores")), ("physical cores", ("hardware", "cpu_physical_cores")),
    ("memory GiB", ("hardware", "memory_gib")), ("virtualized", ("hardware", "virtualized")),
    ("GPUs", None), ("OS", ("software", "os")), ("python", ("software", "python")),
    ("torch", ("software", "torch")), ("onnxruntime", ("software", "onnxruntime")),
    ("latprof", ("software", "latprof")),
)


def _field(env: dict[str, Any], label: str, path: tuple[str, str] | None) -> str:
    hw = env.get("hardware") or {}
    if label == "hardware_id":
        return str(env.get("hardware_id", ""))
    if label == "family/model":
        return f"{fmt(hw.get('cpu_family'))}/{fmt(hw.get('cpu_model_number'))}"
    if label == "GPUs":
        gpus = hw.get("gpus") or []
        return ", ".join(str(g.get("name", g)) if isinstance(g, dict) else str(g) for g in gpus) or "none"
    assert path is not None
    return fmt((env.get(path[0]) or {}).get(path[1]))


def fingerprint_table(data: ReportData, nodes: list[str]) -> pd.DataFrame:
    """One row per fingerprint field, one column per node (from the node's own environment record)."""
    envs = data.node_environments
    out = []
    for label, path in FINGERPRINT_FIELDS:
        out.append({"field": label, **{n: _field(envs[n], label, path) if n in envs else "—" for n in nodes}})
    rows = data.rows
    for what, cond in (("rows ok", rows["status"] == "ok"), ("rows failed", rows["status"] != "ok")):
        out.append({"field": what, **{n: str(int((cond & (rows["node"] == n)).sum())) for n in nodes}})
    return pd.DataFrame(out)


def _by_node(df: pd.DataFrame, keys: list[str], cell: Any, nodes: list[str]) -> pd.DataFrame:
    """Pivot: one row per ``keys``, one column per node, ``cell(row)`` in each."""
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in df.to_dict("records"):
        k = tuple("" if (isinstance(r.get(c), float) and math.isnan(r[c])) else r.get(c) for c in keys)
        out.setdefault(k, dict(zip(keys, k)))[r["node"]] = cell(r)
    frame = pd.DataFrame(list(out.values()))
    for n in nodes:
        if n not in frame:
            frame[n] = "—"
    return frame.fillna("—")[keys + nodes]


def guideline_by_node(data: ReportData, nodes: list[str]) -> pd.DataFrame:
    """Per guideline × backend × scale: on each node the verdict and the key variant's speed vs the baseline."""
    g = data.rows[data.rows["_guideline"] & (data.rows["node"] != "")]
    if g.empty:
        return pd.DataFrame()
    keys = overview.key_variants(g)
    rows = []
    for (gid, backend, scale, node), grp in g.groupby(["experiment", "backend", "scale", "node"], sort=False,
                                                        dropna=False):
        ok = grp[grp["status"] == "ok"]
        key, _ = keys.get(gid, ("", ""))
        k = ok[ok["variant"] == key]
        verdict = next((v for v in reversed(list(ok["verdict"])) if v), "") if not ok.empty else overview.FAILED
        ratio = overview.ratio_text(*(k.iloc[-1][c] for c in ("speed_vs_baseline", "speed_vs_baseline_ci_low",
                                                              "speed_vs_baseline_ci_high"))) if not k.empty else "—"
        rows.append({"guideline": gid, "key variant": key, "backend": backend, "scale": scale, "node": node,
                     "cell": f"{verdict or overview.NO_VERDICT} · {ratio}"})
    df = pd.DataFrame(rows)
    return _by_node(df, ["guideline", "key variant", "backend", "scale"], lambda r: r["cell"], nodes)


def latency_by_node(data: ReportData, nodes: list[str]) -> pd.DataFrame:
    """Per profiled workload × backend × threads (not guideline rows): median latency ms [95% CI] on each node."""
    d = data.rows[~data.rows["_guideline"] & (data.rows["node"] != "")]
    if d.empty:
        return pd.DataFrame()

    def cell(r: dict[str, Any]) -> str:
        if r.get("status") != "ok":
            return "failed"
        return with_ci(r.get("latency_median_ms"), r.get("latency_ci_low_ms"), r.get("latency_ci_high_ms"))

    return _by_node(d, ["workload", "variant", "backend", "threads", "batch"], cell, nodes)


def fleet_section(data: ReportData) -> Any:
    """The section, or None when no row came from a fleet node."""
    from latprof.report.sections import Section

    nodes = data.nodes()
    if not nodes:
        return None
    sec = Section("fleet", f"Fleet: {len(nodes)} machine{'s' if len(nodes) != 1 else ''} side by side")
    sec.notes.append("Each column is one fleet node (its latprof-node label, else its hostname); every unit ran there "
                     "in a fresh worker process, one unit per node at a time. Nodes with the same hardware_id are the "
                     "same kind of machine (or, in a test cluster, the same machine).")
    fp = fingerprint_table(data, nodes)
    sec.tables.append({"title": "Machines (each node's own fingerprint)", **table(fp)})
    sec.csv["fleet_machines"] = fp
    g = guideline_by_node(data, nodes)
    if not g.empty:
        sec.tables.append({"title": "Guideline verdict · key ratio (speed vs baseline, 95% CI) per machine",
                           **table(g)})
        sec.csv["fleet_guidelines"] = g
    lat = latency_by_node(data, nodes)
    if not lat.empty:
        sec.tables.append({"title": "Median latency ms [95% CI] per machine", **table(lat)})
        sec.csv["fleet_latency"] = lat
    if data.fleet_skips:
        skips = pd.DataFrame(data.fleet_skips).reindex(columns=["node", "unit", "backend", "reason"])
        sec.tables.append({"title": "Skipped on a node (not an error of the run)", **table(skips.drop_duplicates())})
        sec.csv["fleet_skipped"] = skips
    if "node_lost" in data.rows:
        lost = data.rows[data.rows["node_lost"].map(lambda v: v is True)]
        if not lost.empty:
            per = lost.groupby("node").size()
            sec.notes.append("Rows lost with a node that left the fleet mid-run (error rows; --resume measures them "
                             "again once the node is back): " + ", ".join(f"{n}: {c}" for n, c in per.items()) + ".")
    return sec
