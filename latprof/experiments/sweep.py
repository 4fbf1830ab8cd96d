"""``latprof sweep``: guideline experiments as a plan of units for the run engine, and the verdicts on top.

A *unit* is one (experiment, backend, scale): in a worker process all its variants are prepared, checked against
eager, and measured in shuffled rounds (``measure_interleaved``), so drift of a shared machine hits them alike and
each variant's speed ratio to the baseline carries its own paired CI. With several processes per unit, the ratio's
CI is a hierarchical bootstrap over processes and rounds. Units are the grain of ``--shard`` and ``--resume``, and
a unit's rows are written in one fsynced append: Ctrl-C never leaves half a unit behind.

``--quick`` spends a time budget: every unit once, then rounds in which every still-inconclusive unit gets one more
worker process (widest CI first), until every cell is decided or the budget is spent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from latprof.analysis.constancy import FLOPS_TOLERANCE, flops_not_constant
from latprof.analysis.verdicts import (
    DECIDED, DEFAULT_EQUIVALENCE_MARGIN, INCONCLUSIVE, Interval, guideline_verdict, variant_outcome,
)
from latprof.backends import BackendOptions, available_backends, backend_class, create_backend
from latprof.backends.base import (
    DEFAULT_ORT_OPT, DEFAULT_PRECISION, DEFAULT_TF32, PreparedRun, default_threads, failure_message,
    validate_threads,
)
from latprof.backends.precision import (
    QuantSettings, backends_for, check_precision, output_check_fields, precision_fields,
)
from latprof.errors import LatprofError, one_line
from latprof.experiments.spec import (CHANNEL_SETS, GROUP_WORDS, ExperimentSpec, builtin_spec_paths, list_specs,
                                      resolve_spec)
from latprof.measure.protocol import DEFAULT_MIN_TIME_S, DEFAULT_TARGET_CI, MeasureConfig, measure_interleaved
from latprof.measure.stats import pooled_speed_ratio
from latprof.results import base_row, error_row, latency_fields, read_results
from latprof.run.engine import Plan, RunOptions, execute, open_output, record_environment
from latprof.run.pool import sample_groups
from latprof.run.units import Unit
from latprof.shapes import format_shape

QUICK_TARGET_CI = 0.05
QUICK_MAX_TIME_S = 6.0
# --quick: total time for the adaptive passes (first pass included); keeps the README main job within 5 minutes.
QUICK_BUDGET_S = 230.0
DEFAULT_UNIT_MAX_TIME_S = 30.0


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
    min_time_s: float = DEFAULT_MIN_TIME_S
    ort_opt: str = DEFAULT_ORT_OPT
    tf32: str = DEFAULT_TF32  # CUDA backends: TF32 for fp32 convolutions and matmuls, set and recorded
    out: Path | None = None
    resume: bool = False
    shard: tuple[int, int] | None = None
    equivalence_margin: float = DEFAULT_EQUIVALENCE_MARGIN
    budget_s: float | None = None  # adaptive passes; default QUICK_BUDGET_S with --quick, none otherwise
    roofline: bool = True  # measure each backend's peaks for the report's roofline (a few seconds per backend)
    # every variant's precision unless the spec gives it one (FP32 vs INT8 as variants of one experiment)
    precision: str = DEFAULT_PRECISION
    quant: dict[str, Any] | None = None  # INT8 settings for variants without their own (precision.QuantSettings)
    run: RunOptions = field(default_factory=RunOptions)

    def measure_config(self, processes: int = 1) -> MeasureConfig:
        """Per-process protocol: ``--quick`` loosens the CI target and shortens the cap unless given explicitly;
        the unit's time cap is shared by its processes."""
        target = self.target_ci if self.target_ci is not None else (QUICK_TARGET_CI if self.quick else DEFAULT_TARGET_CI)
        cap = self.max_time_s if self.max_time_s is not None else (QUICK_MAX_TIME_S if self.quick else DEFAULT_UNIT_MAX_TIME_S)
        cap = cap / max(processes, 1)
        return MeasureConfig(target_ci=target, max_time_s=cap, min_time_s=min(self.min_time_s, cap),
                             warmup_max_s=min(2.0, cap / 4))

    def adaptive_budget(self) -> float | None:
        if self.budget_s is not None:
            return self.budget_s
        return QUICK_BUDGET_S if self.quick else None


