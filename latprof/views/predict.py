"""``latprof calibrate`` and ``latprof predict``: calibration summary, predictions, and the evaluation tables."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from latprof.predict.evaluate import PREDICTOR_NAMES, Evaluation
from latprof.predict.predictor import Prediction, Predictor


def calibration_progress(backend: str) -> Callable[[int, int, float], None]:
    """One stderr line per finished calibration unit."""

    def on_round(units: int, samples: int, elapsed: float) -> None:
        print(f"[calibrate {backend}] unit {units}: {samples} kernel samples, {elapsed:.0f} s", file=sys.stderr,
              flush=True)

    return on_round


def show_calibration(r: Any) -> int:
    """What a ``CalibrationResult`` holds: where the file is, samples, the regressor's figures, refit time."""
    cv = r.cv[r.regressor]
    others = ", ".join(f"{n} {c['rmspe']:.3f}" for n, c in r.cv.items() if c.get("rmspe") is not None)
    print(f"predictor: {r.path}  ({r.samples} kernel samples from {r.cells} cells in {r.units} worker units, "
          f"{r.failed_cells} cell(s) failed, {r.wall_s:.0f} s)")
    if cv.get("rmspe") is not None:
        print(f"regressor: {r.regressor} (kernel cross-validation RMSPE: {others}; {cv['within_10']:.0%} of kernels "
              f"within +-10%); refit on load in {r.predictor_fit_s:.2f} s ({r.predictor_fit_cpu_s:.2f} s CPU)")
    res = r.residency
    if res and res.get("chains", 0) >= 1 and res.get("fit_rmspe") is not None:
        print(residency_line(res))
    elif r.chains or res:
        print(f"residency: {r.chains} chain(s) timed, too few to fit: every kernel predicted cold")
    if r.state and r.state.get("reference"):
        print(state_line(r.state))
    print(f"readings: {r.out_dir / 'results.jsonl'}")
    return 0


ENGINE_NAMES = {"torch": "PyTorch", "onnxruntime": "ONNX Runtime"}  # latprof.predict.state's engines, for people


def factor_ranges(bounds: dict[str, tuple[float, float]]) -> str:
    """``cold x0.91..x1.10, warm x..., hot x...``: each state factor's range, in the order given."""
    return ", ".join(f"{name} x{lo:.2f}..x{hi:.2f}" for name, (lo, hi) in bounds.items())


def state_line(state: dict[str, Any]) -> str:
    """How far the machine's state moved during calibration, and whether the readings were corrected for it."""
    sp = state.get("spread") or {}
    ranges = factor_ranges({name: (sp[f"{name}_p10"], sp[f"{name}_p90"])
                            for name in ("cold", "warm", "hot") if f"{name}_p10" in sp})
    engine = ENGINE_NAMES.get((state.get("reference") or {}).get("state_engine") or "torch", "PyTorch")
    moved = (f"{ranges} of the median (10th..90th percentile of {sp['readings']} readings on {engine})" if sp
             else "no spread")
    power = state.get("power") or {}
    if power.get("correlation") is not None:  # fitted on the chains (latprof.predict.state.fit_state_power)
        how = (f"the chains followed their state factors to the power {power['beta']:.2f} (slope "
               f"{power['slope']:.2f}, r {power['correlation']:.2f}, {power['chains']} chains)")
        done = ("each reading scaled by its factor to that power" if state.get("corrected")
                else "readings not corrected")
        return f"machine state: {moved}; {how}; {done}"
    done = "each reading scaled to the median state" if state.get("corrected") else "readings not corrected"
    return f"machine state: {moved}; {done}"


def residency_line(res: dict) -> str:
    """The fitted residency in one line (``latprof.predict.residency``)."""
    if res.get("form") == "hot":
        parts = [f"residency: fitted on {res['chains']} chains (hot to warm halfway at "
                 f"{2 ** res['hot_centre_log2'] / 2 ** 20:.2f} MiB of weights, width x{2 ** res['hot_width_log2']:.2f};"
                 f" the weights' cold share halfway at {2 ** res['centre_log2'] / 2 ** 20:.1f} MiB, width "
                 f"x{2 ** res['width_log2']:.2f}"]
    else:
        size = "weights" if res.get("form") == "split" else "footprint"
        parts = [f"residency: fitted on {res['chains']} chains (cold share from {res['floor']:+.2f} to 1, halfway "
                 f"at {2 ** res['centre_log2'] / 2 ** 20:.1f} MiB of {size}, width x{2 ** res['width_log2']:.2f}"]
    if res.get("loo_rmspe_hot") is not None:
        parts.append(f"{res['form']} form kept (chains' leave-one-out RMSPE: hot {res['loo_rmspe_hot']:.3f}, split "
                     f"{res['loo_rmspe_split']:.3f})")
    if res.get("form") == "split":
        parts.append(f"activations pay {res['activation_factor']:+.2f} of their cold cost")
    if res.get("loo_rmspe_with_call_term") is not None:
        kept = abs(res["per_kernel_call_ms"]) > 1e-9
        term = f"per-kernel-call term {1000 * res['per_kernel_call_ms']:+.1f} us" if kept else "no per-kernel-call term"
        parts.append(f"{term} (chains' leave-one-out RMSPE {res['loo_rmspe_without_call_term']:.3f} without one, "
                     f"{res['loo_rmspe_with_call_term']:.3f} with)")
    else:
        parts.append(f"{1000 * res.get('per_kernel_call_ms', 0.0):+.1f} us per kernel call in a loop")
    parts.append(f"chains RMSPE {res['fit_rmspe']:.3f}, {res['fit_within_10']:.0%} within +-10%)")
    return "; ".join(parts)


