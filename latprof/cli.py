"""Command-line interface. Parsing only: every command calls one Python API function and one view of
``latprof.views`` that prints its outcome and gives the exit code.

Defaults are never written here: each flag's default and its help text come from the constant or dataclass that owns
it (``MeasureConfig``, ``latprof.backends.base``, ``latprof.catalog``, the sweep and compare modules), pyperf style.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

from latprof.errors import LatprofError, one_line
from latprof.run.interrupts import Terminated, termination_as_interrupt


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line in one line (exit 2), naming the valid choices."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return v


def _fraction(text: str) -> float:
    """A number strictly between 0 and 1 (a CI target, a threshold, a margin), checked when the line is parsed."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < v < 1:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1 (e.g. 0.05), got {text!r}")
    return v


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


# ---------------------------------------------------------------- env
def _add_env(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON")


def _run_env(args: argparse.Namespace) -> int:
    from latprof.measure.environment import collect
    from latprof.views.environment import show_environment

    return show_environment(collect().as_dict(), args.json)


# ---------------------------------------------------------------- list
def _add_list(p: argparse.ArgumentParser) -> None:
    from latprof.catalog import DEFAULT_TOPIC, TOPICS

    p.add_argument("topic", nargs="?", default=DEFAULT_TOPIC,
                   help=f"one of: {', '.join(TOPICS)} (default {DEFAULT_TOPIC})")
    p.add_argument("--json", action="store_true", help="print JSON")


def _run_list(args: argparse.Namespace) -> int:
    from latprof.catalog import list_topic
    from latprof.views.listing import show_list

    return show_list(args.topic, list_topic(args.topic), args.json)


# ---------------------------------------------------------------- process conditions (profile, sweep, ci)
def _add_process_flags(p: argparse.ArgumentParser, processes_help: str) -> None:
    from latprof.run.allocators import ALLOCATORS, DEFAULT_ALLOCATOR

    p.add_argument("--allocator", choices=ALLOCATORS, default=None,
                   help=f"memory allocator of the worker processes (default {DEFAULT_ALLOCATOR}): steady = glibc with "
                        "freed memory reused, as a long-running server; system = glibc as a plain script gets it; "
                        "jemalloc / tcmalloc = preloaded when found on this machine")
    p.add_argument("--processes", type=_int, metavar="N", help=processes_help)
    p.add_argument("--in-process", action="store_true",
                   help="measure in this process instead of fresh worker processes (debugging; readings then depend "
                        "on what ran before)")
    p.add_argument("--worker-timeout", type=_positive_float, metavar="SECONDS",
                   help="kill a worker that runs longer than this (default: from the unit's time cap)")
    p.add_argument("--append", action="store_true",
                   help="add to an --out folder that already holds results (a new reading beside the old ones)")


def _add_fleet_flags(p: argparse.ArgumentParser) -> None:
    from latprof.run.fleet import EXECUTORS, INSTALL_HINT, NODE_LABEL, RESOURCE

    p.add_argument("--executor", choices=EXECUTORS, default=EXECUTORS[0],
                   help="where units run: local = worker processes on this machine (default); ray = on the machines "
                        f"of a Ray cluster offering the {RESOURCE!r} resource, one unit per machine at a time "
                        f"(needs {INSTALL_HINT}; docs/fleet.md)")
    p.add_argument("--ray-address", metavar="HOST:PORT",
                   help="the Ray head to join (default: $RAY_ADDRESS, else the cluster started on this machine)")
    p.add_argument("--nodes", metavar="LABEL=VALUE,...|NODE,...",
                   help="run on these fleet nodes only: nodes carrying every LABEL=VALUE, or nodes by name "
                        f"({NODE_LABEL} label, else hostname) or id (default: every node)")
    p.add_argument("--spread", action="store_true",
                   help="run each unit once on any free fleet node (throughput) instead of once on every node")


def _run_options(args: argparse.Namespace) -> Any:
    from latprof.run.engine import RunOptions

    if args.processes is not None and args.processes < 1:
        raise LatprofError(f"--processes must be a positive integer, got {args.processes}")
    fleet = None
    if hasattr(args, "executor"):
        from latprof.run.fleet import fleet_options

        fleet = fleet_options(args.executor, args.ray_address, args.nodes, args.spread, args.in_process)
    return RunOptions(in_process=args.in_process, allocator=args.allocator, processes=args.processes,
                      worker_timeout_s=args.worker_timeout, append=args.append, fleet=fleet)


# ---------------------------------------------------------------- flags shared by the measuring commands
def _measure_defaults() -> Any:
    """``MeasureConfig()``: the one source of the protocol's defaults (CI target, time cap, minimum time)."""
    from latprof.measure.protocol import MeasureConfig

    return MeasureConfig()


def _add_threads_flags(p: argparse.ArgumentParser, pin_help: str) -> None:
    from latprof.backends.registry import default_threads_text

    p.add_argument("--threads", type=_int, help=f"intra-op threads (default: {default_threads_text()})")
    p.add_argument("--pin", action="store_true", help=pin_help)


def _add_ort_opt(p: argparse.ArgumentParser) -> None:
    from latprof.backends.base import DEFAULT_ORT_OPT, DEFAULT_TF32, ORT_OPT_LEVELS, TF32_CHOICES

    p.add_argument("--ort-opt", choices=ORT_OPT_LEVELS, default=DEFAULT_ORT_OPT,
                   help=f"ONNX Runtime graph optimisation level (default {DEFAULT_ORT_OPT})")
    p.add_argument("--tf32", choices=TF32_CHOICES, default=DEFAULT_TF32,
                   help=f"CUDA backends: TF32 for fp32 convolutions and matmuls (default {DEFAULT_TF32}: IEEE fp32 as "
                        "on the paper's GTX 1080Ti); set on torch and ONNX Runtime alike and recorded in every row")


def _add_precision(p: argparse.ArgumentParser) -> None:
    from latprof.backends.base import DEFAULT_PRECISION, PRECISIONS
    from latprof.backends.precision import backends_for, quant_help

    p.add_argument("--precision", choices=PRECISIONS, default=DEFAULT_PRECISION,
                   help=f"numeric precision (default {DEFAULT_PRECISION}): int8 = static quantisation with ONNX Runtime "
                        f"({', '.join(backends_for('int8'))}); fp16 on CUDA ({', '.join(backends_for('fp16'))})")
    p.add_argument("--quant", action="append", metavar="KEY=VALUE", help=quant_help())


def _quant(args: argparse.Namespace) -> Any:
    """``--quant`` items as the dict ``ProfileRequest.quant`` / ``SweepRequest.quant`` take (validated there)."""
    from dataclasses import asdict

    from latprof.backends.precision import QuantSettings

    return asdict(QuantSettings.parse(args.quant)) if args.quant else None


# ---------------------------------------------------------------- profile
def _add_measure_flags(p: argparse.ArgumentParser) -> None:
    d = _measure_defaults()
    _add_threads_flags(p, "pin the process to as many cores as threads (psutil)")
    p.add_argument("--batch", type=_int,
                   help="batch size (default: --input's leading dimension, else 1 on CPU, 8 on CUDA)")
    p.add_argument("--target-ci", type=_fraction, default=d.target_ci, metavar="FRACTION",
                   help=f"stop when the 95%% CI of the median is within ±this fraction (default {d.target_ci:g})")
    p.add_argument("--max-time", type=_positive_float, default=d.max_time_s, metavar="SECONDS",
                   help=f"time cap per measurement, warm-up included (default {d.max_time_s:g})")
    p.add_argument("--min-time", type=_positive_float, default=d.min_time_s, metavar="SECONDS",
                   help=f"sample at least this long even when the CI target is met sooner (default {d.min_time_s:g}); "
                        "longer gives more repeatable medians on a noisy machine")
    _add_ort_opt(p)
    _add_precision(p)
    p.add_argument("--out", type=Path, help="output folder (default: a new reports/<date>-<time>-<hostname>/)")
    p.add_argument("--resume", action="store_true",
                   help="skip rows already in the output's results.jsonl (with --processes N, give each the passes "
                        "it lacks)")
    p.add_argument("--json", action="store_true", help="print result rows as JSON")
    _add_process_flags(p, "worker processes per reading, samples pooled and the CI taken over processes too "
                          "(default 1)")
    _add_fleet_flags(p)


def _add_profile(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, type=_csv_list, action="extend",
                   help="registered name, module:callable, path.py:callable or file.onnx (comma-separated or repeated)")
    p.add_argument("--arg", action="append", metavar="KEY=VALUE", help="keyword argument for the model factory")
    p.add_argument("--backend", type=_csv_list, action="extend", default=None,
                   help="backends, comma-separated or repeated (default torch-cpu; ort-cpu for an .onnx file)")
    p.add_argument("--input", help="input shape NxCxHxW; N is the batch (default: the model's)")
    p.add_argument("--per-block", action="store_true",
                   help="also time each block of a zoo network alone; table of blocks and their share of the network")
    p.add_argument("--roofline", action="store_true",
                   help="also measure each backend's peak compute and bandwidth (a few seconds) for the report's roofline")
    p.add_argument("--per-op", action="store_true",
                   help="also profile per operator (separate pass) and show the Figure 2 category breakdown")
    _add_measure_flags(p)


def _measure_config(args: argparse.Namespace) -> Any:
    from latprof.measure.protocol import MeasureConfig

    return MeasureConfig(target_ci=args.target_ci, max_time_s=args.max_time, min_time_s=args.min_time)


def _profile_request(args: argparse.Namespace) -> Any:
    """The ``ProfileRequest`` of ``latprof profile``'s flags (plain and ``--per-block`` runs alike)."""
    from latprof.profile import ProfileRequest
    from latprof.shapes import parse_shape
    from latprof.workloads import parse_kwargs

    return ProfileRequest(
        models=args.model,
        backends=args.backend,
        threads=args.threads,
        pin=args.pin,
        input_shape=parse_shape(args.input) if args.input is not None else None,
        batch=args.batch,
        model_kwargs=parse_kwargs(args.arg),
        config=_measure_config(args),
        ort_opt=args.ort_opt,
        tf32=args.tf32,
        out=args.out,
        resume=args.resume,
        per_op=args.per_op,
        roofline=args.roofline,
        precision=args.precision,
        quant=_quant(args),
        run=_run_options(args),
    )


def _run_profile(args: argparse.Namespace) -> int:
    from latprof.per_block import run_per_block
    from latprof.profile import run_profile
    from latprof.views.profile import show_per_block, show_profile

    if args.per_block:
        if args.per_op or args.roofline:
            raise LatprofError("--per-block cannot be combined with --per-op or --roofline; run them separately")
        return show_per_block(run_per_block(_profile_request(args)), args.json)
    return show_profile(run_profile(_profile_request(args)), args.json)


# ---------------------------------------------------------------- count
def _add_count(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True,
                   help="registered name, module:callable, path.py:callable or file.onnx")
    p.add_argument("--input", help="input shape NxCxHxW (default: the model's)")
    p.add_argument("--arg", action="append", metavar="KEY=VALUE", help="keyword argument for the model factory")
    p.add_argument("--per-layer", action="store_true", help="one row per op call with its module path")
    p.add_argument("--by", choices=("module", "op"), help="sum the rows per module path or per op")
    p.add_argument("--fold-bn", action="store_true", help="count BatchNorm folded into the preceding conv")
    p.add_argument("--json", action="store_true", help="print the count as JSON (totals and every layer)")
    p.add_argument("--csv", type=Path, metavar="FILE", help="write the layer rows (or the --by rows) as CSV")


def _run_count(args: argparse.Namespace) -> int:
    import warnings

    from latprof.cost import UnsupportedOpWarning, count_named
    from latprof.shapes import parse_shape
    from latprof.views.count import show_count
    from latprof.workloads import parse_kwargs

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnsupportedOpWarning)
        report = count_named(args.model, parse_shape(args.input) if args.input else None, args.fold_bn,
                             **parse_kwargs(args.arg))
    return show_count(report, by=args.by, per_layer=args.per_layer, csv=args.csv, as_json=args.json)


