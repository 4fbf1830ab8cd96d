"""Build each section of the report from ``ReportData``: its figure, its tables, its notes, and its CSV frame."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from latprof.analysis.fits import PREDICTORS, better_predictor, fit_latency
from latprof.analysis.prediction import metrics
from latprof.analysis.roofline import attained
from latprof.report import figures, overview
from latprof.report.data import BLOCKS_PREFIX, PROCESS_NUMERIC, PROCESS_TEXT, ReportData, settings_text
from latprof.report.paper import CATEGORIES, FIGURE2_PERCENT, SOURCE
from latprof.report.tables import fmt, table, with_ci

from latprof.analysis.constancy import FLOPS_TOLERANCE, flops_not_constant


@dataclass
class Section:
    """One part of the page. ``csv`` frames are written next to the HTML as ``<stem>_<name>.csv``."""

    key: str
    title: str
    figures: list[dict[str, str]] = field(default_factory=list)  # {"uri", "alt", "caption"}
    tables: list[dict[str, Any]] = field(default_factory=list)  # {"title", "columns", "rows"}
    notes: list[str] = field(default_factory=list)
    csv: dict[str, pd.DataFrame] = field(default_factory=dict)
    links: list[str] = field(default_factory=list)  # filled when the CSVs are written
    blocks: list["Section"] = field(default_factory=list)  # sub-sections (one per guideline, network)
    matrix: dict[str, Any] | None = None  # the verdict matrix (summary section only), drawn before the notes


def _varies(df: pd.DataFrame, col: str) -> bool:
    return col in df.columns and df[col].replace("", np.nan).dropna().nunique() > 1


def processes_text(value: Any) -> str:
    """The process count, or "—" where none is recorded (older rows) or none measured (0: a row failed in all)."""
    try:
        n = float(value)
    except (TypeError, ValueError):
        return "—"
    return fmt(n) if n > 0 else "—"


def _precision_text(r: dict[str, Any]) -> str:
    """An INT8 / FP16 reading is its own configuration. Sweep rows go by the sweep's --precision (a variant's own
    precision, FP32 vs INT8 in one experiment, stays a variant of the same configuration)."""
    if "sweep_precision" in r and isinstance(r["sweep_precision"], str) and r["sweep_precision"]:
        return f" · {r['sweep_precision']}" if r["sweep_precision"] != "fp32" else ""
    if r.get("precision") in (None, "", "fp32") or (isinstance(r.get("precision"), float)):
        return ""
    return f" · {r['precision']}" + (f" ({r['quantization']})" if r.get("quantization") else "")


def add_config(df: pd.DataFrame, multi_machine: bool) -> pd.DataFrame:
    """A readable label per run configuration: backend, threads, batch (and machine, allocator and process count
    when the rows differ in them)."""
    df = df.copy()
    if df.empty:
        df["config"] = []
        return df
    alloc = _varies(df, "allocator")
    procs = "processes" in df.columns and df["processes"].where(df["processes"] > 0).nunique() > 1
    by_node = _varies(df, "node")  # a fleet run: the node names the machine (several may share a hardware_id)
    labels = []
    for r in df.to_dict("records"):
        text = f"{r['backend']} · {fmt(r['threads'])} thr · batch {fmt(r['batch'])}"
        if by_node and r.get("node"):
            text += f" · {r['node']}"
        elif multi_machine and r["hardware_id"]:
            text += f" · {r['hardware_id'][:8]}"
        if alloc and r.get("allocator"):
            text += f" · {r['allocator']}"
        text += _precision_text(r)
        if procs and processes_text(r.get("processes")) != "—":
            text += f" · {processes_text(r.get('processes'))} proc"
        labels.append(text)
    df["config"] = labels
    return df


# ------------------------------------------------------------------ summary (first screen)
def summary_section(data: ReportData) -> Section | None:
    """Which guidelines hold here: the verdict matrix, a one-line answer, the share of decided cells, and the
    process conditions (allocator-bound and contended rows, the allocator effect)."""
    multi = data.multiple_machines()
    m = overview.matrix_frame(data, lambda rows: add_config(rows, multi))
    if m.empty:
        return None
    machines = len(data.nodes()) or len({h for h in data.rows["hardware_id"] if h}) or 1
    sec = Section("summary", "Which guidelines hold on this machine?" if machines <= 1 else "Which guidelines hold on these machines?")
    sec.matrix = overview.matrix_view(m)
    sec.notes.append(overview.answer_line(m, machines))
    sec.notes.append(overview.share_line(m))
    sec.notes.append("Each cell: the verdict for that guideline, run and scale, and the key ratio — speed of the "
                     "guideline's most extreme variant (the last variant of the experiment, named beside the guideline) "
                     "relative to its baseline, median with 95% CI (> 1× is faster) — beside the paper's ratio. "
                     "The verdict weighs every variant, so it can differ from what the key ratio alone suggests. "
                     "No effect: the ratio's CI lies within the equivalence margin around 1. In the line above a run "
                     "counts as holding when every decided scale on it holds (inconclusive scales do not count against "
                     "it), and as mixed when its decided scales disagree.")
    sec.csv["summary_matrix"] = m
    cond = Section("process_conditions", "Process conditions")
    cond.notes += overview.condition_notes(add_config(data.ok, multi))
    effect = overview.allocator_effect(data.ok)
    if not effect.empty:
        cond.tables.append(overview.allocator_table(effect))
        cond.csv["allocator_effect"] = effect.drop(columns=["_source"], errors="ignore")
    sec.blocks.append(cond)
    return sec


def fit_group(experiment: str) -> str:
    """The fits chart's point groups: one per experiment, --per-block rows together, plain profiles together."""
    if experiment.startswith(BLOCKS_PREFIX):
        return "blocks"
    return experiment or "profile"


