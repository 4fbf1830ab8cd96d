"""Per-operator timings from the runtimes' own profilers: ONNX Runtime's JSON trace and ``torch.profiler``.

These timings come from instrumented runs and are never mixed into latency rows (the profiler adds overhead).
Fused nodes are mapped back through the optimised model that ONNX Runtime saves (``optimized_model_filepath``):
its node names match the trace, and its attributes say what was fused (e.g. a Conv with ``activation=Relu``).

The profilers' native code writes its own lines straight to file descriptors 1 and 2 (Kineto's
``USDT: ... profiler_start`` / ``profiler_stop`` on every ``torch.profiler`` start and stop); ``native_output_silenced``
points those descriptors at ``/dev/null`` around the profilers' start and stop only, so the terminal shows
latprof's own output and nothing of the runs in between is hidden.

``per_op_breakdown`` profiles one workload on one backend (its ``profile_ops``) and hands the profile to
``latprof.analysis.breakdown.breakdown_record``, which maps ops to the paper's Figure 2 categories.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# 5-D permutation of the channel-shuffle pattern: (N, g, C/g, H, W) -> (N, C/g, g, H, W)
SHUFFLE_PERM = (0, 2, 1, 3, 4)


@dataclass
class OpTime:
    """One operator (ONNX node, or aten op with one input signature) and its time per inference."""

    name: str
    op_type: str
    time_ms: float
    calls: float
    depthwise: bool = False
    shuffle: bool = False
    fused_ops: list[str] = field(default_factory=list)


@dataclass
class OpProfile:
    """All operators of one profiled workload, with how the profile was taken."""

    ops: list[OpTime]
    source: str  # "onnxruntime" | "torch"
    runs: int
    profiled_run_ms: float | None  # wall time of one whole run while profiling (includes profiler overhead)
    method: str
    # What an op time is: "cpu" (execution on the host: CPU backends), "gpu" (device timestamps of the kernels,
    # CUPTI), or "host-launch" (host timestamps around asynchronous GPU launches: ONNX Runtime's CUDA provider in
    # the stock build, which records no kernel times). ``latprof.analysis.breakdown.reconciliation`` reads it.
    clock: str = "cpu"


def _flush_native() -> None:
    """Flush Python's and C's stdio buffers, so nothing buffered before (or during) a redirect lands on the wrong fd."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).fflush(None)


@contextlib.contextmanager
def native_output_silenced() -> Iterator[None]:
    """Point fds 1 and 2 at ``/dev/null`` (OS level, so native writes are caught too) and restore them after.

    Where the descriptors cannot be duplicated (no real fd 1/2), it does nothing.
    """
    _flush_native()
    saved: list[tuple[int, int]] = []
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        yield
        return
    try:
        for fd in (1, 2):
            try:
                saved.append((fd, os.dup(fd)))
                os.dup2(devnull, fd)
            except OSError:
                continue
        yield
    finally:
        _flush_native()
        for fd, copy in saved:
            with contextlib.suppress(OSError):
                os.dup2(copy, fd)
            os.close(copy)
        os.close(devnull)


# ------------------------------------------------------------------ ONNX Runtime
def profile_ort(
    make_options: Callable[[], Any],
    make_session: Callable[[Any], Any],
    feeds: dict[str, np.ndarray],
    runs: int = 20,
    workdir: Path | None = None,
    warmup: int = 3,
    bind: Callable[[Any], Any] | None = None,
    run_options: Any = None,
    clock: str = "cpu",
) -> OpProfile:
    """Run ``warmup + runs`` inferences under the profiler and read per-node kernel times of the last ``runs``.

    ``bind(session)`` gives the IO binding of the timed runs (inputs already on the device), so profiled runs do
    the same work as the latency row's and no host-device copies; without it, ``feeds`` go through ``run``.
    ``clock`` says what the node times are (``OpProfile.clock``); a trace with CUDA kernel events (an ONNX Runtime
    built with CUDA profiling) is read as GPU time whatever ``clock`` says.
    """
    with tempfile.TemporaryDirectory(prefix="latprof-ortprof-") as tmp:
        root = Path(workdir or tmp)
        session = None
        for save_optimized in (True, False):  # some providers cannot serialise their optimised graph
            so = make_options()
            so.enable_profiling = True
            so.profile_file_prefix = str(root / "ort_profile")
            if save_optimized:
                so.optimized_model_filepath = str(root / "optimized.onnx")
            try:
                with native_output_silenced():  # the profiler starts with the session
                    session = make_session(so)
                break
            except Exception:  # the second attempt re-raises
                if not save_optimized:
                    raise
        if bind is not None:
            binding = bind(session)
            for _ in range(warmup + runs):
                session.run_with_iobinding(binding, run_options)
        else:
            for _ in range(warmup + runs):
                session.run(None, feeds, run_options)
        with native_output_silenced():
            trace_path = Path(session.end_profiling())
        events = json.loads(trace_path.read_text())
        nodes = optimized_nodes(root / "optimized.onnx")
    profile = parse_ort_trace(events, nodes, warmup, clock)
    profile.method += "; IO binding as in the timed runs" if bind is not None else "; inputs fed from host arrays"
    return profile


