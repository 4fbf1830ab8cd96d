"""``Predictor``: a network's latency on one backend from its kernels, without running it.

predicted = sum over the kernels the backend would run of how often it runs x its time in this forward + the
framework overhead measured on this machine: per module call on PyTorch eager (an idle ``nn.Module`` call), per
session run on ONNX Runtime (a one-node graph's latency). A kernel's time in a forward mixes its warm and cold
regressor predictions (``latprof.predict.residency``: the weights' part of cold - warm by the size of the forward's
weights, the activations' part by a constant share), or with hot readings (residency form "hot") runs from its hot
prediction through warm to cold by the forward's weight bytes; each taken in context first (``context_factor`` x the
reading + ``per_kernel_call_ms``, fitted on the calibration cells on PyTorch eager, cold, warm and hot apart; 1 and
0 on ONNX Runtime).
"""

from __future__ import annotations

import functools
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from latprof.errors import LatprofError
from latprof.predict.kernels import Kernel
from latprof.predict.model import KernelModel, sample_targets
from latprof.predict.residency import ChainSums, Residency, activation_bytes, fit_residency, weight_bytes, weight_share
from latprof.predict.state import StateFactors
from latprof.predict.store import check_compatible, read


@functools.lru_cache(maxsize=1)
def this_hardware_id() -> str:
    from latprof.measure import environment

    return environment.collect().hardware_id


@dataclass
class KernelPrediction:
    op: str
    label: str
    count: int
    ms_each: float

    @property
    def ms(self) -> float:
        return self.count * self.ms_each


@dataclass
class Prediction:
    """One model's predicted latency on the predictor's backend, with its parts."""

    model: str
    backend: str
    threads: int
    input_shape: list[int]
    predicted_ms: float
    kernels_ms: float
    overhead_ms: float
    kernels: list[KernelPrediction] = field(default_factory=list)
    blocks: list[dict[str, Any]] = field(default_factory=list)
    predict_s: float = 0.0  # wall time of the prediction itself (kernel extraction + regressors)
    footprint_bytes: float = 0.0  # weights + live activations of one forward (latprof.predict.residency)
    weight_bytes: float = 0.0
    cold_share: float = 1.0  # p(weights): the share of the weights' cold cost paid (0: warm, 1: from memory)
    state_factors: dict[str, float] = field(default_factory=lambda: StateFactors().as_dict())  # 1s: as calibrated
    predicted_now_ms: float | None = None  # at the machine state read now (latprof predict --state-now)
    state_now: dict[str, float] | None = None

    def as_dict(self, kernels: bool = True) -> dict[str, Any]:
        d = asdict(self)
        d["kernels"] = [{**asdict(k), "ms": k.ms} for k in self.kernels] if kernels else []
        return d


