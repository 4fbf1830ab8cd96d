"""The report's figures (matplotlib, Agg) as PNG data URIs, each with the table of numbers it draws.

PNG rather than SVG: matplotlib's SVG carries ``http://`` references (DOCTYPE, namespaces, metadata), and the page
must reference nothing outside itself. The PNG's own metadata (which names matplotlib's web site) is dropped too.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogFormatter  # noqa: E402

from latprof.analysis.fits import PREDICTORS, LatencyFit  # noqa: E402
from latprof.analysis.roofline import roof_gflops  # noqa: E402
from latprof.report.paper import CATEGORIES, FIGURE2_PERCENT  # noqa: E402

DPI = 110
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
PAPER_COLORS = {"arm": "#b0b0b0", "gpu": "#707070", "": "#909090"}
CATEGORY_COLORS = dict(zip(CATEGORIES, ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3")))


def png_data_uri(fig: Figure) -> str:
    buf = io.BytesIO()
    # "tight": whatever sits outside the axes (legends below or beside them) is kept whole, never clipped.
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None}, bbox_inches="tight", pad_inches=0.08)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


_PLAIN = FuncFormatter(lambda v, _pos: f"{v:g}")


def _log_axes(ax: object, x: bool = True, y: bool = True) -> None:
    """Log scale with plain tick labels (``100``, not ``10^2``); minor ticks labelled only on short axes."""
    for on, scale, axis in ((x, ax.set_xscale, ax.xaxis), (y, ax.set_yscale, ax.yaxis)):  # type: ignore[attr-defined]
        if on:
            scale("log")
            axis.set_major_formatter(_PLAIN)
            axis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(1.2, 0.5)))


def _spans(values: np.ndarray, factor: float = 30.0) -> bool:
    v = values[np.isfinite(values)]
    return bool(len(v)) and v.min() > 0 and v.max() / v.min() > factor


def _err(values: pd.Series, low: pd.Series, high: pd.Series) -> np.ndarray:
    """Asymmetric error bars; a missing CI draws none."""
    lo = (values - low).clip(lower=0).fillna(0).to_numpy()
    hi = (high - values).clip(lower=0).fillna(0).to_numpy()
    return np.vstack([lo, hi])


# Ratio columns the experiment chart draws; when they span more than LOG_RATIO_SPAN its y axis is logarithmic.
RATIO_COLUMNS = ("speed_vs_baseline", "speed_vs_baseline_ci_low", "speed_vs_baseline_ci_high", "paper_speed_vs_baseline",
                 "mac_predicted_speed_vs_baseline", "flops_predicted_speed_vs_baseline")
LOG_RATIO_SPAN = 8.0


def guideline_figure(df: pd.DataFrame, variants: Sequence[str], title: str) -> str:
    """Speed relative to the baseline per variant: one panel per scale, a bar per run config with its 95% CI, the
    paper's ratio (grey) beside, and the ratio MAC predicts (black diamond)."""
    scales = sorted(df["scale"].dropna().unique()) or [math.nan]
    configs = list(dict.fromkeys(df["config"]))
    channels = sorted(c for c in df["channels"].unique())
    n_series = len(configs) + len(channels)
    width = 0.8 / max(n_series, 1)
    fig = Figure(figsize=(min(max(4.2 * len(scales), 6.4), 13), 4.0), layout="constrained")
    axes = fig.subplots(1, len(scales), squeeze=False)[0]
    x = np.arange(len(variants))
    for ax, scale in zip(axes, scales):
        at_scale = df if (isinstance(scale, float) and math.isnan(scale)) else df[df["scale"] == scale]
        k = 0
        for i, cfg in enumerate(configs):
            d = at_scale[at_scale["config"] == cfg].set_index("variant").reindex(variants)
            ax.bar(x - 0.4 + width * (k + 0.5), d["speed_vs_baseline"], width, color=COLORS[i % len(COLORS)],
                   yerr=_err(d["speed_vs_baseline"], d["speed_vs_baseline_ci_low"], d["speed_vs_baseline_ci_high"]),
                   capsize=2, label=cfg if ax is axes[0] else None)
            k += 1
        for ch in channels:
            d = (at_scale[at_scale["channels"] == ch].drop_duplicates("variant").set_index("variant").reindex(variants))
            ax.bar(x - 0.4 + width * (k + 0.5), d["paper_speed_vs_baseline"], width, color=PAPER_COLORS.get(ch, "#909090"),
                   hatch="//", edgecolor="white", label=(f"paper ({ch} channels)" if ch else "paper") if ax is axes[0] else None)
            ax.scatter(x, d["mac_predicted_speed_vs_baseline"], marker="D", color="black", s=18, zorder=5,
                       label=(f"MAC-predicted ({ch})" if ch else "MAC-predicted") if ax is axes[0] else None)
            if "flops_predicted_speed_vs_baseline" in d and d["flops_predicted_speed_vs_baseline"].notna().any():
                ax.scatter(x, d["flops_predicted_speed_vs_baseline"], marker="o", facecolors="none", color="black",
                           s=22, zorder=5, label=(f"FLOPs-predicted ({ch})" if ch else "FLOPs-predicted")
                           if ax is axes[0] else None)
            k += 1
        ax.axhline(1.0, color="black", linewidth=0.8)
        shown = pd.concat([at_scale[c] for c in RATIO_COLUMNS if c in at_scale]).to_numpy(dtype=float)
        shown = shown[np.isfinite(shown) & (shown > 0)]
        if shown.size and shown.max() / shown.min() > LOG_RATIO_SPAN:  # a claim's 14x next to 0.05x: log axis
            ax.set_yscale("log")
        ax.set_xticks(x, list(variants), rotation=20 if max(map(len, variants)) > 6 else 0, fontsize=8)
        ax.set_title(f"scale ×{scale:g}" if not (isinstance(scale, float) and math.isnan(scale)) else "", fontsize=9)
        ax.set_ylabel("speed vs baseline (×)" if ax is axes[0] else "")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title, fontsize=10)
    _legend_below(fig, axes[0], fontsize=7)
    return png_data_uri(fig)