# Ops ONNX Runtime may keep on the CPU on purpose (shape arithmetic); any other node on the CPU is a fallback.
SHAPE_OPS = frozenset({"Shape", "Size"})


def node_placement(events: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """Node name -> {"provider", "op_type"} from a profile trace's node events (their ``args.provider``)."""
    out: dict[str, dict[str, str]] = {}
    for e in events:
        args = e.get("args") or {}
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") and "provider" in args:
            out[e["name"][: -len("_kernel_time")]] = {"provider": str(args["provider"]),
                                                       "op_type": str(args.get("op_name", "?"))}
    return out


def placement_fallback(nodes: dict[str, dict[str, str]], expected: str) -> str | None:
    """A one-line complaint when nodes (other than ``SHAPE_OPS``) ran on another provider than ``expected``; None
    when all ran there. No node events at all is a complaint too: placement could not be checked."""
    if not nodes:
        return "no node events in the profile: node placement could not be checked"
    off = {n: d for n, d in nodes.items() if d["provider"] != expected and d["op_type"] not in SHAPE_OPS}
    if not off:
        return None
    by_provider: dict[str, list[str]] = defaultdict(list)
    for n, d in off.items():
        by_provider[d["provider"]].append(f"{d['op_type']} ({n})")
    parts = "; ".join(f"{p}: {', '.join(sorted(v)[:6])}{' ...' if len(v) > 6 else ''}" for p, v in by_provider.items())
    return (f"{len(off)} of {len(nodes)} nodes did not run on {expected} (fallback, timings would mix devices): "
            f"{parts}")


def optimized_nodes(path: Path) -> dict[str, dict[str, Any]]:
    """Name → {op_type, domain, attrs, inputs, outputs} of the optimised model's nodes (empty when not saved)."""
    import onnx

    if not path.exists():
        return {}
    model = onnx.load(str(path), load_external_data=False)
    out: dict[str, dict[str, Any]] = {}
    for node in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        out[node.name] = {
            "op_type": node.op_type,
            "domain": node.domain,
            "attrs": {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()},
            "inputs": list(node.input),
            "outputs": list(node.output),
        }
    return out


def shuffle_nodes(nodes: dict[str, dict[str, Any]]) -> set[str]:
    """Nodes of the channel-shuffle pattern: a 5-D Transpose with perm (0,2,1,3,4) and the Reshapes around it."""
    transposes = {n for n, d in nodes.items() if d["op_type"] == "Transpose"
                  and tuple(d["attrs"].get("perm", ())) == SHUFFLE_PERM}
    found = set(transposes)
    for t in transposes:
        ins, outs = set(nodes[t]["inputs"]), set(nodes[t]["outputs"])
        for n, d in nodes.items():
            if d["op_type"] == "Reshape" and (set(d["outputs"]) & ins or set(d["inputs"]) & outs):
                found.add(n)
    return found


def fused_ops(info: dict[str, Any] | None, op_type: str) -> list[str]:
    """What a fused node computes, from its attributes: Conv+activation (+Add when it has a summand input)."""
    if not info:
        return []
    parts: list[str] = []
    if op_type in ("FusedConv", "FusedGemm") or (info["domain"] == "com.microsoft.nchwc" and op_type == "Conv"):
        parts = ["Conv" if "Conv" in op_type else "Gemm"]
        if len(info["inputs"]) >= 4 and info["inputs"][3]:
            parts.append("Add")
        if info["attrs"].get("activation"):
            parts.append(str(info["attrs"]["activation"]))
    return parts if len(parts) > 1 else []


def _shape(entry: Any) -> list[int] | None:
    """ORT's ``input_type_shape`` entries look like ``{"float": [1, 16, 28, 28]}``."""
    return list(entry.values())[0] if isinstance(entry, dict) and entry else None


def _is_depthwise(op_type: str, shapes: Sequence[Any]) -> bool:
    """A conv whose groups each see one input channel: weight ``[C_out, 1, k, k]`` on more than one input channel."""
    if "Conv" not in op_type or len(shapes) < 2:
        return False
    x, w = _shape(shapes[0]), _shape(shapes[1])
    return bool(x and w and len(x) == 4 and len(w) == 4 and w[1] == 1 and x[1] > 1)


def _kernel_events(events: list[dict[str, Any]], start: float) -> list[tuple[str, float, dict[str, Any]]]:
    """(node name, duration us, args) of CUDA kernel events (``cat: "Kernel"``, only in builds with CUDA profiling),
    attributed to their node through ``args.parent_name`` (else the kernel's own name)."""
    out = []
    for e in events:
        if e.get("cat") != "Kernel" or e.get("ts", 0) < start:
            continue
        args = e.get("args") or {}
        parent = str(args.get("parent_name") or e.get("name", "?"))
        out.append((parent.removesuffix("_kernel_time"), float(e.get("dur", 0)), args))
    return out


def parse_ort_trace(events: list[dict[str, Any]], nodes: dict[str, dict[str, Any]], warmup: int = 1,
                    clock: str = "cpu") -> OpProfile:
    """Per-node kernel time per run, dropping the first ``warmup`` ``model_run``s.

    Node times are the ``*_kernel_time`` events: host timestamps around each node's ``Compute()``. On the CPU that
    is the node's work; on the CUDA provider the launch only (``clock="host-launch"``). When the trace holds CUDA
    kernel events (``cat: "Kernel"``), their device times are summed per node instead (``clock="gpu"``).
    """
    model_runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                        key=lambda e: e["ts"])
    if len(model_runs) <= warmup:
        raise ValueError(f"ONNX Runtime trace has {len(model_runs)} model_run events, need more than {warmup}")
    start = model_runs[warmup - 1]["ts"] + model_runs[warmup - 1]["dur"] if warmup else float("-inf")
    timed = model_runs[warmup:]
    shuffles = shuffle_nodes(nodes)
    total_us: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    meta: dict[str, tuple[str, Any]] = {}
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time") or e["ts"] < start:
            continue
        name = e["name"][: -len("_kernel_time")]
        meta.setdefault(name, (e.get("args", {}).get("op_name", "?"), e.get("args", {}).get("input_type_shape", [])))
        total_us[name] += float(e["dur"])
        count[name] += 1
    kernels = _kernel_events(events, start)
    if kernels:  # device times of the kernels replace the host times of the nodes
        clock = "gpu"
        total_us, count = defaultdict(float), defaultdict(int)
        for name, dur, args in kernels:
            total_us[name] += dur
            count[name] += 1
            meta.setdefault(name, (str(args.get("op_name", "?")), []))
    n = len(timed)
    ops = []
    for name, us in total_us.items():
        op_type, shapes = meta[name]
        info = nodes.get(name)
        ops.append(OpTime(
            name=name,
            op_type=op_type,
            time_ms=us / n / 1e3,
            calls=count[name] / n,
            depthwise=_is_depthwise(op_type, shapes),
            shuffle=name in shuffles,
            fused_ops=fused_ops(info, op_type),
        ))
    run_ms = float(np.mean([e["dur"] for e in timed])) / 1e3
    what = {"gpu": "CUDA kernel events (device timestamps) summed per node",
            "host-launch": ("per-node kernel_time events, which on the CUDA provider are host timestamps around "
                            "asynchronous launches: the stock onnxruntime-gpu build records no GPU kernel times, so "
                            "these are launch times, not GPU times"),
            }.get(clock, "per-node kernel_time events")
    method = (f"ONNX Runtime profiler, {n} runs after {warmup} warm-up; {what}; fused nodes read from "
              f"the optimised model ({'saved' if nodes else 'not available'})")
    return OpProfile(sorted(ops, key=lambda o: -o.time_ms), "onnxruntime", n, run_ms, method, clock)


