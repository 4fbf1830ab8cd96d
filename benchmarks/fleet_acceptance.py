"""Fleet acceptance check on one machine: a loopback Ray cluster (a head with no CPUs and N nodes offering
{"latprof": 1}), one latprof command run against it, then the checks on its results.jsonl:

- every (unit, node) has exactly one row (read back, superseded re-pooled rows of adaptive passes dropped);
- the first pass wrote each (row identity, node) once (no duplicates in the file apart from adaptive re-pools);
- no two units overlapped on one node (from each row's recorded run_intervals);
- with --remove-after S: one node is removed S seconds into the run; the run must still complete.

    python benchmarks/fleet_acceptance.py [--nodes 2] [--remove-after 10] -- sweep --guideline g2 --quick \
        --backend torch-cpu,ort-mobile --out /tmp/fleet-acc

The command gets ``--executor ray --ray-address ADDR`` appended. Every Ray process binds to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

LOOPBACK = {"num_cpus": 0, "node_ip_address": "127.0.0.1", "object_store_memory": 80 * 2**20}


@contextlib.contextmanager
def local_cluster(nodes: int) -> Iterator[Any]:
    """A head (num_cpus=0, no latprof resource) and ``nodes`` nodes named node-1.. offering {"latprof": 1}."""
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={**LOOPBACK, "include_dashboard": False})
    try:
        for i in range(nodes):
            c.add_node(resources={"latprof": 1}, labels={"latprof-node": f"node-{i + 1}"}, **LOOPBACK)
        c.wait_for_nodes()
        yield c
    finally:
        c.shutdown()


def run_latprof(address: str, command: list[str]) -> tuple[int, float]:
    start = time.monotonic()
    code = subprocess.call([sys.executable, "-m", "latprof.cli", *command, "--executor", "ray",
                            "--ray-address", address])
    return code, time.monotonic() - start


def check(out: Path) -> dict[str, Any]:
    """The acceptance figures of one run folder."""
    from latprof.results import KEY_FIELDS, read_results

    lines = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    results = [r for r in lines if r.get("record", "result") == "result"]
    final = read_results(out, quiet=True).results
    ident = lambda r: tuple(json.dumps(r.get(k)) for k in KEY_FIELDS)  # noqa: E731 - includes node
    n_nodes = len({r.get("node") for r in final})
    # every row identity (without the node) must be there once per node
    per_identity = Counter((r.get("experiment"), r.get("workload"), r.get("variant"), r.get("backend"),
                            r.get("scale")) for r in final)
    # a first-pass row has one run interval; each adaptive pass re-pools the unit and appends its rows again
    first_pass = Counter(ident(r) for r in results if len(r.get("run_intervals") or [None]) == 1)
    overlaps = []
    per_node: dict[str, set[tuple[float, float]]] = {}
    for r in final:
        for a, b in r.get("run_intervals") or []:
            per_node.setdefault(r.get("node") or "", set()).add((a, b))
    for node, iv in per_node.items():
        s = sorted(iv)
        overlaps += [(node, x, y) for x, y in zip(s, s[1:]) if x[1] > y[0]]
    units = Counter((r.get("experiment"), r.get("backend"), r.get("scale"), r.get("node")) for r in final)
    return {
        "rows (read back)": len(final), "rows in file": len(results),
        "(unit, node) pairs": len(units), "nodes": sorted({r.get("node") for r in final}),
        "row identities not present once per node": sum(1 for c in per_identity.values() if c != n_nodes),
        "identities written twice by the first pass": sum(1 for c in first_pass.values() if c > 1),
        "ok rows": sum(r.get("status") == "ok" for r in final),
        "error rows": sum(r.get("status") != "ok" for r in final),
        "node_lost rows": sum(bool(r.get("node_lost")) for r in final),
        "overlapping intervals on one node": len(overlaps),
        "skip records": sum(1 for r in lines if r.get("record") == "fleet_skip"),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("--remove-after", type=float, help="remove the last node this many seconds into the run")
    ap.add_argument("--from-first-row", action="store_true",
                    help="count --remove-after from the first result row instead of the start (so the node is "
                         "removed while units run, not while the fleet is probed)")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="the latprof command (after --); needs --out")
    args = ap.parse_args()
    command = [c for c in args.command if c != "--"]
    out = Path(command[command.index("--out") + 1])
    with local_cluster(args.nodes) as c:
        print(f"cluster: {c.address}, head num_cpus=0, {args.nodes} node(s) with {{'latprof': 1}}", flush=True)
        if args.remove_after:
            victim = sorted(c.worker_nodes, key=lambda n: n.unique_id)[-1]

            def remove() -> None:
                start = time.monotonic()
                if args.from_first_row:
                    results = out / "results.jsonl"
                    while not (results.exists() and '"record": "result"' in results.read_text()):
                        time.sleep(0.2)
                time.sleep(args.remove_after)
                c.remove_node(victim)
                when = "after the first result row" if args.from_first_row else "into the run"
                print(f"removed a node {args.remove_after:g} s {when} ({time.monotonic() - start:.0f} s after the "
                      "start)", flush=True)

            threading.Thread(target=remove, daemon=True).start()
        code, wall = run_latprof(c.address, command)
    figures = check(out)
    print(json.dumps({"exit": code, "wall_s": round(wall, 1), **figures}, indent=1))
    bad = ("overlapping intervals on one node", "identities written twice by the first pass",
           "row identities not present once per node")
    return 0 if code == 0 and not any(figures[k] for k in bad) else 1


if __name__ == "__main__":
    raise SystemExit(main())
