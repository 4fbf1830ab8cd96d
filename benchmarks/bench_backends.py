"""Run the G1 and G4 guideline kernels and three networks on every available backend, with the settings in force.

Also: for ``ort-mobile`` the measured variance (CV, CI width) with spinning on vs off; on a GPU machine, CUDA-event
time vs host wall time per call. Run from the repository root:

    PYTHONPATH=$PWD python benchmarks/bench_backends.py            # full (quiet machine, minutes)
    PYTHONPATH=$PWD python benchmarks/bench_backends.py --quick    # proves it runs (short caps, small network inputs)

The figures it prints are measurements of this machine at this moment; nothing is adjusted.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from latprof.backends import BackendError, BackendOptions, available_backends, create_backend
from latprof.backends.base import logical_cores
from latprof.console import stdout, table
from latprof.errors import LatprofError, one_line
from latprof.measure.protocol import MeasureConfig, measure, measure_interleaved
from latprof.workloads import Workload, create_workload, get_spec

NETWORKS = ("mobilenet_v2_x1_0", "shufflenet_v2_x1_0", "resnet18")
KERNELS = (("g1", "1:1"), ("g4", None))  # G1 1:1 pair; G4 baseline (ReLU + shortcut)


def kernel_workload(guideline: str, variant: str | None, device_class: str, batch: int) -> Workload:
    """The guideline kernel (10 stacked blocks, 56×56, scale ×1) from the shipped spec, channel set by device class."""
    from latprof.experiments import resolve_spec

    spec = resolve_spec(guideline)
    channels = "gpu" if device_class == "cuda" else "arm"
    return spec.workload(variant or spec.baseline, 1, channels, batch)


def network_workload(name: str, batch: int, quick: bool) -> Workload | None:
    try:
        get_spec(name)
    except LatprofError:
        return None
    shape = (batch, 3, 96, 96) if quick else None  # quick: a smaller image so the run stays short
    return create_workload(name, input_shape=shape, batch=None if shape else batch)


def thread_summary(settings: dict[str, Any]) -> str:
    parts = []
    for key, label in (("intra_op_threads", "intra"), ("inter_op_threads", "inter"),
                       ("intra_op_allow_spinning", "spin"), ("pinned_cores", "pinned"),
                       ("graph_optimization_level", "opt"), ("onnx_exporter", "export")):
        if key in settings:
            parts.append(f"{label}={settings[key]}")
    return " ".join(parts)


def bench_one(backend: str, workload: Workload, options: BackendOptions, config: MeasureConfig) -> dict[str, Any]:
    run = create_backend(backend, options).prepare(workload)
    try:
        m = measure(run.timer, config)
    finally:
        run.close()
    s = m.stats
    row: dict[str, Any] = {
        "backend": backend, "workload": workload.name, "input_shape": "x".join(map(str, workload.input_shape)),
        "median_ms": s.median_ms, "ci_low_ms": s.ci_low_ms, "ci_high_ms": s.ci_high_ms, "cv": s.cv,
        "n": s.n_samples, "settings": run.settings, "threads": thread_summary(run.settings),
        "compile_time_s": run.settings.get("compile_time_s"),
    }
    row.update(run.timing_fields(len(m.samples_ms)))  # cuda_event_median_ms on the torch CUDA backends
    return row


def spinning_variance(config: MeasureConfig) -> list[list[Any]]:
    """ort-mobile on the G1 kernel, spinning on vs off, measured interleaved: CV and relative CI width of each.

    With one intra-op thread ONNX Runtime has no worker pool, so spinning can only matter for the emulated
    cluster (``--threads 2``); both are measured when the machine has two cores.
    """
    wl = kernel_workload("g1", "1:1", "mobile", 1)
    out = []
    for threads in (1, 2) if logical_cores() >= 2 else (1,):
        runs = {}
        try:
            for spin in (False, True):
                runs[f"{threads} thread(s), spinning {'on' if spin else 'off'}"] = create_backend(
                    "ort-mobile", BackendOptions(threads=threads, extra={"spinning": spin})).prepare(wl)
            im = measure_interleaved({k: r.timer for k, r in runs.items()}, None, config)
        finally:
            for r in runs.values():
                r.close()
        for name, m in im.measurements.items():
            s = m.stats
            out.append([name, s.median_ms, s.cv, (s.ci_high_ms - s.ci_low_ms) / s.median_ms, s.n_samples,
                        runs[name].settings["intra_op_allow_spinning"], runs[name].settings["pinned_cores"]])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="short time caps, 96×96 network inputs, no torch-compile")
    p.add_argument("--backends", help="comma-separated (default: every available backend)")
    p.add_argument("--threads", type=int, help="CPU threads (default: all logical cores; ort-mobile 1)")
    p.add_argument("--json-out", type=Path, help="also write the rows as JSON lines here")
    args = p.parse_args(argv)

    backends = args.backends.split(",") if args.backends else available_backends()
    notes = []
    if args.quick and not args.backends and "torch-compile" in backends:
        backends.remove("torch-compile")
        notes.append("--quick: torch-compile skipped (inductor compiles for minutes on a small machine); "
                     "name it in --backends to include it")
    config = (MeasureConfig(max_time_s=1.0, target_ci=0.05, min_samples=5, warmup_max_s=0.3) if args.quick
              else MeasureConfig(max_time_s=20.0))
    stdout.print(f"backends: {', '.join(backends)}; logical cores here: {logical_cores()}")

    rows: list[dict[str, Any]] = []
    for backend in backends:
        from latprof.backends import backend_class

        cls = backend_class(backend)
        batch = cls(BackendOptions()).batch_for(None)
        threads = args.threads or (1 if cls.device_class == "mobile" else None)
        options = BackendOptions(threads=threads, batch=batch)
        workloads: list[Workload] = [kernel_workload(g, v, cls.device_class, batch) for g, v in KERNELS]
        for net in NETWORKS:
            wl = network_workload(net, batch, args.quick)
            if wl is None:
                note = f"{net}: not registered in this build, skipped"
                if note not in notes:
                    notes.append(note)
                continue
            workloads.append(wl)
        for wl in workloads:
            try:
                row = bench_one(backend, wl, options, config)
            except (BackendError, LatprofError) as exc:
                row = {"backend": backend, "workload": wl.name, "error": one_line(exc)}
            rows.append(row)
            stdout.print(f"  {backend:<18} {wl.name:<32} "
                         + (f"{row['median_ms']:.4g} ms (cv {row['cv']:.3f})  {row['threads']}"
                            if "median_ms" in row else f"error: {row['error']}"))

    cols = ["backend", "workload", "input", "median ms", "95% CI ms", "cv", "n", "threads / settings", "compile s"]
    body = [[r["backend"], r["workload"], r.get("input_shape"), r.get("median_ms"),
             f"{r['ci_low_ms']:.4g} – {r['ci_high_ms']:.4g}" if "median_ms" in r else r.get("error"),
             r.get("cv"), r.get("n"), r.get("threads"), r.get("compile_time_s")] for r in rows]
    stdout.print(table("Backends: latency per call", cols, body))

    cuda_rows = [r for r in rows if "cuda_event_median_ms" in r]
    if cuda_rows:
        stdout.print(table("CUDA: synchronised host wall time (the latency) vs CUDA-event time per call",
                           ["backend", "workload", "host wall ms", "event ms", "host/event"],
                           [[r["backend"], r["workload"], r["median_ms"], r["cuda_event_median_ms"],
                             r["median_ms"] / r["cuda_event_median_ms"]] for r in cuda_rows]))
    else:
        notes.append("no CUDA backend ran here: no CUDA-event vs host-wall comparison")

    if "ort-mobile" in backends:
        stdout.print(table("ort-mobile on G1 (1:1, c=32, 56×56): spinning on vs off, measured interleaved",
                           ["setting", "median ms", "cv", "CI width / median", "n", "allow_spinning (read back)",
                            "pinned cores"],
                           spinning_variance(config)))
    for n in notes:
        stdout.print(f"note: {n}")
    if args.json_out:
        with args.json_out.open("w") as fh:
            for r in rows:
                fh.write(json.dumps(r, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