# ------------------------------------------------------------------ PyTorch
_CONV_OPS = ("conv", "convolution")


def _torch_depthwise(name: str, shapes: Sequence[Any]) -> bool:
    if not any(k in name for k in _CONV_OPS) or len(shapes) < 2:
        return False
    x, w = shapes[0], shapes[1]
    return bool(len(x) == 4 and len(w) == 4 and w[1] == 1 and x[1] > 1)


def _torch_shuffle(name: str, shapes: Sequence[Any]) -> bool:
    """A copy of a 5-D tensor (the contiguous() after view+transpose of a channel shuffle), or aten::channel_shuffle."""
    if "channel_shuffle" in name:
        return True
    copying = name in ("aten::copy_", "aten::clone", "aten::contiguous")
    return copying and bool(shapes) and len(shapes[0]) == 5


def profile_torch(fn: Callable[[], Any], runs: int = 20, cuda: bool = False, warmup: int = 3,
                  synchronize: Callable[[], None] | None = None, kernels: bool = False) -> OpProfile:
    """Self time of each aten op (grouped by input shapes) over ``runs`` calls of ``fn`` after ``warmup`` calls.

    Self time (time not spent in child ops) makes the op times add up without double counting the
    ``conv2d → convolution → mkldnn_convolution`` chain. On CUDA the profiler's CUDA activity records each kernel
    with device timestamps (CUPTI), and an op's time is the self device time of its kernels; calls are synchronised
    one by one (``synchronize``), as in the timed runs. GPU time the profiler could not attribute to an aten op
    becomes one Other entry, so the op sum is the GPU's whole busy time. ``kernels``: list the kernels themselves
    (inductor's Triton kernels, named after what they fuse) instead of the aten ops.
    """
    import torch
    from torch.profiler import ProfilerActivity, profile

    sync = synchronize or (torch.cuda.synchronize if cuda else None)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with torch.inference_mode():
        for _ in range(warmup):
            fn()
        if sync:
            sync()
        prof = profile(activities=activities, record_shapes=True)
        with native_output_silenced():  # Kineto prints "USDT: ... profiler_start" / "profiler_stop"
            prof.__enter__()
        try:
            t0 = time.perf_counter()
            for _ in range(runs):
                fn()
                if sync:
                    sync()
            wall = time.perf_counter() - t0
        finally:
            with native_output_silenced():
                prof.__exit__(None, None, None)
    ops = torch_ops(prof.key_averages(group_by_input_shape=True), runs, cuda, kernels)
    kind = ("self GPU time (CUDA kernel device timestamps) of each " + ("kernel" if kernels else "CPU-side op")
            if cuda else "self CPU time")
    method = (f"torch.profiler, {runs} calls after {warmup} warm-up{', each synchronised' if sync else ''}, {kind}, "
              f"grouped by op and input shapes")
    return OpProfile(sorted(ops, key=lambda o: -o.time_ms), "torch", runs, wall / runs * 1e3, method,
                     "gpu" if cuda else "cpu")


