"""``latprof compare``: match the result rows of two runs and classify each workload's change.

Rows are matched by ``latprof.results.row_key``. With ``normalize``, each row's samples are divided round by round
by the samples of the reference workload measured interleaved with it (same ``interleave_group``), so a machine that
is uniformly slower today does not flag every workload.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from latprof.errors import LatprofError
from latprof.measure.environment import hardware_differences
from latprof.regress.decision import Comparison, compare_samples
from latprof.results import KEY_FIELDS, ResultsFile, read_results, row_key

# Row fields written by the CI suite runner (latprof.regress.suite) and read here.
REFERENCE_FIELD = "reference"
GROUP_FIELD = "interleave_group"


@dataclass(frozen=True)
class CompareOptions:
    """Knobs of the comparison; the CLI fills them from its flags."""

    threshold: float = 0.05
    alpha: float = 0.01
    normalize: bool = False
    allow_hardware_mismatch: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.threshold < 1:
            raise LatprofError(f"--threshold must be between 0 and 1 (a fraction, e.g. 0.05), got {self.threshold}")
        if not 0 < self.alpha < 0.5:
            raise LatprofError(f"--alpha must be between 0 and 0.5, got {self.alpha}")


@dataclass
class RowComparison:
    """One matched row: its identity, what was compared (raw or normalised latency) and the verdict."""

    key: dict[str, Any]
    comparison: Comparison
    normalized: bool

    @property
    def verdict(self) -> str:
        return self.comparison.verdict

    def as_dict(self) -> dict[str, Any]:
        return {**self.key, "normalized": self.normalized, **self.comparison.as_dict()}


@dataclass
class CompareReport:
    """Everything ``compare`` found: per-row verdicts and what could not be matched."""

    baseline_path: str
    current_path: str
    rows: list[RowComparison]
    options: CompareOptions
    normalized: bool
    baseline_hardware: list[str]
    current_hardware: list[str]
    only_in_baseline: list[dict[str, Any]] = field(default_factory=list)
    only_in_current: list[dict[str, Any]] = field(default_factory=list)
    not_ok: list[dict[str, Any]] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out = {v: 0 for v in ("regressed", "improved", "unchanged", "inconclusive")}
        for r in self.rows:
            out[r.verdict] += 1
        return out

    @property
    def regressed(self) -> list[RowComparison]:
        return [r for r in self.rows if r.verdict == "regressed"]

    def exit_code(self) -> int:
        """1 if any row regressed, else 0 (the CLI's contract)."""
        return 1 if self.regressed else 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline_path,
            "current": self.current_path,
            "threshold": self.options.threshold,
            "alpha": self.options.alpha,
            "normalized": self.normalized,
            "baseline_hardware_id": self.baseline_hardware,
            "current_hardware_id": self.current_hardware,
            "counts": self.counts(),
            "rows": [r.as_dict() for r in self.rows],
            "only_in_baseline": self.only_in_baseline,
            "only_in_current": self.only_in_current,
            "not_ok": self.not_ok,
        }


def key_dict(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row.get(k) for k in KEY_FIELDS}


def label(key: dict[str, Any]) -> str:
    """Short human name of a row: workload[/variant], and its precision when it is not FP32."""
    text = "/".join(str(key[k]) for k in ("workload", "variant") if key.get(k) not in (None, ""))
    return text + (f" [{key['precision']}]" if key.get("precision") not in (None, "", "fp32") else "")


def hardware_ids(results: ResultsFile) -> list[str]:
    ids = {str(r["hardware_id"]) for r in results.results if r.get("hardware_id")}
    return sorted(ids or set(results.environments) - {""})


def environment_record(results: ResultsFile, ids: list[str]) -> dict[str, Any] | None:
    """The environment record of the first of ``ids`` that has one (else any record of the file; None if none)."""
    for hid in ids:
        if hid in results.environments:
            return results.environments[hid]
    return next(iter(results.environments.values()), None)


def describe_hardware_differences(baseline: dict[str, Any] | None, current: dict[str, Any] | None) -> str:
    """One line naming the hardware fields that differ (for messages), or why they cannot be named."""
    for which, record in (("baseline", baseline), ("current", current)):
        if record is None:
            return f"the {which} file has no environment record to say which fields differ"
        if not record.get("hardware"):
            return f"the {which} environment record has no hardware section to say which fields differ"
    diffs = hardware_differences(baseline, current)
    if not diffs:
        return "no recorded hardware field differs: the ids come from different latprof versions; re-record the baseline"
    return "; ".join(diffs)