# ---------------------------------------------------------------- calibrate / predict (latency predictor)
def _add_calibrate(p: argparse.ArgumentParser) -> None:
    from latprof.predict.calibrate import ATTRIBUTIONS, BACKENDS, DEFAULT_BUDGET_S, QUICK_BUDGET_S
    from latprof.run.allocators import ALLOCATORS, DEFAULT_ALLOCATOR

    p.add_argument("--backend", help=f"one of {', '.join(BACKENDS)}")
    p.add_argument("--from-readings", type=Path, nargs="+", metavar="DIR",
                   help="measure nothing: build the predictor from earlier calibrations' readings (each an --out "
                        "folder or results.jsonl; several of one machine, backend and thread count merge into one "
                        "predictor), with this latprof's attribution and regressors")
    _add_threads_flags(p, "pin to as many cores as threads")
    p.add_argument("--budget", type=_positive_float, metavar="SECONDS",
                   help=f"time to spend measuring (default {DEFAULT_BUDGET_S:.0f}; {QUICK_BUDGET_S:.0f} with --quick)")
    p.add_argument("--quick", action="store_true", help=f"a {QUICK_BUDGET_S:.0f} s calibration (coarser predictor)")
    _add_ort_opt(p)
    p.add_argument("-o", "--output", type=Path, required=True, metavar="FILE.json", help="predictor file to write")
    p.add_argument("--out", type=Path, help="folder of the calibration's raw readings (default: a new "
                                            "reports/calibrate-<date>-<time>-<hostname>/)")
    p.add_argument("--seed", type=_int, default=0, help="seed of the cell sampling (default 0)")
    p.add_argument("--allocator", choices=ALLOCATORS, default=None,
                   help=f"memory allocator of the worker processes (default {DEFAULT_ALLOCATOR}, as profile)")
    p.add_argument("--in-process", action="store_true", help="measure in this process (debugging)")
    p.add_argument("--attribution", choices=ATTRIBUTIONS, default=None,
                   help="torch-cpu kernel samples: profiled (default when measuring) times each kernel inside its "
                        "cell's forward; replay replays each kernel alone; auto (default with --from-readings) "
                        "does both and keeps the one whose calibration chains it predicts better")


