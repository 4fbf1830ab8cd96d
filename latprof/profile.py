"""``latprof profile`` as a Python API: a plan of one unit per workload x backend, run by the engine."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


from latprof.backends import BackendError, BackendOptions, backend_class, create_backend
from latprof.backends.base import DEFAULT_ORT_OPT, DEFAULT_PRECISION, DEFAULT_TF32, default_threads, failure_message, validate_threads
from latprof.backends.precision import check_precision, output_check_fields, precision_fields
from latprof.errors import LatprofError, one_line
from latprof.measure.protocol import MeasureConfig, measure
from latprof.results import ResultStore, base_row, error_row, latency_fields, read_results
from latprof.rows import Record, row_key
from latprof.run.engine import Plan, RunOptions, execute, open_output, record_environment
from latprof.run.units import Unit
from latprof.shapes import Shape, format_shape, shape_text
from latprof.workloads import Workload, create_workload

__all__ = ["ProfileRequest", "RunFiles", "run_profile", "resolve_batch"]


@dataclass
class ProfileRequest:
    """Everything ``latprof profile`` takes; the CLI fills it from its flags."""

    models: Sequence[str]
    backends: Sequence[str] | None = None  # None: torch-cpu, or ort-cpu for an .onnx file
    threads: int | None = None
    interop_threads: int | None = None
    pin: bool = False
    input_shape: Shape | None = None
    batch: int | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    config: MeasureConfig = field(default_factory=MeasureConfig)
    ort_opt: str = DEFAULT_ORT_OPT
    tf32: str = DEFAULT_TF32  # CUDA backends: TF32 for fp32 convolutions and matmuls, set and recorded
    out: Path | None = None
    resume: bool = False
    roofline: bool = False
    per_op: bool = False  # also store a per_op breakdown record per workload x backend (profiled separately)
    precision: str = DEFAULT_PRECISION  # fp32 | int8 (ONNX Runtime CPU backends) | fp16 (CUDA backends)
    quant: dict[str, Any] | None = None  # INT8 settings (precision.QuantSettings fields); None: its defaults
    run: RunOptions = field(default_factory=RunOptions)


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
    wall_s: float = 0.0


def resolve_batch(input_shape: Shape | None, batch: int | None, backend_cls: type) -> int | None:
    """One batch for every command: the leading dimension of ``--input``; ``--batch`` must agree with it.

    Returns the batch to build with (None: the workload's default shape with the backend's default batch).
    """
    fixed = getattr(backend_cls, "fixed_batch", None)
    if input_shape is not None:
        lead = int(input_shape[0])
        if batch is not None and batch != lead:
            raise LatprofError(f"--batch {batch} disagrees with --input {shape_text(input_shape)} (its leading "
                               f"dimension, {lead}, is the batch); give one of them")
        if fixed is not None and lead != fixed:
            raise LatprofError(f"{backend_cls.name} runs batch {fixed} only; --input {shape_text(input_shape)} "
                               f"asks for batch {lead}")
        return lead
    if fixed is not None:
        if batch is not None and batch != fixed:
            raise LatprofError(f"{backend_cls.name} runs batch {fixed} only, got --batch {batch}")
        return fixed
    return batch if batch is not None else backend_cls.default_batch


def default_backends_for(model: str) -> list[str]:
    """torch-cpu for PyTorch models; ort-cpu for an ONNX file (PyTorch cannot run it)."""
    return ["ort-cpu"] if model.lower().endswith(".onnx") else ["torch-cpu"]


def record_peaks(
    store: ResultStore, configs: Sequence[tuple[str, int]], hardware_id: str, pin: bool = False, ort_opt: str = DEFAULT_ORT_OPT,
    existing: Sequence[dict[str, Any]] = (), run: RunOptions | None = None, tf32: str = DEFAULT_TF32,
    units: Sequence[Unit] = (),
) -> list[str]:
    """Measure each (backend, threads)'s peak compute and bandwidth once for the roofline, in a worker like every
    other measurement; returns warnings. A configuration already measured on this hardware is not measured again.
    A fleet run measures them on every node, for the configurations of the plan's ``units`` there."""
    from latprof.run.executors import WorkerFailed, make_executor

    run = run or RunOptions()
    if run.fleet is not None:
        from latprof.run.fleet import record_fleet_peaks

        return record_fleet_peaks(store, units, pin, ort_opt, existing, run, tf32)
    executor = make_executor(run.in_process, run.allocator, run.worker_timeout_s, run.bind_threads)
    have = {(p.get("backend"), p.get("threads"), p.get("hardware_id")) for p in existing if p.get("record") == Record.PEAKS}
    notes = []
    for backend, threads in dict.fromkeys(configs):
        if (backend, threads, hardware_id) in have:
            continue
        unit = Unit("peaks", f"peaks {backend}", {"backend": backend, "threads": threads, "pin": pin,
                                                  "ort_opt": ort_opt, "tf32": tf32, "hardware_id": hardware_id},
                    [], time_s=60.0)
        try:
            records = executor.run(unit)
        except WorkerFailed as exc:
            notes.append(f"roofline peaks not measured on {backend}: {one_line(exc)}")
            continue
        for rec in records:
            if rec.get("status") == "error":
                notes.append(f"roofline peaks not measured on {backend}: {rec.get('error')}")
            else:
                rec.pop("status", None)
                rec.pop("allocator", None)
                store.append(rec)
    return notes


