"""The report's first screen: which guidelines hold here (a verdict matrix), and the process conditions behind it.

The matrix has one row per guideline × run (backend, threads, batch; machine and allocator when those vary) and one
column per scale. Each cell carries the unit's verdict, coloured, and the guideline's **key ratio**: the speed of its
most extreme variant relative to the baseline, median with 95% CI, beside the paper's ratio for the same cell. The
key variant is the last variant of the experiment in the rows' order, which is the spec's order (the sweep writes
variants as the spec lists them, the paper's tables ending on the extreme case): G1 1:12, G2 g=8,
G3 4-fragment-parallel, G4 the variant without ReLU and shortcut.

Process conditions come from the measurement engine's per-row counters: a row whose steady-state page faults per
call (minor + major) exceed ``FAULTS_PER_CALL`` is *allocator-bound* (its latency includes page faults), one whose
involuntary context switches per call exceed ``INVOLUNTARY_CTX_PER_CALL`` ran under *contention*.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from latprof.analysis.verdicts import DECIDED, DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, NO_EFFECT, VERDICTS
from latprof.report.data import ReportData
from latprof.report.tables import fmt, table

FAILED = "failed"
NO_VERDICT = "no verdict"

FAULTS_PER_CALL = 0.5
INVOLUNTARY_CTX_PER_CALL = 0.05
ALLOCATOR_BOUND = "allocator-bound: latency includes page faults"
CONTENTION = "contention"
# Allocators in table order: the plain-glibc reading first, as the reference; others follow alphabetically.
ALLOCATOR_ORDER = ("system", "steady", "jemalloc", "tcmalloc")
# Rows of one workload measured under several allocators: same everything but the allocator (and its counters).
WORKLOAD_KEYS = ("_source", "hardware_id", "experiment", "workload", "variant", "backend", "threads", "batch", "scale",
                 "channels", "input_shape")
ALLOCATOR_TABLE_MAX_ROWS = 30
FLAG_LIST_MAX = 8


def verdict_class(verdict: str) -> str:
    """CSS class of a verdict: ``v-holds``, ``v-does-not-hold``, ``v-no-effect``, ``v-inconclusive``, ..."""
    return "v-" + (verdict or NO_VERDICT).replace(" ", "-")


def ratio_text(value: Any, low: Any, high: Any) -> str:
    """``0.52× [0.50–0.53]``; without a CI just the value; ``—`` without a value."""
    def num(v: Any) -> float:
        try:
            return float(v)
        except (TypeError, ValueError):
            return math.nan

    v, lo, hi = num(value), num(low), num(high)
    if math.isnan(v):
        return "—"
    if math.isnan(lo) or math.isnan(hi):
        return f"{v:.2f}×"
    return f"{v:.2f}× [{lo:.2f}–{hi:.2f}]"


# ------------------------------------------------------------------ process conditions
def _num(row: Any, col: str) -> float:
    v = row.get(col) if isinstance(row, dict) else getattr(row, col, math.nan)
    try:
        v = float(v)
    except (TypeError, ValueError):
        return math.nan
    return v


def faults_per_call(row: Any) -> float:
    """Minor + major page faults per call (a missing one counts 0); NaN when the row carries neither."""
    minor, major = _num(row, "minor_faults_per_call"), _num(row, "major_faults_per_call")
    if math.isnan(minor) and math.isnan(major):
        return math.nan
    return (0.0 if math.isnan(minor) else minor) + (0.0 if math.isnan(major) else major)


def process_flags(row: Any) -> list[str]:
    """The row's condition flags: allocator-bound (faults per call > 0.5), contention (involuntary switches > 0.05)."""
    flags = []
    if faults_per_call(row) > FAULTS_PER_CALL:
        flags.append(ALLOCATOR_BOUND)
    if _num(row, "involuntary_ctx_switches_per_call") > INVOLUNTARY_CTX_PER_CALL:
        flags.append(CONTENTION)
    return flags


def flags_column(df: pd.DataFrame) -> list[str]:
    """One text per row: its flags joined by "; ", or "—"."""
    return ["; ".join(process_flags(r)) or "—" for r in df.to_dict("records")]


def has_process_counters(df: pd.DataFrame) -> bool:
    cols = ("minor_faults_per_call", "major_faults_per_call", "involuntary_ctx_switches_per_call")
    return any(c in df.columns and df[c].notna().any() for c in cols)


