"""The sweep engine: run guideline experiments on backends, variants interleaved, and attach verdicts.

A *unit* is one (experiment, backend, scale): all its variants are prepared, checked against eager, and measured
in shuffled rounds (``measure_interleaved``), so drift of a shared machine hits them alike and each variant's speed
ratio to the baseline carries its own paired CI. Units are the grain of ``--shard`` and ``--resume``, and a unit's
rows are written in one fsynced append: Ctrl-C never leaves half a unit behind.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latprof.backends import BackendError, BackendOptions, available_backends, backend_class, create_backend
from latprof.backends.base import PreparedRun, logical_cores, validate_threads
from latprof.errors import LatprofError, one_line
from latprof.experiments.spec import CHANNEL_SETS, ExperimentSpec, builtin_spec_paths, resolve_spec
from latprof.analysis.verdicts import INCONCLUSIVE, Interval, guideline_verdict, variant_outcome
from latprof.measure.protocol import MeasureConfig, measure_interleaved
from latprof.profile import open_store, record_environment, record_peaks
from latprof.results import base_row, error_row, latency_fields, read_results, row_key
from latprof.shapes import format_shape

QUICK_TARGET_CI = 0.05
QUICK_MAX_TIME_S = 6.0
DEFAULT_UNIT_MAX_TIME_S = 30.0
FLOPS_TOLERANCE = 0.03


@dataclass
class SweepRequest:
    """Everything ``latprof sweep`` takes."""

    guidelines: Sequence[str] = ()
    spec_paths: Sequence[str | Path] = ()
    backends: Sequence[str] | None = None
    threads: int | None = None
    pin: bool = False
    scales: Sequence[int] | None = None
    channels: str = "auto"
    quick: bool = False
    target_ci: float | None = None
    max_time_s: float | None = None
    min_time_s: float = 0.5
    ort_opt: str = "all"
    out: Path | None = None
    resume: bool = False
    shard: tuple[int, int] | None = None

    def measure_config(self) -> MeasureConfig:
        """Per-unit protocol: ``--quick`` loosens the CI target and shortens the cap unless given explicitly."""
        target = self.target_ci if self.target_ci is not None else (QUICK_TARGET_CI if self.quick else 0.02)
        cap = self.max_time_s if self.max_time_s is not None else (QUICK_MAX_TIME_S if self.quick else DEFAULT_UNIT_MAX_TIME_S)
        return MeasureConfig(target_ci=target, max_time_s=cap, min_time_s=min(self.min_time_s, cap),
                             warmup_max_s=min(2.0, cap / 4))


@dataclass(frozen=True)
class SweepUnit:
    spec: ExperimentSpec
    backend: str
    scale: int
    channels: str
    batch: int
    threads: int

    @property
    def label(self) -> str:
        return f"{self.spec.id} {self.backend} x{self.scale} ({self.channels} channels)"


@dataclass
class SweepOutcome:
    out_dir: Path
    results_path: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    units_run: int = 0
    units_skipped: int = 0
    flops_warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` with 1 <= i <= n."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise LatprofError(f"malformed --shard {text!r}; expected i/n, e.g. 1/2") from None
    if not 1 <= i <= n:
        raise LatprofError(f"malformed --shard {text!r}; need 1 <= i <= n")
    return i, n


def select_specs(guidelines: Sequence[str], spec_paths: Sequence[str | Path]) -> list[ExperimentSpec]:
    names: list[str] = []
    for g in guidelines:
        names += list(builtin_spec_paths()) if g == "all" else [g]
    specs = [resolve_spec(n) for n in dict.fromkeys(names)]
    specs += [resolve_spec(str(p)) for p in spec_paths]
    if not specs:
        raise LatprofError(f"nothing to sweep: give --guideline ({', '.join([*builtin_spec_paths(), 'all'])}) or --spec FILE")
    return specs


def default_backends() -> list[str]:
    """Every available backend that belongs in a default sweep (CPU ones, plus CUDA when present)."""
    return [n for n in available_backends() if getattr(backend_class(n), "default_in_sweep", True)]


def channel_set(choice: str, device_class: str, spec: ExperimentSpec) -> str:
    """``auto``: the paper's ARM channels on CPU and mobile backends, its GPU channels on CUDA."""
    if choice == "auto":
        wanted = "gpu" if device_class == "cuda" else "arm"
    elif choice in CHANNEL_SETS:
        wanted = choice
    else:
        raise LatprofError(f"unknown --channels {choice!r}; valid: auto, {', '.join(CHANNEL_SETS)}")
    available = set(spec.variants[0].args)
    if wanted not in available:
        wanted = sorted(available)[0]
    return wanted


