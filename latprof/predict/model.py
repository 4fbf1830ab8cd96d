"""The kernel regressors: one per kernel family, refitted from the stored samples whenever a predictor is loaded.

Each family with enough samples gets its own regressor over ``latprof.predict.kernels.FEATURES``, predicting the
log of the kernel's latency (errors are relative, as the evaluation's are); when every sample of the family does
work, the log of its latency *per unit of work*, multiplied back by the kernel's work and never below the family's
fastest reading: a forest predicts only within the targets it was fitted on, so a kernel larger than every sample
of its family read as the largest sample (ResNet-18's residual convolutions on ort-mobile: eight calls at 3.6 ms
in all, the network -55%; docs/predict.md). A rarer family scales its own readings by work (``work``: its median
ms per multiply-add, element-wise op and memory access), or takes its median reading when it does no work; only a
family never sampled falls back to one regressor over all samples with the family as an extra feature. That
fallback had predicted ShuffleNet's stem max-pool (one sample in a calibration) at 0.21 ms against 2.3 ms
measured; scaled from its one reading, 2.1 ms. Candidates are scikit-learn's random forest and
gradient boosting; calibration picks the one with the lower cross-validated error on its own kernel samples among
those whose refit (warm and cold models, all samples) takes at most ``LOAD_BUDGET_CPU_S`` of CPU time, since every
load refits (``select_regressor``), and the file records the choice and the figures.
"""

from __future__ import annotations

import math
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from latprof.errors import LatprofError
from latprof.predict.kernels import feature_vector

MIN_FAMILY_SAMPLES = 8
RATE_TARGET = True  # families whose samples all do work: regress log(ms / work) (False: log ms, for comparison)
REGRESSORS = ("random_forest", "gradient_boosting")
DEFAULT_REGRESSOR = "random_forest"
# Sized so a refit of a few thousand samples, warm and cold, stays well under a second on one core
# (benchmarks/bench_predictor.py): 16 trees cross-validated as 25 did on 3513 torch-cpu samples (RMSPE 0.227 vs
# 0.228) at two thirds of the fit time. Gradient boosting's fit grows with the samples (5.5 s CPU for both models
# on those 3513), so it is chosen only where its refit fits LOAD_BUDGET_CPU_S.
LOAD_BUDGET_CPU_S = 0.5
REGRESSOR_PARAMS: dict[str, dict[str, Any]] = {
    "random_forest": {"n_estimators": 16, "min_samples_leaf": 1, "max_features": 0.6, "random_state": 0, "n_jobs": 1},
    "gradient_boosting": {"n_estimators": 150, "learning_rate": 0.08, "max_depth": 4, "subsample": 0.9,
                          "random_state": 0},
    # Not a dependency: benchmarks/bench_predictor.py compares it when installed (calibration picks among REGRESSORS).
    "lightgbm": {"n_estimators": 200, "learning_rate": 0.08, "num_leaves": 15, "min_child_samples": 3,
                 "random_state": 0, "verbose": -1, "n_jobs": 1},
}


def _make(name: str) -> Any:
    if name == "lightgbm":
        try:
            from lightgbm import LGBMRegressor
        except ImportError:
            raise LatprofError("regressor lightgbm needs the lightgbm package (pip install lightgbm)") from None
        return LGBMRegressor(**REGRESSOR_PARAMS[name])
    try:
        from sklearn.ensemble import GradientBoostingRegressor, RandomForestRegressor
    except ImportError:
        raise LatprofError("the latency predictor needs scikit-learn (pip install scikit-learn)") from None
    if name not in REGRESSOR_PARAMS:
        raise LatprofError(f"unknown regressor {name!r}; valid: {', '.join(REGRESSORS)}")
    cls = RandomForestRegressor if name == "random_forest" else GradientBoostingRegressor
    return cls(**REGRESSOR_PARAMS[name])


def work(features: dict[str, float]) -> float:
    """What a kernel's time scales with when its family has too few samples for a regressor: its multiply-adds,
    element-wise operations and memory accesses together."""
    return float(features.get("mult_adds", 0.0) + features.get("elementwise_ops", 0.0)
                 + features.get("mem_access", 0.0))


def _family_code(op: str) -> float:
    return float(zlib.crc32(op.encode()) % 10007)


