"""The types of what a results file holds: record types, row kinds, the result row's fields, and its identity.

A results file is JSON lines, so rows travel as dicts; this module says what those dicts are, once. ``record``
tells a line's type (a result row, the environment fingerprint, a backend's peaks, a per-op breakdown). A result
row's ``kind`` tells what produced it (a ``profile`` reading, one block of ``--per-block``, a ``sweep`` variant, a
``ci`` suite entry), and every consumer (report, views, compare) dispatches on it. ``ResultRow`` lists the fields
in two halves, as ``torch.utils.benchmark`` splits ``TaskSpec`` from ``Measurement``: what was measured (the
identity, ``KEY_FIELDS``) and what was observed.

Files written before rows carried ``kind`` are given one when read (``legacy_kind``): that guess from the
experiment name lives here, at the file boundary, and nowhere else.
"""

from __future__ import annotations

import json
import re
from enum import Enum
from typing import Any, TypedDict


class Record(str, Enum):
    """A line's ``record`` field."""

    RESULT = "result"
    ENVIRONMENT = "environment"
    PEAKS = "peaks"
    PER_OP = "per_op"
    PREDICTION = "prediction"  # latprof predict --evaluate: one predictor's prediction of a measured network/block
    FLEET_SKIP = "fleet_skip"  # a fleet run: a unit a node skipped (backend missing there, ...) and why
    PROBE = "probe"  # a fleet node's fingerprint and backends, from its probe (never stored)
    MACHINE_STATE = "machine_state"  # latprof predict --evaluate: the fixed block's cold and warm reading between networks


class RowKind(str, Enum):
    """A result row's ``kind``: which command's unit produced it."""

    PROFILE = "profile"
    BLOCKS = "blocks"
    SWEEP = "sweep"
    SUITE = "suite"
    CALIBRATE = "calibrate"  # latprof calibrate: a kernel sample or a whole calibration cell


# Identity of a result row: --resume skips rows whose key is present, merge and compare match on it, a later row
# with the same key supersedes an earlier one. The allocator is part of it: two allocators are two readings.
# So is the numeric precision: an INT8 or FP16 reading is never the FP32 one (``quantization`` names the INT8 settings),
# and the fleet node that measured it (``node``; absent, i.e. None, in runs on one machine): a row per machine.
KEY_FIELDS = ("experiment", "workload", "variant", "backend", "threads", "batch", "scale", "input_shape", "allocator",
              "precision", "quantization", "node")
# Rows written before precision was recorded were all FP32 runs: they keep matching (--resume, compare) as such.
KEY_DEFAULTS: dict[str, Any] = {"precision": "fp32", "quantization": ""}

# --per-block rows: ``experiment`` is this prefix + the network's name.
BLOCKS_PREFIX = "blocks:"
_GUIDELINE_ID = re.compile(r"^g\d+$", re.IGNORECASE)


class ResultRow(TypedDict, total=False):
    """One ``record == "result"`` line. Error rows carry the identity, ``status = "error"`` and ``error``."""

    # ---- what was measured (the identity, KEY_FIELDS, and what produced it)
    record: str
    schema_version: int
    kind: str  # RowKind
    experiment: str  # sweep: the experiment id; --per-block: "blocks:<network>"; ci: "ci:<suite>"; else ""
    workload: str
    variant: str
    backend: str
    threads: int
    batch: int
    scale: int | None
    input_shape: str
    allocator: str
    precision: str  # fp32 | int8 | fp16 (latprof/backends/precision.py)
    quantization: str  # INT8: the settings in short ("QDQ per-channel A:S8 W:S8 MinMax x8"); "" otherwise
    settings: dict[str, Any]  # what the backend ran with (exporter, opset, providers, optimisation level, ...)
    # ---- analytic counts
    mult_adds: int
    elementwise_ops: int
    mem_access: int
    mem_bytes: int
    params: int
    arithmetic_intensity: float
    # ---- what was observed
    samples_ms: list[float]
    latency_median_ms: float
    latency_ci_low_ms: float
    latency_ci_high_ms: float
    cv: float
    n_samples: int
    calls_per_sample: int
    stop_reason: str
    processes: int
    process_spread: float
    minor_faults_per_call: float
    major_faults_per_call: float
    voluntary_ctx_switches_per_call: float
    involuntary_ctx_switches_per_call: float
    cpu_util: float
    # ---- sweep rows: the variant against its baseline, and the guideline's verdict
    baseline_variant: str
    speed_vs_baseline: float
    speed_vs_baseline_ci_low: float
    speed_vs_baseline_ci_high: float
    variant_outcome: str
    verdict: str
    # ---- bookkeeping
    status: str  # "ok" or "error"
    error: str
    hardware_id: str
    timestamp: str
    # ---- fleet runs (--executor ray): the machine, and when its task ran (epoch seconds, the node's clock)
    node: str
    node_id: str
    started_at: float
    ended_at: float
    run_intervals: list[list[float]]
    node_lost: bool


def row_key(row: dict[str, Any]) -> tuple[Any, ...]:
    """The identity of a result row, comparable and hashable."""
    return tuple(json.dumps(_key_value(row, k), sort_keys=True) for k in KEY_FIELDS)


def _key_value(row: dict[str, Any], k: str) -> Any:
    value = row.get(k)
    return KEY_DEFAULTS[k] if value in (None, "") and k in KEY_DEFAULTS else value


def record_type(line: dict[str, Any]) -> str:
    """A line's record type; lines without one are result rows (the first schema)."""
    return str(line.get("record", Record.RESULT.value))


def legacy_kind(row: dict[str, Any]) -> RowKind:
    """The ``kind`` of a row written before rows carried one, from its experiment name and fields."""
    exp = str(row.get("experiment") or "")
    if exp.startswith(BLOCKS_PREFIX):
        return RowKind.BLOCKS
    if exp.startswith("ci:"):
        return RowKind.SUITE
    if _GUIDELINE_ID.match(exp) or "baseline_variant" in row or "verdict" in row:
        return RowKind.SWEEP
    return RowKind.PROFILE


def kind_of(row: dict[str, Any]) -> str:
    """A result row's kind (its recorded ``kind``; old rows get ``legacy_kind``)."""
    return str(row.get("kind") or legacy_kind(row).value)