def _run_calibrate(args: argparse.Namespace) -> int:
    from latprof.predict.calibrate import BACKENDS, CalibrateRequest, calibrate, rebuild
    from latprof.run.engine import RunOptions
    from latprof.views.predict import calibration_progress, show_calibration

    if args.from_readings is not None:
        return show_calibration(rebuild(args.from_readings, args.output, args.pin, args.ort_opt,
                                        attribution=args.attribution or "auto"))
    if not args.backend:
        raise LatprofError(f"latprof calibrate needs --backend (one of {', '.join(BACKENDS)}) or --from-readings DIR")
    request = CalibrateRequest(args.backend, args.output, args.threads, args.budget, args.quick, args.pin,
                               args.ort_opt, args.out, args.seed, attribution=args.attribution or "profiled",
                               run=RunOptions(in_process=args.in_process, allocator=args.allocator))
    return show_calibration(calibrate(request, calibration_progress(args.backend)))


def _add_predict(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, type=_csv_list, action="extend",
                   help="registered name, module:callable or path.py:callable (comma-separated or repeated)")
    p.add_argument("--predictor", required=True, type=Path, metavar="FILE.json", help="from latprof calibrate")
    p.add_argument("--input", help="input shape NxCxHxW (default: the model's)")
    p.add_argument("--arg", action="append", metavar="KEY=VALUE", help="keyword argument for the model factory")
    p.add_argument("--per-block", action="store_true", help="also predict each block of a zoo network alone")
    p.add_argument("--kernels", action="store_true", help="print every kernel's prediction")
    p.add_argument("--json", action="store_true", help="print JSON (predicted_ms per model, kernels, blocks)")
    p.add_argument("--state-now", action="store_true",
                   help="also read the machine's state now (a fixed block, cache-cold and warm, in a worker: a few "
                        "seconds) and predict at it beside the calibration's state (predicted_now_ms)")
    p.add_argument("--evaluate", action="store_true",
                   help="also measure the models with the run engine and compare the kernel predictor with FLOPs-only, "
                        "MAC-only, FLOPs+MAC fits and the roofline (share within +-10%%/+-5%%, RMSPE, Spearman)")
    p.add_argument("--out", type=Path, help="--evaluate: output folder of the measurements (default: a new reports/ one)")
    p.add_argument("--readings", type=Path, metavar="DIR",
                   help="--evaluate without measuring: use the network rows of an earlier --evaluate (or profile) "
                        "run's folder or results.jsonl, so predictors are compared on the same readings")
    p.add_argument("--remeasure", action="store_true",
                   help="--evaluate: measure every network a second time, one pass later, and score that second "
                        "reading against the first beside the predictors (the ceiling any predictor can reach on "
                        "this machine)")
    p.add_argument("--processes", type=_int, metavar="N",
                   help="--evaluate: measure each network in N worker processes, one per pass over the networks, "
                        "pooled (default 1): the passes lie minutes apart, so each reading averages the machine's "
                        "drift over the evaluation and its CI covers it")


