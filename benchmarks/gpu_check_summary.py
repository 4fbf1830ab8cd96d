"""Tables for benchmarks/gpu_check.sh, read from the result folders it wrote (results.jsonl).

    python benchmarks/gpu_check_summary.py tf32 OFF_DIR ON_DIR [ORT_OFF_DIR]   TF32 off vs on; host vs CUDA-event time
    python benchmarks/gpu_check_summary.py compile DIR                          torch-compile-cuda: compile bookkeeping
    python benchmarks/gpu_check_summary.py guidelines DIR                       G1-G4 beside the paper's GTX 1080Ti

Figures are the medians latprof stored; ratios are of medians measured in the same run.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from latprof.results import read_results


def _rows(folder: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    path = Path(folder) / "results.jsonl"
    if not path.exists():
        return [], []
    f = read_results(path, quiet=True)
    return f.results, f.other


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}g}"
    return str(x)


def _print(title: str, columns: list[str], body: Iterable[list[Any]]) -> None:
    body = [[_fmt(c) for c in row] for row in body]
    widths = [max(len(c), *(len(r[i]) for r in body)) if body else len(c) for i, c in enumerate(columns)]
    print(f"\n{title}")
    print("  " + "  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for r in body:
        print("  " + "  ".join(v.ljust(w) for v, w in zip(r, widths)))
    if not body:
        print("  (no rows)")


def _errors(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        if r.get("status") != "ok":
            print(f"  error: {r.get('workload')} {r.get('variant') or ''} on {r.get('backend')}: {r.get('error')}")


def _load(r: dict[str, Any]) -> Any:
    under = (r.get("settings") or {}).get("gpu_under_load") or {}
    sm = under.get("clock_sm_mhz") or {}
    return sm.get("median") if sm else under.get("note")


def tf32(off_dir: str, on_dir: str, ort_off: str | None = None) -> None:
    off, other = _rows(off_dir)
    on, _ = _rows(on_dir)
    if ort_off:
        off += _rows(ort_off)[0]
    _errors(off + on)
    key = lambda r: (r.get("workload"), r.get("backend"))  # noqa: E731
    on_by = {key(r): r for r in on if r.get("status") == "ok"}
    body = []
    for r in off:
        o = on_by.get(key(r))
        if r.get("status") != "ok" or o is None:
            continue
        s_off, s_on = r.get("settings") or {}, o.get("settings") or {}
        body.append([r["workload"], r["backend"], f"{s_off.get('tf32')}/{s_on.get('tf32')}",
                     r["latency_median_ms"], o["latency_median_ms"], r["latency_median_ms"] / o["latency_median_ms"],
                     r.get("max_abs_error_vs_eager"), o.get("max_abs_error_vs_eager"), _load(o)])
    _print("TF32 off vs on (tf32 column: what each run read back; speed-up > 1: TF32 faster)",
           ["workload", "backend", "tf32 off/on", "off ms", "on ms", "speed-up", "max err off", "max err on",
            "SM MHz under load (on)"], body)
    timing = [[r["workload"], r["backend"], (r.get("settings") or {}).get("tf32"), r["latency_median_ms"],
               r.get("cuda_event_median_ms"),
               r["latency_median_ms"] / r["cuda_event_median_ms"] if r.get("cuda_event_median_ms") else None]
              for r in off + on if r.get("status") == "ok"]
    _print("Timing: the latency (host wall clock, synchronised after each call) vs CUDA events around the same calls "
           "(host/event - 1 is the host's share: Python before the launch, the synchronisation's wake-up; ort-cuda "
           "has no events)", ["workload", "backend", "tf32", "host ms", "event ms", "host/event"], timing)
    peaks = [[p.get("backend"), p.get("compute_precision"), p.get("peak_gflops"), p.get("gemm_latency_ms"),
              p.get("peak_gbytes_per_s"), p.get("copy_latency_ms"), p.get("size_note")]
             for p in other if p.get("record") == "peaks"]
    _print("Roofline peaks (each kernel call grown to >= 1 ms; precision: what the GEMM ran in)",
           ["backend", "precision", "GFLOP/s", "gemm ms", "GB/s", "copy ms", "note"], peaks)
    per_op = [[p.get("workload"), p.get("backend"), p.get("op_clock"), p.get("op_sum_over_end_to_end"),
               *(round(p["categories_percent"][c], 1) for c in ("Conv", "Elemwise", "Data", "Shuffle", "Other"))]
              for p in other if p.get("record") == "per_op" and p.get("status") != "error"]
    _print("Per-op shares (% of the op sum; op clock gpu = device timestamps; paper GPU: ShuffleNet v1 50/15/20/5/10, "
           "MobileNet v2 54/23/22/-/1)", ["workload", "backend", "op clock", "op sum / latency", "Conv", "Elemwise",
                                          "Data", "Shuffle", "Other"], per_op)


def compile_(folder: str) -> None:
    rows, _ = _rows(folder)
    _errors(rows)
    body = []
    for r in rows:
        if r.get("status") != "ok":
            continue
        s = r.get("settings") or {}
        body.append([r.get("variant"), r.get("speed_vs_baseline"), r.get("latency_median_ms"), s.get("compile_time_s"),
                     s.get("compile_cache"), (s.get("compile") or {}).get("frames_compiled"),
                     s.get("recompiles_after_prepare")])
    _print("torch-compile-cuda, G4 (recompiles after prepare should be 0: compiled code kept per variant)",
           ["variant", "speed vs baseline", "median ms", "compile s", "compile cache", "frames", "recompiles after prepare"],
           body)


def guidelines(folder: str) -> None:
    rows, _ = _rows(folder)
    _errors(rows)
    cells: dict[tuple[str, str, str, str], dict[int, tuple[Any, Any]]] = {}
    verdicts: dict[tuple[str, str, int], Any] = {}
    for r in rows:
        if r.get("status") != "ok" or not r.get("experiment"):
            continue
        cells.setdefault((r["experiment"], r["backend"], r.get("channels") or "", r["variant"]), {})[r.get("scale")] = (
            r.get("speed_vs_baseline"), r.get("paper_speed_vs_baseline"))
        if r.get("verdict"):
            verdicts[(r["experiment"], r["backend"], r.get("scale"))] = r["verdict"]
    scales = sorted({s for v in cells.values() for s in v if s is not None})
    body = []
    for (exp, backend, channels, variant), by_scale in sorted(cells.items()):
        row: list[Any] = [exp, backend, {"gpu": "GTX 1080Ti", "arm": "Snapdragon 810"}.get(channels, channels), variant]
        for s in scales:
            mine, paper = by_scale.get(s, (None, None))
            row.append(f"{_fmt(mine, 3)} | {_fmt(paper, 3)}")
        body.append(row)
    _print("speed vs the baseline variant: this machine | the paper, per channel-width scale (> 1 is faster)",
           ["guideline", "backend", "paper ran on", "variant", *(f"x{s} here | paper" for s in scales)], body)
    _print("verdicts (does the guideline hold here?)", ["guideline", "backend", "scale", "verdict"],
           [[e, b, s, v] for (e, b, s), v in sorted(verdicts.items())])


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("tf32", "compile", "guidelines"):
        print(__doc__)
        return 2
    {"tf32": tf32, "compile": compile_, "guidelines": guidelines}[argv[0]](*argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
