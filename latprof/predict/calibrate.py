"""``latprof calibrate``: learn this machine's kernels on one backend, within a time budget, through the run engine.

Rounds of one ``calibrate`` unit each (a few cells, measured in a fresh worker process like every other reading;
``latprof.predict.measure_cells``). After every round the kernel model is cross-validated on the samples so far,
and the next round draws its cells adaptively, as nn-Meter and LitePred do: by cell kind, weighted by the error of
the kernels that kind produced, and as neighbours (nearby widths, same structure) of the cells whose kernels were
predicted worst. The first rounds also measure one cell of every structural option of the space
(``space.coverage_cells``), and every round a neighbour of a cell that produced a kernel family with fewer than
``MIN_FAMILY_SAMPLES`` samples, so no family the space can produce is left to a handful of readings. Every unit
also times one *chain* (a longer sequence of blocks; footprints drawn in turn from 2 to 128 MiB) in a loop, as a
network is timed: on the chains the predictor learns where a forward sits between its warm
and its cold kernels (``latprof.predict.residency``). Rounds stop when the next would overrun the budget. The
predictor file then holds every kernel sample, the framework overhead, the residency curve, the backend's settings
and peaks, and the regressor that cross-validated best.
"""

from __future__ import annotations

import contextlib
import math
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from latprof.backends import backend_class
from latprof.backends.base import DEFAULT_ORT_OPT, default_threads, validate_threads
from latprof.errors import LatprofError
from latprof.predict.kernels import FEATURES
from latprof.predict.measure_cells import export_ahead
from latprof.predict.model import DEFAULT_REGRESSOR, MIN_FAMILY_SAMPLES, cross_validate, select_regressor
from latprof.predict.residency import centre_bounds
from latprof.predict.space import (CHAIN_FOOTPRINT_LOG2, coverage_cells, draw_cells, mutate_cell, producing_blocks,
                                   sample_chain)
from latprof.predict.state import (STATE_DESCRIPTION, StateFactors, StatePower, fit_state_power, reference_state,
                                   spread, state_of)
from latprof.predict.store import KIND, SCHEMA_VERSION, save
from latprof.results import base_row, read_results
from latprof.run.engine import Plan, RunOptions, default_out_dir, execute, open_output, record_environment
from latprof.run.units import Unit

DEFAULT_BUDGET_S = 900.0  # the full calibration: 15 minutes (the ceiling is 30 on a 2-core machine)
QUICK_BUDGET_S = 180.0  # --quick: three minutes
CELLS_PER_UNIT = 3  # with one chain: a 900 s calibration reads about 40 chains (four cells read 29)
CHAINS_PER_UNIT = 1
BACKENDS = ("torch-cpu", "ort-cpu", "ort-mobile")
# Where PyTorch eager kernel samples come from (``Readings.attribution``): each kernel replayed alone after an
# eviction (``torch_kernels.replay_timer``), or its time inside the cell's profiled forward
# (``latprof.predict.torch_profile``); "auto" builds both and keeps the one whose chains' leave-one-out error is lower.
# A calibration measures in-forward profiles only by default: the replays took 534 s of p17's 909 s, and without
# them a 900 s torch-cpu calibration read 195 cells instead of 66 (p18; docs/predict.md).
AUTO, REPLAY, PROFILED = "auto", "replay", "profiled"
ATTRIBUTIONS = (AUTO, REPLAY, PROFILED)


@dataclass
class CalibrateRequest:
    """Everything ``latprof calibrate`` takes."""

    backend: str
    output: Path
    threads: int | None = None
    budget_s: float | None = None  # None: DEFAULT_BUDGET_S, or QUICK_BUDGET_S with quick
    quick: bool = False
    pin: bool = False
    ort_opt: str = DEFAULT_ORT_OPT
    out: Path | None = None  # folder of the calibration's results.jsonl (default: reports/calibrate-<date>-...)
    seed: int = 0
    peaks: bool = True  # also measure the backend's peaks (the evaluation's roofline estimate)
    state: bool = True  # read the machine state before every cell and chain, and scale readings to its median
    attribution: str = PROFILED  # torch-cpu kernel samples (``ATTRIBUTIONS``, ``Readings``); AUTO replays too
    run: RunOptions = field(default_factory=RunOptions)


@dataclass
class CalibrationResult:
    path: Path
    out_dir: Path
    samples: int
    cells: int
    failed_cells: int
    units: int
    wall_s: float
    regressor: str
    cv: dict[str, Any]
    overhead: dict[str, float]
    predictor_fit_s: float = 0.0
    predictor_fit_cpu_s: float = 0.0
    chains: int = 0
    residency: dict[str, Any] | None = None
    state: dict[str, Any] | None = None  # the predictor file's machine-state summary


def budget_for(request: CalibrateRequest) -> float:
    if request.budget_s is not None:
        if request.budget_s <= 0:
            raise LatprofError(f"--budget must be > 0 seconds, got {request.budget_s:g}")
        return float(request.budget_s)
    return QUICK_BUDGET_S if request.quick else DEFAULT_BUDGET_S