class Predictor:
    """A loaded predictor file: the regressors refitted from its samples, the overhead terms, its backend."""

    def __init__(self, data: dict[str, Any], path: str | Path = "") -> None:
        self.data = data
        self.path = str(path)
        self.backend: str = data["backend"]
        self.threads: int = int(data["threads"])
        t0, c0 = time.perf_counter(), time.process_time()
        regressor = data["model"]["regressor"]
        # Warm readings (weights from the last-level cache; a calibration without them predicts every kernel cold),
        # and hot ones (the cell's forward run back to back) where the calibration took them and the residency uses
        # them (form "hot"; before the residency is fitted, to fit it): one fit for all of them.
        uses_hot = (data.get("residency") or {}).get("form", "hot") == "hot"
        self.model = KernelModel(regressor, sample_targets(data["samples"], hot=uses_hot)).fit(data["samples"])
        self.fit_s = time.perf_counter() - t0  # wall: on a busy machine far above the CPU time
        self.fit_cpu_s = time.process_time() - c0
        self.residency = Residency.from_dict(data.get("residency"))
        self._ort_backend: Any = None

    @property
    def has_warm(self) -> bool:
        """Whether the predictor has warm readings (files before them predict every kernel cold)."""
        return "warm_ms" in self.model.targets

    @property
    def reference_state(self) -> dict[str, float] | None:
        """The machine state the predictor predicts at (``latprof.predict.state``); None for files before it."""
        return (self.data.get("state") or {}).get("reference")

    @property
    def state_reading(self) -> dict[str, Any]:
        """How the calibration read the machine state, as a state unit's payload asks it (``measure_state_unit``):
        its engine (PyTorch for files before the field) and, on ONNX Runtime, the backend and its settings."""
        from latprof.predict.state import ENGINE, ONNXRUNTIME, TORCH

        engine = (self.reference_state or {}).get(ENGINE) or TORCH
        if engine != ONNXRUNTIME:
            return {"engine": engine}
        s = self.data.get("backend_options", {})
        return {"engine": engine, "backend": self.backend, "pin": bool(s.get("pin", False)),
                "ort_opt": s.get("ort_opt", "all")}

    @property
    def state_power(self) -> float:
        """How much of a machine-state factor this predictor's readings followed (``fit_state_power``): a state
        given to ``predict`` is applied to this power. 1 for files before the fit (their readings took it whole)."""
        power = (self.data.get("state") or {}).get("power") or {}
        return float(power.get("beta", 1.0))

    @property
    def overhead(self) -> dict[str, float]:
        return self.data["overhead"]

    # ---------------------------------------------------------------- kernels of a model
    def kernels(self, module: nn.Module, input_shape: tuple[int, ...], name: str = "model") -> tuple[list[Kernel], int]:
        """The kernels this backend runs for ``module`` on ``input_shape``, and its module calls (eager)."""
        if self.backend.startswith("torch"):
            from latprof.predict.torch_kernels import torch_kernels

            return torch_kernels(module, (torch.zeros(input_shape, device="meta"),))
        from latprof.predict.ort_kernels import ort_kernels
        from latprof.workloads.registry import Workload

        return ort_kernels(self._ort(), Workload(name, module.eval(), tuple(input_shape), "block", {}, "predict")), 0

    def _ort(self) -> Any:
        if self._ort_backend is None:
            from latprof.backends import BackendOptions, create_backend

            s = self.data.get("backend_options", {})
            self._ort_backend = create_backend(self.backend, BackendOptions(
                self.threads, None, bool(s.get("pin", False)), 1, s.get("ort_opt", "all")))
        return self._ort_backend

    # ---------------------------------------------------------------- prediction
    def predict(self, module: nn.Module, input_shape: tuple[int, ...] | list[int], name: str = "model",
                state: StateFactors | None = None) -> Prediction:
        """Predicted latency of ``module`` on ``input_shape`` (batch first); nothing is run. At the calibration's
        reference machine state, or at ``state`` (``latprof.predict.state``: warm and cold kernel times scaled by
        its factors to the ``state_power``)."""
        return self.predict_at(module, input_shape, name, [state])[0]

    def predict_at(self, module: nn.Module, input_shape: tuple[int, ...] | list[int], name: str,
                   states: list[StateFactors | None]) -> list[Prediction]:
        """One prediction per machine state (None: the reference), from one extraction of the kernels (the costly
        part: a trace, or an ONNX export and session)."""
        t0 = time.perf_counter()
        shape = tuple(int(d) for d in input_shape)
        kernels, module_calls = self.kernels(module, shape, name)
        if not kernels:
            raise LatprofError(f"{name}: no kernels found to predict")
        ops, features = [k.op for k in kernels], [k.features for k in kernels]
        weights = weight_bytes(module)
        footprint = weights + activation_bytes(features)
        share = self.residency.share(self.residency.size(footprint, weights))
        overhead = self.overhead_ms(module_calls)
        out = []
        terms = self.kernel_terms(ops, features)  # the regressors once; each state only scales them
        for state in states:
            hot, warm, cold, shares = at_state(terms, None if state is None else state.power(self.state_power))
            ms = self.residency.mix(warm, cold, footprint=footprint, weights=weights, shares=shares,
                                    kernel_calls=1, hot_ms=hot)  # per kernel call
            preds = [KernelPrediction(k.op, k.label, k.count, float(m)) for k, m in zip(kernels, ms)]
            kernels_ms = float(sum(p.ms for p in preds))
            out.append(Prediction(name, self.backend, self.threads, list(shape), kernels_ms + overhead, kernels_ms,
                                  overhead, preds, predict_s=time.perf_counter() - t0, footprint_bytes=footprint,
                                  weight_bytes=weights, cold_share=share,
                                  state_factors=(state or StateFactors()).as_dict()))
        return out

    def _readings(self, ops: list[str], features: list[dict[str, float]]) -> dict[str, np.ndarray]:
        """Each kernel's predicted time per reading the predictor has (cold ``latency_ms``, ``warm_ms``,
        ``hot_ms``), in context."""
        ms = self.model.predict_all(ops, features)
        prefix = {"latency_ms": "", "warm_ms": "warm_", "hot_ms": "hot_"}
        return {t: self.in_context(ms[:, j], prefix[t]) for j, t in enumerate(self.model.targets)}

    def warm_and_cold(self, ops: list[str], features: list[dict[str, float]]) -> tuple[np.ndarray, np.ndarray]:
        """Each kernel's predicted time in a forward with its weights in the last-level cache, and from memory."""
        r = self._readings(ops, features)
        return r.get("warm_ms", r["latency_ms"]), r["latency_ms"]

    def kernel_terms(self, ops: list[str], features: list[dict[str, float]],
                     state: StateFactors | None = None) -> tuple[Any, ...]:
        """What the residency mixes, per kernel: its hot (None without hot readings), warm and cold time in a
        forward (at the reference state, or scaled to ``state``: hot as warm) and its weight share."""
        r = self._readings(ops, features)
        shares = np.array([weight_share(op, f) for op, f in zip(ops, features)])
        return at_state((r.get("hot_ms"), r.get("warm_ms", r["latency_ms"]), r["latency_ms"], shares), state)

    def fit_residency(self, chains: list[tuple[str, dict[str, Any]]],
                      centre: tuple[float, float] | None = None) -> tuple[Residency, list[dict[str, Any]]]:
        """Fit the residency on calibration chains (``chain_sums``); returns it and, per chain, what was measured
        and predicted warm, cold and mixed."""
        sums, out = self.chain_sums(chains)
        residency = fit_residency(sums, centre)
        for row, chain in zip(out, sums):
            row["predicted_ms"] = residency.chain_ms(chain)  # unfitted (too few chains): cold
        return residency, out

    def chain_sums(self, chains: list[tuple[str, dict[str, Any]]]) -> tuple[list[ChainSums], list[dict[str, Any]]]:
        """Each calibration chain (its kernels, footprint, loop-timed latency, and the ``state_factors`` of the
        machine state read before it: its kernels are predicted at that state) reduced to its kernel sums, and per
        chain what was measured and predicted hot, warm and cold; chains without kernels or a reading are left out."""
        sums, out = [], []
        for chain_id, c in chains:
            ks = c.get("kernels") or []
            if not ks or not c.get("latency_median_ms") or not c.get("footprint_bytes"):
                continue
            ops, features = [k["op"] for k in ks], [k["features"] for k in ks]
            counts = np.array([k.get("count", 1) for k in ks], dtype=float)
            state = c.get("state_factors")
            hot, warm, cold, shares = self.kernel_terms(ops, features, state)
            overhead = self.overhead_ms(int(c.get("module_calls") or 0))
            w = float(counts @ warm) + overhead
            weights = float(c["footprint_bytes"]) - activation_bytes(features)
            sums.append(ChainSums(weights, float(c["latency_median_ms"]), w, float(counts @ (shares * (cold - warm))),
                                  float(counts @ ((1.0 - shares) * (cold - warm))), float(counts.sum()),
                                  0.0 if hot is None else float(counts @ hot) + overhead))
            out.append({"id": chain_id, "footprint_bytes": c["footprint_bytes"], "weight_bytes": weights,
                        "measured_ms": c["latency_median_ms"], "predicted_warm_ms": w,
                        "predicted_hot_ms": sums[-1].hot_ms or None,
                        "predicted_cold_ms": w + sums[-1].weights_delta_ms + sums[-1].activations_delta_ms,
                        "kernel_calls": sums[-1].kernel_calls,
                        "blocks": len(c["chain"]["blocks"]) if c.get("chain") else None,
                        "state_factors": (state or StateFactors()).as_dict()})
        return sums, out

    def in_context(self, isolated_ms: np.ndarray, terms: str = "") -> np.ndarray:
        """A kernel's time in a forward from its isolated reading (cold; ``terms="warm_"``: warm, with the terms
        fitted on the warm cells): factor x ms + the per-call term, never below a tenth of the reading (the per-call
        term is negative: a replay's cold code path)."""
        o = self.overhead
        ms = (float(o.get(f"{terms}context_factor", 1.0)) * isolated_ms
              + float(o.get(f"{terms}per_kernel_call_ms", 0.0)))
        return np.maximum(ms, 0.1 * isolated_ms)

    def overhead_ms(self, module_calls: int) -> float:
        o = self.overhead
        return float(o.get("per_run_ms", 0.0) + module_calls * o.get("per_module_call_ms", 0.0))

    def predict_workload(self, workload: Any, per_block: bool = False,
                         state_now: StateFactors | None = None) -> Prediction:
        """Predict a ``Workload``; with ``per_block``, also each block alone (as ``profile --per-block`` times them);
        with ``state_now``, the network also at that machine state (``predicted_now_ms``, ``state_now``)."""
        if workload.module is None:
            raise LatprofError(f"{workload.name}: prediction needs a PyTorch module (an .onnx file has none)")
        p, *now = self.predict_at(workload.module, workload.input_shape, workload.name,
                                  [None] if state_now is None else [None, state_now])
        if now:
            p.predicted_now_ms, p.state_now = now[0].predicted_ms, now[0].state_factors
        if per_block:
            from latprof.predict.torch_kernels import block_input_shapes

            if not hasattr(workload.module, "blocks"):
                raise LatprofError(f"{workload.name} is not a network with a block decomposition; --per-block needs "
                                   "a zoo network")
            for i, (block_name, module, shape) in enumerate(block_input_shapes(workload.module, workload.input_shape)):
                b = self.predict(module, shape, f"{workload.name}/{block_name}")
                p.blocks.append({"block_index": i, "block": block_name, "input_shape": list(shape),
                                 "predicted_ms": b.predicted_ms, "kernels": len(b.kernels)})
        return p

    def kernel_errors(self) -> np.ndarray:
        """Relative error of the refitted model on its own samples (a sanity figure, not an accuracy claim)."""
        s = self.data["samples"]
        pred = self.model.predict([x["op"] for x in s], [x["features"] for x in s])
        truth = np.array([x["latency_ms"] for x in s])
        return (pred - truth) / truth


