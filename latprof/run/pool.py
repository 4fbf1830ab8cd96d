"""Pool the rows of one unit measured in several worker processes into one row per identity.

Samples are pooled for the median, each process weighing the same (``process_weighted_median``); the CI comes
from a hierarchical bootstrap over processes and samples (``latprof.measure.stats.pooled_median_ci``), so
process-to-process variation widens it instead of hiding.
Each row keeps ``process_sample_counts`` so the per-process groups can be recovered (and re-pooled when a later
pass adds a process).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from latprof.measure.counters import ProcessCounters
from latprof.measure.stats import pooled_median_ci, process_spread, summarize
from latprof.results import now_iso, row_key


def sample_groups(row: dict[str, Any]) -> list[list[float]]:
    """The per-process sample groups of a (pooled) row."""
    samples = list(row.get("samples_ms") or [])
    counts = row.get("process_sample_counts") or [len(samples)]
    out, i = [], 0
    for c in counts:
        out.append(samples[i : i + c])
        i += c
    return out


def pool_rows(per_process: list[list[dict[str, Any]]], confidence: float = 0.95) -> list[dict[str, Any]]:
    """One row per identity from each process's rows (identity order of the first process kept).

    A row that failed in every process is the first process's error row; one that failed in some processes is
    pooled from the others and names the failures in ``process_errors``.
    """
    order: list[tuple[Any, ...]] = []
    by_key: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for rows in per_process:
        for r in rows:
            k = row_key(r)
            if k not in by_key:
                order.append(k)
                by_key[k] = []
            by_key[k].append(r)
    return [pool_identity(by_key[k], confidence) for k in order]


def pool_identity(rows: list[dict[str, Any]], confidence: float = 0.95) -> dict[str, Any]:
    ok = [r for r in rows if r.get("status") == "ok" and r.get("samples_ms")]
    failed = [r for r in rows if r not in ok]
    if not ok:
        row = dict(rows[0])
        row.update(processes=0, process_spread=None)
        return row
    groups = [g for r in ok for g in sample_groups(r)]
    row = dict(ok[0])
    pooled = [x for g in groups for x in g]
    s = summarize(pooled, confidence)
    median, low, high = pooled_median_ci(groups, confidence)
    raw = [r["counters_raw"] for r in ok if r.get("counters_raw")]
    counters = ProcessCounters()
    for c in raw:
        counters += ProcessCounters.from_raw(c)
    row.update(
        latency_median_ms=median, latency_mean_ms=s.mean_ms, latency_p10_ms=s.p10_ms, latency_p90_ms=s.p90_ms,
        latency_iqr_ms=s.iqr_ms, latency_ci_low_ms=low, latency_ci_high_ms=high, latency_std_ms=s.std_ms,
        latency_min_ms=s.min_ms, latency_max_ms=s.max_ms, ci_confidence=confidence, cv=s.cv, n_samples=s.n_samples,
        outliers_low=s.outliers_low, outliers_high=s.outliers_high,
        samples_ms=pooled, process_sample_counts=[len(g) for g in groups],
        processes=len(groups), process_spread=process_spread(groups),
        process_medians_ms=[float(np.median(g)) for g in groups],
        measure_wall_s=sum(float(r.get("measure_wall_s") or 0) for r in ok),
        stop_reason=",".join(sorted({str(r.get("stop_reason")) for r in ok})),
        timestamp=now_iso(),
    )
    if raw or len(ok) > 1:  # one process without raw counts (rows of older versions) keeps its per-call columns
        row.update(counters_raw=counters.raw(), **counters.as_fields())
    if failed:
        row["process_errors"] = [str(r.get("error")) for r in failed]
    return row