def _latest_ok(results: ResultsFile) -> tuple[dict[tuple[Any, ...], dict[str, Any]], list[dict[str, Any]]]:
    """Ok rows by key (a key measured twice: the later row wins) and the rows that are not ok."""
    ok: dict[tuple[Any, ...], dict[str, Any]] = {}
    bad: list[dict[str, Any]] = []
    for r in results.results:
        if r.get("status") == "ok":
            ok[row_key(r)] = r
        else:
            bad.append({**key_dict(r), "status": r.get("status"), "error": r.get("error"), "file": str(results.path)})
    return ok, bad


def _samples(row: dict[str, Any], path: Path) -> np.ndarray:
    s = row.get("samples_ms")
    if not isinstance(s, list) or not s:
        raise LatprofError(f"{path}: row {label(key_dict(row))} has no raw samples_ms; compare needs them")
    return np.asarray(s, dtype=float)


def normalized_samples(row: dict[str, Any], rows: dict[tuple[Any, ...], dict[str, Any]], path: Path) -> np.ndarray:
    """Per-round ratio of a row's samples to its reference's samples (same interleave group, same round)."""
    group = row.get(GROUP_FIELD)
    refs = [r for r in rows.values() if r.get(REFERENCE_FIELD) and r.get(GROUP_FIELD) == group and group is not None]
    if not refs:
        raise LatprofError(
            f"{path}: row {label(key_dict(row))} has no reference row measured with it "
            f"(rows need '{REFERENCE_FIELD}': true and a shared '{GROUP_FIELD}', as `latprof ci` writes); drop --normalize"
        )
    own, ref = _samples(row, path), _samples(refs[-1], path)
    if own.size != ref.size:
        raise LatprofError(
            f"{path}: row {label(key_dict(row))} has {own.size} samples but its reference has {ref.size}; "
            "normalisation needs samples from the same interleaved rounds"
        )
    return own / ref


def compare_results(baseline: ResultsFile, current: ResultsFile, options: CompareOptions = CompareOptions()) -> CompareReport:
    """Compare two loaded results files row by row (see ``latprof.regress.decision`` for the rule)."""
    base_hw, cur_hw = hardware_ids(baseline), hardware_ids(current)
    normalize = options.normalize
    if base_hw != cur_hw:
        if not options.allow_hardware_mismatch:
            why = describe_hardware_differences(environment_record(baseline, base_hw), environment_record(current, cur_hw))
            raise LatprofError(
                f"baseline hardware_id {','.join(base_hw) or '?'} differs from current {','.join(cur_hw) or '?'} ({why}): "
                "latencies from different machines are not comparable (--allow-hardware-mismatch compares normalized values)"
            )
        normalize = True
    base_rows, base_bad = _latest_ok(baseline)
    cur_rows, cur_bad = _latest_ok(current)
    if not base_rows:
        raise LatprofError(f"{baseline.path}: no ok result rows to compare")
    if not cur_rows:
        raise LatprofError(f"{current.path}: no ok result rows to compare")
    common = [k for k in base_rows if k in cur_rows]
    if normalize:
        common = [k for k in common if not base_rows[k].get(REFERENCE_FIELD)]
    if not common:
        raise LatprofError(
            f"no common rows between {baseline.path} and {current.path} (rows match on {', '.join(KEY_FIELDS)})"
        )
    compared: list[RowComparison] = []
    for k in common:
        b, c = base_rows[k], cur_rows[k]
        if b.get("clock", "wall") != c.get("clock", "wall"):
            raise LatprofError(
                f"row {label(key_dict(c))}: baseline timed with clock {b.get('clock', 'wall')!r}, current with "
                f"{c.get('clock', 'wall')!r}; times from different clocks are not comparable"
            )
        if normalize:
            bs, cs = normalized_samples(b, base_rows, baseline.path), normalized_samples(c, cur_rows, current.path)
        else:
            bs, cs = _samples(b, baseline.path), _samples(c, current.path)
        result = compare_samples(bs, cs, options.threshold, options.alpha, seed=options.seed)
        compared.append(RowComparison(key_dict(c), result, normalize))
    return CompareReport(
        str(baseline.path),
        str(current.path),
        compared,
        options,
        normalize,
        base_hw,
        cur_hw,
        only_in_baseline=[key_dict(base_rows[k]) for k in base_rows if k not in cur_rows],
        only_in_current=[key_dict(cur_rows[k]) for k in cur_rows if k not in base_rows],
        not_ok=base_bad + cur_bad,
    )


def compare_files(baseline: str | Path, current: str | Path, options: CompareOptions = CompareOptions()) -> CompareReport:
    """Read two results files (a folder means its ``results.jsonl``) and compare them."""
    return compare_results(read_results(baseline, quiet=True), read_results(current, quiet=True), options)
