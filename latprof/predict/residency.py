"""Cache residency: where between its warm and its cold kernels a forward pass sits, as a function of its size.

A kernel is read twice at calibration (``latprof.predict.cold``): *warm* (the core's L2 evicted, so its weights come
from the last-level cache, as in a forward whose weights stay there between forwards) and *cold* (every cache
evicted, weights from memory). A network run in a loop, as ``latprof profile`` measures it, keeps what fits of its
footprint in the last-level cache from one forward to the next: a small network reads near its warm kernels, one
whose weights exceed the cache near its cold kernels, and the ones between somewhere between. So

    per kernel call: warm + p(S) x (cold - warm) + per_kernel_call_ms,
    p(S) = floor + (1 - floor) x logistic((log2 S - centre) / width)

with ``S`` the forward's footprint in bytes (``footprint_bytes``). The parameters are fitted on calibration
*chains* (sequences of the zoo's blocks, long enough to span footprints from well inside to well beyond the
last-level cache, each timed in a loop as a network is), never on a zoo network. ``floor`` may go below 0: a
network small enough for the core's own L2 reads faster than its warm kernels. ``per_kernel_call_ms`` is what a
kernel call costs in a loop beyond what the evicted cell readings put on it (their code paths start cold after
every eviction; a network run in a loop keeps its code hot): the chains are the only readings taken as a network
is, so it is fitted there.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from torch import nn

from latprof.predict.kernels import Kernel

BYTES_PER_VALUE = 4  # float32 everywhere the predictor works
MIN_CHAINS = 4  # fewer chains than this: no fit, every forward read cold (p = 1)


def footprint_bytes(module: nn.Module, kernels: list[Kernel]) -> float:
    """What one forward touches: every weight and buffer once, plus the activations live at once (the largest
    output twice: an op's input and output; a forward frees and reuses the rest)."""
    weights = sum(t.numel() for t in module.parameters()) + sum(t.numel() for t in module.buffers())
    largest = max((float(k.features.get("out_numel", 0.0)) for k in kernels), default=0.0)
    return float(weights + 2 * largest) * BYTES_PER_VALUE


@dataclass
class Residency:
    """p(S): the share of the cold-minus-warm difference a forward of footprint S pays."""

    centre_log2: float = 0.0
    width_log2: float = 1.0
    floor: float = 1.0  # 1: always cold (no chains to fit on)
    per_kernel_call_ms: float = 0.0
    chains: int = 0
    fit_rmspe: float | None = None  # over the chains, after the fit
    fit_within_10: float | None = None

    def share(self, footprint: float) -> float:
        z = (math.log2(max(footprint, 1.0)) - self.centre_log2) / max(self.width_log2, 1e-3)
        return self.floor + (1.0 - self.floor) / (1.0 + math.exp(-max(min(z, 60.0), -60.0)))

    def mix(self, warm_ms: float | np.ndarray, cold_ms: float | np.ndarray, footprint: float,
            kernel_calls: float = 0.0) -> float | np.ndarray:
        """A forward's time (or each kernel's, from arrays with ``kernel_calls`` 1) of footprint ``footprint``."""
        return warm_ms + self.share(footprint) * (cold_ms - warm_ms) + kernel_calls * self.per_kernel_call_ms

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Residency:
        if not d:
            return cls()
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


MAX_PER_CALL_MS = 0.05  # bounds of the loop's per-kernel-call term (a dispatcher round trip is microseconds)


def fit_residency(points: list[tuple[float, float, float, float, float]]) -> Residency:
    """Fit p(S) and the per-call term on chains, each (footprint bytes, measured ms, predicted warm ms, predicted
    cold ms, kernel calls), minimising their relative errors with a soft-L1 loss (one chain read during a busy
    spell moves the fit little)."""
    pts = [p for p in points if p[0] > 0 and p[1] > 0 and p[2] > 0 and p[3] > 0]
    if len(pts) < MIN_CHAINS:
        return Residency(chains=len(pts))
    from scipy.optimize import least_squares

    s = np.log2(np.array([p[0] for p in pts]))
    m, w, c, n = (np.array([p[i] for p in pts], dtype=float) for i in (1, 2, 3, 4))

    def curve(x: np.ndarray) -> np.ndarray:
        centre, width, floor, _ = x
        return floor + (1.0 - floor) / (1.0 + np.exp(-np.clip((s - centre) / width, -60, 60)))

    def residuals(x: np.ndarray) -> np.ndarray:
        return (w + curve(x) * (c - w) + x[3] * n - m) / m

    lo = [float(s.min()) - 2.0, 0.25, -1.5, -MAX_PER_CALL_MS]
    hi = [float(s.max()) + 2.0, 4.0, 1.0, MAX_PER_CALL_MS]
    best = None
    for start in np.linspace(lo[0] + 1.0, hi[0] - 1.0, 7):  # the loss has local minima along the centre
        r = least_squares(residuals, [start, 1.0, 0.0, 0.0], bounds=(lo, hi), loss="soft_l1", f_scale=0.05,
                          x_scale="jac")
        if best is None or r.cost < best.cost:
            best = r
    assert best is not None
    rel = residuals(best.x)
    return Residency(float(best.x[0]), float(best.x[1]), float(best.x[2]), float(best.x[3]), len(pts),
                     float(np.sqrt(np.mean(rel ** 2))), float(np.mean(np.abs(rel) <= 0.10)))
