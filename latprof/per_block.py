"""Per-block profiling: time a zoo network whole and each of its blocks alone, on one backend.

A network's ``blocks()`` compose to its forward, so the blocks' latencies should add up to about the whole
network's; the gap (dispatch overhead, cache effects, cross-block fusion on graph runtimes) is itself a finding,
and is reported as ``sum_of_blocks_ms`` / ``sum_vs_network`` on the whole-network row.

Rows follow the results contract: ``experiment = "blocks:<network>"``, ``variant`` = the block's name (``network``
for the whole), ``block_index`` (-1 for the whole network), ``share_of_network`` = block median / network median.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from latprof.backends import BackendOptions, backend_class
from latprof.backends.base import DEFAULT_ORT_OPT, DEFAULT_PRECISION, DEFAULT_TF32, default_threads, failure_message, validate_threads
from latprof.cost import UnsupportedOpWarning, count_model
from latprof.errors import LatprofError, one_line
from latprof.measure.protocol import MeasureConfig
from latprof.profile import ProfileRequest, RunFiles, measure_on_backend, resolve_batch, run_plan
from latprof.results import base_row, error_row
from latprof.run.engine import Plan
from latprof.run.units import Unit
from latprof.shapes import Shape, format_shape
from latprof.workloads import Workload, create_workload

NETWORK_VARIANT = "network"
COUNT_FIELDS = ("mult_adds", "elementwise_ops", "mem_access", "mem_bytes", "params", "arithmetic_intensity")


@dataclass
class BlockSummary:
    """Sum of the blocks' median latencies against the whole network's."""

    network_ms: float | None
    sum_of_blocks_ms: float | None

    @property
    def ratio(self) -> float | None:
        if not self.network_ms or self.sum_of_blocks_ms is None:
            return None
        return self.sum_of_blocks_ms / self.network_ms


def count_fields(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> dict[str, Any]:
    """Analytic counts of one block (``latprof.cost.count_model``); a counting failure is noted, not fatal."""
    try:
        with warnings.catch_warnings():  # as in ``profile``: ops without a rule are not worth a warning per block
            warnings.simplefilter("ignore", UnsupportedOpWarning)
            totals = count_model(module, inputs).totals
    except (LatprofError, RuntimeError, ValueError, TypeError) as exc:  # must not cost the latency row
        return {"count_error": one_line(exc)}
    return {k: totals.get(k) for k in COUNT_FIELDS if k in totals}


def block_workloads(network: Workload) -> list[tuple[int, str, Workload]]:
    """(index, block name, workload) for each block, each with the input shape it sees inside the network."""
    source = f"block of {network.name}"
    return [
        (i, b.name, Workload(f"{network.name}/{b.name}", b.module, b.input_shape, "block", {}, source))
        for i, b in enumerate(network.blocks())
    ]


def profile_blocks(
    network_name: str | Workload,
    backend: str = "torch-cpu",
    threads: int | None = None,
    config: MeasureConfig | None = None,
    input_shape: Shape | None = None,
    batch: int | None = None,
    pin: bool = False,
    ort_opt: str = DEFAULT_ORT_OPT,
    model_kwargs: dict[str, Any] | None = None,
    hardware_id: str = "",
    tf32: str = DEFAULT_TF32,
) -> list[dict[str, Any]]:
    """Measure the whole network, then each block alone, in this process; one row each (the whole network first,
    block_index -1), with each block's share of the network and the sum of blocks (``attach_shares``).

    ``network_name`` is a zoo name (or a ``Workload`` already built with the backend's batch). A block that fails
    becomes an error row and the others go on. ``latprof profile --per-block`` runs this in a worker per network.
    """
    validate_threads(threads)
    cls = backend_class(backend)
    config = config or MeasureConfig()
    batch = cls(BackendOptions()).batch_for(batch)
    network = _network(network_name, input_shape, batch, model_kwargs)
    threads = threads or default_threads(cls)
    options = BackendOptions(threads, None, pin, batch, ort_opt, tf32=tf32)
    items = [(-1, NETWORK_VARIANT, network), *block_workloads(network)]
    rows = [_measure_one(workload, _ident(network, backend, threads, hardware_id, i, v, workload), backend, options,
                         config) for i, v, workload in items]
    rows[0].update(blocks_measured=len(rows) - 1, blocks_total=len(items) - 1)
    attach_shares(rows)
    return rows


def attach_shares(rows: list[dict[str, Any]]) -> None:
    """Each block's median as a share of the whole network's, and the sum of blocks on the whole-network row."""
    whole = next((r for r in rows if r.get("block_index") == -1), None)
    network_ms = whole.get("latency_median_ms") if whole and whole.get("status") == "ok" else None
    for r in rows:
        if r is not whole:
            ok = r.get("status") == "ok" and network_ms
            r["share_of_network"] = r["latency_median_ms"] / network_ms if ok else None
    if whole is not None:
        summary = summarize_blocks(rows)
        whole.update(share_of_network=1.0 if network_ms else None, sum_of_blocks_ms=summary.sum_of_blocks_ms,
                     sum_vs_network=summary.ratio)


def _network(
    network: str | Workload, input_shape: Shape | None, batch: int, model_kwargs: dict[str, Any] | None
) -> Workload:
    """Build (or take) the network and check it: a bad input shape or a model without ``blocks()`` is one line."""
    if isinstance(network, str):
        network = create_workload(network, input_shape=input_shape, batch=batch, **(model_kwargs or {}))
    if network.module is None or not hasattr(network.module, "blocks"):
        raise LatprofError(
            f"{network.name} is not a network with a block decomposition; --per-block needs a zoo network"
        )
    network.check_input()
    return network


def _measure_one(
    workload: Workload, ident: dict[str, Any], backend: str, options: BackendOptions, config: MeasureConfig
) -> dict[str, Any]:
    counts = count_fields(workload.module, workload.make_inputs()) if workload.module is not None else {}
    try:
        fields = measure_on_backend(workload, backend, options, config)
        return base_row(**ident, **counts, **fields, status="ok", error="")
    except Exception as exc:  # BackendError, CUDA out of memory...: this block's error row, the next block goes on
        return error_row(failure_message(exc), **ident, **counts)


def _ident(
    network: Workload, backend: str, threads: int, hardware_id: str, index: int, variant: str, workload: Workload
) -> dict[str, Any]:
    return {
        "experiment": f"blocks:{network.name}",
        "workload": network.name,
        "variant": variant,
        "block_index": index,
        "backend": backend,
        "threads": threads,
        "batch": workload.batch,
        "input_shape": format_shape(workload.input_shape),
        "hardware_id": hardware_id,
    }


def summarize_blocks(rows: list[dict[str, Any]]) -> BlockSummary:
    """Whole-network median and the sum of the blocks' medians (None when any block failed or is missing)."""
    whole = next((r for r in rows if r.get("block_index") == -1), None)
    net = whole.get("latency_median_ms") if whole and whole.get("status") == "ok" else None
    parts = [r for r in rows if r.get("block_index", -1) >= 0]
    complete = whole is None or whole.get("blocks_total") in (None, len(parts))
    good = parts and complete and all(r.get("status") == "ok" for r in parts)
    total = sum(r["latency_median_ms"] for r in parts) if good else None
    return BlockSummary(net, total)


def block_table_rows(rows: list[dict[str, Any]]) -> list[list[Any]]:
    """Table body for the CLI: block, input, mult_adds, mem_access, median latency, share of the network."""
    body = []
    for r in rows:
        ok = r.get("status") == "ok"
        share = r.get("share_of_network")
        body.append([
            r.get("block_index"), r.get("variant"), r.get("input_shape"), r.get("mult_adds"), r.get("mem_access"),
            r.get("latency_median_ms") if ok else None,
            f"{100 * share:.1f}%" if share is not None else None,
            "ok" if ok else f"error: {r.get('error')}",
        ])
    return body


BLOCK_TABLE_COLUMNS = ["#", "block", "input", "mult_adds", "mem_access", "median ms", "share of network", "status"]


def summary_line(rows: list[dict[str, Any]]) -> str:
    """``sum of blocks X ms vs whole network Y ms (ratio Z)``: how well the decomposition adds up."""
    s = summarize_blocks(rows)
    if s.network_ms is None or s.sum_of_blocks_ms is None:
        failed = sum(1 for r in rows if r.get("status") != "ok")
        whole = next((r for r in rows if r.get("block_index") == -1), {})
        missing = (whole.get("blocks_total") or 0) - sum(1 for r in rows if r.get("block_index", -1) >= 0)
        gap = f", {missing} block(s) not measured" if missing > 0 else ""
        return f"sum of blocks vs whole network: not available ({failed} row(s) failed{gap})"
    return (f"sum of blocks {s.sum_of_blocks_ms:.4g} ms vs whole network {s.network_ms:.4g} ms "
            f"(ratio {s.ratio:.3f}, {len(rows) - 1} blocks)")


def blocks_plan(request: ProfileRequest) -> Plan:
    """One unit per network x backend: the whole network, then each block alone, in one worker process."""
    fleet = request.run.fleet is not None  # backends and threads are checked on each node (latprof/run/fleet.py)
    if not fleet:
        validate_threads(request.threads)
    if request.precision != DEFAULT_PRECISION:  # each block would be quantised on its own calibration: not the network's
        raise LatprofError(f"--per-block measures {DEFAULT_PRECISION} only; run --precision {request.precision} "
                           "without --per-block")
    units = []
    for model in request.models:  # build and check everything first: a bad name or shape fails before any file
        for backend in request.backends or ["torch-cpu"]:
            cls = backend_class(backend, require_available=not fleet)
            batch = resolve_batch(request.input_shape, request.batch, cls)
            network = _network(model, request.input_shape, batch, request.model_kwargs)
            threads = request.threads or default_threads(cls)
            items = [(-1, NETWORK_VARIANT, network), *block_workloads(network)]
            templates = [base_row(**_ident(network, backend, threads, "", i, v, w)) for i, v, w in items]
            payload = {
                "model": model, "kwargs": request.model_kwargs, "input_shape": list(network.input_shape),
                "backend": backend, "threads": threads, "pin": request.pin, "ort_opt": request.ort_opt,
                "tf32": request.tf32, "config": asdict(request.config),
            }
            units.append(Unit("blocks", f"{network.name} blocks {backend}", payload, templates,
                              time_s=len(items) * (request.config.max_time_s + 5.0),
                              extra={"threads_explicit": request.threads is not None}))
    return Plan(units, finish_blocks_unit, processes=1)


def measure_blocks_unit(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """In the worker: the whole network, then each block alone (raw rows, shares added after pooling)."""
    return profile_blocks(
        payload["model"], payload["backend"], payload["threads"], MeasureConfig(**payload["config"]),
        tuple(payload["input_shape"]), payload["input_shape"][0], payload["pin"], payload["ort_opt"],
        payload["kwargs"], payload.get("hardware_id", ""), payload.get("tf32", DEFAULT_TF32),
    )


def finish_blocks_unit(unit: Unit, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Shares and the sum of blocks again from the pooled medians; the whole-network row stored last, so a reader
    sees the blocks it sums."""
    attach_shares(rows)
    return sorted(rows, key=lambda r: r.get("block_index") == -1)


def run_per_block(request: ProfileRequest, after_unit: Callable[[int, int], None] | None = None) -> RunFiles:
    """``latprof profile --per-block``: every network x backend as one unit, stored like ``profile``
    (``after_unit(i, n)`` as in ``run_profile``)."""
    return run_plan(request, blocks_plan(request), after_unit=after_unit)