# ------------------------------------------------------------------ environment
def _env_rows(env: dict[str, Any]) -> list[list[str]]:
    rows = []
    for part in ("hardware", "software", "threads", "state"):
        for k, v in (env.get(part) or {}).items():
            if isinstance(v, dict):
                v = ", ".join(f"{a}={fmt(b)}" for a, b in v.items())
            elif isinstance(v, list):
                v = ", ".join(str(x) if not isinstance(x, dict) else "; ".join(f"{a}={b}" for a, b in x.items()) for x in v) or "none"
            rows.append([f"{part}.{k}", fmt(v)])
    return rows


OPT_KEYS = ("opt", "graph_optimization")
EXPORT_KEYS = ("export",)


# Settings that identify one exported/compiled model rather than the run configuration.
PER_WORKLOAD_KEYS = ("onnx_path", "onnx_cached", "compile_time_s", "workload_hash", "host_wall_per_call_s")


def environment_section(data: ReportData) -> Section:
    sec = Section("environment", "Machines and run settings")
    for src in data.sources:
        note = f"{src['path']}: {src['results']} result rows ({src['errors']} errors), {src['environments']} environment record(s)"
        if src["torn_last_line"]:
            note += "; a torn last line was skipped (the run was interrupted mid-write)"
        sec.notes.append(note)
    ids = list(data.environments) + [h for h in data.rows.get("hardware_id", pd.Series(dtype=str)).unique()
                                     if h and h not in data.environments]
    env_csv = []
    for hid in ids:
        env = data.environments.get(hid)
        if env is None:
            sec.notes.append(f"machine {hid}: rows refer to it but no environment record was found")
            continue
        rows = _env_rows(env)
        for w in env.get("warnings") or []:
            rows.append(["warning", str(w)])
        sec.tables.append({"title": f"Machine {hid}", "columns": ["field", "value"], "rows": rows})
        env_csv += [{"hardware_id": hid, "field": f, "value": v} for f, v in rows]
    if env_csv:
        sec.csv["environment"] = pd.DataFrame(env_csv)
    runs = []
    for r in data.rows.itertuples(index=False):
        s = dict(r.settings) if isinstance(r.settings, dict) else {}
        for key in PER_WORKLOAD_KEYS:  # they differ per model, not per run configuration: kept in the results CSV
            s.pop(key, None)
        pinned = s.pop("pinned_cores", None)
        opt = {k: s.pop(k) for k in list(s) if any(t in k for t in OPT_KEYS)}
        exp = {k: s.pop(k) for k in list(s) if any(t in k for t in EXPORT_KEYS)}
        runs.append({
            "machine": r.hardware_id, "backend": r.backend, "threads": r.threads, "batch": r.batch,
            "allocator": getattr(r, "allocator", "") or "—", "processes": processes_text(getattr(r, "processes", math.nan)),
            "pinned cores": "no" if pinned is None else ",".join(map(str, pinned)) if isinstance(pinned, list) else str(pinned),
            "optimisation": settings_text(opt) or "—", "exporter": settings_text(exp) or "—",
            "other settings": settings_text(s) or "—", "experiment": r.experiment or "profile",
        })
    if runs:
        df = pd.DataFrame(runs)
        keys = [c for c in df.columns if c != "experiment"]
        grouped = (df.groupby(keys, dropna=False, sort=False)["experiment"]
                   .agg(lambda e: ", ".join(dict.fromkeys(e))).reset_index())
        grouped["rows"] = df.groupby(keys, dropna=False, sort=False).size().to_numpy()
        sec.tables.append({"title": "Settings of every run", **table(grouped)})
        sec.csv["settings"] = grouped
    if (data.rows.get("backend", pd.Series(dtype=str)) == "ort-mobile").any():
        sec.notes.append("ort-mobile emulates the paper's single-thread ARM setting on this CPU; x86 is not ARM, so "
                         "only relative conclusions carry over.")
    return sec