def _check(request: CalibrateRequest) -> int:
    if request.backend not in BACKENDS:
        backend_class(request.backend)  # unknown or unavailable: its own one-line error
        raise LatprofError(f"latprof calibrate supports {', '.join(BACKENDS)}; {request.backend} is not one of them")
    cls = backend_class(request.backend)
    validate_threads(request.threads)
    return request.threads or default_threads(cls)


def calibrate(request: CalibrateRequest, on_round: Callable[[int, int, float], None] | None = None) -> CalibrationResult:
    """Measure kernels within the budget and write the predictor file; returns what was done."""
    threads = _check(request)
    budget = budget_for(request)
    out_dir, store = open_output(request.out or default_out_dir("calibrate-"), False, request.run.append)
    env = record_environment(store)
    t0 = time.monotonic()
    peaks: dict[str, Any] | None = None
    if request.peaks:
        from latprof.profile import record_peaks

        record_peaks(store, [(request.backend, threads)], env["hardware_id"], request.pin, request.ort_opt,
                     run=request.run)
        peaks = next((r for r in read_results(store.path, quiet=True).other if r.get("record") == "peaks"), None)
    rng = random.Random(request.seed)
    readings = Readings(request.backend, request.state, request.attribution)
    units = 0
    weights: dict[str, float] | None = None
    worst: list[str] = []
    scarce: dict[str, list[str]] = {}
    pending = coverage_cells(rng)
    unit_s = 0.0
    targets: list[float] = []
    while True:
        elapsed = time.monotonic() - t0
        if units and elapsed + unit_s * 1.1 > budget:
            break
        take = coverage_per_round(len(pending), (budget / 2 - elapsed) / unit_s if units and unit_s else None)
        specs = _next_cells(rng, weights, worst, readings.cells, pending, scarce, take)
        ids = [f"r{units}c{i}" for i in range(len(specs))]
        chains = []
        for i in range(CHAINS_PER_UNIT):
            if not targets:  # every footprint in turn, in a shuffled order
                targets = rng.sample(list(CHAIN_FOOTPRINT_LOG2), len(CHAIN_FOOTPRINT_LOG2))
            chains.append((f"r{units}h{i}", sample_chain(rng, targets.pop())))
        start = time.monotonic()
        with _exports_ahead(request.backend) as exports:
            unit = _unit(request, threads, list(zip(ids, specs)), chains, exports)
            result = execute(Plan([unit]), store, env, request.run)
        unit_s = max(unit_s * 0.5, time.monotonic() - start) if units else time.monotonic() - start
        units += 1
        readings.add(result.rows)
        samples = readings.samples()
        weights, worst = _adapt(samples)
        scarce = scarce_families(samples)
        if on_round:
            on_round(units, len(readings.kernels), time.monotonic() - t0)
    meta = {"budget_s": budget, "wall_s": time.monotonic() - t0, "units": units, "results": str(store.path),
            "quick": request.quick, "seed": request.seed}
    return _write(request.output, readings, env, threads, {"pin": request.pin, "ort_opt": request.ort_opt,
                                                           "allocator": request.run.allocator or "steady"},
                  peaks, meta, out_dir, t0)


def rebuild(readings_paths: Path | list[Path], output: Path, pin: bool = False,
            ort_opt: str = DEFAULT_ORT_OPT, correct_state: bool = True, attribution: str = AUTO) -> CalibrationResult:
    """A predictor from stored calibration readings (each a ``results.jsonl`` or its folder), measuring nothing:
    re-analyse old readings with this latprof's attribution and regressors.

    Several calibrations of one machine, backend and thread count merge into one predictor (their kernel samples,
    cells and chains together): a calibration read during a spell when the machine's memory was slower is then
    averaged with others. Three 15-minute torch-cpu calibrations here predicted the zoo at 46-88% within ±10% one
    by one and at 69-85% merged (docs/predict.md, "Measured"). With ``correct_state`` (the default) readings that
    carry machine-state readings are scaled to the median state of all of them (``latprof.predict.state``)."""
    t0 = time.monotonic()
    paths = [readings_paths] if isinstance(readings_paths, Path) else list(readings_paths)
    readings: Readings | None = None
    env: dict[str, Any] = {}
    peaks, allocator, sources, units, threads = None, "steady", [], 0, 0
    for i, path in enumerate(paths):
        f = read_results(path, quiet=True)
        rows = [r for r in f.results if r.get("kind") == "calibrate"]
        if not rows or not f.environments:
            raise LatprofError(f"{f.path} holds no calibration readings; pass the --out folder of a latprof calibrate "
                               "run")
        backend, n_threads = rows[0]["backend"], int(rows[0]["threads"])
        here = next(iter(f.environments.values()))
        if readings is None:
            readings, env, threads = Readings(backend, correct_state, attribution), here, n_threads
        elif (backend, n_threads) != (readings.backend, threads):
            raise LatprofError(f"{f.path} holds {backend} readings with {n_threads} thread(s), not {readings.backend} "
                               f"with {threads} like {sources[0]}; merge calibrations of one backend and thread count")
        elif here.get("hardware_id") != env.get("hardware_id"):
            raise LatprofError(f"{f.path} was read on hardware_id {here.get('hardware_id')}, {sources[0]} on "
                               f"{env.get('hardware_id')}; merge calibrations of one machine")
        peaks = peaks or next((r for r in f.other if r.get("record") == "peaks"), None)
        allocator = next((r.get("allocator") for r in rows if r.get("allocator")), allocator)
        units += len({r["workload"][1:].split("c")[0].split("h")[0] for r in rows if r["workload"].startswith("r")})
        if len(paths) > 1:  # unit, cell and chain ids restart at r0 in every calibration
            rows = [{**r, "workload": f"s{i}.{r['workload']}"} for r in rows]
        readings.add(rows)
        sources.append(str(f.path))
    assert readings is not None
    meta = {"budget_s": None, "wall_s": None, "units": units, "results": ", ".join(sources),
            "rebuilt_from_readings": True, "merged_calibrations": len(sources)}
    return _write(output, readings, env, threads, {"pin": pin, "ort_opt": ort_opt, "allocator": allocator}, peaks,
                  meta, Path(sources[0]).parent, t0)