def _legend_below(fig: Figure, ax: object, fontsize: float) -> None:
    """The figure's legend below the panels, in as many columns as fit the figure's width (long run labels wrap
    into more rows instead of running off both sides)."""
    handles, labels = ax.get_legend_handles_labels()  # type: ignore[attr-defined]
    if not labels:
        return
    order = sorted(range(len(labels)), key=lambda i: labels[i].startswith("MAC-predicted"))  # measured, paper, MAC
    handles, labels = [handles[i] for i in order], [labels[i] for i in order]
    char_in = 0.55 * fontsize / 72  # average glyph width
    entry_in = max(len(t) for t in labels) * char_in + 0.55  # text + handle + spacing
    ncol = max(1, min(len(labels), int(fig.get_figwidth() // entry_in)))
    fig.legend(handles, labels, loc="outside lower center", ncol=ncol, fontsize=fontsize, frameon=False)


def fit_figure(groups: Sequence[tuple[str, pd.DataFrame, dict[str, LatencyFit | None]]]) -> str:
    """Latency against mult_adds and against mem_access, one row per run config, with the least-squares line."""
    fig = Figure(figsize=(10, 3.4 * len(groups)), layout="constrained")
    axes = fig.subplots(len(groups), 2, squeeze=False)
    for (label, d, fits), row in zip(groups, axes):
        kinds = list(dict.fromkeys(d["kind"]))
        log = any(_spans(d[p].to_numpy(dtype=float)) for p in PREDICTORS)
        for ax, pred in zip(row, PREDICTORS):
            for j, kind in enumerate(kinds):
                s = d[d["kind"] == kind]
                ax.scatter(s[pred], s["latency_median_ms"], s=14, color=COLORS[j % len(COLORS)], label=kind, alpha=0.8)
            xs = d[pred].to_numpy(dtype=float)
            fit = fits.get(pred)
            if fit is not None and len(xs):
                grid = np.geomspace(xs.min(), xs.max(), 50) if xs.min() > 0 else np.linspace(xs.min(), xs.max(), 50)
                ax.plot(grid, fit.slope_ms * grid + fit.intercept_ms, color="black", linewidth=1)
                ax.set_title(f"{label}: R² {fit.r2:.2f}, Spearman ρ {fit.spearman_rho:.2f}, n={fit.n}", fontsize=8)
            else:
                ax.set_title(f"{label}: too few points to fit", fontsize=8)
            if log:
                _log_axes(ax)
            ax.set_xlabel(pred + (" (multiply-adds)" if pred == "mult_adds" else " (elements)"), fontsize=8)
            ax.set_ylabel("latency median (ms)", fontsize=8)
            ax.grid(alpha=0.3)
        row[0].legend(fontsize=7)
    return png_data_uri(fig)


def roofline_figure(groups: Sequence[tuple[str, pd.DataFrame, dict]]) -> str:
    """Each run config's roofline (measured peaks) with its workloads at their arithmetic intensity."""
    cols = min(2, len(groups))
    rows = math.ceil(len(groups) / cols)
    fig = Figure(figsize=(5.2 * cols, 3.8 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (label, d, peak) in zip(axes, groups):
        ai = d["arithmetic_intensity"].to_numpy(dtype=float)
        ridge = peak["peak_gflops"] / peak["peak_gbytes_per_s"]
        lo = min(ridge / 10, np.nanmin(ai) / 2) if len(ai) else ridge / 10
        hi = max(ridge * 10, np.nanmax(ai) * 2) if len(ai) else ridge * 10
        grid = np.geomspace(lo, hi, 200)
        pg, pb = peak["peak_gflops"], peak["peak_gbytes_per_s"]
        ax.plot(grid, [roof_gflops(a, pg, pb) for a in grid], color="black", linewidth=1.2,
                label=f"roof: {pg:.3g} GFLOP/s, {pb:.3g} GB/s")
        kinds = list(dict.fromkeys(d["kind"]))
        for j, kind in enumerate(kinds):
            s = d[d["kind"] == kind]
            ax.scatter(s["arithmetic_intensity"], s["attained_gflops"], s=14, color=COLORS[j % len(COLORS)], label=kind)
        _log_axes(ax)
        ax.set_xlabel("arithmetic intensity (FLOPs / byte)", fontsize=8)
        ax.set_ylabel("attained GFLOP/s", fontsize=8)
        ax.set_title(label, fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes[len(groups):]:
        ax.set_visible(False)
    return png_data_uri(fig)


def per_op_figure(measured: pd.DataFrame) -> str:
    """Figure 2 style: share of time per operator category, ours (one bar per profile) and the paper's."""
    paper = pd.DataFrame({k: [v or 0 for v in vals] for k, vals in FIGURE2_PERCENT.items()}, index=list(CATEGORIES)).T
    table = pd.concat([measured[list(CATEGORIES)], paper])
    fig = Figure(figsize=(9, 0.45 * len(table) + 1.4), layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(table))
    left = np.zeros(len(table))
    for cat in CATEGORIES:
        vals = table[cat].fillna(0).to_numpy(dtype=float)
        ax.barh(y, vals, left=left, color=CATEGORY_COLORS[cat], label=cat)
        left += vals
    ax.set_yticks(y, list(table.index), fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("share of run time (%)", fontsize=8)
    ax.set_xlim(0, max(100.0, float(left.max()) if len(left) else 100.0))
    ax.legend(ncol=5, fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    ax.grid(axis="x", alpha=0.3)
    return png_data_uri(fig)


def blocks_figure(d: pd.DataFrame, title: str) -> str:
    """Per-block latency of one network on one run config, in forward order, with 95% CIs."""
    fig = Figure(figsize=(9, 0.28 * len(d) + 1.2), layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(d))
    ax.barh(y, d["latency_median_ms"], color=COLORS[0],
            xerr=_err(d["latency_median_ms"], d["latency_ci_low_ms"], d["latency_ci_high_ms"]), capsize=2)
    ax.set_yticks(y, list(d["variant"]), fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("latency median (ms)", fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    return png_data_uri(fig)


def prediction_figure(d: pd.DataFrame, title: str) -> str:
    """Predicted against measured latency, one colour per predictor, the diagonal with its ±10% band (log axes)."""
    fig = Figure(figsize=(6.2, 5.4), layout="constrained")
    ax = fig.subplots()
    values = np.concatenate([d["measured_ms"].to_numpy(float), d["predicted_ms"].to_numpy(float)])
    values = values[np.isfinite(values) & (values > 0)]
    lo, hi = (values.min() / 1.3, values.max() * 1.3) if len(values) else (0.1, 10.0)
    line = np.geomspace(lo, hi, 50)
    ax.fill_between(line, line * 0.9, line * 1.1, color="#999999", alpha=0.25, label="±10%")
    ax.plot(line, line, color="#555555", lw=0.8)
    for i, (name, grp) in enumerate(d.groupby("predictor", sort=False)):
        color = COLORS[i % len(COLORS)]
        ax.scatter(grp["measured_ms"], grp["predicted_ms"], s=18, color=color, label=name, alpha=0.85)
        if {"measured_low_ms", "measured_high_ms"} <= set(grp.columns):  # measured in passes: their range
            bars = grp.dropna(subset=["measured_low_ms", "measured_high_ms"])
            if not bars.empty:
                x = bars["measured_ms"].to_numpy(float)
                low, high = bars["measured_low_ms"].to_numpy(float), bars["measured_high_ms"].to_numpy(float)
                ax.errorbar(x, bars["predicted_ms"].to_numpy(float), xerr=np.clip([x - low, high - x], 0, None),
                            fmt="none", ecolor=color, alpha=0.45, lw=0.8)
    _log_axes(ax)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("measured latency (ms)", fontsize=8)
    ax.set_ylabel("predicted latency (ms)", fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, which="both")
    _legend_below(fig, ax, 7)
    return png_data_uri(fig)
