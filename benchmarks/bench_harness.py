"""Does latprof's harness agree with torch.utils.benchmark, and how repeatable is it?

Times the same small (~0.1 ms) and large (~20 ms) block with latprof's protocol and with
``torch.utils.benchmark.Timer.blocked_autorange``, each in a fresh process, alternating A B A B so machine drift
hits both alike. Prints per block:
  - the latprof/Timer ratio of medians (median over the pairs; goal 0.97-1.03),
  - the spread (max/min) of latprof's medians over its separate runs (goal <= 1.04 on a shared 2-core machine),
  - latprof's wall time per measurement at the default target (±2% CI of the median, 10 s cap).

Run: python benchmarks/bench_harness.py [--pairs 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

BLOCKS = {
    # name: (conv_bn_relu kwargs, input shape) chosen for ~0.1 ms and ~20 ms per call on one x86 core
    "small": ({"in_channels": 16, "out_channels": 16, "kernel_size": 3}, (1, 16, 16, 16)),
    "large": ({"in_channels": 64, "out_channels": 64, "kernel_size": 3}, (1, 64, 96, 96)),
}


def worker(tool: str, block: str, threads: int) -> dict[str, float]:
    import torch

    from latprof.workloads import create_workload

    torch.set_num_threads(threads)
    kwargs, shape = BLOCKS[block]
    wl = create_workload("conv_bn_relu", input_shape=shape, **kwargs)
    module, (x,) = wl.module, wl.make_inputs()

    def call() -> None:
        with torch.inference_mode():
            module(x)

    t0 = time.perf_counter()
    if tool == "latprof":
        from latprof.measure import MeasureConfig, measure, wall_clock_timer

        m = measure(wall_clock_timer(call), MeasureConfig())
        return {"median_ms": m.stats.median_ms, "wall_s": m.wall_s, "n_samples": m.stats.n_samples,
                "ci_half_width": m.stats.ci_half_width}
    from torch.utils.benchmark import Timer

    res = Timer(stmt="call()", globals={"call": call}, num_threads=threads).blocked_autorange(min_run_time=2.0)
    return {"median_ms": res.median * 1e3, "wall_s": time.perf_counter() - t0, "n_samples": len(res.times)}


def run_worker(tool: str, block: str, threads: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--worker", tool, "--block", block, "--threads", str(threads)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--worker", choices=("latprof", "timer"))
    ap.add_argument("--block", choices=tuple(BLOCKS))
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.block, args.threads)))
        return
    print(f"bench_harness: {args.pairs} A/B pairs per block, {args.threads} thread(s), fresh process per run")
    print(f"{'block':6} {'latprof ms':>11} {'Timer ms':>9} {'ratio':>6} {'ratio range':>13} {'spread':>7} "
          f"{'wall s':>7} {'samples':>8}")
    for block in BLOCKS:
        lat, tim = [], []
        for _ in range(args.pairs):
            lat.append(run_worker("latprof", block, args.threads))
            tim.append(run_worker("timer", block, args.threads))
        ratios = [a["median_ms"] / b["median_ms"] for a, b in zip(lat, tim)]
        medians = [a["median_ms"] for a in lat]
        print(f"{block:6} {statistics.median(medians):11.4f} {statistics.median(t['median_ms'] for t in tim):9.4f} "
              f"{statistics.median(ratios):6.3f} {min(ratios):6.3f}-{max(ratios):.3f} "
              f"{max(medians) / min(medians):7.3f} {statistics.median(a['wall_s'] for a in lat):7.2f} "
              f"{statistics.median(a['n_samples'] for a in lat):8.0f}")
    print("ratio = latprof median / Timer median per A/B pair (median over pairs; goal 0.97-1.03); "
          "spread = max/min of latprof's medians over its runs (goal <= 1.04); wall s = latprof seconds per measurement")


if __name__ == "__main__":
    main()
