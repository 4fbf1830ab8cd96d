"""PyTorch eager: each kernel's time *inside* a forward, from ``torch.profiler``, as ONNX Runtime's profiler gives
each node's.

A kernel replayed alone (``torch_kernels.replay_timer``) is not the kernel in a forward: there its input is what the
op before it just wrote, its code path is hot, and what it allocates comes from the allocator's warm free lists. On
the 480 MiB-L3 VM the replays of one torch-cpu calibration (p15), set against the same networks' profiled
operators, read batch norm at 0.56x its in-forward time, small element-wise ops (add, mul, mean) at 0.4-0.5x, the
``empty`` of every batch norm at 12x and the squeeze-excite gate's sigmoid at 16x (docs/predict.md, "In-forward
kernel times"). So a calibration cell is also run under the profiler, cold, warm and hot like its timed readings,
and each of its kernels gets its median time per call in that forward.

Events are matched to the traced kernels by order: the outermost profiler events whose op is one the tracer
recorded (``aten::convolution`` and not the ``aten::_convolution`` inside it; ``aten::conv2d`` above it is not
traced), inside the forward's ``record_function`` scope, must name the traced calls one for one, or the cell gets
no profiled times (``ProfileMismatch``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from latprof.measure.counters import ProcessCounters, snapshot
from latprof.predict.kernels import Kernel

SCOPE = "latprof::forward"
PROFILE_RUNS = 15  # per state; the median per kernel over runs (a run preempted mid-op must not dominate)
WARMUP_RUNS = 2


class ProfileMismatch(ValueError):
    """The profiled forward did not dispatch the traced calls (another code path at run time)."""


def op_name(label: str) -> str:
    """``aten.relu_.default`` -> ``relu_`` (the profiler's ``aten::relu_``)."""
    return label.split(".")[1]


def _forward_events(prof: Any, names: set[str]) -> list[list[tuple[str, float]]]:
    """Per profiled forward (each ``SCOPE`` event), its outermost events whose op is in ``names``: (name, ms)."""
    events = prof.events()
    scopes = sorted((e for e in events if e.name == SCOPE), key=lambda e: e.time_range.start)
    by_scope: dict[int, list[tuple[float, str, float]]] = {id(s): [] for s in scopes}
    for e in events:
        if not e.name.startswith("aten::") or e.name[6:] not in names:
            continue
        parent, scope = e.cpu_parent, None
        while parent is not None:
            if parent.name.startswith("aten::") and parent.name[6:] in names:
                break  # nested inside a traced op: part of that op's time
            if parent.name == SCOPE:
                scope = parent
                break
            parent = parent.cpu_parent
        if scope is not None and parent is scope:
            by_scope[id(scope)].append((e.time_range.start, e.name[6:], e.cpu_time_total / 1e3))
    return [[(n, ms) for _, n, ms in sorted(by_scope[id(s)])] for s in scopes]


def profiled_kernel_ms(module: nn.Module, x: torch.Tensor, kernels: list[Kernel], order: list[int],
                       evict: Callable[[], None] | None, touch: Callable[[], object] | None = None,
                       runs: int = PROFILE_RUNS, warmup: int = WARMUP_RUNS,
                       counters: ProcessCounters | None = None) -> list[float]:
    """Each kernel's median time per call (ms) inside ``module``'s forward on ``x``, over ``runs`` profiled
    forwards, each after ``evict()`` and ``touch()`` (``latprof.predict.cold``) as the cell's timed readings are;
    ``counters`` gathers the process counters around each profiled forward (eviction excluded).
    Raises ``ProfileMismatch`` when the profiled ops are not the traced calls."""
    from torch.profiler import ProfilerActivity, profile, record_function

    expected = [op_name(kernels[i].label) for i in order]
    names = set(expected)
    with torch.inference_mode():
        for _ in range(warmup):
            module(x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(runs):
                if evict is not None:
                    evict()
                if touch is not None:
                    touch()
                before = snapshot()
                with record_function(SCOPE):
                    module(x)
                if counters is not None:
                    counters.add(before, snapshot(), 1)
    forwards = _forward_events(prof, names)
    if not forwards:
        raise ProfileMismatch("the profiler recorded no forward")
    per_run = np.zeros((len(forwards), len(kernels)))
    for r, events in enumerate(forwards):
        got = [n for n, _ in events]
        if got != expected:
            first = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected)))
            raise ProfileMismatch(f"profiled forward dispatched {len(got)} traced ops, traced {len(expected)}; first "
                                  f"difference at call {first}: {got[first] if first < len(got) else '-'} vs "
                                  f"{expected[first] if first < len(expected) else '-'}")
        for i, (_, ms) in zip(order, events):
            per_run[r, i] += ms
    counts = np.array([k.count for k in kernels], dtype=float)
    return list(np.median(per_run, axis=0) / counts)