def _run_predict(args: argparse.Namespace) -> int:
    from latprof.predict import load, predict_models
    from latprof.run.engine import RunOptions
    from latprof.shapes import parse_shape
    from latprof.views.predict import show_evaluation, show_predictions
    from latprof.workloads import parse_kwargs

    predictor = load(args.predictor)
    shape = parse_shape(args.input) if args.input is not None else None
    kwargs = parse_kwargs(args.arg)
    if args.evaluate:
        from latprof.predict.evaluate import EvaluateRequest, evaluate

        if args.remeasure and args.readings is not None:
            raise LatprofError("--remeasure measures the networks again; with --readings the earlier evaluation's "
                               "own second pass (its remeasure/ folder), if it had one, is used")
        if args.processes is not None and (args.processes < 1 or args.readings is not None):
            raise LatprofError(f"--processes must be a positive integer, got {args.processes}" if args.processes < 1
                               else "--processes measures the networks; --readings uses an earlier run's readings")
        outcome = evaluate(EvaluateRequest(predictor, args.model, shape, kwargs, args.per_block, args.out,
                                           readings=args.readings, remeasure=args.remeasure,
                                           run=RunOptions(processes=args.processes)))
        return show_evaluation(outcome, args.json)
    now = None
    if args.state_now:
        from latprof.predict.state import read_state_now

        now = read_state_now(predictor.reference_state, predictor.threads, engine=predictor.state_reading)
    predictions = predict_models(predictor, args.model, shape, kwargs, args.per_block, state_now=now)
    return show_predictions(predictor, predictions, args.kernels, args.json)


