"""Gather one or more results files into the tables the report draws from (pandas), split by what the rows are."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from latprof.errors import LatprofError
from latprof.results import ResultsFile, read_results
from latprof.rows import BLOCKS_PREFIX, Record, RowKind, kind_of

__all__ = ["BLOCKS_PREFIX"]  # re-exported: the report's sections import it from here


def is_guideline_row(row: dict[str, Any]) -> bool:
    """Sweep rows (a shipped experiment or a user spec)."""
    return kind_of(row) == RowKind.SWEEP


def is_block_row(row: dict[str, Any]) -> bool:
    return kind_of(row) == RowKind.BLOCKS


def _flat(row: dict[str, Any]) -> dict[str, Any]:
    """A row without raw samples, its settings kept as a dict in ``settings``."""
    out = {k: v for k, v in row.items() if k not in ("samples_ms", "record")}
    out["settings"] = row.get("settings") if isinstance(row.get("settings"), dict) else {}
    return out


def _frame(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame([_flat(r) for r in rows])
    return df


@dataclass
class ReportData:
    """Everything the report shows, merged across results files."""

    sources: list[dict[str, Any]]
    environments: dict[str, dict[str, Any]]
    rows: pd.DataFrame  # every result row (ok and error), no raw samples
    per_op: list[dict[str, Any]] = field(default_factory=list)
    peaks: list[dict[str, Any]] = field(default_factory=list)
    predictions: list[dict[str, Any]] = field(default_factory=list)  # latprof predict --evaluate
    node_environments: dict[str, dict[str, Any]] = field(default_factory=dict)  # fleet runs: per node name
    fleet_skips: list[dict[str, Any]] = field(default_factory=list)  # fleet runs: units a node skipped, and why

    @property
    def ok(self) -> pd.DataFrame:
        if self.rows.empty:
            return self.rows
        return self.rows[self.rows["status"] == "ok"]

    @property
    def errors(self) -> pd.DataFrame:
        if self.rows.empty:
            return self.rows
        return self.rows[self.rows["status"] != "ok"]

    def guideline_rows(self) -> pd.DataFrame:
        """Sweep rows of every experiment: guidelines, claims and user specs."""
        return self._select(self.ok, "_guideline")

    def block_rows(self) -> pd.DataFrame:
        return self._select(self.ok, "_blocks")

    def other_rows(self) -> pd.DataFrame:
        ok = self.ok
        if ok.empty:
            return ok
        return ok[~ok["_guideline"] & ~ok["_blocks"]]

    @staticmethod
    def _select(df: pd.DataFrame, flag: str) -> pd.DataFrame:
        return df if df.empty else df[df[flag]]

    def multiple_machines(self) -> bool:
        ids = set(self.environments) | set(self.rows.get("hardware_id", pd.Series(dtype=object)).dropna())
        return len({i for i in ids if i}) > 1 or len(self.nodes()) > 1

    def nodes(self) -> list[str]:
        """Fleet nodes that measured rows, in first-seen order (none for runs on one machine)."""
        if self.rows.empty or "node" not in self.rows:
            return []
        return [n for n in dict.fromkeys(self.rows["node"]) if n]


NUMERIC = (
    "threads", "batch", "scale", "mult_adds", "elementwise_ops", "mem_access", "mem_bytes", "params",
    "arithmetic_intensity", "latency_median_ms", "latency_mean_ms", "latency_p10_ms", "latency_p90_ms",
    "latency_iqr_ms", "latency_ci_low_ms", "latency_ci_high_ms", "cv", "n_samples", "speed_vs_baseline",
    "speed_vs_baseline_ci_low", "speed_vs_baseline_ci_high", "paper_speed_vs_baseline",
    "mac_predicted_speed_vs_baseline", "block_index", "flops_predicted_speed_vs_baseline", "paper_ratio",
    "speed_vs_previous", "speed_vs_previous_ci_low", "speed_vs_previous_ci_high",
)
# Process conditions from the measurement engine (rows of older files lack them: they read as NaN / "").
PROCESS_NUMERIC = (
    "processes", "process_spread", "minor_faults_per_call", "major_faults_per_call",
    "voluntary_ctx_switches_per_call", "involuntary_ctx_switches_per_call", "cpu_util",
)
PROCESS_TEXT = ("allocator",)
TEXT = ("experiment", "workload", "variant", "backend", "input_shape", "status", "error", "hardware_id", "node",
        "guideline_title", "baseline_variant", "channels", "verdict", "variant_outcome", "precision", "quantization",
        # claim experiments (kernels/ with group = "claims"); empty for guideline rows and older files
        "experiment_group", "claim", "source", "paper_figure", "paper_ratio_metric", "key_variant", "reference_variant")


def from_results_files(files: Sequence[ResultsFile]) -> ReportData:
    """Merge already-loaded results files (several backends or machines) into one ``ReportData``."""
    rows: list[dict[str, Any]] = []
    environments: dict[str, dict[str, Any]] = {}
    per_op: list[dict[str, Any]] = []
    peaks: list[dict[str, Any]] = []
    predictions: list[dict[str, Any]] = []
    node_envs: dict[str, dict[str, Any]] = {}
    skips: list[dict[str, Any]] = []
    sources = []
    source_of: list[str] = []
    for f in files:
        source_of += [str(f.path)] * len(f.results)
        sources.append({
            "path": str(f.path),
            "results": len(f.results),
            "errors": sum(1 for r in f.results if r.get("status") != "ok"),
            "environments": len(f.environments),
            "torn_last_line": f.skipped_torn_line,
        })
        rows.extend(f.results)
        environments.update({k: v for k, v in f.environments.items()})
        node_envs.update(f.node_environments)
        for rec in f.other:
            kind = rec.get("record")
            if kind == Record.PER_OP:
                per_op.append(rec)
            elif kind == Record.PEAKS:
                peaks.append(rec)
            elif kind == Record.PREDICTION:
                predictions.append(rec)
            elif kind == Record.FLEET_SKIP:
                skips.append(rec)
    df = _frame(rows)
    for col in NUMERIC + PROCESS_NUMERIC:
        df[col] = pd.to_numeric(df[col], errors="coerce") if col in df.columns else math.nan
    for col in TEXT + PROCESS_TEXT:
        if col not in df.columns:
            df[col] = ""
        df[col] = df[col].astype(object).fillna("").astype(str)  # an all-missing column is float NaN: cast first
    if "settings" not in df.columns:
        df["settings"] = [{} for _ in range(len(df))]
    missing = df["status"] == ""
    df.loc[missing, "status"] = ["ok" if pd.notna(v) else "error" for v in df.loc[missing, "latency_median_ms"]]
    df["_guideline"] = [is_guideline_row(r) for r in rows]
    df["_claim"] = df["_guideline"] & (df["experiment_group"] == "claims")
    df["_blocks"] = [is_block_row(r) for r in rows]
    df["_source"] = source_of
    return ReportData(sources, environments, df, per_op, peaks, predictions, node_envs, skips)


def load(paths: Sequence[str | Path]) -> ReportData:
    """Read and merge results files; a missing, unreadable or other-schema file raises ``LatprofError``, and so does
    one that holds no result rows (e.g. nothing but a torn line): an empty report would hide the mistake."""
    files = []
    for p in paths:
        f = read_results(p, quiet=True)
        if not f.results:
            torn = " (only a torn line, skipped)" if f.skipped_torn_line else ""
            raise LatprofError(f"{f.path} holds no result rows{torn}; pass a results.jsonl written by latprof "
                               "profile, sweep or ci, or its run folder")
        if f.skipped_torn_line:
            warnings.warn(f"{f.path}: skipped a torn last line (a run was interrupted mid-write)", stacklevel=2)
        files.append(f)
    return from_results_files(files)


def settings_text(settings: dict[str, Any]) -> str:
    return "; ".join(f"{k}={json.dumps(v, default=str) if isinstance(v, (list, dict)) else v}"
                     for k, v in sorted(settings.items()))
