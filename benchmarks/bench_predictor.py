"""The latency predictor's figures (issue 15): calibration cost, regressor choice, predict() speed, accuracy.

For each predictor file given (from ``latprof calibrate``):

1. Calibration: backend, threads, wall time, kernel samples, cells, worker units (read from the file); the cache
   residency curve and, per calibration chain, its footprint, measured latency and the warm, cold and mixed
   predictions.
2. Regressor choice: 4-fold cross-validated error on the file's own kernel samples for random forest, gradient
   boosting (scikit-learn) and, when installed, LightGBM, measured side by side here; and the refit time on load.
3. predict() wall time per zoo network (first call in the process, then warm), without running the networks.
4. With ``--evaluate``: every zoo network measured with the run engine and the accuracy table per predictor
   (kernel, FLOPs-only, MAC-only, FLOPs+MAC leave-one-out fits, roofline): within ±10% / ±5%, RMSPE, Spearman;
   with ``--remeasure`` also every network measured a second time, one pass later (the machine's own ceiling).

Run: python benchmarks/bench_predictor.py p_torch.json p_ort.json [--evaluate [--remeasure] [--processes N]]
     [--models a,b]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path


def regressor_table(data: dict) -> None:
    from latprof.predict.model import REGRESSOR_PARAMS, cross_validate

    print(f"  {'regressor':18} {'kernel RMSPE':>13} {'within ±10%':>12} {'CV wall s':>10}")
    for name in REGRESSOR_PARAMS:
        t0 = time.perf_counter()
        try:
            cv = cross_validate(data["samples"], name)
        except Exception as exc:  # noqa: BLE001  (lightgbm missing)
            print(f"  {name:18} not measured: {str(exc).splitlines()[0]}")
            continue
        print(f"  {name:18} {cv['rmspe']:13.3f} {100 * cv['within_10']:11.1f}% {time.perf_counter() - t0:10.1f}")


def residency_table(data: dict) -> None:
    res = data.get("residency")
    if not res:
        print("  residency: none (every kernel predicted cold)")
        return
    from latprof.views.predict import residency_line

    if res.get("fit_rmspe") is None:
        print(f"  residency: {res.get('chains', 0)} chain(s), too few to fit (every kernel predicted cold)")
        return
    print(f"  {residency_line(res)}")
    print(f"  {'chain':8} {'blocks':>6} {'footprint MiB':>13} {'weights MiB':>11} {'measured ms':>11} {'hot ms':>9} "
          f"{'warm ms':>9} {'cold ms':>9} {'mixed ms':>9} {'error':>7}")
    for c in sorted(data.get("chains", []), key=lambda c: c["footprint_bytes"]):
        err = (c["predicted_ms"] - c["measured_ms"]) / c["measured_ms"]
        weights, hot = c.get("weight_bytes"), c.get("predicted_hot_ms")  # hot: residency form "hot" only
        print(f"  {c['id']:8} {c['blocks'] or 0:6} {c['footprint_bytes'] / 2 ** 20:13.1f} "
              f"{'—' if weights is None else f'{weights / 2 ** 20:.1f}':>11} {c['measured_ms']:11.3f} "
              f"{'—' if not hot else f'{hot:.3f}':>9} "
              f"{c['predicted_warm_ms']:9.3f} {c['predicted_cold_ms']:9.3f} {c['predicted_ms']:9.3f} {100 * err:+6.0f}%")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("predictors", nargs="+", type=Path)
    ap.add_argument("--evaluate", action="store_true", help="measure every zoo network (minutes per backend)")
    ap.add_argument("--models", help="comma-separated networks (default: every zoo network)")
    ap.add_argument("--per-block", action="store_true", help="with --evaluate: also every block")
    ap.add_argument("--remeasure", action="store_true", help="with --evaluate: measure every network twice")
    ap.add_argument("--processes", type=int, default=1,
                    help="with --evaluate: N passes over the networks, pooled (latprof predict --processes)")
    args = ap.parse_args()

    from latprof.catalog import list_topic
    from latprof.predict import load
    from latprof.workloads import create_workload

    models = args.models.split(",") if args.models else [n["name"] for n in list_topic("networks")]
    for path in args.predictors:
        data = json.loads(path.read_text())
        cal = data["calibration"]
        print(f"== {path}: {data['backend']}, {data['threads']} thread(s), hardware_id {data['hardware_id']}")
        when = (f"rebuilt from the readings {cal['results']}" if cal.get("rebuilt_from_readings") else
                f"{cal['wall_s']:.0f} s wall (budget {cal['budget_s']:.0f} s)")
        print(f"  calibration: {when}, {len(data['samples'])} kernel samples, {len(data['cells'])} cells, "
              f"{cal['units']} worker units, {cal['failed_cells']} failed cells; chosen regressor "
              f"{data['model']['regressor']}")
        print(f"  overhead: {data['overhead']}")
        if (data.get("state") or {}).get("reference"):
            from latprof.views.predict import state_line

            print(f"  {state_line(data['state'])}")
        residency_table(data)
        regressor_table(data)
        t0 = time.perf_counter()
        import sklearn.ensemble  # noqa: F401  (import time is not refit time)
        t_import = time.perf_counter() - t0
        fits, cpu = [], []
        for _ in range(3):
            p = load(path)
            fits.append(p.fit_s)
            cpu.append(p.fit_cpu_s)
        print(f"  refit on load: median {statistics.median(fits):.3f} s wall, {statistics.median(cpu):.3f} s CPU "
              f"(scikit-learn import {t_import:.2f} s, once per process)")
        print(f"  {'network':24} {'predicted ms':>12} {'footprint MiB':>13} {'weights MiB':>11} {'cold share':>10} "
              f"{'first s':>8} {'warm s':>8}")
        for m in models:
            w = create_workload(m, batch=1)
            first = p.predict_workload(w)
            warm = p.predict_workload(w)
            print(f"  {m:24} {warm.predicted_ms:12.3f} {warm.footprint_bytes / 2 ** 20:13.1f} "
                  f"{warm.weight_bytes / 2 ** 20:11.1f} {warm.cold_share:10.2f} "
                  f"{first.predict_s:8.3f} {warm.predict_s:8.3f}")
        if args.evaluate:
            from latprof.predict.evaluate import EvaluateRequest, evaluate
            from latprof.run.engine import RunOptions
            from latprof.views.predict import show_evaluation

            show_evaluation(evaluate(EvaluateRequest(p, models, per_block=args.per_block, remeasure=args.remeasure,
                                                     run=RunOptions(processes=args.processes))))
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
