"""An injected ``calibrate`` measure function for tests: real kernel extraction, synthetic latencies.

Latency of a kernel = 1 µs + 1 ns per multiply-add + 0.1 ns per element moved (cold; ``WARM`` times that warm); a
cell costs its kernels times ``CONTEXT`` (``WARM_CONTEXT`` warm: kernels run slower in a forward than replayed alone)
plus 2 µs per module call. A chain costs its warm cost, plus ``true_share(its weight bytes)`` of its kernels' weights'
part of the difference to cold, plus ``TRUE_ACTIVATION`` of their activations' part (``latprof.predict.residency``).
Deterministic, so tests can check what calibration and prediction make of it.

In-forward kernel times (``latprof.predict.torch_profile``): with ``IN_FORWARD`` set, every kernel row also carries
its time inside the cell's forward (``CONTEXT`` x its reading cold, ``WARM_CONTEXT`` x warm), and the replays miss it
by a kernel-dependent factor (``replay_distortion``) that no context fit undoes.

A drifting machine: with ``DRIFT`` set, the i-th cell or chain of a unit reads ``DRIFT[i % len(DRIFT)]`` times
slower, all its readings and the machine-state reading before it alike (``latprof.predict.state``); with
``STATE_FOLLOWS`` below 1 the readings follow only that power of what the state reading shows (0: a state reading
whose swings are its own noise).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from latprof.predict.measure_cells import overhead_ident, sample_ident
from latprof.predict.residency import footprint_bytes, weight_bytes, weight_share
from latprof.predict.space import build_cell, cell_type
from latprof.predict.torch_kernels import torch_kernels
from latprof.results import base_row

PER_CALL_MS = 0.002
CONTEXT = 1.25
WARM = 0.5
WARM_CONTEXT = 1.1
TRUE_CENTRE_LOG2 = 23.0  # the weights' cold share is 1/2 at 8 MiB of weights
TRUE_WIDTH_LOG2 = 0.8
TRUE_ACTIVATION = 0.2
DRIFT: tuple[float, ...] = (1.0,)
STATE_FOLLOWS = 1.0
IN_FORWARD = False
STATE_COLD_MS, STATE_WARM_MS = 1.0, 0.6


def state(i: int, payload: dict[str, Any]) -> tuple[float, dict[str, float]]:
    """The i-th reading's drift, and the state reading it carries (none when the payload asks for none)."""
    d = DRIFT[i % len(DRIFT)]
    if not payload.get("state", True):
        return d ** STATE_FOLLOWS, {}
    return d ** STATE_FOLLOWS, {"state_cold_ms": STATE_COLD_MS * d, "state_warm_ms": STATE_WARM_MS * d}


def true_share(weights: float) -> float:
    return 1.0 / (1.0 + math.exp(-(math.log2(weights) - TRUE_CENTRE_LOG2) / TRUE_WIDTH_LOG2))


def kernel_ms(features: dict[str, float]) -> float:
    return 1e-3 + 1e-6 * features.get("mult_adds", 0.0) + 1e-7 * features.get("mem_access", 0.0)


def replay_distortion(features: dict[str, float]) -> float:
    """How far a kernel replayed alone misses its in-forward time when ``IN_FORWARD`` (0.4x to 1.6x; 1 without)."""
    if not IN_FORWARD:
        return 1.0
    return 1.0 + 0.6 * math.sin(features.get("out_numel", 0.0) + 3.0 * features.get("mult_adds", 0.0))


def measure(payload: dict[str, Any]) -> list[dict[str, Any]]:
    backend, threads = payload["backend"], payload["threads"]
    rows = [base_row(**overhead_ident(payload, "module_call", [1]), status="ok", error="",
                     sample="overhead", latency_median_ms=0.13, module_call_ms=PER_CALL_MS, samples_ms=[0.13])]
    for n, (cell_id, spec) in enumerate(payload["cells"]):
        d, st = state(n, payload)
        module, shape = build_cell(spec)
        kernels, calls = torch_kernels(module, (torch.zeros(shape),))
        total = replayed = 0.0
        for i, k in enumerate(kernels):
            ms = kernel_ms(k.features)
            total += k.count * ms
            r = ms * replay_distortion(k.features)
            replayed += k.count * r
            in_forward = ({"profiled_ms": d * CONTEXT * ms, "warm_profiled_ms": d * WARM_CONTEXT * WARM * ms,
                           "replayed": True} if IN_FORWARD else {})
            rows.append(base_row(**sample_ident(backend, threads, cell_id, f"k{i}", spec["input"]), status="ok",
                                 error="", sample="kernel", kernel=k.as_dict(), latency_median_ms=d * r,
                                 samples_ms=[d * r], cell_type=cell_type(spec), warm_ms=d * WARM * r, **st,
                                 **in_forward))
        cell_ms = CONTEXT * total + calls * PER_CALL_MS
        cell_in_forward = ({"profiled_ms": d * CONTEXT * total, "warm_profiled_ms": d * WARM_CONTEXT * WARM * total}
                           if IN_FORWARD else {})
        rows.append(base_row(**sample_ident(backend, threads, cell_id, "cell", spec["input"]), status="ok", error="",
                             sample="cell", cell=spec, cell_type=cell_type(spec), module_calls=calls,
                             kernel_calls=sum(k.count for k in kernels), kernels_ms=d * replayed,
                             latency_median_ms=d * cell_ms, samples_ms=[d * cell_ms],
                             warm_kernels_ms=d * WARM * replayed,
                             warm_ms=d * (WARM_CONTEXT * WARM * total + calls * PER_CALL_MS), **st, **cell_in_forward))
    for n, (chain_id, spec) in enumerate(payload.get("chains", [])):
        d, st = state(n + 1, payload)
        module, shape = build_cell(spec)
        kernels, calls = torch_kernels(module, (torch.zeros(shape),))
        cold = sum(k.count * kernel_ms(k.features) for k in kernels)
        warm_ms = WARM_CONTEXT * WARM * cold + calls * PER_CALL_MS
        weights_part = sum(k.count * weight_share(k.op, k.features) * kernel_ms(k.features) for k in kernels)
        delta = CONTEXT - WARM_CONTEXT * WARM  # cold minus warm, per ms of a kernel's reading
        footprint = footprint_bytes(module, kernels)
        ms = (warm_ms + true_share(weight_bytes(module)) * delta * weights_part
              + TRUE_ACTIVATION * delta * (cold - weights_part))
        rows.append(base_row(**sample_ident(backend, threads, chain_id, "chain", spec["input"]), status="ok",
                             error="", sample="chain", chain=spec, latency_median_ms=d * ms, samples_ms=[d * ms],
                             module_calls=calls, footprint_bytes=footprint, kernels=[k.as_dict() for k in kernels],
                             **st))
    return rows
