"""Cache residency: where between its warm and its cold kernels each kernel of a forward pass sits.

A kernel is read twice at calibration (``latprof.predict.cold``): *warm* (the core's L2 evicted, so its operands
come from the last-level cache) and *cold* (every cache evicted, operands from memory). In a network run in a loop,
as ``latprof profile`` measures it, the two kinds of operand behave differently:

- a kernel's *weights* were last touched one forward ago: they are still in the last-level cache when all the
  forward's weights fit there, and come from memory when they do not. So the weights' part of the cold-minus-warm
  difference is paid in proportion p(W), W the forward's weight bytes (``weight_bytes``);
- its *activations* were written by the kernel just before: wherever the weights stand, they are as near as the
  forward's own traffic leaves them, a constant share ``activation_factor`` of their part of the difference.

So, per kernel call, with s the kernel's weight share of the bytes it moves (``weight_share``):

    warm + (p(W) x s + activation_factor x (1 - s)) x (cold - warm) + per_kernel_call_ms,
    p(W) = floor + (1 - floor) x logistic((log2 W - centre) / width)

The parameters are fitted on calibration *chains* (sequences of the zoo's blocks spanning footprints from well
inside to well beyond the last-level cache, each timed in a loop as a network is), never on a zoo network.
``floor`` may go below 0: weights small enough for the core's own L2 read faster than warm. ``per_kernel_call_ms``
(what a kernel call costs in a loop beyond its evicted reading) is kept only when it lowers the chains'
leave-one-out error.

**Hot, warm and cold** (form ``"hot"``, calibrations since 2026-12-01 that profile each cell's forward three ways):
warm is not where a forward in a loop starts. Its L2 eviction also clears the code and whatever of the weights the
core's L2 would keep, and the calibration chains timed in a loop ran at 0.4-0.9x their warm kernel sums on the
480 MiB-L3 VM (median 0.7 on ort-mobile), which the split form could only express with a negative floor and a
negative activation share: ``(p(W) x s + a x (1 - s)) x (cold - warm)`` below zero, and most so for the kernels with
the largest cold-minus-warm, so a fully connected layer (s about 1) read 0.2x its time in a forward and grouped 1x1
convolutions 0.45x. So each cell's forward is also profiled *hot* (run back to back, nothing evicted) and a kernel's
time in a forward is

    hot + q(W) x (warm - hot) + p(W) x s x (cold - warm) + per_kernel_call_ms,
    q(W) = logistic((log2 W - hot_centre) / hot_width),  p(W) = logistic((log2 W - centre) / width)

both curves from 0 to 1: nothing below the hot reading, nothing above cold. The activations need no term of their
own there: every in-forward reading finds a kernel's input where the op before it left it.

The first residency model (predictor schema 3) blended each whole kernel by the forward's whole footprint (weights
plus the largest activation twice, ``footprint_bytes``). On the zoo it over-predicted small networks by 10-40%:
their activations stay cached however large the footprint (docs/predict.md, "Measured"). Such files still read
(``form`` "whole").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np
from torch import nn

from latprof.predict.kernels import Kernel

BYTES_PER_VALUE = 4  # float32 everywhere the predictor works
# A kernel's mixed time is never below this share of its warm time (``Residency.mix``; False: unbounded, for
# comparison): the negative per-kernel-call term alone took MicroNet M0's hundreds of tiny kernels towards zero.
KERNEL_FLOOR = True
MIN_WARM_SHARE = 0.1
MIN_CHAINS = 4  # fewer chains than this: no fit, every forward read cold (p = 1)
WHOLE, SPLIT, HOT = "whole", "split", "hot"
WEIGHTED_OPS = ("conv", "gemm", "addmm", "matmul")  # kernels that read weights (lower-cased substrings of op names)


def weight_bytes(module: nn.Module) -> float:
    """Every weight and buffer of a forward, once."""
    return float(sum(t.numel() for t in module.parameters()) + sum(t.numel() for t in module.buffers())) \
        * BYTES_PER_VALUE


def activation_bytes(features: list[dict[str, float]]) -> float:
    """The activations live at once: the largest output twice (an op's input and output; a forward frees and
    reuses the rest)."""
    return 2.0 * max((float(f.get("out_numel", 0.0)) for f in features), default=0.0) * BYTES_PER_VALUE


def footprint_bytes(module: nn.Module, kernels: list[Kernel]) -> float:
    """What one forward touches: its weights plus its live activations."""
    return weight_bytes(module) + activation_bytes([k.features for k in kernels])


def weight_share(op: str, features: dict[str, float]) -> float:
    """The share of a kernel's memory traffic that is weights: what its analytic memory access counts beyond its
    input and output (and the tensor a fused ``+Add`` reads); 0 for kernels without weights."""
    if not any(s in op.lower() for s in WEIGHTED_OPS):
        return 0.0
    total = float(features.get("mem_access", 0.0))
    if total <= 0:
        return 0.0
    out = float(features.get("out_numel", 0.0))
    operands = float(features.get("in_numel", 0.0)) + out * (2.0 if "+Add" in op else 1.0)
    return min(max(total - operands, 0.0) / total, 1.0)


class ChainSums(NamedTuple):
    """One chain, reduced to what the fit needs (times in ms, summed over its kernel calls, overhead included in
    ``warm_ms``)."""

    weight_bytes: float
    measured_ms: float
    warm_ms: float
    weights_delta_ms: float  # the weights' part of cold - warm
    activations_delta_ms: float  # the activations' part
    kernel_calls: float
    hot_ms: float = 0.0  # the hot sum, overhead included (0: no hot readings)


@dataclass
class Residency:
    """Where each kernel of a forward sits between warm and cold (module docstring)."""

    centre_log2: float = 0.0
    width_log2: float = 1.0
    floor: float = 1.0  # 1: always cold (no chains to fit on)
    per_kernel_call_ms: float = 0.0
    chains: int = 0
    fit_rmspe: float | None = None  # over the chains, after the fit
    fit_within_10: float | None = None
    form: str = WHOLE  # WHOLE: schema-3 files (and no fit); SPLIT: weights and activations apart
    activation_factor: float = 1.0  # 1 with no fit, as the floor: every kernel cold
    loo_rmspe: float | None = None  # the chains' leave-one-out RMSPE of the form kept
    loo_rmspe_without_call_term: float | None = None
    loo_rmspe_with_call_term: float | None = None
    centre_bounds_log2: list[float] | None = None  # where the centre was allowed (centre_bounds), None: unbounded
    hot_centre_log2: float = 0.0  # form HOT: q(W), from hot (0) to warm (1)
    hot_width_log2: float = 1.0
    loo_rmspe_split: float | None = None  # chains with hot sums: each form's leave-one-out RMSPE, the lower kept
    loo_rmspe_hot: float | None = None

    def hot_share(self, weights: float | np.ndarray) -> float | np.ndarray:
        """q: how far from hot towards warm a forward of ``weights`` bytes runs (form ``HOT``)."""
        z = (np.log2(np.maximum(weights, 1.0)) - self.hot_centre_log2) / max(self.hot_width_log2, 1e-3)
        q = 1.0 / (1.0 + np.exp(-np.clip(z, -60.0, 60.0)))
        return float(q) if np.ndim(q) == 0 else q

    def share(self, size: float | np.ndarray) -> float | np.ndarray:
        """p: the share of the weights' cold cost a forward of weight bytes (``form`` whole: footprint) pays; of one
        size, or of an array of them."""
        z = (np.log2(np.maximum(size, 1.0)) - self.centre_log2) / max(self.width_log2, 1e-3)
        p = self.floor + (1.0 - self.floor) / (1.0 + np.exp(-np.clip(z, -60.0, 60.0)))
        return float(p) if np.ndim(p) == 0 else p

    def size(self, footprint: float, weights: float) -> float:
        """The size p is read at: the weight bytes, or the whole footprint for a schema-3 fit."""
        return weights if self.form in (SPLIT, HOT) else footprint

    def mix(self, warm_ms: float | np.ndarray, cold_ms: float | np.ndarray, *, footprint: float, weights: float,
            shares: float | np.ndarray = 1.0, kernel_calls: float = 0.0,
            hot_ms: float | np.ndarray | None = None) -> float | np.ndarray:
        """Each kernel's time in the forward (arrays of kernels, ``kernel_calls`` 1), given each kernel's weight
        share (and, form ``HOT``, its hot time); a schema-3 fit blends whole kernels (every share 1)."""
        p = self.share(self.size(footprint, weights))
        if self.form == HOT:
            if hot_ms is None:
                raise ValueError("a hot residency needs each kernel's hot time")
            mixed = (hot_ms + self.hot_share(weights) * (np.asarray(warm_ms) - hot_ms)
                     + p * np.asarray(shares) * (np.asarray(cold_ms) - warm_ms)
                     + kernel_calls * self.per_kernel_call_ms)
            return np.maximum(mixed, MIN_WARM_SHARE * np.asarray(hot_ms)) if KERNEL_FLOOR else mixed
        if self.form == SPLIT:
            factor = p * np.asarray(shares) + self.activation_factor * (1.0 - np.asarray(shares))
        else:
            factor = p
        mixed = warm_ms + factor * (cold_ms - warm_ms) + kernel_calls * self.per_kernel_call_ms
        if not KERNEL_FLOOR:
            return mixed
        return np.maximum(mixed, MIN_WARM_SHARE * np.asarray(warm_ms))

    def chain_ms(self, c: ChainSums) -> float | np.ndarray:
        """A chain's predicted time from its sums (``ChainSums`` of arrays: each chain's): mixing its kernels one
        by one, without ``mix``'s per-kernel floor at ``MIN_WARM_SHARE`` of warm (the fit is over sums; the floor
        binds only where the per-kernel-call term is negative and a kernel tiny). Unfitted (floor and
        activation_factor 1), every chain reads cold."""
        if self.form == HOT:
            return (c.hot_ms + self.hot_share(c.weight_bytes) * (c.warm_ms - c.hot_ms)
                    + self.share(c.weight_bytes) * c.weights_delta_ms + c.kernel_calls * self.per_kernel_call_ms)
        return (c.warm_ms + self.share(c.weight_bytes) * c.weights_delta_ms
                + self.activation_factor * c.activations_delta_ms + c.kernel_calls * self.per_kernel_call_ms)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Residency:
        if not d:
            return cls()
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


MAX_PER_CALL_MS = 0.05  # bounds of the loop's per-kernel-call term (a dispatcher round trip is microseconds)
FLOOR_BOUNDS = (-1.5, 1.0)
ACTIVATION_BOUNDS = (-1.5, 1.5)
CENTRE_STARTS = 7  # the loss has local minima along the centre
HOT_STARTS = 4  # form HOT: a 4 x 4 grid of (centre, hot centre) starts


def centre_bounds(caches_kib: dict[str, Any] | None) -> tuple[float, float] | None:
    """Where, in log2 bytes of weights, a forward's weights can move from cache to memory: between one core's L2
    and what a cold reading writes through (twice the last-level cache, at most ``cold.COLD_EVICT_CAP_BYTES``;
    None when the machine's caches are unknown: the chains alone bound it). Without this the fit may put the move
    below the L2, where two fits of equal chain error predict small networks 20% apart (docs/predict.md,
    "Measured")."""
    from latprof.predict.cold import COLD_EVICT_CAP_BYTES

    if not caches_kib:
        return None
    l2, llc = float(caches_kib.get("L2") or 0), float(max(caches_kib.get("L3") or 0, caches_kib.get("L2") or 0))
    if l2 <= 0 or llc <= 0:
        return None
    return float(np.log2(l2 * 1024)), float(np.log2(min(2 * llc * 1024, COLD_EVICT_CAP_BYTES)))


def _fit(chains: list[ChainSums], call_term: bool, start: np.ndarray | None = None,
         centre: tuple[float, float] | None = None, form: str = SPLIT) -> np.ndarray:
    """Least squares on the chains' relative errors, soft-L1 (one chain read during a busy spell moves it little):
    [centre, width, floor, activation_factor, per_kernel_call_ms] (form ``HOT``: [centre, width, hot_centre,
    hot_width, per_kernel_call_ms]); the centre within ``centre`` when given."""
    from scipy.optimize import least_squares

    arrays = ChainSums(*(np.array(column, dtype=float) for column in zip(*chains)))  # every chain at once

    def residuals(x: np.ndarray) -> np.ndarray:
        return _residency(x, [], True, form).chain_ms(arrays) / arrays.measured_ms - 1.0

    s = np.log2(arrays.weight_bytes)
    q = MAX_PER_CALL_MS if call_term else 1e-12
    near = float(s.min()) - 2.0, float(s.max()) + 2.0
    c_lo, c_hi = near
    if centre is not None:  # within the bounds and near the chains; within the bounds alone if those miss them
        both = max(c_lo, centre[0]), min(c_hi, centre[1])
        c_lo, c_hi = both if both[0] < both[1] else centre
    if form == HOT:  # q(W) anywhere near the chains
        lo, hi = [c_lo, 0.25, near[0], 0.25, -q], [c_hi, 4.0, near[1], 4.0, q]
        grid = np.linspace(0.2, 0.8, HOT_STARTS)
        starts = [start] if start is not None else [
            [lo[0] + a * (hi[0] - lo[0]), 1.0, lo[2] + b * (hi[2] - lo[2]), 1.0, 0.0] for a in grid for b in grid]
    else:
        lo = [c_lo, 0.25, FLOOR_BOUNDS[0], ACTIVATION_BOUNDS[0], -q]
        hi = [c_hi, 4.0, FLOOR_BOUNDS[1], ACTIVATION_BOUNDS[1], q]
        starts = [start] if start is not None else [
            [c, 1.0, 0.0, 0.0, 0.0] for c in np.linspace(lo[0] + 1.0, hi[0] - 1.0, CENTRE_STARTS)]
    best = None
    for x0 in starts:
        r = least_squares(residuals, np.clip(x0, lo, hi), bounds=(lo, hi), loss="soft_l1", f_scale=0.05,
                          x_scale="jac")
        if best is None or r.cost < best.cost:
            best = r
    assert best is not None
    return best.x


def _residency(x: np.ndarray, chains: list[ChainSums], call_term: bool, form: str = SPLIT) -> Residency:
    """The residency of parameters ``x`` (``_fit``'s order for ``form``), with its fit figures over ``chains``
    when given."""
    per_call = float(x[4]) if call_term else 0.0
    if form == HOT:
        r = Residency(float(x[0]), float(x[1]), 0.0, per_call, len(chains), form=HOT, activation_factor=0.0,
                      hot_centre_log2=float(x[2]), hot_width_log2=float(x[3]))
    else:
        r = Residency(float(x[0]), float(x[1]), float(x[2]), per_call, len(chains), form=SPLIT,
                      activation_factor=float(x[3]))
    if chains:
        rel = np.array([r.chain_ms(c) / c.measured_ms - 1.0 for c in chains])
        r.fit_rmspe, r.fit_within_10 = float(np.sqrt(np.mean(rel ** 2))), float(np.mean(np.abs(rel) <= 0.10))
    return r


def _loo_errors(chains: list[ChainSums], call_term: bool, full: np.ndarray,
                centre: tuple[float, float] | None = None, form: str = SPLIT) -> np.ndarray:
    """Each chain's relative error when predicted by the fit on all the others (started from the fit on all)."""
    rel = []
    for i, c in enumerate(chains):
        x = _fit(chains[:i] + chains[i + 1:], call_term, start=full, centre=centre, form=form)
        rel.append(_residency(x, [c], call_term, form).chain_ms(c) / c.measured_ms - 1.0)
    return np.array(rel)


def _rmspe(errors: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(errors))))


