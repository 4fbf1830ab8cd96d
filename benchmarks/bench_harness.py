"""How repeatable are latprof's readings, do they agree with torch.utils.benchmark, and what do allocators do?

Prints four tables (issue 11's benchmark):

1. Spread over separate invocations: ``latprof profile --model benchmarks/models/conv_stack.py:build --threads 1``
   run N times as a user would (default settings: worker process, steady allocator); max/min of the medians
   (goal <= 1.04). ``--in-process`` runs the old way for the before figure.
2. Harness agreement per allocator: latprof's median vs ``torch.utils.benchmark.Timer.blocked_autorange`` in a plain
   fresh process with the same allocator environment, alternating A B A B (goal: within 5% under ``system``).
3. G1 x1/x2/x4 on torch-cpu under each allocator found here, with minor page faults per call.
4. (``--isolation-cost``) wall time of ``latprof sweep --guideline all --quick`` in-process vs isolated.

Run: python benchmarks/bench_harness.py [--runs 5] [--pairs 3] [--isolation-cost]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL = f"{ROOT / 'benchmarks' / 'models' / 'conv_stack.py'}:build"


def latprof(*args: str, env: dict[str, str] | None = None) -> tuple[list[dict], float]:
    """Run the latprof CLI in a fresh process; return its result rows and the wall time."""
    out = Path(tempfile.mkdtemp(prefix="bench-harness-"))
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "latprof.cli", *args, "--out", str(out)], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    wall = time.perf_counter() - t0
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    return [r for r in rows if r.get("record") == "result"], wall


def timer_worker(threads: int) -> dict[str, float]:
    """In a plain fresh process: torch.utils.benchmark's Timer on the same model and input."""
    import torch
    from torch.utils.benchmark import Timer

    from latprof.workloads import create_workload

    torch.set_num_threads(threads)
    wl = create_workload(MODEL)
    module, (x,) = wl.module, wl.make_inputs()

    def call() -> None:
        with torch.inference_mode():
            module(x)

    res = Timer(stmt="call()", globals={"call": call}, num_threads=threads).blocked_autorange(min_run_time=2.0)
    return {"median_ms": res.median * 1e3}


def run_timer(allocator: str, threads: int) -> float:
    from latprof.run.allocators import allocator_env

    env = allocator_env(allocator, dict(os.environ))
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run([sys.executable, __file__, "--timer-worker", "--threads", str(threads)], capture_output=True,
                         text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])["median_ms"]


def spread_table(runs: int) -> None:
    print(f"\n1. Spread over {runs} invocations of `latprof profile --model conv_stack --threads 1`")
    print(f"{'mode':28} {'medians ms':44} {'max/min':>8} {'faults/call':>11}")
    for label, extra in (("in-process (before)", ["--in-process"]), ("worker, steady (default)", []),
                         ("worker, system", ["--allocator", "system"])):
        medians, faults = [], []
        for _ in range(runs):
            (row,), _ = latprof("profile", "--model", MODEL, "--threads", "1", *extra)
            medians.append(row["latency_median_ms"])
            faults.append(row.get("minor_faults_per_call") or 0.0)
        text = " ".join(f"{m:.3f}" for m in medians)
        print(f"{label:28} {text:44} {max(medians) / min(medians):8.3f} {statistics.median(faults):11.1f}")


def agreement_table(pairs: int, allocators: list[str]) -> None:
    print(f"\n2. latprof vs torch.utils.benchmark Timer (plain fresh process, same allocator), {pairs} A/B pairs")
    print(f"{'allocator':10} {'latprof ms':>11} {'Timer ms':>9} {'ratio':>6} {'ratio range':>13}")
    for alloc in allocators:
        ratios, lat, tim = [], [], []
        for _ in range(pairs):
            (row,), _ = latprof("profile", "--model", MODEL, "--threads", "1", "--allocator", alloc)
            t = run_timer(alloc, 1)
            lat.append(row["latency_median_ms"])
            tim.append(t)
            ratios.append(row["latency_median_ms"] / t)
        print(f"{alloc:10} {statistics.median(lat):11.4f} {statistics.median(tim):9.4f} {statistics.median(ratios):6.3f} "
              f"{min(ratios):6.3f}-{max(ratios):.3f}")


def g1_table(allocators: list[str], max_time: float) -> None:
    print("\n3. G1 on torch-cpu (2 threads), speed of each variant vs 1:1 and minor faults per call, per allocator")
    print(f"{'allocator':10} {'scale':>5} {'variant':>7} {'median ms':>10} {'vs 1:1':>7} {'faults/call':>11} {'invol/call':>10}")
    for alloc in allocators:
        rows, _ = latprof("sweep", "--guideline", "g1", "--backend", "torch-cpu", "--scale", "1,2,4", "--max-time",
                          str(max_time), "--allocator", alloc)
        for r in sorted(rows, key=lambda r: (r["scale"], r["variant"])):
            print(f"{alloc:10} {r['scale']:>5} {r['variant']:>7} {r['latency_median_ms']:10.3f} "
                  f"{r.get('speed_vs_baseline') or float('nan'):7.3f} {r.get('minor_faults_per_call') or 0:11.1f} "
                  f"{r.get('involuntary_ctx_switches_per_call') or 0:10.2f}")


def isolation_cost() -> None:
    print("\n4. Cost of isolation: `latprof sweep --guideline all --quick --budget 0.01` (one pass, no adaptive extras)")
    for label, extra in (("in-process", ["--in-process"]), ("isolated workers", [])):
        rows, wall = latprof("sweep", "--guideline", "all", "--quick", "--budget", "0.01", *extra)
        print(f"{label:18} {wall:7.1f} s wall, {len(rows)} rows, {sum(r['status'] != 'ok' for r in rows)} errors")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--g1-max-time", type=float, default=6.0)
    ap.add_argument("--isolation-cost", action="store_true")
    ap.add_argument("--only", choices=("spread", "agreement", "g1", "isolation"))
    ap.add_argument("--timer-worker", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if args.timer_worker:
        print(json.dumps(timer_worker(args.threads)))
        return
    from latprof.run.allocators import available_allocators

    allocators = available_allocators()
    print(f"bench_harness: allocators found here: {', '.join(allocators)}")
    if args.only in (None, "spread"):
        spread_table(args.runs)
    if args.only in (None, "agreement"):
        agreement_table(args.pairs, allocators)
    if args.only in (None, "g1"):
        g1_table(allocators, args.g1_max_time)
    if args.isolation_cost or args.only == "isolation":
        isolation_cost()


if __name__ == "__main__":
    main()
