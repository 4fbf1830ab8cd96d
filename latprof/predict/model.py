"""The kernel regressors: one per kernel family, refitted from the stored samples whenever a predictor is loaded.

Each family with enough samples gets its own regressor over ``latprof.predict.kernels.FEATURES``, predicting the
log of the kernel's latency (errors are relative, as the evaluation's are); when every sample of the family does
work, the log of its latency *per unit of work*, multiplied back by the kernel's work and never below the family's
fastest reading: a forest predicts only within the targets it was fitted on, so a kernel larger than every sample
of its family read as the largest sample (ResNet-18's residual convolutions on ort-mobile: eight calls at 3.6 ms
in all, the network -55%; docs/predict.md). A rarer family scales its own readings by work (``work``: its median
ms per multiply-add, element-wise op and memory access), or takes its median reading when it does no work; only a
family never sampled falls back to one regressor over all samples with the family as an extra feature. A rare or
never-sampled *fused* family (ONNX Runtime's ``nchwc.Conv+Add``: a residual add fused into the convolution before
it) is predicted from its base family's regressor instead (``borrowed``), times the median ratio of its own
readings to that prediction: p17's one ``nchwc.Conv+Add`` reading, a 150k multiply-add convolution, scaled by work
to MobileNet V2's projections predicted them at 2.6x their profiled time. That
fallback had predicted ShuffleNet's stem max-pool (one sample in a calibration) at 0.21 ms against 2.3 ms
measured; scaled from its one reading, 2.1 ms. Candidates are scikit-learn's random forest and
gradient boosting; calibration picks the one with the lower cross-validated error on its own kernel samples among
those whose refit (every reading the samples carry, all samples) takes at most ``LOAD_BUDGET_CPU_S`` of CPU time,
since every load refits (``select_regressor``), and the file records the choice and the figures. The cold, warm and
hot readings are fitted together, one multi-output forest per family: three single-output forests and an eager
fallback refitted p18's 5206 torch-cpu samples in 1.21 s CPU, the joint fit with the fallback left to first use in
0.30 s (docs/predict.md, "One fit for three readings").
"""

from __future__ import annotations

import itertools
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
# A family without multiply-adds (copies, element-wise ops, reorders) whose samples span this ratio of work has a
# marginal cost per unit of work that other such families may borrow beyond their own largest sample (``KernelModel``).
SLOPE_SPAN = 100.0
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


def borrowed(op: str, fitted: dict[str, Any]) -> str | None:
    """The family a rare fused family is predicted from (``KernelModel.fit``): of the families left by dropping some
    of its fused parts (ONNX Runtime's ``nchwc.Conv+Add+Relu`` -> ``nchwc.Conv+Relu``, ``nchwc.Conv+Add``,
    ``nchwc.Conv``), the one with a regressor that keeps the most parts; None for an unfused family or none fitted."""
    head, *parts = op.split("+")
    for keep in range(len(parts) - 1, -1, -1):
        for kept in itertools.combinations(parts, keep):
            base = "+".join((head, *kept))
            if base in fitted:
                return base
    return None


def marginal_line(works: np.ndarray, ms: np.ndarray, top: int = 64,
                  ceiling: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per column of ``ms``: a line ms = a + b * work through the family's ``top`` largest samples (Theil-Sen: the
    median of pairwise slopes, never below 0; the intercept the median residual), what a kernel beyond every sample
    costs at the margin. Scaling the largest samples' ms per unit of work instead assumes no fixed cost: p20's
    ort-mobile Splits were all under 1024 elements at about 7 us each, and ShuffleNet V2's 100k-element splits
    read 800 us each scaled by work (profiled: 6.5 us). ``ceiling``: the slope is at most that (per column), and
    the intercept is the median residual at the slope taken."""
    order = np.argsort(works)[-top:]
    w, t = works[order], ms[order]
    i, j = np.triu_indices(len(w), 1)
    ok = w[j] > w[i]
    if not ok.any():
        return np.median(t, axis=0), np.zeros(t.shape[1])
    b = np.maximum(np.median((t[j[ok]] - t[i[ok]]) / (w[j[ok]] - w[i[ok]])[:, None], axis=0), 0.0)
    if ceiling is not None:
        b = np.minimum(b, ceiling)
    a = np.median(t - w[:, None] * b, axis=0)
    return a, b


def _family_code(op: str) -> float:
    return float(zlib.crc32(op.encode()) % 10007)


class _PerTarget:
    """One single-output regressor per target, for a regressor without a multi-output form (gradient boosting)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.models: list[Any] = []

    def fit(self, X: np.ndarray, Y: np.ndarray) -> _PerTarget:
        self.models = [_make(self.name).fit(X, Y[:, j]) for j in range(Y.shape[1])]
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.column_stack([m.predict(X) for m in self.models])


def _fit(name: str, X: np.ndarray, Y: np.ndarray) -> Any:
    """A fitted regressor of every column of ``Y`` at once: one multi-output forest (one fit, splits shared by the
    cold, warm and hot readings, which move together; a third of the CPU time of three forests), or one model per
    column where the regressor has no multi-output form."""
    if Y.shape[1] == 1:
        return _make(name).fit(X, Y[:, 0])
    if name == "random_forest":
        return _make(name).fit(X, Y)
    return _PerTarget(name).fit(X, Y)