# ------------------------------------------------------------------ guidelines
GUIDELINE_COLUMNS = [
    "guideline", "variant", "backend", "scale", "threads", "batch", "mult_adds", "mem_access",
    "latency_median_ms", "latency_ci_low_ms", "latency_ci_high_ms", "speed_vs_baseline", "speed_vs_baseline_ci_low",
    "speed_vs_baseline_ci_high", "paper_speed_vs_baseline", "mac_predicted_speed_vs_baseline", "verdict",
]
CLAIM_COLUMNS = ["experiment_group", "claim", "source", "paper_figure", "paper_ratio", "paper_ratio_metric",
                 "key_variant", "reference_variant", "speed_vs_previous", "speed_vs_previous_ci_low",
                 "speed_vs_previous_ci_high"]


def guideline_frame(data: ReportData, claims: bool | None = None) -> pd.DataFrame:
    """Sweep rows with run labels; ``claims`` True: only claim experiments, False: only the others, None: all."""
    rows = data.guideline_rows()
    if claims is not None and not rows.empty:
        rows = rows[rows["_claim"] == claims]
    g = add_config(rows, data.multiple_machines())
    g = g.assign(guideline=g["experiment"]) if not g.empty else g.assign(guideline=[])
    return g


def guideline_sections(data: ReportData, claims: bool = False) -> Section | None:
    """One sub-section per experiment (its chart, verdicts and numbers): ShuffleNet V2's guidelines and user specs,
    or (``claims``) the seed papers' claims, led by the claims table."""
    g = guideline_frame(data, claims)
    if g.empty:
        return None
    if claims:
        from latprof.report.claims import claims_section

        sec = claims_section(g)
    else:
        sec = Section("guidelines", "Guidelines: speed relative to the baseline variant")
    sec.notes.append("Bars: measured speed of each variant relative to the experiment's baseline variant (median ratio "
                     "with its 95% CI). Hatched grey: the paper's ratio for the same channels and scale (where the "
                     "paper gives a speed). Diamonds: the ratio the memory access cost (MAC) predicts, baseline MAC / "
                     "variant MAC; circles: the ratio FLOPs (mult_adds) predict.")
    for gid in dict.fromkeys(g["guideline"]):
        d = g[g["guideline"] == gid]
        titles = [t for t in d["guideline_title"].unique() if t]
        title = f"{gid}: {titles[0]}" if titles and not titles[0].lower().startswith(gid.lower()) else (titles[0] if titles else gid)
        baseline = [b for b in d["baseline_variant"].unique() if b]
        variants = list(dict.fromkeys(([baseline[0]] if baseline else []) + list(d["variant"])))
        sub = Section(f"guideline_{gid}", title)
        sub.figures.append({"uri": figures.guideline_figure(d, variants, title),
                            "alt": f"{title}: speed relative to baseline per variant",
                            "caption": f"Baseline variant: {baseline[0] if baseline else 'unknown'}."})
        verdicts = (d.groupby(["config", "scale", "channels"], dropna=False, sort=False)["verdict"]
                    .agg(lambda v: ", ".join(sorted({x for x in v if x})) or "—").reset_index())
        sub.tables.append({"title": "Verdicts", **table(verdicts, ["config", "scale", "channels", "verdict"],
                                                         ["run", "scale", "channels", "verdict"])})
        for (cfg, scale), grp in d.groupby(["config", "scale"], dropna=False, sort=False):
            spread = None if claims else flops_not_constant(grp["mult_adds"].dropna())  # claims differ by design
            if spread is not None:
                sub.notes.append(f"{cfg}, scale ×{fmt(scale)}: mult_adds differ by {100 * spread:.1f}% "
                                 f"between variants (more than {100 * FLOPS_TOLERANCE:.0f}%): FLOPs are not held constant.")
        detail = pd.DataFrame({
            "run": d["config"], "scale": d["scale"], "channels": d["channels"], "variant": d["variant"],
            "mult_adds": d["mult_adds"], "mem_access": d["mem_access"],
            "latency ms [95% CI]": [with_ci(*v) for v in zip(d["latency_median_ms"], d["latency_ci_low_ms"], d["latency_ci_high_ms"])],
            "speed vs baseline [95% CI]": [with_ci(*v) for v in zip(d["speed_vs_baseline"], d["speed_vs_baseline_ci_low"], d["speed_vs_baseline_ci_high"])],
            "paper": d["paper_speed_vs_baseline"], "MAC-predicted": d["mac_predicted_speed_vs_baseline"],
            "FLOPs-predicted": d["flops_predicted_speed_vs_baseline"],
            "outcome": [o or ("baseline" if v == b else "—") for o, v, b in zip(d["variant_outcome"], d["variant"], d["baseline_variant"])],
            "verdict": d["verdict"],
            "conditions": overview.flags_column(d),
        })
        sub.tables.append({"title": "Numbers", **table(detail)})
        extra = ["flops_predicted_speed_vs_baseline", *(CLAIM_COLUMNS if claims else [])]
        sub.csv[f"guideline_{gid}"] = d.reindex(columns=GUIDELINE_COLUMNS + ["channels", "baseline_variant", "hardware_id", "guideline_title",
                                                                              "variant_outcome", *extra, *PROCESS_TEXT, *PROCESS_NUMERIC])
        sec.blocks.append(sub)
    return sec


