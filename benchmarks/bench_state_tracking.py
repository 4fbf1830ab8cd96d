"""Which machine-state reading follows a network's drift? (docs/predict.md, "The state read hot, on the backend's
engine")

On a shared machine a network's latency drifts by tens of percent within minutes; the predictor's calibration reads
a fixed block before every cell and scales the cell's readings by it (``latprof.predict.state``). This measures, in
one process and one thread, round after round: the block on PyTorch eager and on ONNX Runtime (``--backend``),
each cold, warm and hot, then each network in a loop on ONNX Runtime and MobileNet V2 on PyTorch eager. It prints
each reading's spread over the run and, per network, the correlation of its log latency with each state reading's
(r) and the slope of that relation: a reading that follows the network's drift has r near 1.

Run: python benchmarks/bench_state_tracking.py [--rounds 60] [--backend ort-mobile] [--models a,b] [--out f.jsonl]
(about 7 s a round with the three default networks).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

NET_CONFIG = dict(target_ci=0.02, max_time_s=1.0, min_samples=7, min_time_s=0.3, warmup_min_s=0.05, warmup_max_s=0.3)
DEFAULT_MODELS = "mobilenet_v2_x1_0,shufflenet_v2_x1_0,resnet18"


def rounds(n: int, backend_name: str, models: list[str], out: Path | None) -> list[dict[str, float]]:
    import torch

    from latprof.backends import BackendOptions, create_backend
    from latprof.measure.protocol import MeasureConfig, measure, wall_clock_timer
    from latprof.predict.state import COLD, HOT, WARM, StateReader
    from latprof.workloads import create_workload

    torch.set_num_threads(1)
    config = MeasureConfig(**NET_CONFIG)
    backend = create_backend(backend_name, BackendOptions(1, None, True, 1, "all"))
    nets = {m: create_workload(m, batch=1) for m in models}
    eager = create_workload("mobilenet_v2_x1_0", batch=1).module.eval()
    x = torch.randn(1, 3, 224, 224)

    def eager_call() -> None:
        with torch.inference_mode():
            eager(x)

    records = []
    with StateReader() as on_torch, StateReader(backend=backend) as on_ort:
        runs = {m: backend.prepare(w) for m, w in nets.items()}
        try:
            for i in range(n):
                rec = {"round": i, "time": time.time()}
                for engine, reader in (("torch", on_torch), ("ort", on_ort)):
                    s = reader.read()
                    rec.update({f"{engine}_{k}": s[key] for k, key in (("cold", COLD), ("warm", WARM), ("hot", HOT))})
                for m, run in runs.items():
                    rec[f"{backend_name}:{m}"] = measure(run.timer, config).stats.median_ms
                rec["torch-cpu:mobilenet_v2_x1_0"] = measure(wall_clock_timer(eager_call), config).stats.median_ms
                records.append(rec)
                if out:
                    with out.open("a") as f:
                        f.write(json.dumps(rec) + "\n")
                print(f"round {i + 1}/{n}", flush=True)
        finally:
            for run in runs.values():
                run.close()
    return records


def table(records: list[dict[str, float]]) -> None:
    keys = [k for k in records[0] if k not in ("round", "time")]
    logs = {k: np.log([r[k] for r in records]) for k in keys}
    states = [k for k in keys if k.split("_")[0] in ("torch", "ort") and ":" not in k]
    nets = [k for k in keys if ":" in k]
    print(f"{len(records)} rounds in {records[-1]['time'] - records[0]['time']:.0f} s; spread p90/p10:")
    print("  " + ", ".join(f"{k} x{np.exp(np.percentile(v, 90) - np.percentile(v, 10)):.2f}" for k, v in logs.items()))
    print(f"{'network':34}" + "".join(f"{s:>11}" for s in states))
    for n in nets:
        print(f"{n + ' r':34}" + "".join(f"{np.corrcoef(logs[s], logs[n])[0, 1]:11.2f}" for s in states))
        print(f"{'  slope':34}" + "".join(f"{np.polyfit(logs[s], logs[n], 1)[0]:11.2f}" for s in states))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--backend", default="ort-mobile", help="the ONNX Runtime backend of the block and the networks")
    ap.add_argument("--models", default=DEFAULT_MODELS)
    ap.add_argument("--out", type=Path, help="append each round as a JSON line")
    ap.add_argument("--from", dest="source", type=Path, help="print the table of an earlier --out file")
    args = ap.parse_args()
    if args.source:
        table([json.loads(line) for line in args.source.read_text().splitlines() if line.strip()])
        return
    table(rounds(args.rounds, args.backend, args.models.split(","), args.out))


if __name__ == "__main__":
    main()