# Half the ONNX Runtime profiler's resolution (it reports whole microseconds): a node it read as 0 took less than 1.
MIN_NODE_MS = 0.0005


class Readings:
    """The kernel samples, cells, chains and overhead readings of a calibration, from its result rows.

    On PyTorch eager a kernel sample is its replay alone or its time inside the cell's profiled forward
    (``attribution``; ``AUTO``: in-forward where the readings have it, and ``_write`` builds both). In-forward samples
    and ONNX Runtime's also carry a hot reading (``hot_ms``) where the calibration took one.

    On ONNX Runtime a kernel's latency is its node's median profiled time plus the executor's per-node overhead:
    the median over cells of what a cell's timed latency exceeds its session overhead and profiled node times, per
    node (warm and cold apart). Spreading each cell's own excess over its nodes instead let one cell timed during a
    busy spell put milliseconds on a Reshape (the first ort-mobile calibration here: kernel cross-validation RMSPE
    9.0, 9% of kernels within ±10%; from the same readings with the median overhead: RMSPE 0.52, 54%).
    """

    def __init__(self, backend: str, correct_state: bool = True, attribution: str = AUTO) -> None:
        if attribution not in ATTRIBUTIONS:
            raise LatprofError(f"unknown kernel attribution {attribution!r}; valid: {', '.join(ATTRIBUTIONS)}")
        self.backend = backend
        self.correct_state = correct_state  # scale each reading by the machine state read beside it (state.py)
        self.state_power: StatePower | None = None  # how much of each state factor applies (None: whole)
        self.attribution = attribution  # PyTorch eager only: replayed or in-forward kernel samples
        self.kernels: list[dict[str, Any]] = []
        self.cells: dict[str, dict[str, Any]] = {}
        self.chains: dict[str, dict[str, Any]] = {}
        self.overhead_rows: list[dict[str, Any]] = []
        self.failed = 0
        self.failed_chains = 0

    @property
    def ort(self) -> bool:
        return not self.backend.startswith("torch")

    def add(self, rows: list[dict[str, Any]]) -> None:
        for r in rows:
            kind = r.get("sample")
            if r.get("status") != "ok":
                self.failed += kind == "cell" or r.get("variant") == "cell"
                self.failed_chains += kind == "chain" or r.get("variant") == "chain"
                continue
            if kind == "kernel":
                k = r["kernel"]
                self.kernels.append({"op": k["op"], "label": k["label"], "features": k["features"],
                                     "measured_ms": float(r.get("latency_median_ms") or 0.0),
                                     "warm_measured_ms": r.get("warm_ms"), "profiled_ms": r.get("profiled_ms"),
                                     "warm_profiled_ms": r.get("warm_profiled_ms"),
                                     "hot_profiled_ms": r.get("hot_profiled_ms"), "cell": r["workload"],
                                     "cell_type": r.get("cell_type"), "ci_low_ms": r.get("latency_ci_low_ms"),
                                     "ci_high_ms": r.get("latency_ci_high_ms"), "state": state_of(r),
                                     "replayed": r.get("replayed", True)})
            elif kind == "cell":
                self.cells[r["workload"]] = {**{k: r.get(k) for k in (
                    "cell", "cell_type", "latency_median_ms", "kernels_ms", "module_calls", "kernel_calls",
                    "profiled_ms", "session_ms", "warm_ms", "warm_kernels_ms", "warm_profiled_ms", "hot_ms",
                    "hot_profiled_ms")},
                    "state": state_of(r)}
            elif kind == "chain":
                self.chains[r["workload"]] = {**{k: r.get(k) for k in (
                    "chain", "latency_median_ms", "latency_ci_low_ms", "latency_ci_high_ms", "footprint_bytes",
                    "module_calls", "kernels")}, "state": state_of(r)}
            elif kind == "overhead":
                self.overhead_rows.append({k: r.get(k) for k in ("variant", "latency_median_ms", "module_call_ms",
                                                                 "session_ms", "cold_evict_bytes")})

    @property
    def has_profiles(self) -> bool:
        """PyTorch eager readings that carry in-forward kernel times (calibrations since 2026-12-01)."""
        return not self.ort and any(c.get("profiled_ms") is not None for c in self.cells.values())

    @property
    def has_replays(self) -> bool:
        """Whether the readings hold replayed kernels (always on ONNX Runtime's rows, which are never replays)."""
        return self.ort or any(k.get("replayed", True) for k in self.kernels)

    @property
    def in_forward(self) -> bool:
        """Whether eager kernel samples are the in-forward profiled times (``PROFILED`` or ``AUTO``, where the
        readings have them; readings from before 2026-12-01 hold replays only)."""
        return not self.ort and self.attribution != REPLAY and self.has_profiles

    @property
    def has_hot(self) -> bool:
        """Whether every kernel sample has a hot reading (its cell's forward profiled back to back): ONNX Runtime,
        or in-forward eager samples, of calibrations since 2026-12-01."""
        return (self.ort or self.in_forward) and bool(self.kernels) and all(
            k.get("hot_profiled_ms") is not None for k in self.kernels if k.get("profiled_ms") is not None)

    @property
    def has_warm(self) -> bool:
        """Whether the readings carry warm kernels (calibrations before the residency model read cold only)."""
        key = "warm_profiled_ms" if self.ort else "warm_measured_ms"
        return bool(self.kernels) and all(k.get(key) is not None for k in self.kernels)

    def states(self) -> list[dict[str, float] | None]:
        """The state read before each cell and chain (None where none was)."""
        return [c.get("state") for c in [*self.cells.values(), *self.chains.values()]]

    @property
    def reference_state(self) -> dict[str, float] | None:
        """The calibration's median machine state (its cells' and chains' state readings); None without any."""
        return reference_state(self.states())

    def factors(self, state: dict[str, float] | None, reference: dict[str, float] | None = None) -> StateFactors:
        """How a reading taken at ``state`` compares with the reference, raised to the state power (1, 1 when not
        corrected)."""
        if not self.correct_state:
            return StateFactors()
        f = StateFactors.of(state, reference or self.reference_state)
        return f if self.state_power is None else f.power(self.state_power.beta)

    def normalised_cells(self) -> dict[str, dict[str, Any]]:
        """The cells with their cold readings divided by their cold state factor, their warm readings by the warm
        one and their hot readings by the hot one (``StateFactors.loop``; the session overhead, a warm loop before
        any cell, stays as read)."""
        out = {}
        ref = self.reference_state
        for cell_id, c in self.cells.items():
            f = self.factors(c.get("state"), ref)
            scaled = {k: c[k] / f.cold for k in ("latency_median_ms", "kernels_ms", "profiled_ms")
                      if c.get(k) is not None}
            scaled.update({k: c[k] / f.warm for k in ("warm_ms", "warm_kernels_ms", "warm_profiled_ms")
                           if c.get(k) is not None})
            scaled.update({k: c[k] / f.loop for k in ("hot_ms", "hot_profiled_ms") if c.get(k) is not None})
            out[cell_id] = {**c, **scaled}
        return out

    def node_overhead_ms(self, warm: bool = False, hot: bool = False) -> float:
        """ONNX Runtime: the executor's per-node overhead, median over cells (0 on eager); of the cold readings, the
        warm ones or (``hot``) the cells run back to back. Signed: where the profiler costs a node more than the
        executor does (run back to back, about -1 us per node measured), the samples are lowered by it rather
        than left inflated by the profiler."""
        timed, profiled = (("hot_ms", "hot_profiled_ms") if hot else ("warm_ms", "warm_profiled_ms") if warm
                           else ("latency_median_ms", "profiled_ms"))
        per = [(c[timed] - (c.get("session_ms") or 0.0) - c[profiled]) / c["kernel_calls"]
               for c in self.normalised_cells().values()
               if self.ort and c.get("kernel_calls") and c.get(profiled) is not None and c.get(timed)]
        return statistics.median(per) if per else 0.0

    def samples(self) -> list[dict[str, Any]]:
        """Kernel samples for the regressors: ``latency_ms`` (cold) > 0 and, with warm readings, ``warm_ms`` > 0;
        each reading divided by the state factor of its cell (``state_factors``: warm, cold, hot)."""
        out = []
        node, node_warm = self.node_overhead_ms(), self.node_overhead_ms(warm=True)
        hot = self.has_hot
        node_hot = self.node_overhead_ms(hot=True) if hot else 0.0
        warm = self.has_warm
        in_forward = self.in_forward
        drop = ("replayed", "measured_ms", "warm_measured_ms", "profiled_ms", "warm_profiled_ms", "hot_profiled_ms",
                "state")
        ref = self.reference_state
        for k in self.kernels:
            extra: dict[str, Any] = {}
            f = self.factors(k.get("state"), ref)
            if (self.ort or in_forward) and k.get("profiled_ms") is not None:
                # its time inside its cell's forward, plus the executor's per-node overhead (ORT; 0 on eager,
                # whose context terms come from _overhead)
                ms = max(float(k["profiled_ms"]) / f.cold + node, MIN_NODE_MS)
                extra = {"framework_overhead_ms": node, "profiled_ms": k["profiled_ms"]}
                if warm:
                    extra.update(warm_ms=max(float(k["warm_profiled_ms"]) / f.warm + node_warm, MIN_NODE_MS),
                                 warm_framework_overhead_ms=node_warm, warm_profiled_ms=k["warm_profiled_ms"])
                if warm and hot:
                    extra.update(hot_ms=max(float(k["hot_profiled_ms"]) / f.loop + node_hot, MIN_NODE_MS),
                                 hot_framework_overhead_ms=node_hot, hot_profiled_ms=k["hot_profiled_ms"])
            elif in_forward:  # a kernel of a cell whose profile failed: no in-forward time
                continue
            elif not k.get("replayed", True):  # a repeat in the worker, there only for its in-forward time
                continue
            else:
                ms = k["measured_ms"] / f.cold
                if warm:
                    extra = {"warm_ms": float(k["warm_measured_ms"]) / f.warm}
            if k.get("state") and self.correct_state:
                extra["state_factors"] = [f.warm, f.cold, f.loop]
            if ms > 0 and (not warm or extra["warm_ms"] > 0):
                out.append({**{key: v for key, v in k.items() if key not in drop}, "latency_ms": ms, **extra})
        return out

    def state_summary(self) -> dict[str, Any]:
        """What the predictor file records of the machine state: the reference, whether readings were corrected,
        and how far the state moved."""
        ref = self.reference_state
        power = self.state_power
        return {"reference": ref, "corrected": bool(self.correct_state and ref and (power is None or power.beta > 0)),
                "spread": spread(self.states(), ref), "block": STATE_DESCRIPTION,
                "power": power.as_dict() if power is not None and self.correct_state and ref else None}