# ------------------------------------------------------------------ fits
def counted(data: ReportData) -> pd.DataFrame:
    d = add_config(data.ok, data.multiple_machines())
    if d.empty:
        return d
    d = d.assign(kind=[fit_group(e) for e in d["experiment"]])
    return d


def fits_section(data: ReportData) -> Section:
    sec = Section("fits", "Does FLOPs or memory access cost predict latency?")
    d = counted(data)
    if d.empty:
        sec.notes.append("No successful result rows.")
        return sec
    whole = d["_blocks"] & (d["block_index"] == -1)
    if whole.any():
        sec.notes.append(f"{int(whole.sum())} whole-network row(s) of block-by-block runs are left out of the fits: the "
                         "network is the sum of its blocks, and one point far beyond them would decide the line alone.")
        d = d[~whole]
    usable = d.dropna(subset=["mult_adds", "mem_access", "latency_median_ms"])
    skipped = len(d) - len(usable)
    if skipped:
        sec.notes.append(f"{skipped} row(s) without mult_adds or mem_access counts are left out of the fits.")
    groups, summary = [], []
    for cfg, grp in usable.groupby("config", sort=False):
        fits = {p: fit_latency(p, grp[p], grp["latency_median_ms"]) for p in PREDICTORS}
        winner, sentence = better_predictor(fits)
        sec.notes.append(f"{cfg}: {sentence}")
        groups.append((cfg, grp, fits))
        for p, f in fits.items():
            summary.append({"run": cfg, "predictor": p, **({} if f is None else {k: v for k, v in f.as_dict().items() if k != "predictor"}),
                            "better": "yes" if winner == p else ""})
    if not groups:
        sec.notes.append("No rows carry both counts; the latency-vs-cost fits are skipped.")
        return sec
    sec.figures.append({"uri": figures.fit_figure(groups), "alt": "latency vs mult_adds and vs mem_access",
                        "caption": "Least-squares line of latency on each count; R² of the line and Spearman rank correlation ρ (scipy.stats)."})
    sf = pd.DataFrame(summary)
    sec.tables.append({"title": "Fits", **table(sf, ["run", "predictor", "n", "r2", "spearman_rho", "spearman_p", "slope_ms", "intercept_ms", "better"])})
    sec.csv["fits"] = sf
    sec.csv["fit_points"] = usable.reindex(columns=["config", "experiment", "workload", "variant", "backend", "threads", "batch",
                                                    "scale", "mult_adds", "mem_access", "latency_median_ms"])
    return sec