# ---------------------------------------------------------------- sweep
def _add_sweep(p: argparse.ArgumentParser) -> None:
    from latprof.analysis.verdicts import DEFAULT_EQUIVALENCE_MARGIN
    from latprof.experiments.sweep import DEFAULT_UNIT_MAX_TIME_S, QUICK_BUDGET_S, QUICK_MAX_TIME_S, QUICK_TARGET_CI

    d = _measure_defaults()

    p.add_argument("--guideline", type=_csv_list, action="extend", default=[], metavar="g1,..|all|claims",
                   help="shipped experiments to run (comma-separated): any id of `latprof list guidelines`; all = "
                        "ShuffleNet V2's G1-G4; claims = every seed-paper claim experiment")
    p.add_argument("--spec", type=_csv_list, action="extend", default=[], metavar="FILE.toml",
                   help="kernel specs of your own (comma-separated or repeated)")
    p.add_argument("--backend", type=_csv_list, action="extend",
                   help="backends, comma-separated or repeated (default: every available CPU backend, plus CUDA when present)")
    p.add_argument("--scale", type=lambda t: [_int(x) for x in _csv_list(t)], action="extend",
                   help="channel-width multipliers, e.g. 1,2,4 (comma-separated or repeated; default: the spec's)")
    p.add_argument("--channels", choices=("auto", "gpu", "arm"), default="auto",
                   help="the paper's channel numbers: auto = ARM on CPU/mobile backends, GPU on CUDA (default auto)")
    p.add_argument("--quick", action="store_true",
                   help=f"scale x1 only, looser CI target ({QUICK_TARGET_CI:g}), {QUICK_MAX_TIME_S:g} s per unit: "
                        "a smoke run")
    _add_threads_flags(p, "pin to as many cores as threads")
    p.add_argument("--target-ci", type=_fraction, metavar="FRACTION",
                   help=f"CI target of each median (default {d.target_ci:g}; {QUICK_TARGET_CI:g} with --quick)")
    p.add_argument("--max-time", type=_positive_float, metavar="SECONDS",
                   help="time cap per unit (all variants of one guideline x backend x scale; "
                        f"default {DEFAULT_UNIT_MAX_TIME_S:g}, {QUICK_MAX_TIME_S:g} with --quick)")
    p.add_argument("--min-time", type=_positive_float, default=d.min_time_s, metavar="SECONDS",
                   help="sample each unit at least this long even when the CI targets are met sooner "
                        f"(default {d.min_time_s:g})")
    _add_ort_opt(p)
    _add_precision(p)
    p.add_argument("--out", type=Path, help="output folder (default: a new reports/<date>-<time>-<hostname>/)")
    p.add_argument("--resume", action="store_true",
                   help="skip units whose rows are already in the output (with --processes N, give each the passes "
                        "it lacks)")
    p.add_argument("--shard", help="run only part i of n of the units (i/n); join parts with 'latprof merge'")
    p.add_argument("--equivalence-margin", type=_fraction, default=DEFAULT_EQUIVALENCE_MARGIN, metavar="FRACTION",
                   help="a variant whose speed-ratio CI lies within 1 +- this shows 'no effect' "
                        f"(default {DEFAULT_EQUIVALENCE_MARGIN})")
    p.add_argument("--no-roofline", action="store_true",
                   help="do not measure each backend's peak compute and bandwidth (the report then has no roofline)")
    p.add_argument("--budget", type=_positive_float, metavar="SECONDS",
                   help="after one pass, add worker processes to inconclusive units until this much time is spent "
                        f"(default {QUICK_BUDGET_S:.0f} with --quick, off otherwise)")
    p.add_argument("--json", action="store_true", help="print the summary rows as JSON")
    _add_process_flags(p, "worker processes per unit to start with (default 1; --budget adds more where undecided)")
    _add_fleet_flags(p)


