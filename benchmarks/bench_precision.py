"""INT8 vs FP32 speed per zoo network on ONNX Runtime (ort-cpu and ort-mobile), side by side, with 95% CIs.

For every network x backend, each of ``--processes`` fresh worker processes (this script with ``--worker``, spawned
with latprof's clean environment and the ``steady`` allocator, as ``latprof profile`` measures) prepares the FP32
export and two INT8 versions - latprof's default ``QuantSettings`` (QDQ, per-channel weights, signed 8-bit
activations and weights "S8S8", ONNX Runtime's recommended default; MinMax on 8 seeded random inputs) and the same
with unsigned activations ("U8S8", ``--quant activation_type=QUInt8``) - and times all three in shuffled interleaved
rounds, so drift of this shared machine hits them alike. Each speed ratio FP32 / INT8 (> 1: INT8 is faster) pools
the processes with the hierarchical paired bootstrap of ``latprof.measure.stats.pooled_speed_ratio``. Beside it:
the medians, the INT8 outputs' SQNR against eager FP32, and the per-call page faults and involuntary context
switches of the timed samples (the most of the three).

The known x86 anchors (ONNX Model Zoo INT8 models quantised with Intel Neural Compressor, their published
FP32 -> INT8 speed-ups on Xeon): MobileNet V2 about 1.05x, ShuffleNet V2 about 1.6-1.8x. They are other machines,
other batch sizes and thread counts; this script reports what this machine does, and says when it disagrees.

    PYTHONPATH=$PWD python benchmarks/bench_precision.py                          # the networks below, 2 processes
    PYTHONPATH=$PWD python benchmarks/bench_precision.py --networks resnet18 --processes 1 --max-time 3  # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

NETWORKS = ("mobilenet_v2_x1_0", "shufflenet_v2_x1_0", "mobilenet_v3_small", "resnet18", "efficientnet_b0",
            "mobilenet_v1_x1_0", "mobilenet_v3_large", "resnet50")
# name -> (precision, --quant settings); the first is the baseline of every ratio
VARIANTS = {"fp32": ("fp32", None), "int8": ("int8", None), "int8-u8s8": ("int8", {"activation_type": "QUInt8"})}
BACKENDS = ("ort-cpu", "ort-mobile")
# Published FP32 -> INT8 speed-ups on x86 (see the docstring); None where no anchor is known to us.
ANCHORS = {"mobilenet_v2_x1_0": "~1.05", "shufflenet_v2_x1_0": "1.6-1.8"}


def worker(network: str, backend: str, max_time: float) -> dict[str, Any]:
    """In a fresh process: prepare FP32 and INT8, measure them interleaved, return raw samples and counters."""
    from latprof.backends import BackendOptions, backend_class, create_backend
    from latprof.backends.base import default_threads
    from latprof.measure.protocol import MeasureConfig, measure_interleaved
    from latprof.workloads import create_workload

    workload = create_workload(network)
    threads = default_threads(backend_class(backend))
    runs = {name: create_backend(backend, BackendOptions(threads=threads, batch=1, precision=p, quant=q)).prepare(workload)
            for name, (p, q) in VARIANTS.items()}
    try:
        config = MeasureConfig(target_ci=0.01, max_time_s=max_time, min_time_s=max_time * 0.8,
                               warmup_max_s=min(2.0, max_time / 4))
        im = measure_interleaved({p: r.timer for p, r in runs.items()}, "fp32", config)
    finally:
        for r in runs.values():
            r.close()
    out: dict[str, Any] = {"threads": threads, "rounds": im.rounds}
    for p, m in im.measurements.items():
        out[p] = {"samples_ms": list(m.samples_ms), **{k: v for k, v in m.as_dict().items()
                                                       if isinstance(v, (int, float, str)) or v is None}}
    out["sqnr_db"] = {n: runs[n].check.get("output_sqnr_db") for n in VARIANTS if n != "fp32"}
    return out


def spawn(network: str, backend: str, max_time: float) -> dict[str, Any]:
    """One fresh worker process with latprof's clean environment and declared allocator."""
    from latprof.run.allocators import DEFAULT_ALLOCATOR, allocator_env

    base = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "LC_ALL", "LATPROF_CACHE", "PYTHONPATH") if k in os.environ}
    env = allocator_env(DEFAULT_ALLOCATOR, base)
    cmd = [sys.executable, __file__, "--worker", network, backend, str(max_time)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{network} on {backend}: worker failed: {tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def warm_cache(networks: list[str]) -> None:
    """Export and quantise every network once here, so no worker pays (or times around) the conversion."""
    from latprof.backends import BackendOptions, create_backend
    from latprof.workloads import create_workload

    for n in networks:
        wl = create_workload(n)
        for p, q in VARIANTS.values():
            create_backend("ort-cpu", BackendOptions(threads=1, batch=1, precision=p, quant=q)).model(wl)


def summarise(network: str, backend: str, results: list[dict[str, Any]]) -> list[Any]:
    import numpy as np

    from latprof.measure.stats import pooled_speed_ratio

    groups = {n: [r[n]["samples_ms"] for r in results] for n in VARIANTS}
    medians = {n: float(np.median(np.concatenate(g))) for n, g in groups.items()}
    cells = []
    for n in list(VARIANTS)[1:]:
        ratio = pooled_speed_ratio(groups["fp32"], groups[n])
        cells += [f"{medians[n]:.2f}", f"{ratio.ratio:.2f} [{ratio.ci_low:.2f}, {ratio.ci_high:.2f}]",
                  f"{results[0]['sqnr_db'][n]:.1f}"]
        if n == "int8":
            verdict = _verdict(ratio.ci_low, ratio.ci_high, network)

    def most(key: str) -> float:
        vals = [r[n].get(key) for r in results for n in VARIANTS if r[n].get(key) is not None]
        return float(np.mean(vals)) if vals else float("nan")

    return [network, backend, results[0]["threads"], len(results), f"{medians['fp32']:.2f}", *cells,
            f"{most('minor_faults_per_call'):.2f}", f"{most('involuntary_ctx_switches_per_call'):.2f}",
            ANCHORS.get(network, "-"), verdict]


def _verdict(low: float, high: float, network: str) -> str:
    """Against the anchor: within it, faster or slower than it (whole CI beyond the anchor's range)."""
    anchor = ANCHORS.get(network)
    if anchor is None:
        return "-"
    lo, hi = (1.0, 1.1) if anchor == "~1.05" else (1.6, 1.8)  # ~1.05 read as 1.0-1.1
    if high < lo:
        return "below the anchor"
    if low > hi:
        return "above the anchor"
    return "consistent"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        print(json.dumps(worker(sys.argv[2], sys.argv[3], float(sys.argv[4]))))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--networks", default=",".join(NETWORKS), help="comma-separated zoo networks")
    ap.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated ONNX Runtime CPU backends")
    ap.add_argument("--processes", type=int, default=2, help="fresh worker processes per network x backend")
    ap.add_argument("--max-time", type=float, default=8.0, help="seconds of interleaved timing per process")
    args = ap.parse_args()
    from latprof.console import stdout, table
    from latprof.measure.environment import collect

    networks = [n for n in args.networks.split(",") if n]
    backends = [b for b in args.backends.split(",") if b]
    env = collect().as_dict()
    t0 = time.perf_counter()
    warm_cache(networks)
    rows, failures = [], []
    for network in networks:
        for backend in backends:
            results = []
            for _ in range(args.processes):
                try:
                    results.append(spawn(network, backend, args.max_time))
                except (RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError) as exc:
                    failures.append(str(exc))
            if results:
                rows.append(summarise(network, backend, results))
                stdout.print("  ".join(map(str, rows[-1])))
    cols = ["network", "backend", "threads", "proc", "fp32 ms", "int8 ms", "fp32/int8 [95% CI]", "SQNR dB",
            "u8s8 ms", "fp32/u8s8 [95% CI]", "SQNR dB", "faults/call", "invol. cs/call", "x86 anchor",
            "int8 vs anchor"]
    stdout.print(table("INT8 (S8S8 default, and U8S8) vs FP32 on ONNX Runtime; > 1: INT8 faster", cols, rows))
    hw = env["hardware"]
    stdout.print(f"machine: {hw.get('cpu_model')} ({hw.get('cpu_logical_cores')} logical cores), onnxruntime "
                 f"{env['software'].get('onnxruntime')}, {args.processes} process(es) x {args.max_time:g} s per cell, "
                 f"wall {time.perf_counter() - t0:.0f} s")
    for f in failures:
        print(f"failed: {f}", file=sys.stderr)


if __name__ == "__main__":
    main()