def _write(output: Path, readings: Readings, env: dict[str, Any], threads: int, options: dict[str, Any],
           peaks: dict[str, Any] | None, meta: dict[str, Any], out_dir: Path, t0: float) -> CalibrationResult:
    """Fit, choose the regressor, fit the residency curve on the chains, write the predictor file. PyTorch eager
    readings with in-forward kernel times and attribution ``AUTO``: both predictors are built (replayed and
    in-forward samples) and the one whose chains' leave-one-out RMSPE is lower is written, both figures in it."""
    if readings.attribution != AUTO or not readings.has_profiles or not readings.has_replays:
        data, fitted = _build(readings, env, threads, options, peaks, meta)
    else:
        built = {}
        for attribution in (REPLAY, PROFILED):
            readings.attribution = attribution
            built[attribution] = _build(readings, env, threads, options, peaks, meta)
        readings.attribution = AUTO
        scores = {a: (d.get("residency") or {}).get("loo_rmspe") for a, (d, _) in built.items()}
        chosen = min(scores, key=lambda a: float("inf") if scores[a] is None else scores[a])
        data, fitted = built[chosen]
        data["calibration"]["attribution"] = {
            "chosen": chosen, "by": "chains' leave-one-out RMSPE",
            **{a: {"chain_loo_rmspe": scores[a], "chain_fit_rmspe": (d.get("residency") or {}).get("fit_rmspe"),
                   "samples": len(d["samples"]), "kernel_cv_rmspe": d["model"]["cross_validation"][
                       d["model"]["regressor"]]["rmspe"]} for a, (d, _) in built.items()}}
    path = save(data, output)
    return CalibrationResult(path, out_dir, len(data["samples"]), len(readings.cells), readings.failed,
                             int(meta["units"] or 0),
                             time.monotonic() - t0 if meta.get("wall_s") is None else meta["wall_s"],
                             data["model"]["regressor"], data["model"]["cross_validation"], data["overhead"],
                             fitted.fit_s, fitted.fit_cpu_s, len(readings.chains), data.get("residency"),
                             data["state"])


