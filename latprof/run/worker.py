"""The worker process: ``python -m latprof.run.worker UNIT.json ROWS.json``.

Started fresh for every unit (spawned, never forked) with a clean environment whose allocator and thread variables
the parent set *before* this interpreter imported anything: no runtime starts a pool it was not told about, and no
allocator state carries over from what ran before. It measures the unit and writes its rows as JSON; the parent
alone writes the results file.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
# OpenMP thread placement for PyTorch backends (latprof/run/executors.py binds_openmp): one thread per core, bound.
# Unbound, the OpenMP worker thread sometimes shares a core with the main thread for a whole process: G1 x4 1:1 on
# torch-cpu (2 threads) read 17 ms instead of 11.7 ms in 4 of 14 fresh processes; bound, 0 of 22 (README).
BINDING_VARIABLES = {"OMP_PROC_BIND": "true", "OMP_PLACES": "cores"}


def process_conditions(isolation: str) -> dict[str, Any]:
    """What this process measured under: allocator, thread variables in force, isolation, pid."""
    from latprof.run.allocators import allocator_in_force

    return {
        **allocator_in_force(),
        "isolation": isolation,
        "thread_env": {k: os.environ.get(k) for k in (*THREAD_VARIABLES, *BINDING_VARIABLES)},
        "worker_pid": os.getpid(),
        "nice": os.getpriority(os.PRIO_PROCESS, 0) if hasattr(os, "getpriority") else None,
    }


def run_unit_here(message: dict[str, Any], isolation: str) -> list[dict[str, Any]]:
    """Measure one unit in this process; every row gets the process conditions."""
    from latprof.run.units import measure_function

    rows = measure_function(message["kind"])(message["payload"])
    conditions = process_conditions(isolation)
    for r in rows:
        r.update(allocator=conditions["allocator"])
        r.setdefault("process_conditions", conditions)
    return rows


def die_with_parent() -> None:
    """End this worker when its parent dies (``LATPROF_PARENT_PID`` set). A parent killed outright (SIGKILL, the OOM
    killer, a Ray worker killed with its node or force-cancelled) cannot stop the worker it started in its own
    session; Linux's parent-death signal can, so no orphan measures on after the run is gone."""
    parent = os.environ.get("LATPROF_PARENT_PID")
    if not parent or not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != int(parent):  # the parent died before the signal was armed
        os._exit(1)


def restore_priority() -> None:
    """Fleet runs (``LATPROF_NICE`` set): run at the niceness of the node's Ray daemon, not the +15 Ray gives its
    workers (which a measurement would inherit, losing the CPU to any other process). Lowering niceness needs
    privilege; without it the worker stays as it is and its ``nice`` is recorded in the row's process conditions."""
    target = os.environ.get("LATPROF_NICE")
    if not target or not hasattr(os, "setpriority"):
        return
    try:
        os.setpriority(os.PRIO_PROCESS, 0, int(target))
    except (OSError, ValueError):
        pass


def main(argv: list[str]) -> int:
    unit_path, rows_path = argv
    die_with_parent()
    restore_priority()
    with open(unit_path) as f:
        message = json.load(f)
    from latprof.results import json_text

    from latprof.errors import LatprofError, one_line

    try:
        rows = run_unit_here(message, "worker")
    except LatprofError as exc:  # a bad unit: one line for the parent's error row, no traceback
        print(f"latprof: error: {one_line(exc)}", file=sys.stderr)
        return 2
    tmp = rows_path + ".part"
    with open(tmp, "w") as f:
        f.write(json_text({"rows": rows}))
    os.replace(tmp, rows_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