def _predict(model: Any, X: np.ndarray, n_targets: int) -> np.ndarray:
    return np.asarray(model.predict(X)).reshape(len(X), n_targets)


@dataclass
class KernelModel:
    """Per-family regressors of log latency (ms) of each sample's ``targets`` (``latency_ms``, the cold reading;
    ``warm_ms``; ``hot_ms``), fitted together: every load refits them, so one fit serves all three."""

    regressor: str = DEFAULT_REGRESSOR
    targets: tuple[str, ...] = ("latency_ms",)
    families: dict[str, Any] = field(default_factory=dict)
    # per family, one entry per target: families with too few samples for any regressor take their median (log ms)
    constant: dict[str, np.ndarray] = field(default_factory=dict)
    rate: dict[str, np.ndarray] = field(default_factory=dict)  # log ms per unit of work, per family (``work``)
    # families predicted per unit of work (``RATE_TARGET``) -> log ms of their fastest reading, the prediction's floor
    per_work: dict[str, np.ndarray] = field(default_factory=dict)
    # rare fused families (``base+Add``, ``base+Relu``, ...) -> (their base family, log of their readings over the
    # base's prediction for the same shapes, per target): ``borrowed``
    borrow: dict[str, tuple[str, np.ndarray]] = field(default_factory=dict)
    # families predicted per unit of work -> (their largest sampled work, a robust line ms = a + b * work per target):
    # beyond that work a kernel is predicted no higher than the line (``marginal_line``)
    beyond: dict[str, tuple[float, np.ndarray, np.ndarray]] = field(default_factory=dict)
    # families none of whose samples multiply-adds (data movement and element-wise ops), and the median marginal cost
    # per unit of work of those whose samples span ``SLOPE_SPAN`` (None with fewer than two): such a family's line
    # takes the lower of its own slope and that one (its intercept refitted through its samples), and caps its
    # predictions at every size, not only beyond its largest sample
    movement: set[str] = field(default_factory=set)
    movement_slope: np.ndarray | None = None
    _samples: list[dict[str, Any]] = field(default_factory=list, repr=False)
    _fallback: Any = field(default=None, repr=False)

    def fit(self, samples: list[dict[str, Any]]) -> KernelModel:
        by: dict[str, list[dict[str, Any]]] = {}
        for s in samples:
            by.setdefault(s["op"], []).append(s)
        self.families, self.constant, self.rate, self.per_work, self.borrow = {}, {}, {}, {}, {}
        self.beyond, self.movement, self.movement_slope = {}, set(), None
        self._samples, self._fallback = samples, None
        spanning, works_of = [], {}
        logs = {op: np.log([[s[t] for t in self.targets] for s in group]) for op, group in by.items()}
        for op, group in by.items():
            log_ms = logs[op]
            works = works_of[op] = np.array([work(s["features"]) for s in group])
            self.constant[op] = np.median(log_ms, axis=0)
            if np.all(works > 0):
                self.rate[op] = np.median(log_ms - np.log(works)[:, None], axis=0)
            if len(group) >= MIN_FAMILY_SAMPLES:
                X = np.array([feature_vector(s["features"]) for s in group])
                Y = log_ms
                if RATE_TARGET and op in self.rate:
                    self.per_work[op] = log_ms.min(axis=0)
                    self.beyond[op] = (float(works.max()), *marginal_line(works, np.exp(log_ms)))
                    Y = log_ms - np.log(works)[:, None]
                    if not any(s["features"].get("mult_adds", 0.0) for s in group):
                        self.movement.add(op)
                        if works.max() >= SLOPE_SPAN * works.min():
                            spanning.append(self.beyond[op][2])
                self.families[op] = _fit(self.regressor, X, Y)
        if len(spanning) >= 2:
            self.movement_slope = np.median(np.array(spanning), axis=0)
            for op in self.movement:  # its line again, at most at that slope (the intercept through its samples)
                works = works_of[op]
                self.beyond[op] = (float(works.max()), *marginal_line(works, np.exp(logs[op]),
                                                                      ceiling=self.movement_slope))
        for op, group in by.items():
            base = borrowed(op, self.families) if op not in self.families else None
            if base is not None:
                base_ms = self.predict_all([base] * len(group), [s["features"] for s in group])
                self.borrow[op] = (base, np.median(logs[op] - np.log(base_ms), axis=0))
        return self

    @property
    def fallback(self) -> Any:
        """One regressor over all samples with the family as an extra feature, for a family never sampled; fitted
        on first use (most networks never need it, and it is the largest fit)."""
        if self._fallback is None and len(self._samples) >= MIN_FAMILY_SAMPLES:
            X = np.array([[*feature_vector(s["features"]), _family_code(s["op"])] for s in self._samples])
            Y = np.log([[s[t] for t in self.targets] for s in self._samples])
            self._fallback = _fit(self.regressor, X, Y)
        return self._fallback

    def predict_all(self, ops: list[str], features: list[dict[str, float]]) -> np.ndarray:
        """Predicted latency (ms) of each kernel (rows) for each target (columns)."""
        n_t = len(self.targets)
        out = np.zeros((len(ops), n_t))
        groups: dict[str, list[int]] = {}
        for i, op in enumerate(ops):
            groups.setdefault(op, []).append(i)
        for op, idx in groups.items():
            X = np.array([feature_vector(features[i]) for i in idx])
            works = np.array([work(features[i]) for i in idx])
            if op in self.families:
                out[idx] = _predict(self.families[op], X, n_t)
                if op in self.per_work:  # a kernel that does no work gets the family's floor
                    out[idx] = np.maximum(out[idx] + np.log(np.maximum(works, 1e-30))[:, None], self.per_work[op])
                    top, a, b = self.beyond[op]
                    # beyond every sample, never above the family's marginal line; a data-movement family drawn at
                    # the pooled slope, never above it at any size (its forest interpolates a rate per unit of work
                    # between small samples, all fixed cost, and large ones)
                    far = works > (0.0 if op in self.movement and self.movement_slope is not None else top)
                    if far.any():
                        line = np.log(np.maximum(a + b * works[far, None], 1e-30))
                        out[np.asarray(idx)[far]] = np.minimum(out[np.asarray(idx)[far]], line)
            elif op in self.borrow or (op not in self.constant and borrowed(op, self.families)):
                # a rare fused family: its base family's prediction x its own ratio to it (never sampled: x 1)
                base, log_ratio = self.borrow.get(op) or (borrowed(op, self.families), np.zeros(n_t))
                out[idx] = np.log(self.predict_all([base] * len(idx), [features[i] for i in idx])) + log_ratio
            elif op in self.rate and np.all(works > 0):  # a rare family: its own rate
                out[idx] = self.rate[op] + np.log(works)[:, None]
            elif op in self.constant:
                out[idx] = self.constant[op]
            elif self.fallback is not None:
                out[idx] = _predict(self.fallback, np.column_stack([X, np.full(len(idx), _family_code(op))]), n_t)
            else:  # never sampled, and too few samples for any regressor: 1 ms
                out[idx] = 0.0
        return np.exp(out)

    def predict(self, ops: list[str], features: list[dict[str, float]], target: str | None = None) -> np.ndarray:
        """Predicted latency (ms) of each kernel for one target (the first by default)."""
        return self.predict_all(ops, features)[:, self.targets.index(target) if target else 0]