def show_predictions(predictor: Predictor, predictions: list[Prediction], kernels: bool = False,
                     as_json: bool = False) -> int:
    from latprof.console import print_json, stdout, table

    if as_json:
        print_json([p.as_dict(kernels=kernels) for p in predictions])
        return 0
    now = [p for p in predictions if p.predicted_now_ms is not None]
    stdout.print(table(f"Predicted latency on {predictor.backend}, {predictor.threads} thread(s)",
                       ["model", "input", "predicted ms", *(["at state now ms"] if now else []), "kernels ms",
                        "overhead ms", "kernels", "footprint MiB", "weights MiB", "cold share", "predict s"],
                       [[p.model, "x".join(map(str, p.input_shape)), p.predicted_ms,
                         *([p.predicted_now_ms] if now else []), p.kernels_ms, p.overhead_ms,
                         sum(k.count for k in p.kernels), f"{p.footprint_bytes / 2 ** 20:.1f}",
                         f"{p.weight_bytes / 2 ** 20:.1f}", f"{p.cold_share:.2f}",
                         f"{p.predict_s:.3f}"] for p in predictions]))
    if now and now[0].state_now:
        f = now[0].state_now
        hot = f", hot x{f['hot']:.2f}" if "hot" in f else ""
        stdout.print(f"machine state now vs calibration: cold readings x{f['cold']:.2f}, warm x{f['warm']:.2f}{hot} "
                     f"(applied to the power {predictor.state_power:.2f} the calibration's chains followed)")
    for p in predictions:
        if kernels:
            stdout.print(table(f"{p.model}: kernels", ["op", "kernel", "count", "ms each", "ms"],
                               [[k.op, k.label, k.count, k.ms_each, k.ms]
                                for k in sorted(p.kernels, key=lambda k: -k.ms)]))
        if p.blocks:
            stdout.print(table(f"{p.model}: blocks", ["#", "block", "input", "predicted ms", "kernels"],
                               [[b["block_index"], b["block"], "x".join(map(str, b["input_shape"])),
                                 b["predicted_ms"], b["kernels"]] for b in p.blocks]))
    return 0


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.0f}%"


def show_evaluation(e: Evaluation, as_json: bool = False) -> int:
    """The side-by-side tables: per predictor, per network, per block."""
    from latprof.console import print_json, stdout, table

    if as_json:
        print_json(e.as_dict())
        return 0
    stdout.print(table(f"Predictors on {e.backend}, {e.threads} thread(s): {len(e.networks)} network(s)",
                       ["predictor", "n", "within ±10%", "within ±5%", "RMSPE", "Spearman ρ"],
                       [[name, m["n"], _pct(m["within_10"]), _pct(m["within_5"]),
                         "—" if m["rmspe"] is None else f"{m['rmspe']:.3f}",
                         "—" if m["spearman"] is None else f"{m['spearman']:.3f}"] for name, m in e.metrics.items()]))
    names = [name for name in PREDICTOR_NAMES if name in e.metrics]
    body = []
    for n in e.networks:
        meas = n.get("measured_ms")
        cells = [n["workload"], meas]
        for name in names:
            v = n.get(f"{name}_ms")
            cells.append("—" if v is None or not meas else f"{v:.3g} ({100 * (v - meas) / meas:+.0f}%)")
        body.append(cells)
    stdout.print(table("Per network: predicted ms (error vs measured)", ["network", "measured ms", *names], body))
    spreads = [max(m) / min(m) for n in e.networks if len(m := n.get("process_medians_ms") or []) > 1 and min(m) > 0]
    if spreads:
        passes = max(len(n.get("process_medians_ms") or []) for n in e.networks)
        agree = e.pass_agreement
        stdout.print(f"measured: the median of {passes} passes per network, each pass weighing the same; one "
                     f"network's passes differ by x{min(spreads):.2f}..x{max(spreads):.2f} "
                     f"(median x{float(np.median(spreads)):.2f}); a pass within ±{agree['band']:.0%} of the median "
                     f"of its network's other passes: {_pct(agree['within'])} of {agree['passes']} (what measuring "
                     f"again reproduces here)")
    drift = [n["state_factors"] for n in e.networks if n.get("state_factors")]
    if drift:
        ranges = factor_ranges({name: (min(d[name] for d in drift), max(d[name] for d in drift))
                                for name in ("cold", "warm", "hot") if all(name in d for d in drift)})
        stdout.print(f"machine state beside the measurements vs calibration: {ranges} (kernel@state predicts at it, "
                     f"each factor to the power {e.state_power:.2f})")
    if e.blocks:
        stdout.print(table("Per block: kernel predictor vs each block measured alone",
                           ["network", "#", "block", "measured ms", "predicted ms", "error"],
                           [[b["workload"], b["block_index"], b["block"], b["measured_ms"], b["predicted_ms"],
                             "—" if not b["measured_ms"] else
                             f"{100 * (b['predicted_ms'] - b['measured_ms']) / b['measured_ms']:+.0f}%"]
                            for b in e.blocks]))
        m = e.block_metrics
        rmspe = "—" if m.get("rmspe") is None else f"{m['rmspe']:.3f}"
        stdout.print(f"blocks: {_pct(m.get('within_10'))} within ±10%, RMSPE {rmspe}")
    if e.report_path:
        stdout.print(f"report: {e.report_path}")
    return 0