def _fit_form(chains: list[ChainSums], centre: tuple[float, float] | None,
              form: str) -> tuple[Residency, np.ndarray]:
    """One form fitted with and without the per-kernel-call term, the one of lower leave-one-out error kept; with
    its chains' leave-one-out errors."""
    fits = {term: _fit(chains, term, centre=centre, form=form) for term in (False, True)}
    errors = {term: _loo_errors(chains, term, x, centre, form) for term, x in fits.items()}
    loo = {term: _rmspe(e) for term, e in errors.items()}
    keep = loo[True] < loo[False]
    r = _residency(fits[keep], chains, keep, form)
    r.loo_rmspe, r.loo_rmspe_without_call_term, r.loo_rmspe_with_call_term = loo[keep], loo[False], loo[True]
    r.centre_bounds_log2 = list(centre) if centre else None
    return r, errors[keep]


def clearly_better(errors: np.ndarray, than: np.ndarray) -> bool:
    """Whether ``errors`` beat ``than`` (the same chains' leave-one-out errors under another form) by more than one
    standard error of their paired difference in squared error: a lower leave-one-out RMSPE by less is what the
    next calibration's chains would reverse."""
    d = np.square(errors) - np.square(than)
    return bool(d.mean() < -d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else bool(d.mean() < 0)


def fit_residency(chains: list[ChainSums], centre: tuple[float, float] | None = None) -> Residency:
    """Fit the residency on chains, with and without the per-kernel-call term; keep the one whose leave-one-out
    error over the chains is lower. Chains with hot sums are also fitted in form ``HOT``, kept unless the split
    form's leave-one-out errors are ``clearly_better`` (both RMSPEs recorded): the hot form bounds every kernel
    between its hot and cold readings, while the split form fits such chains with a negative floor and activation
    share (p26 ort-mobile, one set of readings and state correction: floor -1.0, activation share -0.26, chains'
    LOO 0.1043 against the hot form's 0.1052, and 62% of the zoo within ±10% against 73%; p25 torch-cpu 42%
    against 50%; docs/predict.md, "The state power").
    ``centre``: bounds of the centre (``centre_bounds``)."""
    chains = [c for c in chains if c.weight_bytes > 0 and c.measured_ms > 0 and c.warm_ms > 0]
    if len(chains) < MIN_CHAINS:
        return Residency(chains=len(chains))
    split, split_errors = _fit_form(chains, centre, SPLIT)
    if not all(c.hot_ms > 0 for c in chains):
        return split
    hot, hot_errors = _fit_form(chains, centre, HOT)
    kept = split if clearly_better(split_errors, than=hot_errors) else hot
    kept.loo_rmspe_split, kept.loo_rmspe_hot = split.loo_rmspe, hot.loo_rmspe
    return kept