def _run_sweep(args: argparse.Namespace) -> int:
    from latprof.experiments.sweep import SweepRequest, parse_shard, plan_units, run_sweep
    from latprof.views.sweep import show_sweep, unit_progress

    request = SweepRequest(
        guidelines=args.guideline, spec_paths=args.spec, backends=args.backend, threads=args.threads, pin=args.pin,
        scales=args.scale, channels=args.channels, quick=args.quick, target_ci=args.target_ci,
        max_time_s=args.max_time, min_time_s=args.min_time, ort_opt=args.ort_opt, tf32=args.tf32, out=args.out,
        resume=args.resume,
        shard=parse_shard(args.shard) if args.shard else None, equivalence_margin=args.equivalence_margin,
        budget_s=args.budget, roofline=not args.no_roofline, precision=args.precision, quant=_quant(args),
        run=_run_options(args),
    )
    with unit_progress(len(plan_units(request))) as on_unit:
        outcome = run_sweep(request, on_unit)
    return show_sweep(outcome, args.json)


# ---------------------------------------------------------------- merge
def _add_merge(p: argparse.ArgumentParser) -> None:
    p.add_argument("sources", nargs="+", help="results.jsonl files or the folders holding them")
    p.add_argument("--out", type=Path, required=True, help="new output folder")