def measure_peaks_unit(payload: dict[str, Any]) -> list[dict[str, Any]]:
    from latprof.backends.peaks import measure_peaks

    try:
        rec = measure_peaks(payload["backend"], payload["threads"], hardware_id=payload["hardware_id"],
                            pin=payload["pin"], ort_opt=payload["ort_opt"], tf32=payload.get("tf32", DEFAULT_TF32))
    except (BackendError, RuntimeError, LatprofError, ValueError) as exc:
        return [{"record": Record.PEAKS.value, "status": "error", "error": one_line(exc)}]
    return [rec]


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
        run.close()  # also completes settings recorded at close (clocks under load, recompiles)
    return {
        **latency_fields(m),
        **run.timing_fields(len(m.samples_ms)),
        "settings": run.settings,
        "max_abs_error_vs_eager": run.max_abs_error,
        **output_check_fields(run.check),
    }



def profile_plan(request: ProfileRequest) -> Plan:
    """One unit per model x backend. Every workload is built and checked here first: a bad name, argument or shape
    fails in one line before any file is touched."""
    fleet = request.run.fleet is not None  # backends and threads are checked on each node (latprof/run/fleet.py)
    if not fleet:
        validate_threads(request.threads)
    units = []
    for model in request.models:
        for backend_name in request.backends or default_backends_for(model):
            cls = backend_class(backend_name, require_available=not fleet)  # unknown/unavailable: one line
            quant = check_precision(request.precision, [backend_name], request.quant)  # int8 on torch-cpu: one line
            batch = resolve_batch(request.input_shape, request.batch, cls)
            workload = create_workload(model, input_shape=request.input_shape, batch=batch, **request.model_kwargs)
            workload.check_input()
            threads = request.threads or default_threads(cls)
            ident = {**workload_fields(workload), "backend": backend_name, "threads": threads,
                     **precision_fields(request.precision, quant)}
            payload = {
                "model": model, "kwargs": request.model_kwargs,
                "input_shape": list(workload.input_shape), "backend": backend_name, "threads": threads,
                "options": asdict(BackendOptions(threads, request.interop_threads, request.pin, workload.batch,
                                                 request.ort_opt, tf32=request.tf32, precision=request.precision,
                                                 quant=asdict(quant) if quant else None)),
                "config": asdict(request.config), "per_op": request.per_op,
            }
            units.append(Unit("profile", f"{workload.name} {backend_name}", payload, [base_row(**ident)],
                              time_s=request.config.max_time_s + 20.0,
                              extra={"threads_explicit": request.threads is not None}))
    return Plan(units, finish_profile_unit, processes=1)