def plan_units(request: SweepRequest) -> list[SweepUnit]:
    """All units in a fixed order (experiment, backend, scale); ``--shard i/n`` keeps every n-th from i."""
    validate_threads(request.threads)
    specs = select_specs(request.guidelines, request.spec_paths)
    backends = list(request.backends) if request.backends else default_backends()
    for b in backends:
        backend_class(b)
    units: list[SweepUnit] = []
    for spec in specs:
        scales = [1] if request.quick and not request.scales else list(request.scales or spec.scales)
        for s in scales:
            if s < 1:
                raise LatprofError(f"--scale must be positive integers, got {s}")
        for b in backends:
            cls = backend_class(b)
            batch = cls.fixed_batch or spec.batch.get(cls.device_class, cls.default_batch)
            threads = request.threads or (1 if cls.device_class == "mobile" else logical_cores())
            for s in scales:
                units.append(SweepUnit(spec, b, s, channel_set(request.channels, cls.device_class, spec), batch, threads))
    if request.shard:
        i, n = request.shard
        units = units[i - 1 :: n]
    return units


def unit_rows_template(unit: SweepUnit) -> list[dict[str, Any]]:
    """The identity fields of each row a unit produces (used for --resume before measuring)."""
    out = []
    for v in unit.spec.variants:
        shape = unit.spec.input_shape(v, unit.scale, unit.channels, unit.batch)
        out.append(base_row(
            experiment=unit.spec.id, workload=f"{unit.spec.id}:{unit.spec.block}*{unit.spec.repeat}", variant=v.name,
            backend=unit.backend, threads=unit.threads, batch=unit.batch, scale=unit.scale,
            input_shape=format_shape(shape),
        ))
    return out


def _counts(workload: Any) -> dict[str, Any]:
    from latprof.cost import workload_counts

    return workload_counts(workload)


def run_unit(unit: SweepUnit, request: SweepRequest, hardware_id: str) -> list[dict[str, Any]]:
    """Prepare every variant, measure them interleaved, and return one row per variant with ratios and verdict."""
    spec = unit.spec
    config = request.measure_config()
    options = BackendOptions(unit.threads, None, request.pin, unit.batch, request.ort_opt)
    templates = {r["variant"]: r for r in unit_rows_template(unit)}
    common = {"guideline_title": spec.title, "baseline_variant": spec.baseline, "channels": unit.channels,
              "hardware_id": hardware_id}
    rows: dict[str, dict[str, Any]] = {}
    prepared: dict[str, PreparedRun] = {}
    counts: dict[str, dict[str, Any]] = {}
    im = None
    try:
        for v in spec.variants:
            ident = {**templates[v.name], **common, "block_args": spec.block_args(v, unit.scale, unit.channels),
                     "expect": v.expect or "baseline"}
            try:
                wl = spec.workload(v, unit.scale, unit.channels, unit.batch)
                counts[v.name] = _counts(wl)
                prepared[v.name] = create_backend(unit.backend, options).prepare(wl)
            except (BackendError, LatprofError, RuntimeError, ValueError) as exc:
                rows[v.name] = error_row(one_line(exc), **ident, **counts.get(v.name, {}))
                continue
            rows[v.name] = {**ident, **counts[v.name]}
        if prepared:
            try:
                im = measure_interleaved({n: p.timer for n, p in prepared.items()},
                                         spec.baseline if spec.baseline in prepared else None, config)
            except (RuntimeError, ValueError) as exc:
                for n in prepared:
                    rows[n] = error_row(f"measurement failed: {one_line(exc)}", **rows[n])
    finally:
        for p in prepared.values():
            p.close()
    if im is not None:
        _attach_measurements(unit, rows, prepared, im, counts)
    return [rows[v.name] for v in spec.variants]


