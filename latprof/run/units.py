"""Units: what must be measured together, described as plain JSON so a fresh worker process can rebuild it.

A unit is one workload on one backend (``profile``), one network and its blocks on one backend (``blocks``), one
experiment x backend x scale with its variants interleaved (``sweep``), or one group of the CI suite (``suite``).
Commands differ only in the units they plan; the engine runs every unit the same way.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from latprof.results import row_key

# kind -> "module:function" measuring one unit in the current process and returning its raw rows.
MEASURE_FUNCTIONS = {
    "profile": "latprof.profile:measure_profile_unit",
    "blocks": "latprof.per_block:measure_blocks_unit",
    "sweep": "latprof.experiments.sweep:measure_sweep_unit",
    "suite": "latprof.regress.suite:measure_suite_unit",
    "peaks": "latprof.profile:measure_peaks_unit",
    "calibrate": "latprof.predict.measure_cells:measure_calibrate_unit",
    "probe": "latprof.run.fleet_task:probe_node_unit",
    "state": "latprof.predict.state:measure_state_unit",  # the machine's state (latprof predict --evaluate)  # a fleet node's fingerprint and backends (no timing)
}


@dataclass
class Unit:
    """One unit of a plan.

    ``payload`` is everything the worker needs (JSON-serialisable); ``templates`` are the identity fields of every row
    the unit yields, in order: ``--resume`` skips a unit whose rows are all present, and a unit whose worker dies
    becomes one error row per template. ``time_s`` is the expected measuring time of one process (for timeouts).
    """

    kind: str
    label: str
    payload: dict[str, Any]
    templates: list[dict[str, Any]]
    time_s: float = 10.0
    extra: dict[str, Any] = field(default_factory=dict)  # parent-side context (not sent to the worker)

    def keys(self) -> set[tuple[Any, ...]]:
        return {row_key(t) for t in self.templates}

    def as_message(self) -> dict[str, Any]:
        return {"kind": self.kind, "label": self.label, "payload": self.payload}


def measure_function(kind: str) -> Callable[[dict[str, Any]], list[dict[str, Any]]]:
    module, _, name = MEASURE_FUNCTIONS[kind].partition(":")
    return getattr(importlib.import_module(module), name)