@dataclass(frozen=True)
class SweepUnit:
    spec: ExperimentSpec
    backend: str
    scale: int
    channels: str
    batch: int
    threads: int
    precision: str = DEFAULT_PRECISION  # the sweep's --precision (a variant may set its own)
    quant: dict[str, Any] | None = None  # the sweep's --quant

    @property
    def label(self) -> str:
        lowp = f" {self.precision}" if self.precision != DEFAULT_PRECISION else ""
        return f"{self.spec.id} {self.backend} x{self.scale}{lowp} ({self.channels} channels)"

    def variant_precision(self, variant: Any) -> tuple[str, dict[str, Any] | None]:
        """(precision, INT8 settings) of one variant: its own when the spec gives them, else the sweep's."""
        precision = variant.precision or self.precision
        if precision != "int8":
            return precision, None
        return precision, asdict(QuantSettings.from_dict(variant.quant if variant.quant is not None else self.quant))


@dataclass
class SweepOutcome:
    out_dir: Path
    results_path: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    units_run: int = 0
    units_skipped: int = 0
    extra_processes: int = 0
    wall_s: float = 0.0
    flops_warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    paths: dict[str, Path] = field(default_factory=dict)  # results, csv, summary, report (written also on Ctrl-C)

    def decided_share(self) -> tuple[int, int]:
        """(decided cells, all cells): guideline x backend x scale cells whose verdict is not inconclusive."""
        cells: dict[tuple[Any, ...], str] = {}
        for r in self.rows:
            if r.get("experiment") and r.get("baseline_variant"):
                cell = (r["experiment"], r["backend"], r.get("scale"), r.get("allocator"), r.get("sweep_precision"),
                        r.get("node"))
                cells[cell] = r.get("verdict") or INCONCLUSIVE
        return sum(1 for v in cells.values() if v in DECIDED), len(cells)


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
    """``--guideline`` ids in order; ``all`` is ShuffleNet V2's G1-G4 (the README's main job), ``claims`` every
    seed-paper claim experiment."""
    names: list[str] = []
    for g in guidelines:
        names += [s.id for s in list_specs(GROUP_WORDS[g])] if g in GROUP_WORDS else [g]
    specs = [resolve_spec(n) for n in dict.fromkeys(names)]
    specs += [resolve_spec(str(p)) for p in spec_paths]
    if not specs:
        raise LatprofError("nothing to sweep: give --guideline "
                           f"({', '.join([*builtin_spec_paths(), *GROUP_WORDS])}) or --spec FILE")
    return specs


def default_backends() -> list[str]:
    """Every available backend that belongs in a default sweep (CPU ones, plus CUDA when present)."""
    return [n for n in available_backends() if getattr(backend_class(n), "default_in_sweep", True)]


def sweep_backends(request: SweepRequest) -> list[str]:
    """``--backend``, else the default ones that run ``--precision`` (an INT8 sweep defaults to ort-cpu and
    ort-mobile); none at all is one line naming the backends that would."""
    if request.backends:
        return list(request.backends)
    backends = [b for b in default_backends() if request.precision in backend_class(b).precisions]
    if not backends:
        raise LatprofError(f"--precision {request.precision}: no backend available here runs it; it runs on "
                           f"{', '.join(backends_for(request.precision))}")
    return backends


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
    fleet = request.run.fleet is not None  # backends and threads are checked on each node (latprof/run/fleet.py)
    if not fleet:
        validate_threads(request.threads)
    specs = select_specs(request.guidelines, request.spec_paths)
    backends = sweep_backends(request)
    for b in backends:
        backend_class(b, require_available=not fleet)
    check_precision(request.precision, backends, request.quant)  # --precision int8 on torch-cpu: one line
    runnable = _runnable(specs, backends, request.precision)
    units: list[SweepUnit] = []
    for spec in specs:
        scales = [1] if request.quick and not request.scales else list(request.scales or spec.scales)
        for s in scales:
            if s < 1:
                raise LatprofError(f"--scale must be positive integers, got {s}")
        for b in backends:
            if (spec.id, b) not in runnable:
                continue
            cls = backend_class(b, require_available=not fleet)
            batch = cls.fixed_batch or spec.batch.get(cls.device_class, cls.default_batch)
            threads = request.threads or default_threads(cls)
            for s in scales:
                units.append(SweepUnit(spec, b, s, channel_set(request.channels, cls.device_class, spec), batch, threads,
                                       request.precision, request.quant))
    if request.shard:
        i, n = request.shard
        units = units[i - 1 :: n]
    return units