def _attach_measurements(unit: SweepUnit, rows: dict[str, dict[str, Any]], prepared: dict[str, PreparedRun],
                         im: Any, counts: dict[str, dict[str, Any]]) -> None:
    spec = unit.spec
    have_baseline = im.baseline == spec.baseline
    base_counts = counts.get(spec.baseline, {})
    base_m = im.measurements.get(spec.baseline)
    outcomes = []
    for name, p in prepared.items():
        m = im.measurements[name]
        row = rows[name]
        row.update(latency_fields(m), settings=p.settings, max_abs_error_vs_eager=p.max_abs_error,
                   status="ok", error="", rounds=im.rounds)
        v = spec.variant(name)
        row["paper_speed_vs_baseline"] = spec.paper_speed_ratio(v, unit.scale, unit.channels)
        if base_counts.get("mem_access") and row.get("mem_access"):
            row["mac_predicted_speed_vs_baseline"] = base_counts["mem_access"] / row["mem_access"]
        if base_counts.get("mult_adds") and row.get("mult_adds"):
            row["flops_predicted_speed_vs_baseline"] = base_counts["mult_adds"] / row["mult_adds"]
            row["mult_adds_vs_baseline"] = row["mult_adds"] / base_counts["mult_adds"]
        if not have_baseline:
            row.update(speed_vs_baseline=None, speed_vs_baseline_ci_low=None, speed_vs_baseline_ci_high=None,
                       variant_outcome=None)
            continue
        r = im.ratios[name]
        row.update(speed_vs_baseline=r.ratio, speed_vs_baseline_ci_low=r.ci_low, speed_vs_baseline_ci_high=r.ci_high)
        if v.expect is None:
            row["variant_outcome"] = None
            continue
        outcome = variant_outcome(
            v.expect, Interval(r.ci_low, r.ci_high),
            Interval(base_m.stats.ci_low_ms, base_m.stats.ci_high_ms), Interval(m.stats.ci_low_ms, m.stats.ci_high_ms),
        )
        row["variant_outcome"] = outcome
        outcomes.append(outcome)
    complete = have_baseline and all(rows[v.name].get("status") == "ok" for v in spec.variants)
    verdict = guideline_verdict(outcomes) if complete else INCONCLUSIVE
    for row in rows.values():
        row["verdict"] = verdict


def flops_constancy(rows: Sequence[dict[str, Any]], tolerance: float = FLOPS_TOLERANCE) -> list[str]:
    """Warnings for every (experiment, channels, scale) whose variants' mult_adds spread beyond ``tolerance``."""
    groups: dict[tuple[Any, ...], dict[str, int]] = {}
    for r in rows:
        if r.get("mult_adds") and r.get("experiment"):
            groups.setdefault((r["experiment"], r.get("channels"), r.get("scale")), {})[r["variant"]] = r["mult_adds"]
    out = []
    for (exp, channels, scale), by_variant in sorted(groups.items(), key=str):
        lo, hi = min(by_variant.values()), max(by_variant.values())
        if hi > lo * (1 + tolerance):
            detail = ", ".join(f"{k} {v:,}" for k, v in by_variant.items())
            out.append(f"{exp} x{scale} ({channels} channels): mult_adds differ by {hi / lo - 1:.1%} "
                       f"(> {tolerance:.0%}): {detail}")
    return out


def run_sweep(
    request: SweepRequest,
    on_unit: Callable[[int, int, SweepUnit, list[dict[str, Any]] | None], None] | None = None,
) -> SweepOutcome:
    """Run every planned unit; each unit's rows are stored as soon as it finishes (Ctrl-C keeps them)."""
    units = plan_units(request)
    out_dir, store = open_store(request.out)
    done = store.keys() if request.resume else set()
    env = record_environment(store)
    outcome = SweepOutcome(out_dir, store.path)
    existing = read_results(store.path, quiet=True).other if request.resume else []
    outcome.notes = record_peaks(store, [(u.backend, u.threads) for u in units], env["hardware_id"], request.pin,
                                 request.ort_opt, existing)
    for i, unit in enumerate(units):
        keys = {row_key(r) for r in unit_rows_template(unit)}
        if request.resume and keys <= done:
            outcome.units_skipped += 1
            if on_unit:
                on_unit(i, len(units), unit, None)
            continue
        rows = run_unit(unit, request, env["hardware_id"])
        store.append_many(rows)
        outcome.rows += rows
        outcome.units_run += 1
        if on_unit:
            on_unit(i, len(units), unit, rows)
    outcome.flops_warnings = flops_constancy(outcome.rows)
    return outcome


def log_unit(i: int, n: int, unit: SweepUnit, rows: list[dict[str, Any]] | None) -> None:
    """Plain progress line (used when stderr is not a terminal, e.g. in CI logs)."""
    state = "skipped (already in results, --resume)" if rows is None else (rows[0].get("verdict") or rows[0].get("error"))
    print(f"[{i + 1}/{n}] {unit.label}: {state}", file=sys.stderr, flush=True)
