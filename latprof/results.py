"""Result rows and the results store: append-only JSONL (flushed and fsynced per row) and CSV export.

One JSON object per line; ``latprof.rows`` says what the lines are (record types, row kinds, the result row's fields
and identity). Raw samples stay in the JSONL; the CSV holds the tidy columns.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pandas loads where a table is built, not in every worker process
    import pandas as pd

from latprof.errors import LatprofError
from latprof.rows import KEY_DEFAULTS, KEY_FIELDS, Record, legacy_kind, record_type, row_key

__all__ = ["KEY_FIELDS", "row_key"]  # the identity is defined in latprof.rows; re-exported for callers of this module

SCHEMA_VERSION = 1

CSV_COLUMNS = [
    "experiment", "workload", "variant", "backend", "threads", "batch", "scale", "input_shape", "precision",
    "quantization", "mult_adds", "elementwise_ops", "mem_access", "mem_bytes", "params", "arithmetic_intensity",
    "latency_median_ms", "latency_mean_ms", "latency_p10_ms", "latency_p90_ms", "latency_iqr_ms",
    "latency_ci_low_ms", "latency_ci_high_ms", "latency_std_ms", "latency_min_ms", "latency_max_ms",
    "cv", "n_samples", "calls_per_sample", "outliers_low", "outliers_high", "stop_reason", "measure_wall_s",
    "allocator", "processes", "process_spread", "minor_faults_per_call", "major_faults_per_call",
    "voluntary_ctx_switches_per_call", "involuntary_ctx_switches_per_call", "cpu_util",
    "speed_vs_baseline", "speed_vs_baseline_ci_low", "speed_vs_baseline_ci_high",
    "status", "error", "hardware_id", "timestamp",
    # how the output was checked (the rule depends on the precision) and, for INT8 rows, how the model was quantised
    "output_check", "output_sqnr_db", "quant_format", "quant_per_channel", "quant_activation_type",
    "quant_weight_type", "quant_calibration", "quant_calibration_batches", "quant_reduce_range",
]


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def base_row(**fields: Any) -> dict[str, Any]:
    """A result row with every key field present (missing ones as empty), plus ``fields``."""
    row: dict[str, Any] = {"record": Record.RESULT.value, "schema_version": SCHEMA_VERSION}
    row.update({k: "" for k in ("experiment", "variant")})
    row.update({k: None for k in ("scale",)})
    row.update(KEY_DEFAULTS)  # paths that only measure FP32 (per-block, the CI suite) say so; others pass precision
    row.update(fields)
    row.setdefault("timestamp", now_iso())
    return row


def error_row(message: str, **fields: Any) -> dict[str, Any]:
    return base_row(status="error", error=message, **fields)


@dataclass
class ResultsFile:
    """What a results file holds, and what reading it noticed."""

    path: Path
    results: list[dict[str, Any]] = field(default_factory=list)
    environments: dict[str, dict[str, Any]] = field(default_factory=dict)
    node_environments: dict[str, dict[str, Any]] = field(default_factory=dict)  # fleet runs: per node name
    other: list[dict[str, Any]] = field(default_factory=list)
    skipped_torn_line: bool = False
    superseded: int = 0

    def ok_results(self) -> list[dict[str, Any]]:
        return [r for r in self.results if r.get("status") == "ok"]


class ResultStore:
    """Append-only JSONL: every row is flushed and fsynced, so a killed run keeps all finished rows."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._repair_torn_tail()
            with self.path.open("a"):
                pass
        except OSError as exc:
            raise LatprofError(f"cannot write results to {self.path}: {exc.strerror or exc}") from None

    def _repair_torn_tail(self) -> None:
        """A run killed mid-write can leave a partial last line; cut it so appends start on a fresh line."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        data = self.path.read_bytes()
        if data.endswith(b"\n"):
            return
        cut = data.rfind(b"\n") + 1
        with self.path.open("r+b") as f:
            f.truncate(cut)
        print(f"latprof: warning: dropped a torn last line in {self.path}", file=sys.stderr)

    def append(self, record: dict[str, Any]) -> None:
        self.append_many([record])

    def append_many(self, records: Iterable[dict[str, Any]]) -> None:
        """Append records in one write and one fsync, so rows that belong together land together."""
        text = "".join(
            json.dumps({"schema_version": SCHEMA_VERSION, **r}, default=_json_default, allow_nan=True) + "\n"
            for r in records
        )
        if not text:
            return
        with self.path.open("a") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    def latest(self) -> dict[tuple[Any, ...], dict[str, Any]]:
        """The last result row stored per identity (what ``--resume`` starts from)."""
        if not self.path.exists():
            return {}
        return {row_key(r): r for r in read_results(self.path, quiet=True).results}

    def keys(self) -> set[tuple[Any, ...]]:
        return set(self.latest())


def json_text(obj: Any) -> str:
    """JSON as the results file writes it (numpy values, paths and tuples made plain)."""
    return json.dumps(obj, default=_json_default, allow_nan=True)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def _iter_lines(path: Path) -> Iterator[tuple[int, str, bool]]:
    lines = path.read_text().split("\n")
    complete = lines[-1] == ""
    if complete:
        lines = lines[:-1]
    for i, line in enumerate(lines):
        yield i + 1, line, (i == len(lines) - 1 and not complete)


def read_results(path: str | Path, quiet: bool = False) -> ResultsFile:
    """Read a results JSONL; a torn last line is skipped with a warning; other corruption is a ``LatprofError``."""
    p = Path(path)
    if p.is_dir():
        p = p / "results.jsonl"
    if not p.exists():
        raise LatprofError(f"results file not found: {p}")
    try:
        lines = list(_iter_lines(p))
    except (OSError, UnicodeDecodeError) as exc:
        raise LatprofError(f"cannot read results file {p}: {exc}") from None
    out = ResultsFile(p)
    for lineno, line, is_last_partial in lines:
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            if is_last_partial or lineno == len(lines):
                out.skipped_torn_line = True
                if not quiet:
                    warnings.warn(f"{p}: skipped a torn last line (a run was interrupted mid-write)", stacklevel=2)
                continue
            raise LatprofError(f"{p}:{lineno}: not valid JSON; the results file is corrupt") from None
        if not isinstance(rec, dict):
            raise LatprofError(f"{p}:{lineno}: expected a JSON object per line")
        version = rec.get("schema_version")
        if version != SCHEMA_VERSION:
            raise LatprofError(
                f"{p}:{lineno}: schema_version {version!r} is not supported (this latprof reads {SCHEMA_VERSION})"
            )
        kind = record_type(rec)
        if kind == Record.RESULT:
            rec.setdefault("kind", legacy_kind(rec).value)  # rows written before they carried their kind
            out.results.append(rec)
        elif kind == Record.ENVIRONMENT:
            out.environments[rec.get("hardware_id", "")] = rec
            if rec.get("node"):
                out.node_environments[str(rec["node"])] = rec
        else:
            out.other.append(rec)
    deduped = dedupe_results(out.results)
    out.superseded = len(out.results) - len(deduped)
    out.results = deduped
    return out


def dedupe_results(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per key, the last written winning (a re-measured unit supersedes a torn, partial one)."""
    last: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in rows:
        last.pop(row_key(r), None)
        last[row_key(r)] = r
    return list(last.values())


