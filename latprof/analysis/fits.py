"""Does FLOPs (``mult_adds``) or memory access cost (``mem_access``) predict latency? Linear fits and rank correlation.

R² of a least-squares line says how well a linear cost model explains latency; Spearman ρ says whether the counts at
least order the workloads the way the clock does. Both come from scipy.stats.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as sps

PREDICTORS = ("mult_adds", "mem_access")


@dataclass(frozen=True)
class LatencyFit:
    """latency_ms ≈ slope * x + intercept over ``n`` workloads, with R² and Spearman ρ."""

    predictor: str
    n: int
    slope_ms: float
    intercept_ms: float
    r2: float
    spearman_rho: float
    spearman_p: float

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def fit_latency(predictor: str, x: Sequence[float], latency_ms: Sequence[float]) -> LatencyFit | None:
    """Fit latency against one count; ``None`` when there is nothing to fit (fewer than 3 points or constant x)."""
    xs = np.asarray(x, dtype=float)
    ys = np.asarray(latency_ms, dtype=float)
    keep = np.isfinite(xs) & np.isfinite(ys)
    xs, ys = xs[keep], ys[keep]
    if len(xs) < 3 or np.ptp(xs) == 0:
        return None
    line = sps.linregress(xs, ys)
    if np.ptp(ys) == 0:
        rho, p = float("nan"), float("nan")
    else:
        res = sps.spearmanr(xs, ys)
        rho, p = float(res.statistic), float(res.pvalue)
    return LatencyFit(predictor, int(len(xs)), float(line.slope), float(line.intercept), float(line.rvalue**2), rho, p)


def better_predictor(fits: dict[str, LatencyFit | None], margin: float = 0.02) -> tuple[str | None, str]:
    """Which count predicts latency better, and a sentence saying so (by R², with Spearman ρ beside it)."""
    a, b = fits.get("mult_adds"), fits.get("mem_access")
    if a is None or b is None:
        return None, "Not enough workloads with both counts to compare the predictors."

    def desc(f: LatencyFit) -> str:
        rho = "n/a" if math.isnan(f.spearman_rho) else f"{f.spearman_rho:.2f}"
        return f"R² {f.r2:.2f}, Spearman ρ {rho}"

    detail = f"mem_access: {desc(b)}; mult_adds: {desc(a)}; {a.n} workloads."
    if abs(a.r2 - b.r2) <= margin:
        return None, f"mult_adds and mem_access predict latency about equally well here ({detail})"
    winner = "mem_access" if b.r2 > a.r2 else "mult_adds"
    loser = "mult_adds" if winner == "mem_access" else "mem_access"
    rank_note = ""
    rw, rl = (b, a) if winner == "mem_access" else (a, b)
    if not (math.isnan(rw.spearman_rho) or math.isnan(rl.spearman_rho)) and rw.spearman_rho < rl.spearman_rho - margin:
        rank_note = f" — though {loser} orders the workloads better (higher Spearman ρ)"
    return winner, f"{winner} predicts latency better than {loser} here{rank_note} ({detail})"
