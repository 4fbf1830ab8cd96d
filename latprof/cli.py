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


# ---------------------------------------------------------------- compare
def _fraction(text: str) -> float:
    v = _positive_float(text)
    if not v < 1:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1 (e.g. 0.05), got {text!r}")
    return v


def _add_compare(sub: Any) -> None:
    p = sub.add_parser("compare", help="compare two results files row by row; exit 1 if any workload regressed")
    p.add_argument("baseline", type=Path, help="baseline results.jsonl (or its folder)")
    p.add_argument("current", type=Path, help="current results.jsonl (or its folder)")
    p.add_argument("--threshold", type=_fraction, default=0.05,
                   help="smallest change that counts, as a fraction of the baseline (default 0.05)")
    p.add_argument("--alpha", type=_fraction, default=0.01, help="significance level of the tests (default 0.01)")
    p.add_argument("--normalize", action="store_true",
                   help="compare latency relative to the reference workload measured in the same rounds")
    p.add_argument("--allow-hardware-mismatch", action="store_true",
                   help="compare files from different hardware_ids (normalized values only)")
    p.add_argument("--markdown", type=Path, metavar="FILE", help="also write the comparison as Markdown")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")


def _run_compare(args: argparse.Namespace) -> int:
    from latprof.console import print_json, stdout
    from latprof.regress import CompareOptions, compare_files
    from latprof.regress.render import markdown, rich_table

    options = CompareOptions(args.threshold, args.alpha, args.normalize, args.allow_hardware_mismatch)
    report = compare_files(args.baseline, args.current, options)
    if args.json:
        print_json(report.as_dict())
    else:
        stdout.print(rich_table(report))
    if args.markdown:
        try:
            args.markdown.write_text(markdown(report))
        except OSError as exc:
            raise LatprofError(f"cannot write --markdown {args.markdown}: {exc.strerror or exc}") from None
    return report.exit_code()


# ---------------------------------------------------------------- ci
def _add_ci(sub: Any) -> None:
    p = sub.add_parser("ci", help="run the CI suite interleaved and gate on this machine's committed baseline")
    p.add_argument("--suite", type=Path, default=Path("benchmarks/ci_suite.toml"), help="suite TOML (default benchmarks/ci_suite.toml)")
    p.add_argument("--baseline", type=Path, default=Path("benchmarks/baseline"),
                   help="baseline folder holding <hardware_id>/results.jsonl (default benchmarks/baseline)")
    p.add_argument("--update-baseline", action="store_true", help="write this run as the baseline of this hardware_id")
    p.add_argument("--warn-only", action="store_true", help="report regressions but exit 0")
    p.add_argument("--threshold", type=_fraction, help="override the suite's threshold")
    p.add_argument("--alpha", type=_fraction, help="override the suite's alpha")
    p.add_argument("--no-confirm", action="store_true", help="do not re-measure flagged rows before failing")
    p.add_argument("--out", type=Path, help="output folder (default reports/ci-<time>-<hostname>/)")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")


def _run_ci(args: argparse.Namespace) -> int:
    from latprof.console import print_json, stdout
    from latprof.regress.ci import CIOptions, run_ci, run_table
    from latprof.regress.render import rich_table

    outcome = run_ci(CIOptions(args.suite, args.baseline, args.out, args.update_baseline, args.warn_only,
                               args.threshold, args.alpha, not args.no_confirm))
    if args.json:
        rows = [{k: v for k, v in r.items() if k != "samples_ms"} for r in outcome.rows]
        print_json({"hardware_id": outcome.hardware_id, "messages": outcome.messages, "rows": rows,
                    "comparison": outcome.report.as_dict() if outcome.report else None})
    elif outcome.report:
        stdout.print(rich_table(outcome.report, outcome.notes))
    else:
        stdout.print(run_table(outcome.rows)[0])
    for m in outcome.messages:
        print(f"latprof ci: {m}", file=sys.stderr)
    print(f"latprof ci: results {outcome.results_path}; summary {', '.join(map(str, outcome.summary_paths))}", file=sys.stderr)
    return outcome.exit_code


COMMANDS: dict[str, tuple[Callable[[Any], None], Callable[[argparse.Namespace], int]]] = {
    "env": (_add_env, _run_env),
    "list": (_add_list, _run_list),
    "profile": (_add_profile, _run_profile),
    "compare": (_add_compare, _run_compare),
    "ci": (_add_ci, _run_ci),
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