def at_state(terms: tuple[Any, ...], state: StateFactors | None) -> tuple[Any, ...]:
    """``Predictor.kernel_terms`` (hot, warm, cold, shares) at ``state``: hot times scaled by its hot factor (warm
    without a hot reading), warm by its warm one, cold by its cold one (None: as they are)."""
    hot, warm, cold, shares = terms
    if state is None:
        return terms
    return None if hot is None else hot * state.loop, warm * state.warm, cold * state.cold, shares


def load(path: str | Path, *, backend: str | None = None, threads: int | None = None,
         check_hardware: bool = True) -> Predictor:
    """Load a predictor file and refit it. A corrupt or foreign file (other hardware_id, or another backend /
    thread count than asked) raises ``LatprofError`` with one line."""
    data = read(path)
    if check_hardware:
        check_compatible(data, path, this_hardware_id(), backend, threads)
    elif backend is not None or threads is not None:
        check_compatible(data, path, data["hardware_id"], backend, threads)
    return Predictor(data, path)


def predict_models(predictor: Predictor, models: list[str], input_shape: tuple[int, ...] | None = None,
                   model_kwargs: dict[str, Any] | None = None, per_block: bool = False,
                   state_now: StateFactors | None = None) -> list[Prediction]:
    """``latprof predict``: each named model built (batch 1 unless ``input_shape`` says otherwise) and predicted;
    with ``state_now``, also at that machine state (``Prediction.predicted_now_ms``)."""
    from latprof.workloads import create_workload

    out = []
    for model in models:
        workload = create_workload(model, input_shape=input_shape, batch=1 if input_shape is None else None,
                                   **(model_kwargs or {}))
        out.append(predictor.predict_workload(workload, per_block, state_now))
    return out