def _build(readings: Readings, env: dict[str, Any], threads: int, options: dict[str, Any],
           peaks: dict[str, Any] | None, meta: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """The predictor file's data from the readings (as their attribution says), and the predictor fitted on it.

    With machine-state readings, first without correcting them: the chains, predicted at the reference state,
    then say how much of its state factor each chain's time followed (``fit_state_power``), and the readings are
    corrected by that power of their factors. On the 2-core AMD VM the whole factor (power 1) made the chains of
    two calibrations fit worse than no correction at all; the fitted powers there were 0.01-0.69 (docs/predict.md,
    "The state power")."""
    if readings.correct_state and readings.reference_state and readings.has_warm and readings.chains:
        readings.state_power = StatePower(0.0, 0)
        # the default regressor, not chosen by cross-validation: only the chains' kernel sums are read from it
        _, uncorrected = _build_once(readings, env, threads, options, peaks, meta, residency=False,
                                     regressor=DEFAULT_REGRESSOR)
        ref = readings.reference_state
        raw = {i: StateFactors.of(c.get("state"), ref) for i, c in readings.chains.items()}
        # Against the chain's kernel sum hot (warm without hot readings), not its residency-mixed prediction: the
        # residency, fitted on these same chains, absorbs part of their drift (5 parameters on 12 chains drifting
        # x0.8..x1.25 in a test took the slope from 1 to 0.09); what it leaves between the sums and the chains
        # depends on the chain's weights, not on the state read before it.
        _, chains = uncorrected.chain_sums(_chain_inputs(readings))
        chains = [c for c in chains if c["id"] in raw and (c.get("predicted_hot_ms") or c.get("predicted_warm_ms"))]
        readings.state_power = fit_state_power(
            [raw[c["id"]] for c in chains],
            [c["measured_ms"] / (c.get("predicted_hot_ms") or c["predicted_warm_ms"]) for c in chains],
            [c["weight_bytes"] for c in chains])
    return _build_once(readings, env, threads, options, peaks, meta)


def _chain_inputs(readings: Readings) -> list[tuple[str, dict[str, Any]]]:
    """The calibration's chains, each with the state factors its kernels are predicted at."""
    ref = readings.reference_state
    return [(i, {**c, "state_factors": readings.factors(c.get("state"), ref)}) for i, c in readings.chains.items()]


def _build_once(readings: Readings, env: dict[str, Any], threads: int, options: dict[str, Any],
                peaks: dict[str, Any] | None, meta: dict[str, Any], residency: bool = True,
                regressor: str | None = None) -> tuple[dict[str, Any], Any]:
    """``_build`` with the readings' state correction as it stands (``residency`` False: kernels and overhead only,
    what the chains' kernel sums need; ``regressor`` given: that one, without the cross-validated choice)."""
    backend = readings.backend
    samples = readings.samples()
    if not samples and not readings.has_replays and readings.attribution == REPLAY:
        raise LatprofError(f"{meta['results']} holds no replayed kernels (calibrated with --attribution profiled); "
                           "rebuild with --attribution profiled or auto")
    if not samples:
        raise LatprofError(f"calibration on {backend} produced no kernel samples ({readings.failed} cell(s) failed); "
                           f"see {meta['results']}")
    regressor, cv = select_regressor(samples) if regressor is None else (regressor, {})
    overhead = _overhead(backend, readings.normalised_cells(), readings.overhead_rows, readings.has_warm,
                         readings.in_forward, readings.has_hot)
    overhead["per_node_ms"] = readings.node_overhead_ms()
    if readings.has_warm:
        overhead["warm_per_node_ms"] = readings.node_overhead_ms(warm=True)
    if readings.has_hot:
        overhead["hot_per_node_ms"] = readings.node_overhead_ms(hot=True)
    data = {
        "schema_version": SCHEMA_VERSION, "kind": KIND, "backend": backend, "threads": threads,
        "hardware_id": env["hardware_id"],
        "backend_settings": {"backend": backend, "threads": threads, **options},
        "backend_options": {"pin": options["pin"], "ort_opt": options["ort_opt"]},
        "software": env.get("software", {}), "created": base_row()["timestamp"],
        "features": list(FEATURES), "model": {"regressor": regressor, "cross_validation": cv},
        "overhead": overhead, "peaks": peaks, "samples": samples,
        "cells": [{"id": k, **v} for k, v in readings.cells.items()], "state": readings.state_summary(),
        "calibration": {**meta, "failed_cells": readings.failed, "failed_chains": readings.failed_chains,
                        # what each cold reading wrote through (latprof.predict.cold); absent from older readings
                        "cold_evict_bytes": sorted({r["cold_evict_bytes"] for r in readings.overhead_rows
                                                    if r.get("cold_evict_bytes")}),
                        "kernel_samples": (PROFILED if readings.in_forward else "replayed" if not readings.ort
                                           else "profiled nodes")},
    }
    from latprof.predict.predictor import Predictor

    fitted = Predictor(data)
    if readings.has_warm and residency:
        fit, chains = fitted.fit_residency(_chain_inputs(readings),
                                           centre_bounds((env.get("hardware") or {}).get("cpu_caches_kib")))
        data["residency"] = fit.as_dict()
        data["chains"] = chains
    return data, fitted


@contextlib.contextmanager
def _exports_ahead(backend: str) -> Iterator[Path | None]:
    """A scratch folder for one unit's exports (``measure_cells.export_ahead``) on ONNX Runtime backends, removed
    after the unit; None on PyTorch eager, which exports nothing."""
    if backend.startswith("torch"):
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="latprof-calib-exports-") as tmp:
        yield Path(tmp)