# ------------------------------------------------------------------ roofline
def _match_peak(peaks: list[dict[str, Any]], backend: str, hardware_id: str, threads: float) -> tuple[dict[str, Any] | None, str]:
    same = [p for p in peaks if p.get("backend") == backend and (p.get("hardware_id") or "") == hardware_id]
    exact = [p for p in same if p.get("threads") is not None and not math.isnan(threads) and float(p["threads"]) == float(threads)]
    if exact:
        return exact[-1], ""
    if same:
        return same[-1], f"peaks measured with {same[-1].get('threads')} thread(s), rows ran with {fmt(threads)}"
    return None, ""


def roofline_section(data: ReportData) -> Section:
    sec = Section("roofline", "Roofline")
    d = counted(data)
    if not data.peaks:
        sec.notes.append("No peaks records in the results: the roofline needs measured peak compute and bandwidth "
                         "(latprof.backends.peaks.measure_peaks; measured by `latprof sweep` and by "
                         "`latprof profile --roofline`).")
        return sec
    if d.empty:
        sec.notes.append("No successful result rows.")
        return sec
    d = d.dropna(subset=["mult_adds", "latency_median_ms"])
    d = d[(d["mult_adds"] > 0) & (d["mem_bytes"] > 0)] if "mem_bytes" in d else d.iloc[0:0]
    if d.empty:
        sec.notes.append("No rows carry mult_adds and mem_bytes; no workload can be placed on the roofline.")
    groups, points = [], []
    for cfg, grp in d.groupby("config", sort=False):
        first = grp.iloc[0]
        peak, note = _match_peak(data.peaks, first["backend"], first["hardware_id"], float(first["threads"]))
        if peak is None:
            sec.notes.append(f"{cfg}: no peaks record for this backend and machine; roofline skipped.")
            continue
        if note:
            sec.notes.append(f"{cfg}: {note}.")
        pts = pd.DataFrame([attained(r.mult_adds, r.mem_bytes, r.latency_median_ms, peak["peak_gflops"], peak["peak_gbytes_per_s"])
                            for r in grp.itertuples(index=False)], index=grp.index)
        grp = pd.concat([grp.drop(columns=["arithmetic_intensity"]), pts], axis=1)
        groups.append((cfg, grp, peak))
        points.append(grp.assign(peak_gflops=peak["peak_gflops"], peak_gbytes_per_s=peak["peak_gbytes_per_s"]))
        best = grp.loc[grp["share_of_roof"].idxmax()] if grp["share_of_roof"].notna().any() else None
        if best is not None:
            sec.notes.append(f"{cfg}: median share of the roof {100 * grp['share_of_roof'].median():.1f}%; best "
                             f"{best['workload']} {best['variant']} at {100 * best['share_of_roof']:.1f}%.")
    peaks_df = pd.DataFrame([{k: v for k, v in p.items() if k not in ("settings", "record", "schema_version")} for p in data.peaks])
    sec.tables.append({"title": "Measured peaks", **table(peaks_df, ["backend", "threads", "hardware_id", "peak_gflops", "peak_gbytes_per_s", "method"])})
    sec.csv["peaks"] = peaks_df
    if groups:
        sec.figures.append({"uri": figures.roofline_figure(groups), "alt": "roofline per backend",
                            "caption": "Roof = min(peak GFLOP/s, peak GB/s × arithmetic intensity), arithmetic intensity = 2·mult_adds / mem_bytes; "
                                       "attained GFLOP/s = 2·mult_adds / latency."})
        pf = pd.concat(points)
        cols = ["config", "experiment", "workload", "variant", "scale", "mult_adds", "mem_bytes", "latency_median_ms",
                "arithmetic_intensity", "attained_gflops", "roof_gflops", "share_of_roof"]
        above = pf[pf["share_of_roof"] > 1]
        if not above.empty:
            sec.notes.append(f"{len(above)} workload(s) attain more than the measured roof: the peak kernels did not reach "
                             "this backend's best (noise, or a kernel faster than the 1x1 conv / copy used to measure it).")
        overview = (pf.groupby(["config", "kind"], sort=False)
                    .agg(workloads=("share_of_roof", "size"), intensity_median=("arithmetic_intensity", "median"),
                         gflops_median=("attained_gflops", "median"), share_median=("share_of_roof", "median"),
                         share_max=("share_of_roof", "max")).reset_index())
        sec.tables.append({"title": "Share of the roof attained, by experiment (every point in the CSV)",
                           **table(overview, headers=["run", "experiment", "workloads", "median intensity (FLOP/byte)",
                                                      "median GFLOP/s", "median share of roof", "best share of roof"])})
        sec.csv["roofline"] = pf.reindex(columns=cols + ["peak_gflops", "peak_gbytes_per_s"])
    return sec