def _run_merge(args: argparse.Namespace) -> int:
    from latprof.console import stdout
    from latprof.experiments.outputs import merge_runs, write_outputs
    from latprof.views.common import print_paths

    _, n = merge_runs(args.sources, args.out)
    paths = write_outputs(args.out)
    stdout.print(f"merged {n} rows from {len(args.sources)} source(s)")
    print_paths(paths)
    return 0


# ---------------------------------------------------------------- compare
def _add_compare(p: argparse.ArgumentParser) -> None:
    from latprof.regress.compare import CompareOptions

    d = CompareOptions()
    p.add_argument("baseline", type=Path, help="baseline results.jsonl (or its folder)")
    p.add_argument("current", type=Path, help="current results.jsonl (or its folder)")
    p.add_argument("--threshold", type=_fraction, default=d.threshold,
                   help=f"smallest change that counts, as a fraction of the baseline (default {d.threshold:g})")
    p.add_argument("--alpha", type=_fraction, default=d.alpha,
                   help=f"significance level of the tests (default {d.alpha:g})")
    p.add_argument("--normalize", action="store_true",
                   help="compare latency relative to the reference workload measured in the same rounds")
    p.add_argument("--allow-hardware-mismatch", action="store_true",
                   help="compare files from different hardware_ids (normalized values only)")
    p.add_argument("--markdown", type=Path, metavar="FILE", help="also write the comparison as Markdown")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")


def _run_compare(args: argparse.Namespace) -> int:
    from latprof.regress import CompareOptions, compare_files
    from latprof.views.regress import show_compare

    options = CompareOptions(threshold=args.threshold, alpha=args.alpha, normalize=args.normalize,
                             allow_hardware_mismatch=args.allow_hardware_mismatch)
    return show_compare(compare_files(args.baseline, args.current, options), args.json, args.markdown)


# ---------------------------------------------------------------- ci
def _add_ci(p: argparse.ArgumentParser) -> None:
    from latprof.regress.ci import DEFAULT_BASELINE_DIR, DEFAULT_SUITE

    p.add_argument("--suite", type=Path, default=DEFAULT_SUITE, help=f"suite TOML (default {DEFAULT_SUITE})")
    p.add_argument("--baseline", type=Path, default=DEFAULT_BASELINE_DIR,
                   help=f"baseline folder holding <hardware_id>/results.jsonl (default {DEFAULT_BASELINE_DIR})")
    p.add_argument("--update-baseline", action="store_true", help="write this run as the baseline of this hardware_id")
    p.add_argument("--warn-only", action="store_true", help="report regressions but exit 0")
    p.add_argument("--threshold", type=_fraction, help="override the suite's threshold")
    p.add_argument("--alpha", type=_fraction, help="override the suite's alpha")
    p.add_argument("--no-confirm", action="store_true", help="do not re-measure flagged rows before failing")
    p.add_argument("--out", type=Path, help="output folder (default reports/ci-<time>-<hostname>/)")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    _add_process_flags(p, "worker processes per suite group (default 1)")


def _run_ci(args: argparse.Namespace) -> int:
    from latprof.regress.ci import CIOptions, run_ci
    from latprof.views.regress import show_ci

    options = CIOptions(suite=args.suite, baseline_dir=args.baseline, out=args.out,
                        update_baseline=args.update_baseline, warn_only=args.warn_only, threshold=args.threshold,
                        alpha=args.alpha, confirm=not args.no_confirm, run=_run_options(args))
    return show_ci(run_ci(options), args.json)


