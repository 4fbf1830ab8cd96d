"""What running on Ray costs: scheduling overhead per unit (Ray vs the local executor, the same sweep on one node)
and the wall time of the sweep on one node vs two (--spread), measured side by side in one process.

    python benchmarks/bench_fleet.py [--reps 2] [--guideline all] [--backend torch-cpu,ort-mobile]

A loopback Ray cluster (``benchmarks/fleet_acceptance.py``'s: a head with no CPUs, two nodes offering
{"latprof": 1}, every process on 127.0.0.1) runs on THIS machine. Its two "nodes" share this machine's cores: on
a 2-core machine two units measured at once compete for the same two cores, so the two-node wall time says how
well Ray keeps both slots busy, not what a fleet of two real machines would do (that would be close to half,
each machine measuring alone). The per-unit overhead is the real cost of a Ray task around a worker process.

Runs alternate (local, ray on node-1, ray on both nodes; repeated ``--reps`` times) so drift of a shared machine
hits them alike. Each line: wall time, wall per unit, the time the units' worker processes ran (the node-side
task intervals), and the rows' median involuntary context switches per call (contention).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fleet_acceptance import local_cluster  # noqa: E402

from latprof.experiments.sweep import SweepRequest, run_sweep  # noqa: E402
from latprof.run.engine import RunOptions  # noqa: E402
from latprof.run.fleet import FleetOptions, connect, discover, import_ray, probe  # noqa: E402


def one_sweep(args: argparse.Namespace, out: Path, fleet: FleetOptions | None) -> dict[str, Any]:
    request = SweepRequest(guidelines=args.guideline.split(","), backends=args.backend.split(","), quick=True,
                           max_time_s=args.max_time, min_time_s=args.min_time, budget_s=1e-6, roofline=False,
                           out=out, run=RunOptions(fleet=fleet))
    load = os.getloadavg()[0]
    start = time.monotonic()
    outcome = run_sweep(request)
    wall = time.monotonic() - start
    units = outcome.units_run
    intervals = {tuple(i) for r in outcome.rows for i in (r.get("run_intervals") or [])}
    ctx = [r["involuntary_ctx_switches_per_call"] for r in outcome.rows
           if r.get("involuntary_ctx_switches_per_call") is not None]
    return {"wall": wall, "units": units, "task_s": sum(b - a for a, b in intervals) if intervals else None,
            "ctx": statistics.median(ctx) if ctx else float("nan"), "load": load,
            "errors": sum(r.get("status") != "ok" for r in outcome.rows)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--guideline", default="all")
    ap.add_argument("--backend", default="torch-cpu,ort-mobile")
    ap.add_argument("--max-time", type=float, default=2.0, help="per-unit cap (default 2 s: the units stay short, so "
                                                                 "the overhead is a visible share)")
    ap.add_argument("--min-time", type=float, default=1.0)
    args = ap.parse_args()
    results: dict[str, list[dict[str, Any]]] = {"local": [], "ray, 1 node": [], "ray, 2 nodes (--spread)": []}
    with local_cluster(2) as c:
        t0 = time.monotonic()
        connect(c.address)
        ray = import_ray()
        notes: list[str] = []
        nodes = probe(ray, discover(ray), {"allocator": "steady", "timeout_s": None, "bind_threads": True,
                                           "cwd": os.getcwd()}, notes)
        setup = time.monotonic() - t0
        print(f"cluster {c.address}: {len(nodes)} nodes; joining and probing them took {setup:.1f} s (once per run)")
        try:
            run_all(args, results, c.address)
        finally:
            ray.shutdown()  # leave the cluster before it is torn down
    report(results, args.reps)
    return 0


def run_all(args: argparse.Namespace, results: dict[str, list[dict[str, Any]]], address: str) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        for rep in range(args.reps):
            for name, fleet in (("local", None), ("ray, 1 node", FleetOptions(address, nodes="node-1")),
                                ("ray, 2 nodes (--spread)", FleetOptions(address, spread=True))):
                slug = name.split(" (")[0].replace(", ", "-").replace(" ", "")
                r = one_sweep(args, Path(tmp) / f"rep{rep}-{slug}", fleet)
                results[name].append(r)
                task = f"{r['task_s']:.1f} s in node tasks" if r["task_s"] is not None else "—"
                print(f"rep {rep + 1} {name:24s} {r['wall']:7.1f} s wall, {r['units']} units, "
                      f"{r['wall'] / max(r['units'], 1):5.2f} s/unit, {task}, ctx/call {r['ctx']:.3f}, "
                      f"load {r['load']:.1f}, {r['errors']} error rows", flush=True)


def report(results: dict[str, list[dict[str, Any]]], reps: int) -> None:
    med = {k: statistics.median(x["wall"] for x in v) for k, v in results.items()}
    units = results["local"][0]["units"]
    print(f"\nmedian wall over {reps} rep(s), {units} units each:")
    for k, v in med.items():
        print(f"  {k:24s} {v:7.1f} s")
    print(f"scheduling overhead per unit, Ray (1 node) vs local: {(med['ray, 1 node'] - med['local']) / units:+.2f} s "
          f"(ratio of walls {med['ray, 1 node'] / med['local']:.3f})")
    ray1 = [x for x in results["ray, 1 node"] if x["task_s"]]
    if ray1:
        gap = statistics.median((x["wall"] - x["task_s"]) / x["units"] for x in ray1)
        print(f"driver-side gap per unit on Ray (wall minus node task time): {gap:.2f} s")
    print(f"two nodes vs one: wall ratio {med['ray, 2 nodes (--spread)'] / med['ray, 1 node']:.3f} "
          "(both nodes on this one machine share its cores; see the docstring)")


if __name__ == "__main__":
    raise SystemExit(main())
