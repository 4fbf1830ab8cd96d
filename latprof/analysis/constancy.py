"""The FLOPs-constancy rule of the guideline experiments, defined once (the sweep warns, the report notes).

ShuffleNet V2 holds FLOPs constant across the variants of a guideline; where a spec's channel numbers cannot, the
spread of the variants' ``mult_adds`` is reported: ``max / min - 1``, flagged above ``FLOPS_TOLERANCE``.
"""

from __future__ import annotations

from collections.abc import Iterable

FLOPS_TOLERANCE = 0.03


def mult_adds_spread(values: Iterable[float]) -> float | None:
    """``max / min - 1`` of the positive values (None with fewer than two)."""
    xs = [float(v) for v in values if v and v > 0]
    if len(xs) < 2:
        return None
    return max(xs) / min(xs) - 1.0


def flops_not_constant(values: Iterable[float], tolerance: float = FLOPS_TOLERANCE) -> float | None:
    """The spread when it exceeds ``tolerance``, else None."""
    spread = mult_adds_spread(values)
    return spread if spread is not None and spread > tolerance else None
