"""Guideline verdicts from interleaved measurements.

For each non-baseline variant the spec says whether the guideline predicts it ``slower`` or ``faster`` than the
baseline. A variant *confirms* the prediction when both hold:
  - the 95% CI of its paired speed ratio (baseline median / variant median, bootstrap over interleaved rounds and,
    with several worker processes, over processes) lies entirely on the predicted side of 1, and
  - the 95% CIs of the two medians do not overlap (README, "Guideline verdicts"; the stricter of the two).
It *contradicts* the prediction when the same two conditions hold on the other side. It shows **no effect** when the
ratio's CI lies entirely within ``1 ± margin`` (an equivalence test in the manner of TOST: the difference, if any, is
smaller than the margin; default 5%). Otherwise it is *unclear*: the CI is too wide to tell.

The guideline **holds** when no variant contradicts, none is unclear, and at least one confirms (a variant with no
effect does not refute it: the guideline predicts an ordering, and a difference below the margin is not measured
as one); **does not hold** when any variant contradicts (the predicted ordering is confidently reversed); has **no
effect** when every variant shows no effect; and is **inconclusive** otherwise — only that one means "too noisy".

Claims are judged by the same rules. A claim that is a *curve* (a spec with ``curve = true``: MobileNet's width
multiplier α and resolution ρ, EfficientNet's compound scaling, depth at equal FLOPs) predicts an ordering along its
variants, so each variant's outcome is taken against the *previous* variant (its paired ratio and latency CIs), the
first step against the baseline: the curve holds only when every step moves the predicted way, and a step that
reverses it (a thinner MobileNet that is not faster than the wider one before it) makes it not hold, even where
every point is still faster than the baseline.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

HOLDS = "holds"
DOES_NOT_HOLD = "does not hold"
NO_EFFECT = "no effect"
INCONCLUSIVE = "inconclusive"
VERDICTS = (HOLDS, DOES_NOT_HOLD, NO_EFFECT, INCONCLUSIVE)
DECIDED = (HOLDS, DOES_NOT_HOLD, NO_EFFECT)

CONFIRMS = "confirms"
CONTRADICTS = "contradicts"
EQUIVALENT = "no effect"
UNCLEAR = "unclear"

DEFAULT_EQUIVALENCE_MARGIN = 0.05


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def above(self, other: Interval) -> bool:
        return self.low > other.high

    def width(self) -> float:
        return self.high - self.low


def variant_outcome(
    expect: str,
    ratio_ci: Interval,
    baseline_latency_ci: Interval,
    variant_latency_ci: Interval,
    margin: float = DEFAULT_EQUIVALENCE_MARGIN,
) -> str:
    """``confirms`` / ``contradicts`` / ``no effect`` / ``unclear`` for one variant against the baseline."""
    if expect not in ("slower", "faster"):
        raise ValueError(f"expect must be 'slower' or 'faster', got {expect!r}")
    slower = ratio_ci.high < 1.0 and variant_latency_ci.above(baseline_latency_ci)
    faster = ratio_ci.low > 1.0 and baseline_latency_ci.above(variant_latency_ci)
    if (slower and expect == "slower") or (faster and expect == "faster"):
        return CONFIRMS
    if slower or faster:
        return CONTRADICTS
    if margin > 0 and 1.0 - margin <= ratio_ci.low and ratio_ci.high <= 1.0 + margin:
        return EQUIVALENT
    return UNCLEAR


def guideline_verdict(outcomes: Iterable[str]) -> str:
    """Combine the variants' outcomes into the guideline's verdict on one backend and scale (see module doc)."""
    seen = list(outcomes)
    if not seen:
        return INCONCLUSIVE
    if any(o == CONTRADICTS for o in seen):
        return DOES_NOT_HOLD
    if any(o == UNCLEAR for o in seen):
        return INCONCLUSIVE
    if any(o == CONFIRMS for o in seen):
        return HOLDS
    return NO_EFFECT