def measure_profile_unit(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """In the worker: build, count, prepare, check and time one workload on one backend."""
    from latprof.cost import workload_counts

    workload = create_workload(payload["model"], input_shape=tuple(payload["input_shape"]), **payload["kwargs"])
    options = BackendOptions(**payload["options"])
    ident = {**workload_fields(workload), "backend": payload["backend"], "threads": payload["threads"],
             "hardware_id": payload.get("hardware_id", ""), **precision_fields(options.precision, options.quant)}
    try:
        ident.update(workload_counts(workload))
    except (LatprofError, RuntimeError, ValueError, TypeError) as exc:  # a counting failure must not cost the row
        ident["count_error"] = one_line(exc)
    try:
        fields = measure_on_backend(workload, payload["backend"], options, MeasureConfig(**payload["config"]))
        row = base_row(**ident, **fields, status="ok", error="")
    except Exception as exc:  # BackendError, CUDA out of memory, a runtime's own error: an error row, the run goes on
        return [error_row(failure_message(exc), **ident)]
    if payload.get("per_op"):
        row["per_op_record"] = _per_op(workload, payload["backend"], options, row)
    return [row]


def finish_profile_unit(unit: Unit, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pooled rows as they are; a per-op breakdown (first process) becomes its own ``per_op`` record."""
    out = []
    for r in rows:
        rec = r.pop("per_op_record", None)
        out.append(r)
        if rec:
            out.append({**rec, "allocator": r.get("allocator")})
    return out


def run_plan(
    request: ProfileRequest,
    plan: Plan,
    on_rows: Callable[[RunFiles, list[dict[str, Any]]], None] | None = None,
    after_unit: Callable[[int, int], None] | None = None,
    after_execute: Callable[[Any, dict[str, Any]], list[str]] | None = None,
) -> RunFiles:
    """Execute a plan of profile-shaped units into ``request.out`` (``profile`` and ``profile --per-block``): each
    finished unit's rows are stored at once and handed to ``on_rows``; ``after_unit(i, n)`` runs after each unit;
    ``after_execute(store, environment)`` adds notes once all units ran; the outputs are written even on Ctrl-C."""
    out_dir, store = open_output(request.out, request.resume, request.run.append)
    env = record_environment(store, request.run)
    files = RunFiles(out_dir, store.path, out_dir / "results.csv")

    def on_unit(i: int, n: int, unit: Unit, rows: list[dict[str, Any]] | None) -> None:
        if after_unit:
            after_unit(i, n)
        if rows is None:
            files.skipped += 1
        elif on_rows:
            on_rows(files, rows)

    try:
        result = execute(plan, store, env, request.run, request.resume, on_unit)
        files.rows, files.wall_s = result.rows, result.wall_s
        files.notes += result.notes
        if after_execute:
            files.notes += after_execute(store, env)
    finally:
        from latprof.experiments.outputs import write_outputs

        files.report_path = write_outputs(out_dir)["report"]
    return files


def run_profile(
    request: ProfileRequest,
    on_row: Callable[[dict[str, Any]], None] | None = None,
    after_unit: Callable[[int, int], None] | None = None,
) -> RunFiles:
    """Measure every model on every backend; each finished row is stored at once (Ctrl-C keeps them; with several
    processes, ``on_row`` sees each pass's re-pooled row).
    ``after_unit(i, n)`` runs after each unit (``latprof predict --evaluate`` reads the machine state there)."""
    plan = profile_plan(request)

    def on_rows(files: RunFiles, rows: list[dict[str, Any]]) -> None:
        for r in rows:
            if r.get("record") == Record.PER_OP:  # each pass of --processes hands the unit's records again
                files.per_op = [x for x in files.per_op if row_key(x) != row_key(r)] + [r]
            elif on_row:
                on_row(r)

    def peaks(store: Any, env: dict[str, Any]) -> list[str]:
        if not request.roofline:
            return []
        existing = read_results(store.path, quiet=True).other if request.resume else []
        configs = [(u.payload["backend"], u.payload["threads"]) for u in plan.units]
        return record_peaks(store, configs, env["hardware_id"], request.pin, request.ort_opt, existing,
                            request.run, request.tf32, plan.units)

    return run_plan(request, plan, on_rows, after_unit, peaks)


def _per_op(workload: Workload, backend_name: str, options: BackendOptions, row: dict[str, Any]) -> dict[str, Any]:
    """Profile per operator in a separate pass: a ``per_op`` record (never a latency row)."""
    from latprof.backends.op_profiling import per_op_breakdown

    ident = {k: row.get(k) for k in ("workload", "backend", "threads", "batch", "input_shape", "hardware_id",
                                     "precision", "quantization")}
    try:
        return per_op_breakdown(create_backend(backend_name, options), workload, row["latency_median_ms"], **ident)
    except Exception as exc:  # a failed profile is an error record; the latency row stands
        return {"record": Record.PER_OP.value, **ident, "status": "error", "error": failure_message(exc)}