def _runnable(specs: Sequence[ExperimentSpec], backends: Sequence[str], precision: str) -> set[tuple[str, str]]:
    """(spec id, backend) pairs whose every variant's precision the backend runs. A spec with INT8 variants is left
    out on the PyTorch backends (``precision_skips`` says so); when nothing at all is left, one line."""
    ok = {(spec.id, b) for spec in specs for b in backends
          if all(p in backend_class(b).precisions for p in spec.precisions(precision))}
    if not ok:
        needed = list(dict.fromkeys(p for spec in specs for p in spec.precisions(precision)))
        can = [b for b in backends_for(needed[-1])
               if all(p in backend_class(b).precisions for spec in specs for p in spec.precisions(precision))]
        raise LatprofError(f"{', '.join(s.id for s in specs)}: variants at {'/'.join(needed)}; none of "
                           f"{', '.join(backends)} runs them; use --backend {','.join(can) or '(none available)'}")
    return ok


def precision_skips(request: SweepRequest) -> list[str]:
    """One note per experiment left out on some backends because of its variants' precisions."""
    specs = select_specs(request.guidelines, request.spec_paths)
    backends = sweep_backends(request)
    notes = []
    for spec in specs:
        needed = spec.precisions(request.precision)
        left_out = [b for b in backends if not all(p in backend_class(b).precisions for p in needed)]
        if left_out:
            notes.append(f"{spec.id} not run on {', '.join(left_out)}: its variants need {'/'.join(needed)}")
    return notes


def unit_rows_template(unit: SweepUnit) -> list[dict[str, Any]]:
    """The identity fields of each row a unit produces (used for --resume before measuring)."""
    out = []
    for v in unit.spec.variants:
        shape = unit.spec.input_shape(v, unit.scale, unit.channels, unit.batch)
        out.append(base_row(
            experiment=unit.spec.id, workload=unit.spec.workload_name(v), variant=v.name,
            backend=unit.backend, threads=unit.threads, batch=unit.batch, scale=unit.scale,
            input_shape=format_shape(shape), **precision_fields(*unit.variant_precision(v)),
            sweep_precision=unit.precision,
        ))
    return out


def _counts(workload: Any) -> dict[str, Any]:
    from latprof.cost import workload_counts

    return workload_counts(workload)


def engine_unit(unit: SweepUnit, request: SweepRequest, processes: int) -> Unit:
    """The engine's unit: what a worker needs to rebuild this experiment x backend x scale, and its row templates."""
    config = request.measure_config(processes)
    builtin = builtin_spec_paths().get(unit.spec.path.stem)
    # A shipped spec travels by name (a fleet node has its own install); a user's spec file by path.
    shipped = builtin is not None and builtin.resolve() == unit.spec.path.resolve()
    spec_ref = unit.spec.path.stem if shipped else str(unit.spec.path)
    payload = {
        "spec": spec_ref, "backend": unit.backend, "scale": unit.scale, "channels": unit.channels,
        "batch": unit.batch, "threads": unit.threads, "pin": request.pin, "ort_opt": request.ort_opt,
        "tf32": request.tf32, "config": asdict(config), "precision": unit.precision, "quant": unit.quant,
    }
    return Unit("sweep", unit.label, payload, unit_rows_template(unit), time_s=config.max_time_s + 15.0,
                extra={"sweep_unit": unit, "margin": request.equivalence_margin,
                       "threads_explicit": request.threads is not None})