def _row_label(r: dict[str, Any]) -> str:
    what = r.get("experiment") or "profile"
    if not r.get("_guideline"):
        what += f" {r.get('workload')}"
    text = f"{what} {r.get('variant') or ''}".strip() + f" · {r.get('config')}"
    scale = r.get("scale")
    if scale is not None and not (isinstance(scale, float) and math.isnan(scale)):
        text += f" · ×{fmt(scale)}"
    return text


def flagged_rows(df: pd.DataFrame) -> dict[str, list[dict[str, Any]]]:
    """Rows per flag (``ALLOCATOR_BOUND``, ``CONTENTION``), as records, in the data's order."""
    out: dict[str, list[dict[str, Any]]] = {ALLOCATOR_BOUND: [], CONTENTION: []}
    for r in df.to_dict("records"):
        for flag in process_flags(r):
            out[flag].append(r)
    return out


def _short_list(rows: list[dict[str, Any]], value: Any) -> str:
    items = [f"{_row_label(r)} ({fmt(value(r))}/call)" for r in rows[:FLAG_LIST_MAX]]
    if len(rows) > FLAG_LIST_MAX:
        items.append(f"and {len(rows) - FLAG_LIST_MAX} more (see the guideline tables and the CSV)")
    return "; ".join(items)


def condition_notes(ok: pd.DataFrame) -> list[str]:
    """The "Process conditions" notes: which rows are allocator-bound or contended, or that none are."""
    if ok.empty or not has_process_counters(ok):
        return ["Process conditions: these rows carry no page-fault or context-switch counts (results written before "
                "the measurement engine recorded them), so allocator-bound or contended rows cannot be flagged."]
    flagged = flagged_rows(ok)
    notes = []
    ab, ct = flagged[ALLOCATOR_BOUND], flagged[CONTENTION]
    if ab:
        notes.append(f"Allocator-bound ({len(ab)} of {len(ok)} rows; more than {FAULTS_PER_CALL:g} page faults per call "
                     f"in the steady state, so the latency includes page faults): "
                     + _short_list(ab, faults_per_call))
    if ct:
        notes.append(f"Contention ({len(ct)} of {len(ok)} rows; more than {INVOLUNTARY_CTX_PER_CALL:g} involuntary "
                     "context switches per call, so another thread or process took the core): "
                     + _short_list(ct, lambda r: _num(r, "involuntary_ctx_switches_per_call")))
    if not notes:
        notes.append(f"Process conditions: no row exceeds {FAULTS_PER_CALL:g} page faults or "
                     f"{INVOLUNTARY_CTX_PER_CALL:g} involuntary context switches per call.")
    spread = ok["process_spread"].dropna() if "process_spread" in ok else pd.Series(dtype=float)
    if not spread.empty:
        notes.append(f"Across measuring processes, per-process medians differ by up to {fmt(spread.max())}× "
                     f"(median spread {fmt(spread.median())}×; 1 = identical).")
    return notes


def _allocator_sort(names: list[str]) -> list[str]:
    return sorted(names, key=lambda a: (ALLOCATOR_ORDER.index(a) if a in ALLOCATOR_ORDER else len(ALLOCATOR_ORDER), a))


def allocator_effect(ok: pd.DataFrame) -> pd.DataFrame:
    """Median latency per allocator side by side, for every workload one results file measured under several."""
    if ok.empty or "allocator" not in ok or (ok["allocator"].fillna("") == "").all():
        return pd.DataFrame()
    d = ok[ok["allocator"].fillna("") != ""].copy()
    keys = [k for k in WORKLOAD_KEYS if k in d.columns]
    for k in keys:
        d[k] = d[k].map(lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v)) else v)
    n_alloc = d.groupby(keys, sort=False)["allocator"].transform("nunique")
    d = d[n_alloc > 1]
    if d.empty:
        return pd.DataFrame()
    wide = d.pivot_table(index=keys, columns="allocator", values="latency_median_ms", aggfunc="median", sort=False)
    allocs = _allocator_sort(list(wide.columns))
    wide = wide[allocs]
    out = wide.reset_index()
    out["config"] = [f"{r.backend} · {fmt(r.threads)} thr · batch {fmt(r.batch)}" for r in out.itertuples(index=False)]
    lat = out[allocs]
    out["slowest/fastest"] = lat.max(axis=1) / lat.min(axis=1)
    out["fastest"] = lat.idxmin(axis=1)
    return out.rename(columns={a: f"{a} ms" for a in allocs})


