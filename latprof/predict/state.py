"""The machine's state: one fixed block read cold and warm, so readings taken at different moments can be related.

On a shared machine memory and compute speed drift while a calibration runs: over one 15-minute torch-cpu
calibration here, the cold kernel readings of consecutive cells were off the model in runs, 20% fast for a few
minutes, then 20% slow (cell-mean residuals correlated 0.30-0.52 from one cell to the next, docs/predict.md). A
regressor then learns the drift as if it were the kernels'. So every calibration cell and chain is preceded by one
*state reading*: a fixed inverted-residual block (the zoo's commonest shape, weights and activations of a few hundred
KiB) timed cache-cold and cache-warm exactly as the kernels are (``latprof.predict.cold``). Each reading is divided
by what the state reading beside it shows against the calibration's median state (``StateFactors``): warm readings by
the warm factor, cold ones by the cold factor. The predictor then predicts the *reference state* (the calibration's
median). ``latprof predict --evaluate`` reads the state between its networks too, and scores the predictor both as
calibrated and at the state read beside each measurement (``kernel@state``), so a user sees how much of an error is
the machine having changed since calibration.

Measured on the same readings with and without the scaling (docs/predict.md, "Measured"): +4, +27 and +23 points
of zoo networks within ±10% on a quiet machine (torch-cpu, ort-mobile, torch-cpu), -8 on a loaded one; ``kernel@state`` did not beat
the predictor as calibrated. ``Readings(correct_state=False)`` / ``rebuild(..., correct_state=False)`` read without it.
On the 2-core AMD VM the readings followed only part of their factor (``StatePower``, fitted on the chains, 0.01-0.69
there): each factor is applied to that power (docs/predict.md, "The state power").

Since 2026-12-02 the block is also read *hot* (back to back, nothing evicted, as a network runs; hot readings scale
by that factor, and the power is fitted on it), and on ONNX Runtime calibrations it runs in a session of the
calibrated backend. Measured side by side on the AMD VM (60 rounds in 203 s, docs/predict.md, "The state read
hot, on the backend's engine"): ONNX Runtime networks' times correlated with the block's hot time on ONNX Runtime
at r 0.83-0.92, with its cold and warm times on PyTorch, what the state was, at 0.54-0.72; in two calmer runs the
block cold on ONNX Runtime followed them best (``benchmarks/bench_state_tracking.py``).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from latprof.measure.protocol import MeasureConfig

# Longer than a kernel reading (COLD_CONFIG): one state reading scales every reading of its cell.
STATE_CONFIG = MeasureConfig(target_ci=0.02, max_time_s=0.5, min_samples=9, max_samples=80, min_time_s=0.0,
                             min_sample_time_s=1e-9, warmup_min_s=0.0, warmup_max_s=0.05, warmup_max_batches=5)
# The hot reading: the block in a loop, nothing evicted, as a network runs (shorter: a loop's samples vary less).
STATE_HOT_CONFIG = MeasureConfig(target_ci=0.02, max_time_s=0.3, min_samples=9, min_time_s=0.1, warmup_min_s=0.01,
                                 warmup_max_s=0.05)
STATE_INPUT = (1, 96, 14, 14)
STATE_HIDDEN = 576  # MobileNetV2's 14x14 stage: 96 -> 576 -> 96
STATE_DESCRIPTION = (f"1x1 conv {STATE_INPUT[1]}->{STATE_HIDDEN}, 3x3 depthwise, 1x1 conv {STATE_HIDDEN}->"
                     f"{STATE_INPUT[1]}, each with batch norm, on {'x'.join(map(str, STATE_INPUT))}; median of "
                     "cache-cold, of cache-warm and of back-to-back (hot) calls, on the calibrated backend's engine")
FACTOR_BOUNDS = (0.5, 2.0)  # a state reading beyond these is a broken reading, not a machine state
COLD, WARM, HOT, ENGINE = "state_cold_ms", "state_warm_ms", "state_hot_ms", "state_engine"
TORCH, ONNXRUNTIME = "torch", "onnxruntime"  # what runs the block: PyTorch eager, or the ONNX Runtime backend's session
STATE_EVERY = 4  # evaluated networks between two state readings (each a worker: about 3 s)


def state_block() -> Any:
    """The fixed block: 1x1 expand, 3x3 depthwise, 1x1 project, each with batch norm; seeded weights."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    c, h = STATE_INPUT[1], STATE_HIDDEN
    return nn.Sequential(
        nn.Conv2d(c, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU6(inplace=True),
        nn.Conv2d(h, h, 3, padding=1, groups=h, bias=False), nn.BatchNorm2d(h), nn.ReLU6(inplace=True),
        nn.Conv2d(h, c, 1, bias=False), nn.BatchNorm2d(c),
    ).eval()


class StateReader:
    """Reads the state in a worker: built once, read before every cell (a reading takes about a second). With an
    ONNX Runtime ``backend`` the block runs in a session of it (its options, its pinning), exported once, and is
    timed as the calibration's ONNX Runtime cells are; without, on PyTorch eager at this process's threads. Close
    it (or use it in a ``with``) to release the session."""

    def __init__(self, cold: Any = None, warm: Any = None, backend: Any = None) -> None:
        import torch

        from latprof.predict.cold import Evictor, reader

        self.cold = cold or Evictor()
        self.warm = warm or Evictor.warm()
        self.engine = TORCH if backend is None else ONNXRUNTIME
        self._run: Any = None
        if backend is None:
            module, x = state_block(), torch.randn(STATE_INPUT)

            def call() -> Any:
                with torch.inference_mode():
                    return module(x)

            self.call, self.touch = call, reader(x)
        else:
            from latprof.workloads.registry import Workload

            self._run = backend.prepare(Workload("machine-state", state_block(), STATE_INPUT, "block", {},
                                                 "calibration"))
            run = self._run
            self.call, self.touch = (lambda: run.timer(1)), None  # its input stays bound, as a cell's does

    def read(self) -> dict[str, Any]:
        """``{state_cold_ms, state_warm_ms, state_hot_ms, state_engine}``: the block's median cold, warm and hot
        latency now, and what ran it."""
        from latprof.measure.protocol import measure, wall_clock_timer
        from latprof.predict.cold import cold_timer

        c = measure(cold_timer(self.call, self.cold, self.touch), STATE_CONFIG)
        w = measure(cold_timer(self.call, self.warm, self.touch), STATE_CONFIG)
        h = measure(wall_clock_timer(self.call), STATE_HOT_CONFIG)
        return {COLD: c.stats.median_ms, WARM: w.stats.median_ms, HOT: h.stats.median_ms, ENGINE: self.engine}

    def close(self) -> None:
        if self._run is not None:
            self._run.close()
            self._run = None

    def __enter__(self) -> StateReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def state_of(row: dict[str, Any]) -> dict[str, Any] | None:
    """The state reading a row carries, if any (its hot reading and engine where it has them: readings before
    2026-12-02 were cold and warm, on PyTorch)."""
    if row.get(COLD) and row.get(WARM):
        out: dict[str, Any] = {COLD: float(row[COLD]), WARM: float(row[WARM]), ENGINE: row.get(ENGINE) or TORCH}
        if row.get(HOT):
            out[HOT] = float(row[HOT])
        return out
    return None


@dataclass(frozen=True)
class StateFactors:
    """How a moment's state compares with the reference: warm, cold and hot readings scale by these (1: the
    reference itself, or no state read). ``hot`` is None where the state was read without a hot reading (before
    2026-12-02): hot readings then scale by the warm factor, as they did."""

    warm: float = 1.0
    cold: float = 1.0
    hot: float | None = None

    @classmethod
    def of(cls, state: dict[str, Any] | None, reference: dict[str, Any] | None) -> StateFactors:
        if not state or not reference:
            return cls()
        lo, hi = FACTOR_BOUNDS

        def ratio(key: str) -> float:
            return min(max(state[key] / reference[key], lo), hi)

        return cls(ratio(WARM), ratio(COLD), ratio(HOT) if state.get(HOT) and reference.get(HOT) else None)

    @property
    def loop(self) -> float:
        """The factor of a reading in a loop (hot, or warm without a hot reading)."""
        return self.warm if self.hot is None else self.hot

    @property
    def overall(self) -> float:
        """One factor for the moment: the hot one where it was read (it follows networks run in a loop best), else
        the geometric mean of warm and cold."""
        return self.hot if self.hot is not None else float(np.sqrt(self.warm * self.cold))

    def as_dict(self) -> dict[str, float]:
        return {"warm": self.warm, "cold": self.cold, **({} if self.hot is None else {"hot": self.hot})}

    def power(self, beta: float) -> StateFactors:
        """These factors raised to ``beta`` (``fit_state_power``): 1 applies them whole, 0 not at all."""
        return StateFactors(self.warm ** beta, self.cold ** beta, None if self.hot is None else self.hot ** beta)


MIN_POWER_CHAINS = 8  # fewer chains with a state reading: the factors apply whole (power 1), as before the fit


@dataclass(frozen=True)
class StatePower:
    """How much of what a state reading shows a calibration's readings follow: ``beta`` in [0, 1], the slope of
    log(chain measured / its kernels' sum) on log(state factor) over the calibration's chains, the sums from
    kernels read *without* correction, at the reference state. 1: a chain read when the state block ran 20% slow ran 20%
    slow too, so every reading is divided by its factor whole; 0: the state reading says nothing about the
    readings beside it (a one-second reading on a machine whose noise changes by the second) and dividing by it
    only adds its noise."""

    beta: float
    chains: int
    correlation: float | None = None
    slope: float | None = None  # unclipped

    def as_dict(self) -> dict[str, Any]:
        return {"beta": self.beta, "chains": self.chains, "correlation": self.correlation, "slope": self.slope}


def fit_state_power(factors: list[StateFactors], ratios: list[float], weight_bytes: list[float]) -> StatePower:
    """``StatePower`` from each chain's state factors (against the reference), its measured / kernel-sum ratio at
    the reference state, and its weight bytes. The factor of a chain is its hot one (a chain is timed in a loop),
    or without a hot reading the geometric mean of its warm and cold ones; the slope is a partial one, beside a
    quadratic in log weight bytes: how far a chain runs from its hot kernel sum depends on how much of its weights
    stay cached (``latprof.predict.residency``), which has nothing to do with the state read before it but, over a
    few dozen chains, can lean either way with it. Fewer than ``MIN_POWER_CHAINS`` chains, or factors that do not
    vary: power 1."""
    rows = [(np.log(f.overall), np.log(r), np.log2(max(w, 1.0)))
            for f, r, w in zip(factors, ratios, weight_bytes) if r > 0 and f.warm > 0 and f.cold > 0]
    if len(rows) < MIN_POWER_CHAINS:
        return StatePower(1.0, len(rows))
    x, y, w = (np.array(column) for column in zip(*rows))
    if float(np.var(x)) <= 1e-12:
        return StatePower(1.0, len(rows))
    w = (w - w.mean()) / (w.std() or 1.0)
    design = np.column_stack([np.ones_like(x), x, w, w ** 2])
    slope = float(np.linalg.lstsq(design, y, rcond=None)[0][1])
    others = np.column_stack([np.ones_like(x), w, w ** 2])  # the partial correlation: both sides net of the weights
    rx = x - others @ np.linalg.lstsq(others, x, rcond=None)[0]
    ry = y - others @ np.linalg.lstsq(others, y, rcond=None)[0]
    corr = float(np.corrcoef(rx, ry)[0, 1]) if float(np.var(ry)) > 1e-24 and float(np.var(rx)) > 1e-24 else 0.0
    return StatePower(float(min(max(slope, 0.0), 1.0)), len(rows), corr, slope)


def reference_state(states: Iterable[dict[str, Any] | None]) -> dict[str, Any] | None:
    """The median state of a calibration (None when it read none: calibrations before state readings); its hot
    reading where every state has one. States read on different engines are not one machine's measure: refused."""
    from latprof.errors import LatprofError

    read = [s for s in states if s]
    if not read:
        return None
    engines = sorted({s.get(ENGINE) or TORCH for s in read})
    if len(engines) > 1:
        raise LatprofError(f"these readings read the machine state on {' and '.join(engines)}: one reference needs "
                           "one engine; rebuild from calibrations of one latprof version")
    ref: dict[str, Any] = {COLD: statistics.median(s[COLD] for s in read),
                           WARM: statistics.median(s[WARM] for s in read), ENGINE: engines[0]}
    if all(s.get(HOT) for s in read):
        ref[HOT] = statistics.median(s[HOT] for s in read)
    return ref


def spread(states: Iterable[dict[str, float] | None], reference: dict[str, float] | None) -> dict[str, float]:
    """How far the state moved: 10th and 90th percentile of the cold, warm and (where read) hot factors."""
    f = [StateFactors.of(s, reference) for s in states if s]
    if not f or not reference:
        return {}
    out: dict[str, float] = {"readings": len(f)}
    for name in ("cold", "warm", "hot"):
        values = np.array([getattr(x, name) for x in f if getattr(x, name) is not None])
        if len(values):
            out.update({f"{name}_p10": float(np.percentile(values, 10)),
                        f"{name}_p90": float(np.percentile(values, 90))})
    return out


def measure_state_unit(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """A worker's state reading (``latprof predict --evaluate`` between networks): one ``machine_state`` record, on
    the engine the payload names (``engine``; an ONNX Runtime one on the payload's ``backend`` with its ``pin`` and
    ``ort_opt``, as its calibration read it)."""
    from latprof.backends import BackendError, BackendOptions, create_backend
    from latprof.backends.torch_backends import torch_threads
    from latprof.errors import LatprofError, one_line
    from latprof.rows import Record

    threads = int(payload.get("threads") or 1)
    try:
        with torch_threads(threads, 1):
            backend = None
            if payload.get("engine") == ONNXRUNTIME:
                backend = create_backend(payload["backend"], BackendOptions(
                    threads, None, bool(payload.get("pin", False)), 1, payload.get("ort_opt", "all")))
            with StateReader(backend=backend) as reader:
                state = reader.read()
    except (RuntimeError, ValueError, MemoryError, BackendError, LatprofError, OSError) as exc:
        return [{"record": Record.MACHINE_STATE.value, "status": "error", "error": one_line(exc),
                 "sequence": payload.get("sequence")}]
    return [{"record": Record.MACHINE_STATE.value, "status": "ok", "sequence": payload.get("sequence"),
             "after_units": payload.get("after_units"), "threads": payload.get("threads"), **state}]


class StateLog:
    """The machine-state readings of an evaluation: one before the first network and one after every
    ``STATE_EVERY`` networks and the last, each in a worker (as every reading is), kept in order; read on the
    engine the predictor's calibration read it with (``engine``: the state payload of ``Predictor.state_reading``)."""

    def __init__(self, run: Any, threads: int, engine: dict[str, Any] | None = None) -> None:
        from latprof.run.executors import make_executor

        self.executor = make_executor(run.in_process, run.allocator, run.worker_timeout_s, run.bind_threads)
        self.threads = threads
        self.engine = engine or {"engine": TORCH}
        self.records: list[dict[str, Any]] = []

    def read(self, after_units: int) -> None:
        from latprof.run.executors import WorkerFailed
        from latprof.run.units import Unit

        unit = Unit("state", "machine state", {**self.engine, "threads": self.threads, "sequence": len(self.records),
                                               "after_units": after_units}, [], time_s=30.0)
        try:
            records = self.executor.run(unit)
        except WorkerFailed:
            return  # a missing reading: the networks around it take the next one
        self.records += [r for r in records if r.get("status") == "ok"]

    def after_unit(self, i: int, n: int) -> None:
        if (i + 1) % STATE_EVERY == 0 or i + 1 == n:
            self.read(i + 1)

    def store(self, out_dir: Path) -> None:
        from latprof.results import ResultStore

        ResultStore(Path(out_dir) / "results.jsonl").append_many(self.records)


def state_near(states: list[dict[str, Any]], j: int | list[int],
               reference: dict[str, float] | None) -> StateFactors | None:
    """The state factors of the network run ``j``-th: the geometric mean of the last reading before it and the
    first after it (either alone at the ends); with several positions (a network measured in several passes), the
    geometric mean over all of them. None without readings or a reference."""
    if not states or not reference:
        return None
    near = []
    for position in [j] if isinstance(j, int) else j:
        before = [s for s in states if s.get("after_units", 0) <= position]
        after = [s for s in states if s.get("after_units", 0) > position]
        near += [x for x in (before[-1] if before else None, after[0] if after else None) if x is not None]
    from scipy.stats import gmean

    factors = [StateFactors.of(s, reference) for s in near]
    hot = [f.hot for f in factors if f.hot is not None]
    return StateFactors(float(gmean([f.warm for f in factors])), float(gmean([f.cold for f in factors])),
                        float(gmean(hot)) if len(hot) == len(factors) else None)


def read_state_now(reference: dict[str, Any] | None, threads: int, run: Any = None,
                   engine: dict[str, Any] | None = None) -> StateFactors:
    """The machine's state now against ``reference`` (``latprof predict --state-now``), read in a worker on
    ``engine`` (``Predictor.state_reading``)."""
    from latprof.errors import LatprofError
    from latprof.run.engine import RunOptions

    if not reference:
        raise LatprofError("this predictor has no reference machine state (calibrated before latprof read one); "
                           "recalibrate, or predict without --state-now")
    log = StateLog(run or RunOptions(), threads, engine)
    log.read(0)
    if not log.records:
        raise LatprofError("the machine-state reading failed in its worker; predict without --state-now")
    return StateFactors.of(log.records[0], reference)