def sample_targets(samples: list[dict[str, Any]], hot: bool = True) -> tuple[str, ...]:
    """The readings every sample carries, cold first: what a load fits (hot only where the residency uses it)."""
    extra = ("warm_ms", "hot_ms") if hot else ("warm_ms",)
    targets = ["latency_ms"]
    for t in extra:
        if not samples or not all(t in s for s in samples):
            break
        targets.append(t)
    return tuple(targets)


def cross_validate(samples: list[dict[str, Any]], regressor: str, folds: int = 4, seed: int = 0) -> dict[str, Any]:
    """K-fold error of the kernel model on its own samples, fitted on every reading the samples carry as a load
    fits them: relative errors of the cold reading, RMSPE, share within ±10%, per family; RMSPE per reading."""
    if len(samples) < 2 * folds:
        return {"regressor": regressor, "n": len(samples), "rmspe": None, "within_10": None, "families": {}}
    targets = sample_targets(samples)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(samples))
    rel = np.zeros((len(samples), len(targets)))
    for f in range(folds):
        test = order[f::folds]
        train = np.setdiff1d(order, test)
        model = KernelModel(regressor, targets).fit([samples[i] for i in train])
        pred = model.predict_all([samples[i]["op"] for i in test], [samples[i]["features"] for i in test])
        truth = np.array([[samples[i][t] for t in targets] for i in test])
        rel[test] = (pred - truth) / truth
    by_target = {t: float(np.sqrt(np.mean(rel[:, j] ** 2))) for j, t in enumerate(targets)}
    rel = rel[:, 0]
    families: dict[str, dict[str, float]] = {}
    for op in sorted({s["op"] for s in samples}):
        idx = [i for i, s in enumerate(samples) if s["op"] == op]
        families[op] = {"n": len(idx), "rmspe": float(np.sqrt(np.mean(rel[idx] ** 2))),
                        "mean_abs": float(np.mean(np.abs(rel[idx])))}
    return {"regressor": regressor, "n": len(samples), "rmspe": float(np.sqrt(np.mean(rel ** 2))),
            "within_10": float(np.mean(np.abs(rel) <= 0.10)), "rmspe_by_reading": by_target,
            "relative_errors": rel.tolist(), "families": families}


def refit_cpu_s(samples: list[dict[str, Any]], regressor: str) -> float:
    """CPU time of what every load does: fit the models of every reading the samples carry."""
    c0 = time.process_time()
    KernelModel(regressor, sample_targets(samples)).fit(samples)
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
