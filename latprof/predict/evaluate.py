"""``latprof predict --evaluate``: predictions against measurements, beside the count-based predictors.

The networks are measured with the run engine exactly as ``latprof profile`` measures them (a fresh worker per
network, the predictor's backend, threads and settings); with ``--per-block`` as ``profile --per-block`` does (the
whole network, then each block alone). Side by side on the same measurements:

- ``kernel``: this predictor (calibrated on cells; no network was measured to fit it);
- ``flops``: latency ~ a * mult_adds + b, ``mac``: ~ a * mem_access + b, ``flops+mac``: ~ a * mult_adds +
  b * mem_access + c, each fitted by least squares leave-one-out: a network's prediction comes from a fit to the
  *other* networks' measurements, never its own;
- ``roofline``: max(2 * mult_adds / peak FLOP/s, mem_bytes / peak bandwidth), the peaks measured at calibration.

- ``kernel@state``: this predictor at the machine state read beside each measurement (``latprof.predict.state``:
  the fixed block read cold and warm every ``STATE_EVERY`` networks in a worker, a network taking the mean of the readings
  before and after it), when the predictor and the readings both carry state readings. The gap between ``kernel``
  and ``kernel@state`` is what the machine's drift since calibration costs.
- ``remeasured`` (``--remeasure``): not a predictor but the ceiling of every predictor here: each network measured
  again, the same way, one pass later (``REMEASURE_DIR`` inside the output folder). On a shared machine whose
  speed drifts between minutes, a network's second reading is itself not always within ±10% of its first, and
  no prediction can be held to more than the measurement gives.

Metrics per predictor: share of networks within ±10% and ±5% of the measured median, RMSPE (root mean square of
the relative errors) and Spearman's rank correlation (what a NAS loop needs: the right order).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from latprof.analysis.prediction import loo_fit, metrics, pass_agreement, roofline_ms
from latprof.errors import LatprofError
from latprof.measure.protocol import MeasureConfig
from latprof.predict.predictor import Predictor
from latprof.predict.state import ENGINE, TORCH, StateLog, state_near
from latprof.results import ResultStore
from latprof.rows import Record
from latprof.run.engine import RunOptions, default_out_dir
from latprof.shapes import Shape
from latprof.workloads import create_workload

PREDICTOR_NAMES = ("kernel", "kernel@state", "flops", "mac", "flops+mac", "roofline", "remeasured")
REMEASURE_DIR = "remeasure"  # the second pass of ``--remeasure``, inside the evaluation's output folder


@dataclass
class EvaluateRequest:
    predictor: Predictor
    models: list[str]
    input_shape: Shape | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    per_block: bool = False
    out: Path | None = None
    config: MeasureConfig = field(default_factory=MeasureConfig)
    run: RunOptions = field(default_factory=RunOptions)
    readings: Path | None = None  # an earlier run's results: its rows are the measurements, nothing is measured
    state: bool = True  # read the machine state between networks (when the predictor has a reference state)
    remeasure: bool = False  # measure every network a second time, one pass later (the ``remeasured`` row)


@dataclass
class Evaluation:
    backend: str
    threads: int
    networks: list[dict[str, Any]]  # per network: measured_ms, each predictor's ms, counts
    metrics: dict[str, dict[str, Any]]  # per predictor
    blocks: list[dict[str, Any]] = field(default_factory=list)  # per block: measured_ms, predicted_ms
    block_metrics: dict[str, Any] = field(default_factory=dict)
    out_dir: Path | None = None
    report_path: Path | None = None
    state_power: float = 1.0  # the predictor's (kernel@state applies each state factor to it)

    @property
    def pass_agreement(self) -> dict[str, Any]:
        """How often one pass of a network falls within ±10% of its other passes (``analysis.prediction``)."""
        return pass_agreement([n.get("process_medians_ms") or [] for n in self.networks])

    def as_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "threads": self.threads, "networks": self.networks, "metrics": self.metrics,
                "blocks": self.blocks, "block_metrics": self.block_metrics,
                "out_dir": str(self.out_dir) if self.out_dir else None,
                "report": str(self.report_path) if self.report_path else None, "state_power": self.state_power,
                "pass_agreement": self.pass_agreement}


def baselines(networks: list[dict[str, Any]], peaks: dict[str, Any] | None) -> None:
    """Add each count-based predictor's prediction to every network row (leave-one-out fits)."""
    ok = [n for n in networks if n.get("measured_ms") and n.get("mult_adds") is not None]
    y = [n["measured_ms"] for n in ok]
    ma = [float(n["mult_adds"]) for n in ok]
    mac = [float(n["mem_access"]) for n in ok]
    for name, cols in (("flops", [ma]), ("mac", [mac]), ("flops+mac", [ma, mac])):
        for n, v in zip(ok, loo_fit(cols, y) if ok else []):
            n[f"{name}_ms"] = v
    for n in ok:
        n["roofline_ms"] = roofline_ms(float(n["mult_adds"]), float(n.get("mem_bytes") or 0), peaks)