UNATTRIBUTED_GPU = "(GPU kernels not attributed to an aten op)"


def torch_ops(averages: Sequence[Any], runs: int, cuda: bool, kernels: bool = False) -> list[OpTime]:
    """``OpTime``s from ``key_averages(group_by_input_shape=True)`` entries (``FunctionEventAvg``-like: key, count,
    device_type, self_cpu_time_total, self_device_time_total, input_shapes).

    CPU: self CPU time of CPU-side ops. CUDA: self device time of CPU-side ops, plus the kernels' time that no op
    claims as one ``UNATTRIBUTED_GPU`` entry; with ``kernels``, the CUDA kernel entries themselves.
    """
    from torch.autograd import DeviceType

    ops = []
    kernel_us = 0.0
    for e in averages:
        if e.key.startswith(("ProfilerStep", "[memory]")):
            continue
        on_device = e.device_type != DeviceType.CPU
        if on_device:
            kernel_us += float(e.self_device_time_total)
            if not (cuda and kernels):
                continue
        elif cuda and kernels:
            continue
        us = float(e.self_device_time_total if cuda else e.self_cpu_time_total)
        if us <= 0:
            continue
        shapes = [s for s in (e.input_shapes or []) if isinstance(s, list)]
        ops.append(OpTime(
            name=f"{e.key} {shapes[:2]}" if shapes else e.key,
            op_type=e.key,
            time_ms=us / runs / 1e3,
            calls=e.count / runs,
            depthwise=_torch_depthwise(e.key, shapes),
            shuffle=_torch_shuffle(e.key, shapes),
        ))
    if cuda and not kernels:
        rest_us = kernel_us - sum(o.time_ms for o in ops) * runs * 1e3
        if rest_us > 1e-6 * max(kernel_us, 1.0):
            ops.append(OpTime(UNATTRIBUTED_GPU, UNATTRIBUTED_GPU, rest_us / runs / 1e3, 0.0))
    return ops


# ------------------------------------------------------------------ a backend's profile as a per_op record
def per_op_breakdown(backend: Any, workload: Any, end_to_end_ms: float | None, /, runs: int = 20,
                     **ident: Any) -> dict[str, Any]:
    """Profile ``workload`` on ``backend`` (a ``Backend`` with ``profile_ops``) and build its ``per_op`` record
    (``ident``: workload, backend, threads, batch, ...). A backend without a profiler, or a failed profile, raises
    ``BackendError``."""
    from latprof.analysis.breakdown import breakdown_record
    from latprof.backends.base import BackendError

    profile_ops = getattr(backend, "profile_ops", None)
    if profile_ops is None:
        raise BackendError(f"{backend.name}: per-op profiling is not supported on this backend")
    try:
        profile = profile_ops(workload, runs)
    except (ValueError, OSError, RuntimeError) as exc:  # unreadable trace, profiler failure → error record
        raise BackendError(f"{backend.name}: per-op profiling failed: {exc}") from None
    return breakdown_record(profile, end_to_end_ms, **ident)