def allocator_table(effect: pd.DataFrame) -> dict[str, Any]:
    """The page's "Allocator effect" table: per workload when short, else the median per run and experiment."""
    ms_cols = [c for c in effect.columns if c.endswith(" ms")]
    if len(effect) <= ALLOCATOR_TABLE_MAX_ROWS:
        return {"title": "Allocator effect: median latency (ms) per allocator",
                **table(effect, ["config", "experiment", "workload", "variant", "scale", *ms_cols, "slowest/fastest", "fastest"],
                        ["run", "experiment", "workload", "variant", "scale", *ms_cols, "slowest/fastest", "fastest"])}
    base = ms_cols[0]
    rel = effect.assign(**{c: effect[c] / effect[base] for c in ms_cols})
    agg = (rel.groupby(["config", "experiment"], sort=False)
           .agg(**{c: (c, "median") for c in ms_cols}, workloads=(base, "size")).reset_index())
    return {"title": f"Allocator effect: median latency relative to {base[:-3]}, per run and experiment "
                     "(every workload in the CSV)",
            **table(agg, ["config", "experiment", "workloads", *ms_cols],
                    ["run", "experiment", "workloads", *[f"{c[:-3]} / {base[:-3]}" for c in ms_cols]])}


# ------------------------------------------------------------------ the verdict matrix
def key_variants(rows: pd.DataFrame) -> dict[str, tuple[str, str]]:
    """Per experiment: (key variant, baseline) — the spec's ``key_variant`` where the rows carry one, else the last
    non-baseline variant in the rows' (the spec's) order."""
    out = {}
    for gid in dict.fromkeys(rows["experiment"]):
        d = rows[rows["experiment"] == gid]
        baseline = next((b for b in d["baseline_variant"] if b), "")
        named = next((k for k in d.get("key_variant", pd.Series(dtype=str)) if k), "")
        variants = [v for v in dict.fromkeys(d["variant"]) if v and v != baseline]
        if named in variants:
            out[gid] = (named, baseline)
        elif variants:
            out[gid] = (variants[-1], baseline)
    return out


