"""``latprof profile`` as a Python API: measure workloads on backends and store one result row each."""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from latprof.backends import BackendError, BackendOptions, backend_class, create_backend
from latprof.backends.base import logical_cores, validate_threads
from latprof.cost import workload_counts
from latprof.errors import LatprofError, one_line
from latprof.measure import environment
from latprof.measure.protocol import MeasureConfig, measure
from latprof.results import ResultStore, base_row, error_row, latency_fields, read_results, row_key
from latprof.shapes import Shape, format_shape
from latprof.workloads import Workload, create_workload


def default_out_dir() -> Path:
    """``reports/<date>-<hostname>/``: the same folder all day, so ``--resume`` finds earlier rows."""
    return Path("reports") / f"{date.today().isoformat()}-{socket.gethostname()}"


@dataclass
class ProfileRequest:
    """Everything ``latprof profile`` takes; the CLI fills it from its flags."""

    models: Sequence[str]
    backends: Sequence[str] = ("torch-cpu",)
    threads: int | None = None
    interop_threads: int | None = None
    pin: bool = False
    input_shape: Shape | None = None
    batch: int | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    config: MeasureConfig = field(default_factory=MeasureConfig)
    ort_opt: str = "all"
    out: Path | None = None
    resume: bool = False
    roofline: bool = False
    per_op: bool = False  # also store a per_op breakdown record per workload × backend (profiled separately)


@dataclass
class RunFiles:
    """Where a run's results went."""

    out_dir: Path
    results_path: Path
    csv_path: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0
    per_op: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    report_path: Path | None = None


def open_store(out: Path | None) -> tuple[Path, ResultStore]:
    out_dir = Path(out) if out is not None else default_out_dir()
    if out_dir.exists() and not out_dir.is_dir():
        raise LatprofError(f"--out {out_dir} exists and is not a directory")
    return out_dir, ResultStore(out_dir / "results.jsonl")


def record_environment(store: ResultStore) -> dict[str, Any]:
    env = environment.collect().as_dict()
    store.append({"record": "environment", **env})
    return env


def record_peaks(
    store: ResultStore, configs: Sequence[tuple[str, int]], hardware_id: str, pin: bool = False, ort_opt: str = "all",
    existing: Sequence[dict[str, Any]] = (),
) -> list[str]:
    """Measure each (backend, threads)'s peak compute and bandwidth once for the roofline; returns warnings.

    A configuration already measured on this hardware (``--resume``) is not measured again.
    """
    from latprof.analysis.roofline import measure_peaks

    have = {(p.get("backend"), p.get("threads"), p.get("hardware_id")) for p in existing if p.get("record") == "peaks"}
    notes = []
    for backend, threads in dict.fromkeys(configs):
        if (backend, threads, hardware_id) in have:
            continue
        try:
            store.append(measure_peaks(backend, threads, hardware_id=hardware_id, pin=pin, ort_opt=ort_opt))
        except (BackendError, RuntimeError) as exc:
            notes.append(f"roofline peaks not measured on {backend}: {one_line(exc)}")
    return notes


def workload_fields(workload: Workload) -> dict[str, Any]:
    return {"workload": workload.name, "input_shape": format_shape(workload.input_shape), "batch": workload.batch}


def measure_on_backend(
    workload: Workload, backend_name: str, options: BackendOptions, config: MeasureConfig
) -> dict[str, Any]:
    """Prepare, check and time one workload on one backend; returns the row fields (latency and settings)."""
    backend = create_backend(backend_name, options)
    run = backend.prepare(workload)
    try:
        m = measure(run.timer, config)
    finally:
        run.close()
    fields: dict[str, Any] = {
        **latency_fields(m),
        "settings": run.settings,
        "max_abs_error_vs_eager": run.max_abs_error,
    }
    if run.host_wall_per_call_s:
        fields["host_wall_median_ms"] = float(np.median(run.host_wall_per_call_s)) * 1e3
    return fields


def run_profile(
    request: ProfileRequest,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> RunFiles:
    """Measure every model on every backend; each finished row is stored at once (Ctrl-C keeps them)."""
    validate_threads(request.threads)
    for name in request.backends:
        backend_class(name)  # unknown/unavailable backend: one-line error before any work
    # Build and check every workload before any file is touched: bad names and shapes fail fast, in one line.
    plan: list[tuple[Workload, str, int]] = []
    for model in request.models:
        for backend_name in request.backends:
            cls = backend_class(backend_name)
            batch = cls(BackendOptions()).batch_for(request.batch)
            workload = create_workload(model, input_shape=request.input_shape, batch=batch, **request.model_kwargs)
            workload.check_input()
            plan.append((workload, backend_name, request.threads or _default_threads(cls)))
    counts = {id(w): workload_counts(w) for w, _, _ in plan}
    out_dir, store = open_store(request.out)
    done = store.keys() if request.resume else set()
    env = record_environment(store)
    files = RunFiles(out_dir, store.path, out_dir / "results.csv")
    try:
        for workload, backend_name, threads in plan:
            ident = {**workload_fields(workload), "backend": backend_name, "threads": threads}
            row = base_row(**ident)
            ident.update(counts[id(workload)])
            if request.resume and row_key(row) in done:
                files.skipped += 1
                continue
            options = BackendOptions(threads, request.interop_threads, request.pin, workload.batch, request.ort_opt)
            try:
                fields = measure_on_backend(workload, backend_name, options, request.config)
                row = base_row(**ident, **fields, status="ok", error="", hardware_id=env["hardware_id"])
            except BackendError as exc:
                row = error_row(one_line(exc), **ident, hardware_id=env["hardware_id"])
            store.append(row)
            files.rows.append(row)
            if request.per_op and row.get("status") == "ok":
                files.per_op.append(_per_op(workload, backend_name, options, row, store))
            if on_row:
                on_row(row)
        if request.roofline:
            existing = read_results(store.path, quiet=True).other if request.resume else []
            configs = [(backend_name, threads) for _, backend_name, threads in plan]
            files.notes += record_peaks(store, configs, env["hardware_id"], request.pin, request.ort_opt, existing)
    finally:
        from latprof.experiments.outputs import write_outputs

        files.report_path = write_outputs(out_dir)["report"]
    return files


def _per_op(workload: Workload, backend_name: str, options: BackendOptions, row: dict[str, Any],
            store: ResultStore) -> dict[str, Any]:
    """Profile per operator in a separate pass and store it as a ``per_op`` record (never a latency row)."""
    from latprof.analysis.breakdown import per_op_breakdown

    ident = {k: row[k] for k in ("workload", "backend", "threads", "batch", "input_shape", "hardware_id")}
    try:
        record = per_op_breakdown(create_backend(backend_name, options), workload, row["latency_median_ms"], **ident)
    except BackendError as exc:
        record = {"record": "per_op", **ident, "status": "error", "error": one_line(exc)}
    store.append(record)
    return record


def _default_threads(cls: type) -> int:
    return 1 if cls.device_class == "mobile" else logical_cores()
