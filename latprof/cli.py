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


# ---------------------------------------------------------------- report
def _add_report(sub: Any) -> None:
    p = sub.add_parser("report", help="write one self-contained HTML report (and CSVs) from results files")
    p.add_argument("results", nargs="+", type=Path, metavar="RESULTS",
                   help="results.jsonl files or run folders (several backends or machines are merged)")
    p.add_argument("-o", "--output", type=Path, default=Path("report.html"), help="HTML file to write (default report.html)")
    p.add_argument("--csv", type=Path, metavar="SUMMARY_CSV", help="also write the tidy summary table here")
    p.add_argument("--title", help="page title (default 'latprof report')")


def _run_report(args: argparse.Namespace) -> int:
    from latprof.console import stdout
    from latprof.report import build_report

    html = build_report(args.results, args.output, csv_path=args.csv, title=args.title)
    stdout.print(f"report: {html}" + (f"  summary: {args.csv}" if args.csv else ""))
    return 0


COMMANDS: dict[str, tuple[Callable[[Any], None], Callable[[argparse.Namespace], int]]] = {
    "env": (_add_env, _run_env),
    "list": (_add_list, _run_list),
    "profile": (_add_profile, _run_profile),
    "report": (_add_report, _run_report),
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
