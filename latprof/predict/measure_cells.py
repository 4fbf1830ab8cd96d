"""In the worker: measure the kernels of calibration cells on one backend (the ``calibrate`` unit).

Every reading but the idle-call overheads is cache-cold (``latprof.predict.cold``: each call after the caches were
evicted, as a network's forward meets its weights). PyTorch eager: every distinct aten op of a cell is replayed
alone and timed with the ``latprof.measure`` protocol (a kernel sample each), and the whole cell is timed too; the
parent relates the two (``calibrate.context_fit``) beside the idle module call measured here. ONNX Runtime: the
cell is exported and prepared exactly as a network is (``backend.prepare``: same session options, output checked),
timed with the protocol, and split over the nodes of its optimised graph by one profiled pass (each node's median
over the profiled runs); the session's own overhead (a one-node graph's latency) is measured in the same worker. What
the timed cells exceed their session overhead and node times by, per node (the executor's per-node cost), is
estimated over all cells by the parent (``latprof.predict.calibrate.Readings``).

Every cell and kernel reading is taken twice: cold, and warm (weights from the last-level cache:
``latprof.predict.cold``). Each cell is also timed hot (in a loop, nothing evicted), and its forward profiled
cold, warm and hot: ONNX Runtime's node profile, and on PyTorch eager ``torch.profiler``
(``latprof.predict.torch_profile``), so every eager kernel has its time inside the forward; the replays alone are
taken only when the payload asks (``replay``: ``calibrate --attribution replay`` or ``auto``). A unit's *chains*
(``space.sample_chain``: longer sequences of blocks spanning footprints from inside to beyond the last-level
cache) are timed in a loop, as a network is, and carry their kernels and footprint: the parent fits where a forward
sits between hot, warm and cold on them (``latprof.predict.residency``).
Before every cell and chain the machine's state is read (``latprof.predict.state``; on ONNX Runtime in a session of
the backend) and carried on each of its rows, so the parent can scale the readings to one reference state.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from latprof.backends import BackendError, BackendOptions, create_backend
from latprof.errors import LatprofError, one_line
from latprof.measure.counters import ProcessCounters, counter_fields, snapshot
from latprof.measure.protocol import MeasureConfig, measure, wall_clock_timer
from latprof.predict.space import build_cell, cell_type
from latprof.results import base_row, error_row, latency_fields
from latprof.workloads.registry import Workload

# A kernel's reading: looser than a latency row (a regressor averages many samples), so a calibration spends its
# budget on breadth. The whole-cell readings use the same.
KERNEL_CONFIG = MeasureConfig(target_ci=0.04, max_time_s=0.4, min_samples=5, min_time_s=0.02, warmup_min_s=0.01,
                              warmup_max_s=0.1)
# Cache-cold readings (``latprof.predict.cold``): one call per sample (a batch of n calls would evict n times for
# one sample), a few calls of warm-up (the op's first-call costs), the same CI target and wall-time cap.
COLD_CONFIG = MeasureConfig(target_ci=0.04, max_time_s=0.4, min_samples=7, max_samples=60, min_time_s=0.0,
                            min_sample_time_s=1e-9, warmup_min_s=0.0, warmup_max_s=0.05, warmup_max_batches=5)
# A chain is timed as a network is (in a loop, no eviction), a little longer than a kernel: one number per chain.
CHAIN_CONFIG = MeasureConfig(target_ci=0.03, max_time_s=1.0, min_samples=7, min_time_s=0.1, warmup_min_s=0.05,
                             warmup_max_s=0.3)


def sample_ident(backend: str, threads: int, cell_id: str, variant: str, shape: list[int]) -> dict[str, Any]:
    return {"experiment": f"calibrate:{backend}", "workload": cell_id, "variant": variant, "backend": backend,
            "threads": threads, "batch": 1, "input_shape": "x".join(str(d) for d in shape)}


def overhead_ident(payload: dict[str, Any], variant: str, shape: list[int]) -> dict[str, Any]:
    """The identity of a unit's overhead reading: one per unit (its first cell or chain named in the variant), so
    the results file keeps every unit's reading instead of the last one (``read_results`` keeps one row per
    identity, and ``calibrate --from-readings`` took the median over that one)."""
    first = next((i for i, _ in [*payload.get("cells", []), *payload.get("chains", [])]), "")
    return sample_ident(payload["backend"], payload["threads"], "overhead", f"{variant}:{first}", shape)


def unit_options(payload: dict[str, Any]) -> BackendOptions:
    """The backend options a unit measures with (its threads, pinning and ONNX Runtime optimisation level)."""
    return BackendOptions(payload["threads"], None, payload.get("pin", False), 1, payload.get("ort_opt", "all"))


class _Idle(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def measure_calibrate_unit(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """Measure every cell of the unit; rows: one ``cell`` row per cell and one per kernel sample."""
    torch.set_flush_denormal(True)  # replayed in-place ops must not drift into denormals (a network never does)
    backend_name = payload["backend"]
    options = unit_options(payload)
    if backend_name.startswith("torch"):
        config = MeasureConfig(**payload["config"]) if payload.get("config") else COLD_CONFIG
        return _torch_unit(payload, options, config)
    config = MeasureConfig(**payload["config"]) if payload.get("config") else KERNEL_CONFIG
    return _ort_unit(payload, options, config)


# ------------------------------------------------------------------ PyTorch eager
def _torch_unit(payload: dict[str, Any], options: BackendOptions, config: MeasureConfig) -> list[dict[str, Any]]:
    from latprof.backends.base import pinning
    from latprof.backends.torch_backends import torch_threads
    from latprof.predict.cold import Evictor, cold_timer, reader
    from latprof.predict.torch_kernels import replay_timer, traced_calls

    backend, threads = payload["backend"], payload["threads"]
    replay = payload.get("replay", True)  # False: in-forward profiles only (calibrate --attribution profiled)
    rows: list[dict[str, Any]] = []
    seen: dict[str, Any] = {}  # a kernel already replayed in this worker is not replayed again
    cold, warm = Evictor(), Evictor.warm()  # weights from memory / from the last-level cache
    with torch_threads(threads, 1), pinning(options.pin, threads), _state_reader(payload, cold, warm) as states:
        rows.append({**_torch_module_overhead(payload, KERNEL_CONFIG),  # a warm Python cost
                     "cold_evict_bytes": cold.nbytes})
        for cell_id, spec in payload["cells"]:
            ident = sample_ident(backend, threads, cell_id, "cell", spec["input"])
            first = len(rows)
            state = states.read() if states else {}
            try:
                module, shape = build_cell(spec)
                x = torch.randn(shape)
                kernels, module_calls, order = traced_calls(module, (x,))

                def call(module: nn.Module = module, x: torch.Tensor = x) -> Any:
                    with torch.inference_mode():
                        return module(x)

                cell_m = measure(cold_timer(call, cold, reader(x)), config)
                cell_w = measure(cold_timer(call, warm, reader(x)), config)
                cell_h = measure(wall_clock_timer(call), KERNEL_CONFIG)  # hot: in a loop, nothing evicted
                profile_counters = ProcessCounters()
                profiled, warm_profiled, hot_profiled, profile_error = _in_forward(module, x, kernels, order, cold,
                                                                                   warm, profile_counters)
                kernel_rows = []
                for i, k in enumerate(kernels):
                    key = json.dumps(k.spec, sort_keys=True)
                    replayed = replay and key not in seen  # replayed once per worker; profiled in every cell
                    if replayed:
                        seen[key] = (measure(replay_timer(k.spec, evict=cold), config),
                                     measure(replay_timer(k.spec, evict=warm), config))
                    in_forward = ({"profiled_ms": profiled[i], "warm_profiled_ms": warm_profiled[i],
                                   "hot_profiled_ms": hot_profiled[i]} if profiled else {})
                    if key in seen:
                        m, w = seen[key]
                        kernel_rows.append((k, m, w))
                        fields = {**latency_fields(m), **_warm_fields(w)}
                    elif in_forward:  # not replayed: the row's latency (and counters) its in-forward time's
                        fields = {"latency_median_ms": profiled[i], "warm_ms": warm_profiled[i],
                                  **counter_fields(profile_counters)}
                    if not replayed and not in_forward:
                        continue
                    rows.append(base_row(**sample_ident(backend, threads, cell_id, f"k{len(rows)}", spec["input"]),
                                         **fields, status="ok", error="", sample="kernel", kernel=k.as_dict(),
                                         cell_type=cell_type(spec), replayed=replayed, **in_forward))
                sums = ({key: sum(k.count * p for k, p in zip(kernels, values)) for key, values in (
                    ("profiled_ms", profiled), ("warm_profiled_ms", warm_profiled),
                    ("hot_profiled_ms", hot_profiled))} if profiled else {"profile_error": profile_error})
                replays = ({"kernels_ms": sum(k.count * m.stats.median_ms for k, m, _ in kernel_rows),
                            "warm_kernels_ms": sum(k.count * w.stats.median_ms for k, _, w in kernel_rows)}
                           if replay else {})
                rows.append(base_row(**ident, **latency_fields(cell_m), status="ok", error="", sample="cell",
                                     cell=spec, cell_type=cell_type(spec), module_calls=module_calls,
                                     kernel_calls=sum(k.count for k in kernels), hot_ms=cell_h.stats.median_ms,
                                     **replays, **sums, **_warm_fields(cell_w)))
            except (RuntimeError, ValueError, TypeError, NotImplementedError, LatprofError) as exc:
                rows.append(error_row(one_line(exc), **ident, sample="cell", cell=spec))
            _with_state(rows[first:], state)
        for chain_id, spec in payload.get("chains", []):
            state = states.read() if states else {}
            rows.append({**_torch_chain(backend, threads, chain_id, spec), **state})
    return rows


def _in_forward(module: nn.Module, x: torch.Tensor, kernels: list[Any], order: list[int], cold: Any,
                warm: Any, counters: ProcessCounters) -> tuple[list[float], list[float], list[float], str]:
    """Each kernel's time inside the cell's forward (``latprof.predict.torch_profile``): cold (``counters``
    gathered around those forwards), warm and hot (the forward run back to back, nothing evicted); empty lists and
    the reason when the profiled forward did not dispatch the traced calls."""
    from latprof.predict.cold import reader
    from latprof.predict.torch_profile import ProfileMismatch, profiled_kernel_ms

    try:
        return (profiled_kernel_ms(module, x, kernels, order, cold, reader(x), counters=counters),
                profiled_kernel_ms(module, x, kernels, order, warm, reader(x)),
                profiled_kernel_ms(module, x, kernels, order, None), "")
    except ProfileMismatch as exc:
        return [], [], [], one_line(exc)


def _state_reader(payload: dict[str, Any], cold: Any, warm: Any, backend: Any = None) -> Any:
    """The unit's ``StateReader`` (``latprof.predict.state``), sharing the unit's evictors, on ``backend`` (an ONNX
    Runtime one: the block in its session) or PyTorch eager; a null context when the payload asks for no state
    readings. Use it in a ``with``."""
    from latprof.predict.state import StateReader

    return StateReader(cold, warm, backend) if payload.get("state", True) else contextlib.nullcontext()


def _with_state(rows: list[dict[str, Any]], state: dict[str, float]) -> None:
    """Every reading of a cell carries the state read just before it."""
    for r in rows:
        r.update(state)


def _warm_fields(m: Any) -> dict[str, Any]:
    """A warm reading's median and CI beside the cold reading's latency fields."""
    return {"warm_ms": m.stats.median_ms, "warm_ci_low_ms": m.stats.ci_low_ms, "warm_ci_high_ms": m.stats.ci_high_ms}


def _chain_row(backend: str, threads: int, chain_id: str, spec: dict[str, Any], m: Any, kernels: list[Any],
               module: nn.Module, module_calls: int, **extra: Any) -> dict[str, Any]:
    from latprof.predict.residency import footprint_bytes

    return base_row(**sample_ident(backend, threads, chain_id, "chain", spec["input"]), **latency_fields(m),
                    status="ok", error="", sample="chain", chain=spec, module_calls=module_calls,
                    footprint_bytes=footprint_bytes(module, kernels), kernels=[k.as_dict() for k in kernels], **extra)


def _torch_chain(backend: str, threads: int, chain_id: str, spec: dict[str, Any]) -> dict[str, Any]:
    """A chain timed in a loop, as ``latprof profile`` times a network (no eviction), with its kernels."""
    from latprof.predict.torch_kernels import torch_kernels

    ident = sample_ident(backend, threads, chain_id, "chain", spec["input"])
    try:
        module, shape = build_cell(spec)
        x = torch.randn(shape)
        kernels, module_calls = torch_kernels(module, (x,))

        def call() -> Any:
            with torch.inference_mode():
                return module(x)

        m = measure(wall_clock_timer(call), CHAIN_CONFIG)
        return _chain_row(backend, threads, chain_id, spec, m, kernels, module, module_calls)
    except (RuntimeError, ValueError, TypeError, NotImplementedError, LatprofError) as exc:
        return error_row(one_line(exc), **ident, sample="chain", chain=spec)


def _torch_module_overhead(payload: dict[str, Any], config: MeasureConfig) -> dict[str, Any]:
    """Cost of one module call that does nothing (``nn.Module.__call__`` and its hooks check), per call."""
    chain = nn.Sequential(*[_Idle() for _ in range(64)])
    x = torch.zeros(1)

    def call() -> Any:
        with torch.inference_mode():
            return chain(x)

    m = measure(wall_clock_timer(call), config)
    return base_row(**overhead_ident(payload, "module_call", [1]), **latency_fields(m),
                    status="ok", error="", sample="overhead", module_calls=65,
                    module_call_ms=m.stats.median_ms / 65)


# ------------------------------------------------------------------ ONNX Runtime
def _ort_unit(payload: dict[str, Any], options: BackendOptions, config: MeasureConfig) -> list[dict[str, Any]]:
    from latprof.backends.torch_backends import torch_threads
    from latprof.predict.cold import Evictor

    backend_name, threads = payload["backend"], payload["threads"]
    backend = create_backend(backend_name, options)
    rows: list[dict[str, Any]] = []

    cold, warm = Evictor(), Evictor.warm()  # cells are timed and profiled cold and warm
    # The state block (in a session of this backend) and the idle graph are the same in every unit: exported into
    # the user's cache, once per machine; the cells, one-off models, into a scratch cache.
    with torch_threads(threads, 1), _state_reader(payload, cold, warm, backend) as states:
        idle = Workload("calibrate-idle", nn.ReLU(), (1, 1), "block", {}, "calibration")
        with backend.prepare(idle) as run:
            idle_m = measure(run.timer, config)
        session_ms = idle_m.stats.median_ms
        rows.append(base_row(**overhead_ident(payload, "session", [1, 1]),
                             **latency_fields(idle_m), status="ok", error="", sample="overhead",
                             session_ms=session_ms, cold_evict_bytes=cold.nbytes))
        with _unit_cache(payload.get("export_cache")) as exports, _cache(exports):
            for cell_id, spec in payload["cells"]:
                first = len(rows)
                state = states.read() if states else {}
                rows.extend(_ort_cell(backend, backend_name, threads, cell_id, spec, config, cold, warm, session_ms))
                _with_state(rows[first:], state)
            for chain_id, spec in payload.get("chains", []):
                state = states.read() if states else {}
                rows.append({**_ort_chain(backend, backend_name, threads, chain_id, spec), **state})
    return rows


def _ort_cell(backend: Any, backend_name: str, threads: int, cell_id: str, spec: dict[str, Any],
              config: MeasureConfig, cold: Any, warm: Any, session_ms: float) -> list[dict[str, Any]]:
    """One cell on ONNX Runtime: timed cold, warm and hot as a network is prepared, and split over the nodes of
    its optimised graph (a kernel row each, then the cell row); an error row when any step fails."""
    from latprof.predict.cold import cold_timer
    from latprof.predict.ort_kernels import graph_kernels, optimized_model

    ident = sample_ident(backend_name, threads, cell_id, "cell", spec["input"])
    try:
        workload = calibration_workload("cell", cell_id, spec)
        with backend.prepare(workload) as run:
            cell_m = measure(cold_timer(lambda run=run: run.timer(1), cold), COLD_CONFIG)
            cell_w = measure(cold_timer(lambda run=run: run.timer(1), warm), COLD_CONFIG)
            cell_h = measure(run.timer, config)  # hot: in a loop, nothing evicted
            onnx_path, export = _export_of(run.settings)
        with tempfile.TemporaryDirectory(prefix="latprof-ortopt-") as scratch:
            # the kernels' own graph is profiled, so each node's time is its own (``node_medians``)
            graph = Path(scratch) / "optimized.onnx"
            kernels = graph_kernels(optimized_model(backend, onnx_path, save_to=graph))
            by_node = node_medians(backend, graph, workload, evict=cold, optimized=True)
            by_node_warm = node_medians(backend, graph, workload, evict=warm, optimized=True)
            by_node_hot = node_medians(backend, graph, workload, optimized=True)
        wrong = misattributed(kernels, by_node_hot)
        if wrong:
            raise ValueError(f"{len(wrong)} profiled node(s) are not the graph's: {wrong[0]}")
    except (BackendError, RuntimeError, ValueError, TypeError, NotImplementedError, LatprofError, OSError) as exc:
        return [error_row(one_line(exc), **ident, sample="cell", cell=spec)]
    rows = []
    node_ms = [by_node.get(k.spec["node"], 0.0) for k in kernels]
    node_warm = [by_node_warm.get(k.spec["node"], 0.0) for k in kernels]
    node_hot = [by_node_hot.get(k.spec["node"], 0.0) for k in kernels]
    for k, p, w, h in zip(kernels, node_ms, node_warm, node_hot):  # the parent adds the per-node overhead
        if not k.spec["node"]:  # an unnamed node runs, but its profile event cannot be told apart: no reading
            continue
        rows.append(base_row(**sample_ident(backend_name, threads, cell_id, f"k{len(rows)}", spec["input"]),
                             status="ok", error="", sample="kernel", kernel=k.as_dict(), latency_median_ms=p,
                             profiled_ms=p, warm_profiled_ms=w, hot_profiled_ms=h, cell_type=cell_type(spec),
                             **counter_fields(by_node.counters)))
    rows.append(base_row(**ident, **latency_fields(cell_m), status="ok", error="", sample="cell",
                         cell=spec, cell_type=cell_type(spec), kernel_calls=len(kernels),
                         profiled_ms=sum(node_ms), warm_profiled_ms=sum(node_warm),
                         hot_profiled_ms=sum(node_hot), hot_ms=cell_h.stats.median_ms, session_ms=session_ms,
                         export=export, **_warm_fields(cell_w)))
    return rows


def _export_of(settings: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """The ONNX file a prepared run ran and how it was made (its ``onnx_*`` settings, ``ExportedModel.settings``;
    ``onnx_cached``: whether the run found it exported, ahead by the calibration's process: ``export_ahead``). Read
    from the run rather than looked up again, which would record the forward once more and always find the file."""
    export = {k: v for k, v in settings.items() if k.startswith("onnx_")}
    return Path(export["onnx_path"]), export


def _ort_chain(backend: Any, backend_name: str, threads: int, chain_id: str, spec: dict[str, Any]) -> dict[str, Any]:
    """A chain prepared and timed as a network is (session options, output check, a loop), with the kernels of its
    optimised graph."""
    from latprof.predict.ort_kernels import graph_kernels, optimized_model

    ident = sample_ident(backend_name, threads, chain_id, "chain", spec["input"])
    try:
        workload = calibration_workload("chain", chain_id, spec)
        with backend.prepare(workload) as run:
            m = measure(run.timer, CHAIN_CONFIG)
            onnx_path, export = _export_of(run.settings)
        kernels = graph_kernels(optimized_model(backend, onnx_path))
        return _chain_row(backend_name, threads, chain_id, spec, m, kernels, workload.module, 0, export=export)
    except (BackendError, RuntimeError, ValueError, TypeError, NotImplementedError, LatprofError, OSError) as exc:
        return error_row(one_line(exc), **ident, sample="chain", chain=spec)


PROFILE_RUNS = 30


def node_medians(backend: Any, onnx_path: Any, workload: Workload, runs: int = PROFILE_RUNS,
                 warmup: int = 3, evict: Any = None, optimized: bool = False) -> NodeTimes:
    """Median kernel time (ms) of every node over ``runs`` profiled runs: on a shared machine one run preempted
    mid-node would dominate a mean (``latprof.backends.op_profiling`` reports means, for breakdowns). With
    ``evict``, the caches are evicted before every run (``latprof.predict.cold``). ``optimized``: ``onnx_path`` is
    the graph a session of ``backend`` already optimised (``optimized_model(save_to=...)``), run as saved, so the
    profile names its nodes as that file does: ONNX Runtime names the nodes it inserts anew in every session, and
    a calibration that matched a fresh session's profile to another session's graph gave each NCHWc reorder the
    time of another reorder (p19 ort-mobile: ReorderOutput's kernel CV RMSPE 5.2; a 1872-element reorder read
    515 us hot and 27 us cold; docs/predict.md)."""
    import json as _json
    from collections import defaultdict

    import numpy as np

    from latprof.backends.op_profiling import native_output_silenced

    out = NodeTimes()
    with tempfile.TemporaryDirectory(prefix="latprof-nodeprof-") as tmp:
        so = backend.session_options()
        if optimized:
            from latprof.backends.onnxruntime_backends import opt_level

            so.graph_optimization_level = opt_level("none")
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "prof")
        with native_output_silenced():
            session = backend.create_session(onnx_path, so)
        feeds = backend.feeds(session, workload)
        for i in range(warmup + runs):
            if evict is not None:
                evict()
            before = snapshot()
            session.run(None, feeds)
            if i >= warmup:
                out.counters.add(before, snapshot(), 1)
        with native_output_silenced():
            events = _json.loads(Path(session.end_profiling()).read_text())
    starts = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    if len(starts) <= warmup:
        raise ValueError(f"ONNX Runtime trace has {len(starts)} runs, need more than {warmup}")
    first = starts[warmup]
    per_node: dict[str, list[float]] = defaultdict(list)
    for e in events:
        name = e.get("name", "")
        if e.get("cat") == "Node" and name.endswith("_kernel_time") and e["ts"] >= first:
            node = name[: -len("_kernel_time")]
            per_node[node].append(float(e["dur"]) / 1e3)
            args = e.get("args") or {}
            shapes = [list(next(iter(t.values()))) for t in args.get("output_type_shape") or [] if t]
            out.ran.setdefault(node, (str(args.get("op_name", "?")), shapes[0] if shapes else []))
    out.update({n: float(np.median(v)) for n, v in per_node.items()})
    return out


class NodeTimes(dict):  # type: ignore[type-arg]
    """Node name -> median ms, and ``ran``: node name -> (the op it ran, its first output's shape), as the profile
    reports them; ``counters``: the process counters around the profiled runs (per run)."""

    def __init__(self) -> None:
        super().__init__()
        self.ran: dict[str, tuple[str, list[int]]] = {}
        self.counters = ProcessCounters()


def misattributed(kernels: list[Any], times: NodeTimes) -> list[str]:
    """The kernels whose profiled node is not the graph's: another op, or an output of another batch or spatial
    size (channels may differ: NCHWc pads them to its block). Empty when the profile ran the kernels' own graph."""
    bad = []
    for k in kernels:
        if not k.spec["node"]:  # an unnamed node: the profile cannot name it either
            continue
        op, shape = times.ran.get(k.spec["node"], ("", []))
        f = k.features
        graph_op = k.op.split("+")[0].removeprefix("nchwc.")
        spatial = [int(f.get("out_n", 0)), int(f.get("out_h", 0)), int(f.get("out_w", 0))]
        if op and op != graph_op or len(shape) == 4 and [shape[0], *shape[2:]] != spatial:
            bad.append(f"{k.spec['node']} ran as {op} {shape}, the graph has {k.op} {spatial}")
    return bad


def calibration_workload(kind: str, ident: str, spec: dict[str, Any]) -> Workload:
    """The workload of a ``cell`` or ``chain`` spec, named as the worker names it, so an export made ahead of the
    worker (``export_ahead``) has the key the worker looks up."""
    module, shape = build_cell(spec)
    return Workload(f"{kind}-{ident}", module, shape, "block", {}, "calibration")


def export_ahead(payload: dict[str, Any], cache: Path) -> int:
    """Export a unit's cells and chains into ``cache`` before its worker starts; returns how many were exported.

    Why: each worker is a fresh process, and a fresh process's first dynamo exports pay the exporter's start-up
    (4-5 s per cell on a slow 2-core VM against about 1 s in a process that exported before): exports took 33 s of
    a 43 s unit there, so a 900 s calibration read 57 cells. The calibration's own process exports every round, so
    the worker finds each cell in ``cache`` (``payload["export_cache"]``) and only measures. Exporting measures
    nothing; a cell that fails here is left to the worker, which reports the failure as its error row."""
    backend = create_backend(payload["backend"], unit_options(payload))  # its exporter and opset
    done = 0
    with _cache(str(cache)):
        for kind, key in (("cell", "cells"), ("chain", "chains")):
            for ident, spec in payload.get(key, []):
                try:
                    backend.export(calibration_workload(kind, ident, spec))
                    done += 1
                except (BackendError, RuntimeError, ValueError, TypeError, NotImplementedError, LatprofError):
                    continue
    return done


@contextlib.contextmanager
def _unit_cache(path: str | None) -> Any:
    """The unit's export cache: the one its cells were exported into ahead (``export_ahead``), else a scratch one."""
    if path and Path(path).is_dir():
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="latprof-calib-") as tmp:
        yield tmp


@contextlib.contextmanager
def _cache(path: str) -> Any:
    """Cells are exported into a scratch cache (one-off models must not fill the user's export cache)."""
    old = os.environ.get("LATPROF_CACHE")
    os.environ["LATPROF_CACHE"] = path
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("LATPROF_CACHE", None)
        else:
            os.environ["LATPROF_CACHE"] = old
