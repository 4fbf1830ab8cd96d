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
) -> OpProfile:
    """Run ``warmup + runs`` inferences under the profiler and read per-node kernel times of the last ``runs``."""
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
        for _ in range(warmup + runs):
            session.run(None, feeds)
        with native_output_silenced():
            trace_path = Path(session.end_profiling())
        events = json.loads(trace_path.read_text())
        nodes = optimized_nodes(root / "optimized.onnx")
    return parse_ort_trace(events, nodes, warmup)


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


def parse_ort_trace(events: list[dict[str, Any]], nodes: dict[str, dict[str, Any]], warmup: int = 1) -> OpProfile:
    """Per-node kernel time per run, dropping the first ``warmup`` ``model_run``s."""
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
        total_us[name] += float(e["dur"])
        count[name] += 1
        meta.setdefault(name, (e.get("args", {}).get("op_name", "?"), e.get("args", {}).get("input_type_shape", [])))
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
    method = (f"ONNX Runtime profiler, {n} runs after {warmup} warm-up; per-node kernel_time events; fused nodes read from "
              f"the optimised model ({'saved' if nodes else 'not available'})")
    return OpProfile(sorted(ops, key=lambda o: -o.time_ms), "onnxruntime", n, run_ms, method)


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


def profile_torch(fn: Callable[[], Any], runs: int = 20, cuda: bool = False, warmup: int = 3) -> OpProfile:
    """Self time of each aten op (grouped by input shapes) over ``runs`` calls of ``fn`` after ``warmup`` calls.

    Self time (time not spent in child ops) makes the op times add up without double counting the
    ``conv2d → convolution → mkldnn_convolution`` chain. On CUDA the self *device* time of CPU-side ops is used.
    """
    import torch
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with torch.inference_mode():
        for _ in range(warmup):
            fn()
        if cuda:
            torch.cuda.synchronize()
        prof = profile(activities=activities, record_shapes=True)
        with native_output_silenced():  # Kineto prints "USDT: ... profiler_start" / "profiler_stop"
            prof.__enter__()
        try:
            t0 = time.perf_counter()
            for _ in range(runs):
                fn()
            if cuda:
                torch.cuda.synchronize()
            wall = time.perf_counter() - t0
        finally:
            with native_output_silenced():
                prof.__exit__(None, None, None)
    ops = []
    for e in prof.key_averages(group_by_input_shape=True):
        if e.device_type != DeviceType.CPU or e.key.startswith(("ProfilerStep", "[memory]")):
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
    kind = "self CUDA time of each CPU-side op" if cuda else "self CPU time"
    method = f"torch.profiler, {runs} calls after {warmup} warm-up, {kind}, grouped by op and input shapes"
    return OpProfile(sorted(ops, key=lambda o: -o.time_ms), "torch", runs, wall / runs * 1e3, method)


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