def measure_sweep_unit(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """In the worker: prepare every variant, measure them interleaved; one raw row per variant (no verdicts yet)."""
    spec = resolve_spec(payload["spec"])
    unit = SweepUnit(spec, payload["backend"], payload["scale"], payload["channels"], payload["batch"], payload["threads"],
                     payload.get("precision", DEFAULT_PRECISION), payload.get("quant"))
    config = MeasureConfig(**payload["config"])
    templates = {r["variant"]: r for r in unit_rows_template(unit)}
    common = {"guideline_title": spec.title, "baseline_variant": spec.baseline, "channels": unit.channels,
              "hardware_id": payload.get("hardware_id", "")}
    rows: dict[str, dict[str, Any]] = {}
    prepared: dict[str, PreparedRun] = {}
    im = None
    try:
        for v in spec.variants:
            ident = {**templates[v.name], **common, "block_args": spec.block_args(v, unit.scale, unit.channels),
                     "expect": v.expect or "baseline"}
            counts: dict[str, Any] = {}
            try:
                wl = spec.workload(v, unit.scale, unit.channels, unit.batch)
                counts = _counts(wl)
                precision, quant = unit.variant_precision(v)
                options = BackendOptions(unit.threads, None, payload["pin"], unit.batch, payload["ort_opt"],
                                         tf32=payload.get("tf32", DEFAULT_TF32), precision=precision, quant=quant)
                prepared[v.name] = create_backend(unit.backend, options).prepare(wl)
            except Exception as exc:  # BackendError, CUDA out of memory...: this variant's error row
                rows[v.name] = error_row(failure_message(exc), **ident, **counts)
                continue
            rows[v.name] = {**ident, **counts}
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
        for name, p in prepared.items():
            rows[name].update(latency_fields(im.measurements[name]),
                              **p.timing_fields(len(im.measurements[name].samples_ms)), settings=p.settings,
                              max_abs_error_vs_eager=p.max_abs_error, status="ok", error="", rounds=im.rounds,
                              **output_check_fields(p.check))
    return [rows[v.name] for v in spec.variants]


def finish_sweep_unit(unit: Unit, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """In the parent, on pooled rows: speed ratios (hierarchical paired bootstrap), predicted ratios, verdict."""
    sweep_unit: SweepUnit = unit.extra["sweep_unit"]
    margin: float = unit.extra["margin"]
    spec = sweep_unit.spec
    by_name = {r["variant"]: r for r in rows}
    for v in spec.variants:
        by_name[v.name].update(claim_fields(spec, v))
    base = by_name.get(spec.baseline)
    have_baseline = base is not None and base.get("status") == "ok"
    base_groups = sample_groups(base) if have_baseline else []
    outcomes = []
    for v in spec.variants:
        row = by_name[v.name]
        if row.get("status") != "ok":
            continue
        row["paper_speed_vs_baseline"] = spec.paper_speed_ratio(v, sweep_unit.scale, sweep_unit.channels)
        if base and base.get("mem_access") and row.get("mem_access"):
            row["mac_predicted_speed_vs_baseline"] = base["mem_access"] / row["mem_access"]
        if base and base.get("mult_adds") and row.get("mult_adds"):
            row["flops_predicted_speed_vs_baseline"] = base["mult_adds"] / row["mult_adds"]
            row["mult_adds_vs_baseline"] = row["mult_adds"] / base["mult_adds"]
        row["equivalence_margin"] = margin
        if not have_baseline:
            row.update(speed_vs_baseline=None, speed_vs_baseline_ci_low=None, speed_vs_baseline_ci_high=None,
                       variant_outcome=None)
            continue
        r = pooled_speed_ratio(base_groups, sample_groups(row), row.get("ci_confidence") or 0.95)
        row.update(speed_vs_baseline=r.ratio, speed_vs_baseline_ci_low=r.ci_low, speed_vs_baseline_ci_high=r.ci_high)
        if v.expect is None:
            row["variant_outcome"] = None
            continue
        ref, ratio = base, r
        if spec.curve:  # a curve: each step against the one before it (its first step is against the baseline)
            prev = by_name[spec.previous(v).name]  # type: ignore[union-attr]
            if prev.get("status") != "ok":
                row.update(variant_outcome=None, speed_vs_previous=None)
                continue
            ref = prev
            ratio = pooled_speed_ratio(sample_groups(prev), sample_groups(row), row.get("ci_confidence") or 0.95)
            row.update(speed_vs_previous=ratio.ratio, speed_vs_previous_ci_low=ratio.ci_low,
                       speed_vs_previous_ci_high=ratio.ci_high)
        outcome = variant_outcome(
            v.expect, Interval(ratio.ci_low, ratio.ci_high),
            Interval(ref["latency_ci_low_ms"], ref["latency_ci_high_ms"]),
            Interval(row["latency_ci_low_ms"], row["latency_ci_high_ms"]), margin,
        )
        row["variant_outcome"] = outcome
        outcomes.append(outcome)
    complete = have_baseline and all(by_name[v.name].get("status") == "ok" for v in spec.variants)
    verdict = guideline_verdict(outcomes) if complete else INCONCLUSIVE
    for row in rows:
        row["verdict"] = verdict
    return rows


def claim_fields(spec: ExperimentSpec, v: Any) -> dict[str, Any]:
    """What a row carries about its experiment beyond the measurement: group, claim, source, the paper's own figure
    and ratio, whether it is a curve (judged step by step) and which variant is its key."""
    prev = spec.previous(v) if spec.curve else None
    return {
        "experiment_group": spec.group, "claim": spec.claim, "source": spec.source, "curve": spec.curve,
        "key_variant": spec.key.name, "paper_figure": v.paper_figure, "paper_ratio": v.paper_ratio,
        "paper_ratio_metric": spec.paper_ratio_metric if v.paper_ratio is not None else "",
        "reference_variant": (prev.name if prev else spec.baseline) if v.expect else "",
    }


def undecided_width(rows: list[dict[str, Any]]) -> float | None:
    """For the adaptive passes: the widest ratio CI of an inconclusive unit that measured fine; None when decided
    (or broken: more processes do not repair an error row)."""
    if not rows or rows[0].get("verdict") != INCONCLUSIVE or any(r.get("status") != "ok" for r in rows):
        return None
    widths = [r[f"{k}_ci_high"] - r[f"{k}_ci_low"] for r in rows
              for k in ("speed_vs_previous" if r.get("curve") else "speed_vs_baseline",)
              if r.get(f"{k}_ci_low") is not None and r.get("variant_outcome") not in (None, "confirms")]
    return max(widths) if widths else None


def flops_constancy(rows: Sequence[dict[str, Any]], tolerance: float = FLOPS_TOLERANCE) -> list[str]:
    """Warnings for every (experiment, channels, scale) whose variants' mult_adds spread beyond ``tolerance``."""
    groups: dict[tuple[Any, ...], dict[str, int]] = {}
    for r in rows:  # a claim's variants differ in FLOPs by design: only guideline experiments hold them constant
        if r.get("mult_adds") and r.get("experiment") and r.get("experiment_group", "guidelines") == "guidelines":
            groups.setdefault((r["experiment"], r.get("channels"), r.get("scale")), {})[r["variant"]] = r["mult_adds"]
    out = []
    for (exp, channels, scale), by_variant in sorted(groups.items(), key=str):
        spread = flops_not_constant(by_variant.values(), tolerance)
        if spread is not None:
            detail = ", ".join(f"{k} {v:,}" for k, v in by_variant.items())
            out.append(f"{exp} x{scale} ({channels} channels): mult_adds differ by {spread:.1%} "
                       f"(> {tolerance:.0%}): {detail}")
    return out


def sweep_plan(request: SweepRequest, units: list[SweepUnit] | None = None) -> Plan:
    processes = request.run.processes or 1
    units = units if units is not None else plan_units(request)
    return Plan([engine_unit(u, request, processes) for u in units], finish_sweep_unit, processes,
                undecided=undecided_width, budget_s=request.adaptive_budget())


def run_sweep(
    request: SweepRequest,
    on_unit: Callable[[int, int, Unit, list[dict[str, Any]] | None], None] | None = None,
) -> SweepOutcome:
    """Run every planned unit; each unit's rows are stored as soon as it finishes, and the CSVs and report are
    written at the end, also on Ctrl-C (they reflect every finished unit)."""
    from latprof.experiments.outputs import write_outputs
    from latprof.profile import record_peaks

    plan = sweep_plan(request)
    out_dir, store = open_output(request.out, request.resume, request.run.append)
    env = record_environment(store, request.run)
    outcome = SweepOutcome(out_dir, store.path)
    outcome.notes += precision_skips(request)
    try:
        if request.roofline:
            existing = read_results(store.path, quiet=True).other if request.resume else []
            configs = [(u.payload["backend"], u.payload["threads"]) for u in plan.units]
            outcome.notes += record_peaks(store, configs, env["hardware_id"], request.pin, request.ort_opt, existing,
                                          request.run, request.tf32, plan.units)
        result = execute(plan, store, env, request.run, request.resume, on_unit)
        outcome.notes += result.notes
    finally:
        outcome.paths = write_outputs(out_dir)
    outcome.rows, outcome.units_run, outcome.units_skipped = result.rows, result.units_run, result.units_skipped
    outcome.extra_processes, outcome.wall_s = result.extra_processes, result.wall_s
    outcome.flops_warnings = flops_constancy(outcome.rows)
    return outcome