# ---------------------------------------------------------------- report
def _add_report(p: argparse.ArgumentParser) -> None:
    from latprof.report.build import DEFAULT_REPORT_FILE

    p.add_argument("results", nargs="+", type=Path, metavar="RESULTS",
                   help="results.jsonl files or run folders (several backends or machines are merged)")
    p.add_argument("-o", "--output", type=Path, default=DEFAULT_REPORT_FILE,
                   help=f"HTML file to write (default {DEFAULT_REPORT_FILE})")
    p.add_argument("--csv", type=Path, metavar="SUMMARY_CSV", help="also write the tidy summary table here")
    p.add_argument("--title", help="page title (default 'latprof report')")


def _run_report(args: argparse.Namespace) -> int:
    from latprof.report import build_report
    from latprof.views.common import print_paths

    html = build_report(args.results, args.output, csv_path=args.csv, title=args.title)
    print_paths({"report": html, "summary": args.csv})
    return 0


class Command(NamedTuple):
    """One subcommand: its line in ``latprof --help``, what adds its flags, what runs it."""

    help: str
    add: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def _list_help() -> str:
    from latprof.catalog import TOPICS

    return f"list {', '.join(TOPICS[:-1])} or {TOPICS[-1]}"


COMMANDS: dict[str, Command] = {
    "env": Command("show the environment fingerprint (hardware, software, threads, hardware_id)", _add_env, _run_env),
    "list": Command(_list_help(), _add_list, _run_list),
    "profile": Command("measure a model's latency on one or more backends", _add_profile, _run_profile),
    "count": Command("count mult_adds, elementwise_ops, memory access cost and params (no timing)", _add_count,
                     _run_count),
    "sweep": Command("re-run ShuffleNet V2's guideline experiments (g1..g4) and the seed papers' efficiency claims, "
                     "and give verdicts", _add_sweep, _run_sweep),
    "merge": Command("join results of several runs (e.g. --shard parts) into one folder", _add_merge, _run_merge),
    "compare": Command("compare two results files row by row; exit 1 if any workload regressed", _add_compare,
                       _run_compare),
    "ci": Command("run the CI suite interleaved and gate on this machine's committed baseline", _add_ci, _run_ci),
    "report": Command("write one self-contained HTML report (and CSVs) from results files", _add_report, _run_report),
    "calibrate": Command("measure this machine's kernels on one backend and write a latency predictor",
                         _add_calibrate, _run_calibrate),
    "predict": Command("predict a model's latency from a calibrated predictor, without running it", _add_predict,
                       _run_predict),
}


def _command_in(argv: Sequence[str]) -> str | None:
    """The subcommand ``argv`` names: its first token that is not an option (the top level has only --help and
    --version), or None (``latprof``, ``latprof --help``, an unknown command)."""
    for token in argv:
        if not token.startswith("-"):
            return token if token in COMMANDS else None
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser. Given the command line, only the named command gets its flags: their defaults and help come from
    the modules that own them (torch, pandas, matplotlib and scipy behind them), so ``latprof --help`` and an
    unknown command answer without importing any of those. Without ``argv``, every command is complete."""
    from latprof import __version__

    parser = _Parser(
        prog="latprof",
        description="Hardware-aware latency profiler for efficient CNNs: real latency next to FLOPs and memory access cost.",
    )
    parser.add_argument("--version", action="version", version=f"latprof {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    wanted = _command_in(argv) if argv is not None else None
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help)
        if argv is None or name == wanted:
            command.add(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a bad command line (already reported in one line)
        return int(exc.code or 0)
    if not args.command:
        parser.print_help()
        return 2
    try:
        with termination_as_interrupt():
            return COMMANDS[args.command].run(args)
    except LatprofError as exc:
        print(f"latprof: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except Terminated as exc:
        print(f"latprof: terminated by {exc}; every finished row is kept in the results file", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print("latprof: interrupted; every finished row is kept in the results file", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
