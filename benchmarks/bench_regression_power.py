"""Power of the regression gate: false-alarm rate on A/A pairs, detection rate on A/B pairs with injected slowdowns.

Each pair is two separate interleaved runs of the CI suite (as `latprof ci` measures them), compared with the gate's
rule on reference-normalised samples, flagged rows re-measured once to confirm (as `latprof ci` does).
An A/B pair injects exactly +s more work into one workload, the victim: a stack of `depth` identical
conv_bn_relu layers (registered here as `bench_conv_stack`), so depth 20 → 21 / 22 / 25 is exactly +5 / 10 / 25 %
of every count (mult_adds, elementwise ops, memory access, per-layer overhead). The victim row keeps its identity
(same key), as a code change that slows a workload would.

    PYTHONPATH=. python benchmarks/bench_regression_power.py --quick          # a few pairs, proves it runs
    PYTHONPATH=. python benchmarks/bench_regression_power.py --pairs 100      # the figures (quiet machine)

Goals: false alarms <= 1% of A/A pairs (any row of the suite), 10% slowdowns detected >= 95%, 5% >= 50%.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import binomtest
from torch import nn

from latprof.console import stdout, table
from latprof.measure import environment
from latprof.regress.compare import CompareOptions, compare_files
from latprof.regress.suite import Suite, SuiteEntry, load_suite, run_suite
from latprof.results import ResultStore
from latprof.shapes import format_shape
from latprof.workloads.blocks import ConvBNReLU
from latprof.workloads.registry import register_workload

GOALS = {0.0: ("false alarms", "<= 1%", lambda r: r <= 0.01), 0.05: ("detected", ">= 50%", lambda r: r >= 0.5),
         0.10: ("detected", ">= 95%", lambda r: r >= 0.95)}


@register_workload(kind="block", family="bench", default_input=(1, 32, 16, 16))
def bench_conv_stack(depth: int = 20, channels: int = 32) -> nn.Module:
    """`depth` identical 3×3 conv_bn_relu layers: extra layers add exactly proportional work (power benchmark)."""
    return nn.Sequential(*[ConvBNReLU(channels, channels, 3) for _ in range(depth)])


VICTIM = SuiteEntry(name="victim-conv-stack", workload="bench_conv_stack", kwargs={"depth": 20}, input_shape=(1, 32, 16, 16))


def with_victim(suite: Suite) -> Suite:
    """The CI suite plus the victim entry (on the suite's backend and threads)."""
    first = suite.entries[0]
    return replace(suite, entries=(*suite.entries, replace(VICTIM, backend=first.backend, threads=first.threads)))


def slowed(suite: Suite, slowdown: float) -> Suite:
    """The suite with the victim's depth raised by the factor 1+slowdown (must come out an integer)."""
    depth = VICTIM.kwargs["depth"] * (1 + slowdown)
    if abs(depth - round(depth)) > 1e-9:
        raise SystemExit(f"depth {VICTIM.kwargs['depth']} × {1 + slowdown:g} is not an integer; use multiples of 5%")
    entries = tuple(replace(e, kwargs={**e.kwargs, "depth": int(round(depth))}) if e.name == VICTIM.name else e
                    for e in suite.entries)
    return replace(suite, entries=entries)


def measure_run(suite: Suite, path: Path, hw: str) -> Path:
    store = ResultStore(path)
    store.append({"record": "environment", "hardware_id": hw})
    run_suite(suite, store, {"hardware_id": hw})
    return path


def one_pair(suite: Suite, slowdown: float, options: CompareOptions, confirm: bool, work: Path, hw: str, i: int) -> dict[str, Any]:
    """Measure A, then B (A again, or A with the injected slowdown); compare; confirm flagged rows once."""
    victim = VICTIM.name
    b_suite = slowed(suite, slowdown)
    a = measure_run(suite, work / f"a{i}.jsonl", hw)
    b = measure_run(b_suite, work / f"b{i}.jsonl", hw)
    report = compare_files(a, b, options)
    verdicts = {r.key["variant"]: r.verdict for r in report.rows}
    ratios = {r.key["variant"]: r.comparison.ratio for r in report.rows}
    flagged = sorted(v for v, d in verdicts.items() if d == "regressed")
    confirmed = list(flagged)
    if flagged and confirm:
        again = measure_run(b_suite.only(flagged), work / f"c{i}.jsonl", hw)
        second = {r.key["variant"]: r.verdict for r in compare_files(a, again, options).rows}
        confirmed = [v for v in flagged if second.get(v) == "regressed"]
    return {"slowdown": slowdown, "victim_ratio": ratios.get(victim), "victim_verdict": verdicts.get(victim),
            "flagged": flagged, "confirmed": confirmed}


def summarize(outcomes: list[dict[str, Any]], victim: str) -> list[list[Any]]:
    rows = []
    for s in sorted({o["slowdown"] for o in outcomes}):
        group = [o for o in outcomes if o["slowdown"] == s]
        if s == 0:
            hits = sum(bool(o["confirmed"]) for o in group)
            raw = sum(bool(o["flagged"]) for o in group)
            what = "A/A: any row regressed"
        else:
            hits = sum(victim in o["confirmed"] for o in group)
            raw = sum(victim in o["flagged"] for o in group)
            what = f"A/B +{s:.0%} work: victim regressed"
        others = sum(any(v != victim for v in o["confirmed"]) for o in group)
        rate = hits / len(group)
        goal = GOALS.get(round(s, 2))
        ratios = [o["victim_ratio"] for o in group if o["victim_ratio"] is not None]
        ci = binomtest(hits, len(group)).proportion_ci(0.95)
        rows.append([what, len(group), raw, hits, f"{rate:.0%} ({ci.low:.0%}–{ci.high:.0%})", others,
                     f"{np.median(ratios):.3f}" if ratios else "-",
                     f"{goal[1]}: {'met' if goal[2](rate) else 'NOT met'} (point estimate)" if goal else "-"])
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--suite", type=Path, default=Path(__file__).with_name("ci_suite.toml"))
    p.add_argument("--slowdowns", default="0.05,0.10,0.25", help="comma-separated fractions of extra work")
    p.add_argument("--pairs", type=int, default=50, help="pairs per condition (A/A and each slowdown)")
    p.add_argument("--quick", action="store_true", help="3 pairs per condition and a 6 s cap per run")
    p.add_argument("--threshold", type=float, help="override the suite's threshold")
    p.add_argument("--alpha", type=float, help="override the suite's alpha")
    p.add_argument("--no-confirm", action="store_true", help="count first-run flags, without the re-measure")
    p.add_argument("--json", type=Path, help="write every pair's outcome to this JSON file")
    args = p.parse_args(argv)
    suite = with_victim(load_suite(args.suite))
    pairs = 3 if args.quick else args.pairs
    if args.quick:
        suite = replace(suite, config=replace(suite.config, max_time_s=min(6.0, suite.config.max_time_s)))
    options = CompareOptions(
        threshold=args.threshold if args.threshold is not None else suite.threshold,
        alpha=args.alpha if args.alpha is not None else suite.alpha,
        normalize=True,
    )
    slowdowns = [0.0] + [float(s) for s in args.slowdowns.split(",") if s.strip()]
    for s in slowdowns[1:]:
        slowed(suite, s)  # validate before measuring anything
    env = environment.collect().as_dict()
    plan = [s for _ in range(pairs) for s in slowdowns]  # conditions interleaved, so drift hits all alike
    outcomes: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for i, s in enumerate(plan):
            o = one_pair(suite, s, options, not args.no_confirm, Path(tmp), env["hardware_id"], i)
            outcomes.append(o)
            print(f"[{i + 1}/{len(plan)} {time.perf_counter() - t0:.0f}s] +{s:.0%}: victim ratio "
                  f"{o['victim_ratio']:.3f} {o['victim_verdict']}; flagged {o['flagged'] or '-'}; confirmed {o['confirmed'] or '-'}",
                  file=sys.stderr)
    title = (f"Regression-gate power on {env['hardware']['cpu_model']} ({env['hardware_id']}): suite {suite.name}, "
             f"victim {VICTIM.workload}(depth={VICTIM.kwargs['depth']}) {format_shape(VICTIM.input_shape)}, threshold {options.threshold:g}, alpha {options.alpha:g}, "
             f"{'no confirmation' if args.no_confirm else 'confirmed by one re-measure'}, {time.perf_counter() - t0:.0f} s")
    cols = ["condition", "pairs", "flagged (first run)", "after confirmation", "rate (95% Clopper-Pearson CI)",
            "pairs with another row regressed", "median victim ratio", "goal"]
    stdout.print(table(title, cols, summarize(outcomes, VICTIM.name)))
    if args.json:
        args.json.write_text(json.dumps({"title": title, "outcomes": outcomes}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