# ------------------------------------------------------------------ per-op
def per_op_section(data: ReportData) -> Section | None:
    if not data.per_op:
        return None
    sec = Section("per_op", "Where the time goes: operator categories (Figure 2 style)")
    rows, ops = [], []
    for rec in data.per_op:
        label = f"{rec.get('workload')} · {rec.get('backend')} · {fmt(rec.get('threads'))} thr · batch {fmt(rec.get('batch'))}"
        pct = rec.get("categories_percent") or {}
        ms = rec.get("categories_ms") or {}
        rows.append({"profile": label, **{c: pct.get(c, math.nan) for c in CATEGORIES},
                     **{f"{c}_ms": ms.get(c, math.nan) for c in CATEGORIES},
                     "depthwise_ms": rec.get("depthwise_ms"), "profiled_total_ms": rec.get("profiled_total_ms"),
                     "end_to_end_median_ms": rec.get("end_to_end_median_ms"), "reconciliation": rec.get("reconciliation", "")})
        for op in rec.get("ops") or []:
            ops.append({"profile": label, **op})
    df = pd.DataFrame(rows).set_index("profile", drop=False)
    sec.figures.append({"uri": figures.per_op_figure(df), "alt": "operator category breakdown",
                        "caption": f"Share of profiled time per category, ours above the paper's. Paper: {SOURCE} "
                                   "Categories the paper's network lacks count as 0."})
    sec.tables.append({"title": "Per category (percent of profiled time)", **table(df, ["profile", *CATEGORIES, "depthwise_ms", "profiled_total_ms", "end_to_end_median_ms"])})
    paper = pd.DataFrame([{"profile": k, **dict(zip(CATEGORIES, v))} for k, v in FIGURE2_PERCENT.items()])
    sec.tables.append({"title": "Paper, Figure 2 (percent)", **table(paper)})
    for r in rows:
        if r["reconciliation"]:
            sec.notes.append(f"{r['profile']}: {r['reconciliation']}")
    sec.csv["per_op"] = pd.concat([df.reset_index(drop=True), paper], ignore_index=True)
    if ops:
        opf = pd.DataFrame(ops)
        top = opf.sort_values("time_ms", ascending=False).groupby("profile", sort=False).head(10)
        sec.tables.append({"title": "Slowest operators (top 10 per profile)", **table(top, ["profile", "name", "op_type", "category", "time_ms", "calls"])})
        sec.csv["per_op_ops"] = opf
    return sec