def evaluate(request: EvaluateRequest) -> Evaluation:
    """Measure the models with the run engine, predict them, and compare every predictor on the same readings."""
    from latprof.per_block import run_per_block
    from latprof.profile import ProfileRequest, run_profile

    p = request.predictor
    settings = p.data.get("backend_options", {})
    for m in request.models:  # every model is built (and rejected in one line) before anything is measured
        w = create_workload(m, input_shape=request.input_shape, batch=1, **request.model_kwargs)
        if w.module is None:
            raise LatprofError(f"{m}: prediction needs a PyTorch module (an .onnx file has none)")
    profile_request = ProfileRequest(
        models=request.models, backends=[p.backend], threads=p.threads, pin=bool(settings.get("pin", False)),
        input_shape=request.input_shape, batch=None if request.input_shape else 1, model_kwargs=request.model_kwargs,
        config=request.config, ort_opt=settings.get("ort_opt", "all"),
        out=request.out or (default_out_dir() if request.readings is None else None), run=request.run)
    reference = p.reference_state
    second: list[dict[str, Any]] = []  # the rows of a second pass (``--remeasure``), if any
    if request.readings is not None:
        files, states, second = _from_readings(request, p)
        # an earlier run's state readings on another engine than this predictor's calibration are not comparable
        # with its reference: no kernel@state from them
        states = [s for s in states if (s.get(ENGINE) or TORCH) == p.state_reading["engine"]]
    else:
        log = StateLog(request.run, p.threads, p.state_reading) if reference and request.state else None
        if log:
            log.read(0)
        try:
            run = run_per_block if request.per_block else run_profile
            files = run(profile_request, after_unit=log.after_unit if log else None)
        finally:
            if log:
                log.store(profile_request.out)
        states = log.records if log else []
        if request.remeasure:
            second = run_profile(replace(profile_request, out=files.out_dir / REMEASURE_DIR)).rows
    rows = [r for r in files.rows if r.get("block_index", -1) == -1]
    passes = max([int(r.get("processes") or 1) for r in rows] or [1])  # the passes of --processes, read or measured
    again = {r["workload"]: r["latency_median_ms"] for r in second
             if r.get("status") == "ok" and r.get("block_index", -1) == -1 and r.get("latency_median_ms")}
    networks: list[dict[str, Any]] = []
    blocks: list[dict[str, Any]] = []
    for j, r in enumerate(rows):
        w = create_workload(r["workload"] if r["workload"] in request.models else _model_of(r, request.models),
                            input_shape=request.input_shape, batch=1, **request.model_kwargs)
        # A network measured in several passes (``--processes``) ran at step j of each pass of len(rows) units.
        factors = state_near(states, [j + k * len(rows) for k in range(passes)], reference)
        pred = p.predict_workload(w, request.per_block, factors)
        net = {"workload": r["workload"], "measured_ms": r.get("latency_median_ms") if r.get("status") == "ok" else None,
               "measured_ci": [r.get("latency_ci_low_ms"), r.get("latency_ci_high_ms")], "kernel_ms": pred.predicted_ms,
               "mult_adds": r.get("mult_adds"), "mem_access": r.get("mem_access"), "mem_bytes": r.get("mem_bytes"),
               "predict_s": pred.predict_s, "error": r.get("error") or ""}
        if (r.get("processes") or 1) > 1:  # measured in several passes: each pass's median, for the spread
            net["process_medians_ms"] = r.get("process_medians_ms")
        if factors is not None:
            net["state_factors"], net["kernel@state_ms"] = pred.state_now, pred.predicted_now_ms
        if again.get(r["workload"]):
            net["remeasured_ms"] = again[r["workload"]]
        networks.append(net)
        if request.per_block:
            measured = {b.get("block_index"): b for b in files.rows
                        if b.get("workload") == r["workload"] and b.get("block_index", -1) >= 0}
            for b in pred.blocks:
                m = measured.get(b["block_index"], {})
                blocks.append({"workload": r["workload"], "block_index": b["block_index"], "block": b["block"],
                               "measured_ms": m.get("latency_median_ms") if m.get("status") == "ok" else None,
                               "predicted_ms": b["predicted_ms"]})
    baselines(networks, p.data.get("peaks"))
    names = [n for n in PREDICTOR_NAMES
             if n not in ("kernel@state", "remeasured") or any(f"{n}_ms" in x for x in networks)]
    result = Evaluation(p.backend, p.threads, networks, {
        name: metrics([n.get(f"{name}_ms") for n in networks], [n.get("measured_ms") for n in networks])
        for name in names}, blocks,
        metrics([b["predicted_ms"] for b in blocks], [b["measured_ms"] for b in blocks]) if blocks else {},
        files.out_dir, state_power=p.state_power)
    _store(result, files.results_path, p)
    from latprof.experiments.outputs import write_outputs

    result.report_path = write_outputs(files.out_dir)["report"]
    return result


