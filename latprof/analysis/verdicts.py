"""Guideline verdicts from interleaved measurements.

For each non-baseline variant the spec says whether the guideline predicts it ``slower`` or ``faster`` than the
baseline. A variant *confirms* the prediction when both hold:
  - the 95% CI of its paired speed ratio (baseline median / variant median, bootstrap over interleaved rounds)
    lies entirely on the predicted side of 1, and
  - the 95% CIs of the two medians do not overlap (DESIGN.md's rule; the stricter of the two).
It *contradicts* the prediction when the same two conditions hold on the other side, and is *unclear* otherwise.
The guideline **holds** when every variant confirms, **does not hold** when any variant contradicts (the predicted
ordering is confidently reversed), and is **inconclusive** otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

HOLDS = "holds"
DOES_NOT_HOLD = "does not hold"
INCONCLUSIVE = "inconclusive"

CONFIRMS = "confirms"
CONTRADICTS = "contradicts"
UNCLEAR = "unclear"


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def above(self, other: Interval) -> bool:
        return self.low > other.high


def variant_outcome(
    expect: str,
    ratio_ci: Interval,
    baseline_latency_ci: Interval,
    variant_latency_ci: Interval,
) -> str:
    """``confirms`` / ``contradicts`` / ``unclear`` for one variant against the baseline (see module doc)."""
    slower = ratio_ci.high < 1.0 and variant_latency_ci.above(baseline_latency_ci)
    faster = ratio_ci.low > 1.0 and baseline_latency_ci.above(variant_latency_ci)
    if expect == "slower":
        return CONFIRMS if slower else CONTRADICTS if faster else UNCLEAR
    if expect == "faster":
        return CONFIRMS if faster else CONTRADICTS if slower else UNCLEAR
    raise ValueError(f"expect must be 'slower' or 'faster', got {expect!r}")


def guideline_verdict(outcomes: Iterable[str]) -> str:
    """Combine the variants' outcomes into the guideline's verdict on one backend and scale."""
    seen = list(outcomes)
    if not seen:
        return INCONCLUSIVE
    if any(o == CONTRADICTS for o in seen):
        return DOES_NOT_HOLD
    if all(o == CONFIRMS for o in seen):
        return HOLDS
    return INCONCLUSIVE
