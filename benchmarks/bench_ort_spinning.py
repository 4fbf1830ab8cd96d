"""ONNX Runtime's spinning pool threads and interleaved sessions (docs/backends.md, "Spinning between runs").

A sweep unit holds one ONNX Runtime session per variant and times them in shuffled rounds. With spinning on, each
session's own pool keeps spinning after its run; this script measures what that does to the session being timed.
Per experiment, in a fresh process per reading, alternating, ``--repeats`` times:

- ``alone``: the baseline variant's session alone, ONNX Runtime's defaults (spinning on);
- ``alone-stop``: the same with ``session.force_spinning_stop`` (what one session pays for the setting);
- ``interleaved``: every variant's session, shuffled rounds, per-session spinning pools (latprof before the fix);
- ``interleaved-stop``: the same with ``session.force_spinning_stop`` (what ``ort-cpu`` does now).

It prints the median ms per call of each variant. Raw ONNX Runtime sessions on latprof's cached exports, so the
comparison is of the runtime setting alone.

Run: python benchmarks/bench_ort_spinning.py [--experiments g3,g4,g1] [--threads 2] [--seconds 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time

MODES = ("alone", "alone-stop", "interleaved", "interleaved-stop")


def measure(mode: str, experiment: str, threads: int, seconds: float) -> dict[str, float]:
    """In this (fresh) process: the median ms per call of each session, timed in shuffled rounds of 5 calls."""
    import numpy as np
    import onnxruntime as ort

    from latprof.backends.onnx_export import DEFAULT_OPSET, export_workload
    from latprof.experiments.spec import resolve_spec

    spec = resolve_spec(experiment)
    variants = spec.variants[:1] if mode.startswith("alone") else spec.variants
    sessions = {}
    for v in variants:
        wl = spec.workload(v, 1, "arm", 1)
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if mode.endswith("-stop"):
            so.add_session_config_entry("session.force_spinning_stop", "1")
        path = export_workload(wl, "dynamo", DEFAULT_OPSET).path
        session = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
        sessions[v.name] = (session, {session.get_inputs()[0].name: wl.make_inputs()[0].numpy()})
    for session, feeds in sessions.values():
        for _ in range(20):
            session.run(None, feeds)
    times: dict[str, list[float]] = {n: [] for n in sessions}
    names = list(sessions)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        random.shuffle(names)
        for n in names:
            session, feeds = sessions[n]
            for _ in range(5):
                t0 = time.perf_counter()
                session.run(None, feeds)
                times[n].append((time.perf_counter() - t0) * 1e3)
    return {n: float(np.median(t)) for n, t in times.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiments", default="g3,g4,g1")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--one", nargs=2, metavar=("MODE", "EXPERIMENT"), help=argparse.SUPPRESS)  # the child process
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure(args.one[0], args.one[1], args.threads, args.seconds)))
        return 0
    for experiment in args.experiments.split(","):
        readings: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
        for _ in range(args.repeats):
            for mode in MODES:  # alternating, so drift of the machine hits every mode alike
                out = subprocess.run([sys.executable, __file__, "--one", mode, experiment, "--threads",
                                      str(args.threads), "--seconds", str(args.seconds)],
                                     check=True, capture_output=True, text=True).stdout
                readings[mode].append(json.loads(out.strip().splitlines()[-1]))
        print(f"\n{experiment}, {args.threads} threads: median ms per call, one fresh process per reading")
        variants = list(readings["interleaved"][0])
        print(f"| variant | {' | '.join(MODES)} |\n|---|{'---|' * len(MODES)}")
        for v in variants:
            cells = [" / ".join(f"{r[v]:.2f}" for r in readings[m]) if v in readings[m][0] else "—" for m in MODES]
            print(f"| {v} | {' | '.join(cells)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
