"""Command-line interface. Parsing only: every command calls a Python API function and prints its result."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from latprof.errors import LatprofError, one_line


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


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


# ---------------------------------------------------------------- env
def _add_env(sub: Any) -> None:
    p = sub.add_parser("env", help="show the environment fingerprint (hardware, software, threads, hardware_id)")
    p.add_argument("--json", action="store_true", help="print JSON")


def _run_env(args: argparse.Namespace) -> int:
    from latprof.console import print_json, stdout, table, warn
    from latprof.measure.environment import collect

    env = collect().as_dict()
    if args.json:
        print_json(env)
    else:
        rows = [("hardware_id", env["hardware_id"])]
        for section in ("hardware", "software", "threads", "state"):
            rows += [(f"{section}.{k}", v if not isinstance(v, (dict, list)) else str(v)) for k, v in env[section].items()]
        stdout.print(table("Environment", ["field", "value"], rows))
    for w in env["warnings"]:
        warn(w)
    return 0


# ---------------------------------------------------------------- list
LIST_TOPICS = ("models", "blocks", "networks", "guidelines", "backends")


def _add_list(sub: Any) -> None:
    p = sub.add_parser("list", help="list models, blocks, networks, guidelines or backends")
    p.add_argument("topic", nargs="?", default="models", help=f"one of: {', '.join(LIST_TOPICS)} (default models)")
    p.add_argument("--json", action="store_true", help="print JSON")


def _run_list(args: argparse.Namespace) -> int:
    from latprof.catalog import list_topic
    from latprof.console import print_json, stdout, table

    items = list_topic(args.topic)
    if args.json:
        print_json(items)
        return 0
    if not items:
        stdout.print(f"no {args.topic}")
        return 0
    cols = [c for c in items[0] if not isinstance(items[0][c], (dict, list))]
    stdout.print(table(args.topic.capitalize(), cols, [[it.get(c) for c in cols] for it in items]))
    return 0


# ---------------------------------------------------------------- profile
def _add_measure_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=_int, help="intra-op threads (default: all logical cores; 1 on ort-mobile)")
    p.add_argument("--pin", action="store_true", help="pin the process to as many cores as threads (psutil)")
    p.add_argument("--batch", type=_int, help="batch size (default: per backend: 1 on CPU, 8 on CUDA)")
    p.add_argument("--target-ci", type=_positive_float, default=0.02,
                   help="stop when the 95%% CI of the median is within ±this fraction (default 0.02)")
    p.add_argument("--max-time", type=_positive_float, default=10.0, metavar="SECONDS",
                   help="time cap per measurement, warm-up included (default 10)")
    p.add_argument("--ort-opt", choices=("none", "basic", "extended", "all"), default="all",
                   help="ONNX Runtime graph optimisation level (default all)")
    p.add_argument("--out", type=Path, help="output folder (default reports/<date>-<hostname>/)")
    p.add_argument("--resume", action="store_true", help="skip rows already in the output's results.jsonl")
    p.add_argument("--json", action="store_true", help="print result rows as JSON")


def _add_profile(sub: Any) -> None:
    p = sub.add_parser("profile", help="measure a model's latency on one or more backends")
    p.add_argument("--model", required=True, action="append",
                   help="registered name, module:callable, path.py:callable or file.onnx (repeatable)")
    p.add_argument("--arg", action="append", metavar="KEY=VALUE", help="keyword argument for the model factory")
    p.add_argument("--backend", type=_csv_list, default=["torch-cpu"], help="comma-separated backends (default torch-cpu)")
    p.add_argument("--input", help="input shape NxCxHxW (default: the model's)")
    _add_measure_flags(p)


def _measure_config(args: argparse.Namespace) -> Any:
    from latprof.measure.protocol import MeasureConfig

    return MeasureConfig(target_ci=args.target_ci, max_time_s=args.max_time)


def _run_profile(args: argparse.Namespace) -> int:
    from latprof.console import print_json, result_table, stdout
    from latprof.profile import ProfileRequest, run_profile
    from latprof.shapes import parse_shape
    from latprof.workloads import parse_kwargs

    request = ProfileRequest(
        models=args.model,
        backends=args.backend,
        threads=args.threads,
        pin=args.pin,
        input_shape=parse_shape(args.input) if args.input else None,
        batch=args.batch,
        model_kwargs=parse_kwargs(args.arg),
        config=_measure_config(args),
        ort_opt=args.ort_opt,
        out=args.out,
        resume=args.resume,
    )
    files = run_profile(request)
    if args.json:
        print_json([{k: v for k, v in r.items() if k != "samples_ms"} for r in files.rows])
    else:
        stdout.print(result_table(files.rows))
        if files.skipped:
            stdout.print(f"{files.skipped} row(s) already present, skipped (--resume)")
        stdout.print(f"results: {files.results_path}  csv: {files.csv_path}")
    failed = [r for r in files.rows if r.get("status") != "ok"]
    for r in failed:
        print(f"latprof: error: {r['workload']} on {r['backend']}: {r['error']}", file=sys.stderr)
    return 2 if failed else 0


# ---------------------------------------------------------------- count
def _add_count(sub: Any) -> None:
    p = sub.add_parser("count", help="count mult_adds, elementwise_ops, memory access cost and params (no timing)")
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

    from latprof.console import print_json, stdout, table, warn
    from latprof.cost import COUNT_COLUMNS, UnsupportedOpWarning, count_named
    from latprof.cost.report import write_csv
    from latprof.shapes import format_shape, parse_shape
    from latprof.workloads import parse_kwargs

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnsupportedOpWarning)
        report = count_named(args.model, parse_shape(args.input) if args.input else None, args.fold_bn,
                             **parse_kwargs(args.arg))
    rows = report.aggregate(args.by) if args.by else [r.as_dict() for r in report.layers]
    if args.csv:
        write_csv(rows, args.csv)
    if args.json:
        print_json(report.as_dict())
    else:
        cols = [*COUNT_COLUMNS, "arithmetic_intensity"]
        if args.per_layer or args.by:
            key = ["name", "op"] if not args.by else [args.by if args.by == "op" else "name", "calls"]
            extra = ["output_shape"] if not args.by else []
            body = [[r[k] if k != "output_shape" else format_shape(r[k]) if r[k] else "-" for k in key + cols[:-1] + extra]
                    for r in rows]
            stdout.print(table(f"{report.model} per {'layer' if not args.by else args.by}", key + cols[:-1] + extra, body))
        totals = report.totals
        shapes = ", ".join(format_shape(s) for s in report.input_shapes)
        title = f"{report.model} ({shapes}{', BN folded' if report.fold_bn else ''})"
        stdout.print(table(title, cols, [[totals[c] for c in cols]]))
        if args.csv:
            stdout.print(f"csv: {args.csv}")
    if report.unsupported_ops:
        warn(f"no cost rule for op(s) {', '.join(report.unsupported_ops)}: their tensor traffic is counted, "
             "their arithmetic is not")
    return 0


COMMANDS: dict[str, tuple[Callable[[Any], None], Callable[[argparse.Namespace], int]]] = {
    "env": (_add_env, _run_env),
    "list": (_add_list, _run_list),
    "profile": (_add_profile, _run_profile),
    "count": (_add_count, _run_count),
}


def build_parser() -> argparse.ArgumentParser:
    from latprof import __version__

    parser = _Parser(
        prog="latprof",
        description="Hardware-aware latency profiler for efficient CNNs: real latency next to FLOPs and memory access cost.",
    )
    parser.add_argument("--version", action="version", version=f"latprof {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for add, _ in COMMANDS.values():
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command][1](args)
    except LatprofError as exc:
        print(f"latprof: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("latprof: interrupted; every finished row is kept in the results file", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