# ------------------------------------------------------------------ per-block
def blocks_section(data: ReportData) -> Section | None:
    b = add_config(data.block_rows(), data.multiple_machines())
    if b.empty:
        return None
    sec = Section("blocks", "Networks block by block")
    frames = []
    for (exp, cfg), grp in b.groupby(["experiment", "config"], sort=False):
        network = exp[len(BLOCKS_PREFIX):]
        grp = grp.sort_values("block_index")
        whole = grp[grp["block_index"] == -1]
        parts = grp[grp["block_index"] != -1]
        total = parts["latency_median_ms"].sum()
        share = parts["latency_median_ms"] / total if total else np.nan
        sub = Section(f"blocks_{network}", f"{network} on {cfg}")
        cols = pd.DataFrame({
            "#": parts["block_index"], "block": parts["variant"], "input_shape": parts["input_shape"],
            "mult_adds": parts["mult_adds"], "mem_access": parts["mem_access"],
            "latency ms [95% CI]": [with_ci(*v) for v in zip(parts["latency_median_ms"], parts["latency_ci_low_ms"], parts["latency_ci_high_ms"])],
            "share of block sum": [f"{100 * s:.1f}%" if pd.notna(s) else "—" for s in (share if isinstance(share, pd.Series) else [np.nan] * len(parts))],
        })
        sub.tables.append({"title": "Blocks", **table(cols)})
        if not whole.empty and total:
            w = whole.iloc[0]["latency_median_ms"]
            sub.notes.append(f"Whole network {fmt(w)} ms; sum of blocks measured alone {fmt(total)} ms "
                             f"({100 * total / w:.0f}% of the whole).")
        if not parts.empty:
            sub.figures.append({"uri": figures.blocks_figure(parts, f"{network} · {cfg}"), "alt": f"{network} per-block latency", "caption": ""})
        sec.blocks.append(sub)
        frames.append(grp.assign(network=network, share_of_block_sum=share))
    sec.csv["blocks"] = pd.concat(frames).reindex(columns=["network", "config", "block_index", "variant", "backend", "threads", "batch",
                                                           "input_shape", "mult_adds", "mem_access", "latency_median_ms",
                                                           "latency_ci_low_ms", "latency_ci_high_ms", "share_of_block_sum"])
    return sec