def _scale_key(v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return math.inf
    return math.inf if math.isnan(f) else f


def matrix_frame(data: ReportData, config_of: Any) -> pd.DataFrame:
    """One row per guideline × run × scale (× channels): verdict and key ratio. ``config_of`` labels the runs.
    Claim experiments have their own table (``report.claims``)."""
    rows = data.rows[data.rows["_guideline"] & ~data.rows["_claim"]] if not data.rows.empty else data.rows
    if rows.empty:
        return pd.DataFrame()
    rows = config_of(rows)
    keys = key_variants(rows)
    cells = []
    for (gid, cfg, scale, channels), grp in rows.groupby(["experiment", "config", "scale", "channels"], sort=False, dropna=False):
        ok = grp[grp["status"] == "ok"]
        key, baseline = keys.get(gid, ("", ""))
        if ok.empty:
            verdict = FAILED
        else:
            found = [v for v in ok["verdict"] if v]
            verdict = found[-1] if found else NO_VERDICT
        k = ok[ok["variant"] == key]
        r = k.iloc[-1] if not k.empty else None
        cells.append({
            "guideline": gid, "guideline_title": next((t for t in grp["guideline_title"] if t), ""),
            "run": cfg, "backend": grp["backend"].iloc[0], "scale": scale, "channels": channels,
            "key_variant": key, "baseline_variant": baseline, "verdict": verdict,
            "speed_vs_baseline": r["speed_vs_baseline"] if r is not None else math.nan,
            "speed_vs_baseline_ci_low": r["speed_vs_baseline_ci_low"] if r is not None else math.nan,
            "speed_vs_baseline_ci_high": r["speed_vs_baseline_ci_high"] if r is not None else math.nan,
            "paper_speed_vs_baseline": r["paper_speed_vs_baseline"] if r is not None else math.nan,
            "error": "" if verdict != FAILED else next((e for e in grp["error"] if e), ""),
        })
    return pd.DataFrame(cells)


def run_verdict(verdicts: list[str]) -> str:
    """A run's verdict over its scales: the decided verdict all decided scales share; ``mixed`` when they disagree;
    ``inconclusive`` when no scale is decided."""
    decided = set(v for v in verdicts if v in DECIDED)
    if not decided:
        return INCONCLUSIVE
    return decided.pop() if len(decided) == 1 else "mixed"


def answer_line(m: pd.DataFrame, machines: int) -> str:
    """"On this machine: G1 holds on 3/3 backends; G2 holds on 1/3 backends (1 does not hold, 1 mixed); ..."

    Per guideline, each run (backend) is summarised over its scales by ``run_verdict``; the line leads with how many
    runs the guideline holds on and lists the others' verdicts in brackets.
    """
    backends_only = m.groupby("run")["backend"].first().nunique() == m["run"].nunique()
    noun = "backends" if backends_only else "runs"
    parts = []
    for gid in dict.fromkeys(m["guideline"]):
        g = m[m["guideline"] == gid]
        per_run = [run_verdict(list(r["verdict"])) for _, r in g.groupby("run", sort=False)]
        others = [f"{per_run.count(v)} {v}" for v in (DOES_NOT_HOLD, NO_EFFECT, "mixed", INCONCLUSIVE) if per_run.count(v)]
        parts.append(f"{gid.upper()} holds on {per_run.count(HOLDS)}/{len(per_run)} {noun}"
                     + (f" ({', '.join(others)})" if others else ""))
    where = "On this machine" if machines <= 1 else f"On these {machines} machines"
    return f"{where}: " + "; ".join(parts) + "."


def share_line(m: pd.DataFrame) -> str:
    """Share of decided cells (holds / does not hold / no effect) out of all cells."""
    total = len(m)
    counts = {v: int((m["verdict"] == v).sum()) for v in (*VERDICTS, FAILED, NO_VERDICT)}
    decided = sum(counts[v] for v in DECIDED)
    pct = 100 * decided / total if total else 0.0
    rest = [f"{counts[v]} {v}" for v in (INCONCLUSIVE, FAILED, NO_VERDICT) if counts[v]]
    return (f"Decided cells: {decided} of {total} ({pct:.0f}%) — {counts[HOLDS]} holds, {counts[DOES_NOT_HOLD]} does not "
            f"hold, {counts[NO_EFFECT]} no effect" + (f"; {', '.join(rest)}" if rest else "") + ".")


def decided_share(m: pd.DataFrame) -> float:
    return float(m["verdict"].isin(DECIDED).mean()) if len(m) else math.nan


def matrix_view(m: pd.DataFrame) -> dict[str, Any]:
    """The matrix as the template draws it: column headers (scales) and, per guideline, one row per run."""
    multi_channels = m.groupby(["guideline", "run"])["channels"].nunique().max() > 1
    scales = sorted(dict.fromkeys(m["scale"]), key=_scale_key)
    heads = [f"scale ×{fmt(s)}" if _scale_key(s) != math.inf else "scale —" for s in scales]
    groups = []
    for gid in dict.fromkeys(m["guideline"]):
        g = m[m["guideline"] == gid]
        first = g.iloc[0]
        title = first["guideline_title"] or gid
        rows = []
        for (run, channels), r in g.groupby(["run", "channels"], sort=False, dropna=False):
            by_scale = {_scale_key(s): c for s, c in zip(r["scale"], r.to_dict("records"))}
            cells = []
            for s in scales:
                c = by_scale.get(_scale_key(s))
                if c is None:
                    cells.append(None)
                    continue
                cells.append({
                    "verdict": c["verdict"], "cls": verdict_class(c["verdict"]),
                    "ratio": ratio_text(c["speed_vs_baseline"], c["speed_vs_baseline_ci_low"], c["speed_vs_baseline_ci_high"]),
                    "paper": ratio_text(c["paper_speed_vs_baseline"], None, None),
                    "note": c["error"],
                })
            label = run + (f" · {channels} channels" if multi_channels and channels else "")
            rows.append({"run": label, "cells": cells})
        groups.append({"id": gid.upper(), "title": title.split(":", 1)[1].strip() if title.lower().startswith(gid.lower() + ":") else title,
                       "key": f"{first['key_variant']} vs {first['baseline_variant']}" if first["key_variant"] else "",
                       "rows": rows})
    return {"columns": heads, "groups": groups}