@dataclass
class KernelModel:
    """Per-family regressors of log latency (ms): of each sample's ``target`` (``latency_ms``, the cold reading, or
    ``warm_ms``)."""

    regressor: str = DEFAULT_REGRESSOR
    target: str = "latency_ms"
    families: dict[str, Any] = field(default_factory=dict)
    fallback: Any = None
    constant: dict[str, float] = field(default_factory=dict)  # families with too few samples for any regressor
    rate: dict[str, float] = field(default_factory=dict)  # log ms per unit of work, per family (``work``)
    # families predicted per unit of work (``RATE_TARGET``) -> log ms of their fastest reading, the prediction's floor
    per_work: dict[str, float] = field(default_factory=dict)

    def fit(self, samples: list[dict[str, Any]]) -> KernelModel:
        by: dict[str, list[dict[str, Any]]] = {}
        for s in samples:
            by.setdefault(s["op"], []).append(s)
        self.families, self.constant, self.rate, self.per_work = {}, {}, {}, {}
        for op, group in by.items():
            log_ms = np.log([s[self.target] for s in group])
            works = np.array([work(s["features"]) for s in group])
            self.constant[op] = float(np.median(log_ms))
            if np.all(works > 0):
                self.rate[op] = float(np.median(log_ms - np.log(works)))
            if len(group) >= MIN_FAMILY_SAMPLES:
                X = np.array([feature_vector(s["features"]) for s in group])
                y = log_ms
                if RATE_TARGET and op in self.rate:
                    self.per_work[op] = float(log_ms.min())
                    y = log_ms - np.log(works)
                self.families[op] = _make(self.regressor).fit(X, y)
        if len(samples) >= MIN_FAMILY_SAMPLES:
            X = np.array([[*feature_vector(s["features"]), _family_code(s["op"])] for s in samples])
            y = np.array([math.log(s[self.target]) for s in samples])
            self.fallback = _make(self.regressor).fit(X, y)
        return self

    def predict(self, ops: list[str], features: list[dict[str, float]]) -> np.ndarray:
        """Predicted latency (ms) of each kernel."""
        out = np.zeros(len(ops))
        groups: dict[str, list[int]] = {}
        for i, op in enumerate(ops):
            groups.setdefault(op, []).append(i)
        for op, idx in groups.items():
            X = np.array([feature_vector(features[i]) for i in idx])
            works = np.array([work(features[i]) for i in idx])
            if op in self.families:
                out[idx] = self.families[op].predict(X)
                if op in self.per_work:  # a kernel that does no work gets the family's floor
                    out[idx] = np.maximum(out[idx] + np.log(np.maximum(works, 1e-30)), self.per_work[op])
            elif op in self.rate and np.all(works > 0):  # a rare family: its own rate
                out[idx] = self.rate[op] + np.log(works)
            elif op in self.constant:
                out[idx] = self.constant[op]
            elif self.fallback is not None:
                out[idx] = self.fallback.predict(np.column_stack([X, np.full(len(idx), _family_code(op))]))
            else:  # never sampled, and too few samples for any regressor: 1 ms
                out[idx] = 0.0
        return np.exp(out)


def cross_validate(samples: list[dict[str, Any]], regressor: str, folds: int = 4, seed: int = 0) -> dict[str, Any]:
    """K-fold error of the kernel model on its own samples: relative errors, RMSPE, share within ±10%, per family."""
    if len(samples) < 2 * folds:
        return {"regressor": regressor, "n": len(samples), "rmspe": None, "within_10": None, "families": {}}
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(samples))
    rel = np.zeros(len(samples))
    for f in range(folds):
        test = order[f::folds]
        train = np.setdiff1d(order, test)
        model = KernelModel(regressor).fit([samples[i] for i in train])
        pred = model.predict([samples[i]["op"] for i in test], [samples[i]["features"] for i in test])
        truth = np.array([samples[i]["latency_ms"] for i in test])
        rel[test] = (pred - truth) / truth
    families: dict[str, dict[str, float]] = {}
    for op in sorted({s["op"] for s in samples}):
        idx = [i for i, s in enumerate(samples) if s["op"] == op]
        families[op] = {"n": len(idx), "rmspe": float(np.sqrt(np.mean(rel[idx] ** 2))),
                        "mean_abs": float(np.mean(np.abs(rel[idx])))}
    return {"regressor": regressor, "n": len(samples), "rmspe": float(np.sqrt(np.mean(rel ** 2))),
            "within_10": float(np.mean(np.abs(rel) <= 0.10)), "relative_errors": rel.tolist(), "families": families}


def refit_cpu_s(samples: list[dict[str, Any]], regressor: str) -> float:
    """CPU time of what every load does: fit the cold and (when the samples carry warm readings) the warm model."""
    c0 = time.process_time()
    KernelModel(regressor).fit(samples)
    if samples and all("warm_ms" in s for s in samples):
        KernelModel(regressor, "warm_ms").fit(samples)
    return time.process_time() - c0


def select_regressor(samples: list[dict[str, Any]]) -> tuple[str, dict[str, dict[str, Any]]]:
    """The candidate with the lower cross-validated RMSPE among those that refit within ``LOAD_BUDGET_CPU_S`` (the
    fastest to refit when none does), and every candidate's figures."""
    results = {}
    for name in REGRESSORS:
        r = cross_validate(samples, name)
        r.pop("relative_errors", None)
        r["refit_cpu_s"] = refit_cpu_s(samples, name)
        results[name] = r
    scored = [(r["rmspe"], n) for n, r in results.items()
              if r["rmspe"] is not None and r["refit_cpu_s"] <= LOAD_BUDGET_CPU_S]
    if scored:
        return min(scored)[1], results
    timed = [(r["refit_cpu_s"], n) for n, r in results.items() if r["rmspe"] is not None]
    return (min(timed)[1] if timed else DEFAULT_REGRESSOR), results