def results_frame(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Tidy table of result rows: the standard columns first, then any extra scalar columns; no raw samples."""
    import pandas as pd

    flat = []
    for r in rows:
        flat.append({k: v for k, v in r.items()
                     if k not in ("samples_ms", "record", "settings", "process_conditions") and not isinstance(v, (list, dict))}
                    | {"settings": json.dumps(r.get("settings", {}), sort_keys=True, default=str)})
    df = pd.DataFrame(flat, columns=None if flat else [*CSV_COLUMNS, "settings"])
    for col in CSV_COLUMNS:
        if col not in df.columns:
            df[col] = None
    extra = [c for c in df.columns if c not in CSV_COLUMNS and c != "settings"]
    return df[CSV_COLUMNS + sorted(extra) + ["settings"]]


def write_csv(rows: Iterable[dict[str, Any]], path: str | Path) -> Path:
    p = Path(path)
    try:
        results_frame(rows).to_csv(p, index=False)
    except OSError as exc:
        raise LatprofError(f"cannot write {p}: {exc.strerror or exc}") from None
    return p


def latency_fields(measurement: Any) -> dict[str, Any]:
    """Row columns of a ``Measurement``: latency statistics, sample count, stop reason, and the raw samples."""
    s = measurement.stats
    return {
        "latency_median_ms": s.median_ms,
        "latency_mean_ms": s.mean_ms,
        "latency_p10_ms": s.p10_ms,
        "latency_p90_ms": s.p90_ms,
        "latency_iqr_ms": s.iqr_ms,
        "latency_ci_low_ms": s.ci_low_ms,
        "latency_ci_high_ms": s.ci_high_ms,
        "latency_std_ms": s.std_ms,
        "latency_min_ms": s.min_ms,
        "latency_max_ms": s.max_ms,
        "ci_confidence": s.confidence,
        "cv": s.cv,
        "n_samples": s.n_samples,
        "outliers_low": s.outliers_low,
        "outliers_high": s.outliers_high,
        **measurement.as_dict(),
        "samples_ms": list(measurement.samples_ms),
    }