def _from_readings(request: EvaluateRequest,
                   p: Predictor) -> tuple[Any, list[dict[str, Any]], list[dict[str, Any]]]:
    """The measurements of an earlier run (its rows for the predictor's backend and threads, the last per identity),
    copied with its environment records and machine-state readings into a new output folder beside which the
    predictions are stored; those state readings; and the rows of the earlier evaluation's second pass
    (``--remeasure``), copied along, or none."""
    from latprof.profile import RunFiles
    from latprof.results import read_results, row_key
    from latprof.run.engine import open_output

    f = read_results(request.readings, quiet=True)
    last = {row_key(r): r for r in f.results if r.get("backend") == p.backend and r.get("threads") == p.threads
            and r.get("workload") in request.models}
    rows = list(last.values())
    missing = [m for m in request.models if not any(r.get("workload") == m for r in rows)]
    if missing:
        raise LatprofError(f"{f.path} has no {p.backend} rows with {p.threads} thread(s) for {', '.join(missing)}")
    out_dir, store = open_output(request.out or default_out_dir("evaluate-"), False, False)
    for env in f.environments.values():
        store.append({"record": "environment", **env})
    states = [r for r in f.other if r.get("record") == Record.MACHINE_STATE and r.get("status") == "ok"]
    store.append_many(rows)
    store.append_many(states)
    second: list[dict[str, Any]] = []
    second_path = f.path.parent / REMEASURE_DIR / "results.jsonl"
    if second_path.exists():
        (out_dir / REMEASURE_DIR).mkdir(exist_ok=True)
        shutil.copyfile(second_path, out_dir / REMEASURE_DIR / "results.jsonl")
        second = read_results(second_path, quiet=True).results
    return RunFiles(out_dir, store.path, out_dir / "results.csv", rows), states, second


def _model_of(row: dict[str, Any], models: list[str]) -> str:
    return next((m for m in models if row.get("workload", "").startswith(m.split(":")[-1])), models[0])


def _store(result: Evaluation, path: Path, p: Predictor) -> None:
    """``prediction`` records beside the measurements, for the report's predicted-vs-measured scatter."""
    store = ResultStore(path)
    common = {"record": Record.PREDICTION.value, "backend": result.backend, "threads": result.threads,
              "predictor_file": p.path, "hardware_id": p.data["hardware_id"]}
    for n in result.networks:
        passes = n.get("process_medians_ms") or []  # the range of its passes' medians: the report's bar
        spread = {"measured_low_ms": min(passes), "measured_high_ms": max(passes)} if len(passes) > 1 else {}
        for name in PREDICTOR_NAMES:
            if n.get(f"{name}_ms") is not None and n.get("measured_ms"):
                store.append({**common, "workload": n["workload"], "block_index": -1, "predictor": name,
                              "predicted_ms": n[f"{name}_ms"], "measured_ms": n["measured_ms"], **spread})
    for b in result.blocks:
        if b.get("measured_ms"):
            store.append({**common, "workload": b["workload"], "block_index": b["block_index"], "block": b["block"],
                          "predictor": "kernel", "predicted_ms": b["predicted_ms"], "measured_ms": b["measured_ms"]})