def _unit(request: CalibrateRequest, threads: int, cells: list[tuple[str, dict[str, Any]]],
          chains: list[tuple[str, dict[str, Any]]] = (), exports: Path | None = None) -> Unit:  # type: ignore[assignment]
    """The round's unit. With ``exports``, its cells and chains are exported there first, in this process, and the
    worker finds them (``measure_cells.export_ahead``)."""
    payload = {"backend": request.backend, "threads": threads, "pin": request.pin, "ort_opt": request.ort_opt,
               "cells": [[i, c] for i, c in cells], "chains": [[i, c] for i, c in chains], "state": request.state,
               "replay": request.attribution != PROFILED}  # eager: replay each kernel alone too
    if exports is not None:
        export_ahead(payload, exports)
        payload["export_cache"] = str(exports)
    templates = [base_row(experiment=f"calibrate:{request.backend}", workload=i, variant=variant,
                          backend=request.backend, threads=threads, batch=1,
                          input_shape="x".join(str(d) for d in c["input"]))
                 for variant, group in (("cell", cells), ("chain", chains)) for i, c in group]
    names = ", ".join(i for i, _ in [*cells, *chains])
    return Unit("calibrate", f"calibrate {request.backend} {names}", payload, templates, time_s=120.0)


def coverage_per_round(pending: int, rounds_to_half: float | None) -> int:
    """How many coverage cells the next round takes: enough to measure them all within the first half of the budget
    (``rounds_to_half``: the rounds left until then at the last round's pace; None before any round), at least half a
    round's cells and at most all but one of them (one is always drawn by kind or as a neighbour). At one per round,
    the ort-mobile calibration p31 (a VM where a round took 45 s: 19 rounds in 900 s) never reached the stride-1
    coverage cells, so it read no channel split larger than a MicroNet's 1x1 one, and the ShuffleNet V2 networks
    were predicted 21-42% high (docs/predict.md, "A slow machine's calibration")."""
    least = min(pending, CELLS_PER_UNIT // 2)
    if rounds_to_half is None or pending <= least:
        return least
    need = math.ceil(pending / max(rounds_to_half, 1.0))
    return min(pending, CELLS_PER_UNIT - 1, max(least, need))


def _next_cells(rng: random.Random, weights: dict[str, float] | None, worst: list[str],
                cells: dict[str, dict[str, Any]], pending: list[dict[str, Any]] | None = None,
                scarce: dict[str, list[str]] | None = None, coverage: int | None = None) -> list[dict[str, Any]]:
    """A round's cells: the next ``coverage`` coverage cells (``pending``, taken from it; by default half the
    round, ``coverage_per_round``), a neighbour of a cell that produced a scarce kernel family
    (``scarce_families``; the family drawn at random, so one no neighbour reproduces does not take every round),
    neighbours of the worst-predicted cells (at most half the round), the rest by kind weighted by error."""
    scarce = scarce or {}
    take = min(len(pending or []), CELLS_PER_UNIT // 2 if coverage is None else coverage)
    out = [pending.pop(0) for _ in range(take)] if pending else []
    families = sorted(scarce)
    if families:
        family = rng.choice(families)
        producers = [cells[c]["cell"] for c in scarce[family] if c in cells and cells[c].get("cell")]
        if producers:
            spec = rng.choice(producers)
            out.append(mutate_cell(spec, rng, producing_blocks(spec, family)))
    near = [cells[c]["cell"] for c in worst if c in cells and cells[c].get("cell")]
    n_near = min(len(near), CELLS_PER_UNIT // 2, max(CELLS_PER_UNIT - len(out) - 1, 0))  # one cell by kind kept
    out += [mutate_cell(spec, rng) for spec in rng.sample(near, n_near)] if n_near else []
    return out + draw_cells(rng, CELLS_PER_UNIT - len(out), weights)


def scarce_families(samples: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Kernel families with fewer than ``MIN_FAMILY_SAMPLES`` samples (below that a family is predicted from its
    median rate, ``latprof.predict.model``), each with the cells that produced it."""
    by_family: dict[str, list[str]] = {}
    for s in samples:
        by_family.setdefault(s["op"], []).append(str(s.get("cell")))
    return {op: list(dict.fromkeys(cells)) for op, cells in by_family.items() if len(cells) < MIN_FAMILY_SAMPLES}


def _adapt(samples: list[dict[str, Any]]) -> tuple[dict[str, float] | None, list[str]]:
    """Per cell kind: mean absolute cross-validated error of its kernels; and the cells of the worst kernels."""
    if len(samples) < 24:
        return None, []
    cv = cross_validate(samples, "random_forest", folds=3)
    rel = np.abs(np.array(cv["relative_errors"]))
    by_kind: dict[str, list[float]] = {}
    for s, e in zip(samples, rel):
        by_kind.setdefault(str(s.get("cell_type")), []).append(float(e))
    weights = {k: float(np.mean(v)) + 0.05 for k, v in by_kind.items()}
    order = np.argsort(-rel)[:10]
    return weights, list(dict.fromkeys(samples[i]["cell"] for i in order))


def _overhead(backend: str, cells: dict[str, dict[str, Any]], rows: list[dict[str, Any]],
              warm: bool = False, in_forward: bool = False, hot: bool = False) -> dict[str, float]:
    """Framework and context terms, measured or fitted on calibration cells, never on a network.

    Eager: a module call costs what an idle module call costs (measured in every worker). Kernels and cells are
    timed after an eviction (``latprof.predict.cold``), but a replayed kernel pays a cold code path too, which a
    forward does not (its ops run back to back): so a cell costs ``context_factor`` x its kernels' sum plus
    ``per_kernel_call_ms`` (negative: the code-cold part of each replay) per kernel call plus its module calls,
    both terms fitted over the cells on relative error (``context_fit``), for the cold readings and (``warm_``
    terms) for the warm ones. A free per-module-call term fitted instead read 0.166 ms per call under load (200x
    the idle call) and inflated networks with many modules.
    With ``in_forward`` (eager kernel samples profiled inside the cells' forwards) the same fit relates each cell to
    its profiled kernels' sum: what a forward costs beyond its aten ops (composite wrappers, Python between modules)
    less what the profiler adds to each op.
    ONNX Runtime: the session's own overhead once per run (a one-node graph's latency); its kernel samples are
    profiled inside the timed cells, so factor 1 and no per-call term."""
    if backend.startswith("torch") and in_forward:
        cells = {i: {**c, "kernels_ms": c.get("profiled_ms"), "warm_kernels_ms": c.get("warm_profiled_ms")}
                 for i, c in cells.items() if c.get("profiled_ms") is not None}
    if backend.startswith("torch"):
        idle = [r["module_call_ms"] for r in rows if r.get("module_call_ms")]
        idle_ms = statistics.median(idle) if idle else 0.0
        use = [c for c in cells.values() if c.get("module_calls") is not None and c.get("kernels_ms")
               and c.get("kernel_calls") and c.get("latency_median_ms")]
        factor, per_call = context_fit(use, idle_ms)
        out = {"per_module_call_ms": idle_ms, "per_run_ms": 0.0, "idle_module_call_ms": idle_ms,
               "context_factor": factor, "per_kernel_call_ms": per_call, "cells_used": float(len(use))}
        if warm:
            warm_cells = [{**c, "kernels_ms": c["warm_kernels_ms"], "latency_median_ms": c["warm_ms"]} for c in use
                          if c.get("warm_kernels_ms") and c.get("warm_ms")]
            out["warm_context_factor"], out["warm_per_kernel_call_ms"] = context_fit(warm_cells, idle_ms)
        if hot:  # the cells run back to back against their hot profiled kernels
            hot_cells = [{**c, "kernels_ms": c["hot_profiled_ms"], "latency_median_ms": c["hot_ms"]} for c in use
                         if c.get("hot_profiled_ms") and c.get("hot_ms")]
            out["hot_context_factor"], out["hot_per_kernel_call_ms"] = context_fit(hot_cells, idle_ms)
        return out
    sessions = [r["session_ms"] for r in rows if r.get("session_ms")]
    return {"per_run_ms": statistics.median(sessions) if sessions else 0.0, "per_module_call_ms": 0.0,
            "context_factor": 1.0, "per_kernel_call_ms": 0.0, "cells_used": float(len(cells))}


def context_fit(cells: list[dict[str, Any]], per_module_call_ms: float) -> tuple[float, float]:
    """(factor, per kernel call ms) with cell ~ factor * kernels_ms + per_call * kernel_calls + module calls x
    ``per_module_call_ms``, minimising the cells' mean absolute relative error (iteratively reweighted least
    squares: a cell read during a busy spell moves it little). (1, 0) without two cells."""
    if len(cells) < 2:
        return 1.0, 0.0
    k = np.array([c["kernels_ms"] for c in cells], dtype=float)
    n = np.array([c["kernel_calls"] for c in cells], dtype=float)
    y = np.array([c["latency_median_ms"] - c["module_calls"] * per_module_call_ms for c in cells], dtype=float)
    whole = np.array([c["latency_median_ms"] for c in cells], dtype=float)
    A = np.column_stack([k, n])
    w = 1.0 / whole
    coef = np.linalg.lstsq(A * w[:, None], y * w, rcond=None)[0]
    for _ in range(30):
        rel = np.abs(A @ coef - y) / whole
        wi = w / np.sqrt(np.maximum(rel, 1e-4))
        coef = np.linalg.lstsq(A * wi[:, None], y * wi, rcond=None)[0]
    return float(coef[0]), float(coef[1])