# ------------------------------------------------------------------ latency predictor (latprof predict --evaluate)
def predictions_section(data: ReportData) -> Section | None:
    """Predicted vs measured per backend: the kernel predictor beside the FLOPs / MAC fits and the roofline, with the
    ±10% band; the per-block comparison when blocks were predicted."""
    if not data.predictions:
        return None
    df = pd.DataFrame(data.predictions)
    sec = Section("predictions", "Predicted vs measured latency")
    for (backend, threads), grp in df.groupby(["backend", "threads"], sort=False):
        nets = grp[grp["block_index"] == -1].drop_duplicates(["workload", "predictor"], keep="last")
        sub = Section(f"predictions_{backend}_{threads}", f"{backend}, {threads} thread(s)")
        if not nets.empty:
            sub.figures.append({"uri": figures.prediction_figure(nets, f"{backend} · {threads} thr · networks"),
                                "alt": f"predicted vs measured on {backend}",
                                "caption": "Each network's predicted latency against its measured median; the band is "
                                           "±10%. flops / mac / flops+mac are leave-one-out fits to the other networks."
                                           + (" A horizontal bar spans the medians of each pass of a network "
                                              "(--processes): how far the machine moved while it was measured."
                                              if "measured_low_ms" in nets.columns
                                              and nets["measured_low_ms"].notna().any() else "")})
            body = []
            for name, g in nets.groupby("predictor", sort=False):
                m = metrics(list(g["predicted_ms"]), list(g["measured_ms"]))
                body.append({"predictor": name, "n": m["n"], "within ±10%": m["within_10"], "within ±5%": m["within_5"],
                             "RMSPE": m["rmspe"], "Spearman ρ": m["spearman"]})
            sub.tables.append({"title": "Accuracy per predictor", **table(pd.DataFrame(body))})
        blocks = grp[grp["block_index"] != -1]
        if not blocks.empty:
            b = blocks.drop_duplicates(["workload", "block_index"], keep="last").assign(
                error=lambda x: (x["predicted_ms"] - x["measured_ms"]) / x["measured_ms"])
            sub.tables.append({"title": "Per block (kernel predictor vs each block measured alone)",
                               **table(b, ["workload", "block_index", "block", "measured_ms", "predicted_ms", "error"])})
        sec.blocks.append(sub)
    sec.csv["predictions"] = df
    return sec


# ------------------------------------------------------------------ other results, errors
RESULT_COLUMNS = ["experiment", "workload", "variant", "backend", "precision", "threads", "batch", "scale", "input_shape", "mult_adds",
                  "elementwise_ops", "mem_access", "mem_bytes", "params", "arithmetic_intensity", "latency_median_ms",
                  "latency_ci_low_ms", "latency_ci_high_ms", "latency_p10_ms", "latency_p90_ms", "cv", "n_samples", "hardware_id"]


def results_section(data: ReportData) -> Section | None:
    d = data.other_rows()
    if d.empty:
        return None
    sec = Section("results", "Results")
    shown = d.assign(latency=[with_ci(*v) for v in zip(d["latency_median_ms"], d["latency_ci_low_ms"], d["latency_ci_high_ms"])])
    sec.tables.append({"title": "", **table(shown, ["workload", "variant", "backend", "threads", "batch", "input_shape", "mult_adds",
                                                    "mem_access", "params", "latency", "cv", "n_samples"],
                                              ["workload", "variant", "backend", "threads", "batch", "input", "mult_adds",
                                               "mem_access", "params", "latency ms [95% CI]", "cv", "samples"])})
    sec.csv["results"] = d.reindex(columns=RESULT_COLUMNS)
    return sec


def errors_section(data: ReportData) -> Section | None:
    e = data.errors
    if e.empty:
        return None
    sec = Section("errors", f"Errors ({len(e)})")
    sec.tables.append({"title": "", **table(e, ["experiment", "workload", "variant", "backend", "threads", "batch", "scale", "error"])})
    sec.csv["errors"] = e.reindex(columns=["experiment", "workload", "variant", "backend", "threads", "batch", "scale", "input_shape", "error", "hardware_id"])
    return sec
