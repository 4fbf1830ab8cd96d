"""What runs on a fleet node, inside a Ray task: the unit goes through the same isolated-worker path as a local run.

Ray schedules the task (``num_cpus=0, resources={"latprof": 1}``: one latprof task per node at a time); the task
starts a fresh ``latprof.run.worker`` process per measuring process with a clean environment, exactly as
``WorkerExecutor`` does locally, and returns the raw rows with the node it ran on and when. The Ray worker itself
measures nothing: its own process state (Ray's threads, its allocator, its ``OMP_NUM_THREADS``) never reaches a
reading. This module imports no Ray at import time, so the worker side stays importable without it.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

from latprof.errors import one_line
from latprof.run.executors import WorkerExecutor, WorkerFailed, failed_unit_rows
from latprof.run.units import Unit


def run_unit_task(message: dict[str, Any], templates: list[dict[str, Any]], time_s: float,
                  settings: dict[str, Any], processes: int) -> dict[str, Any]:
    """Measure one unit ``processes`` times on this node, one fresh worker each, one after the other.

    ``settings``: allocator, worker timeout, thread binding and the driver's working folder (used when this node
    has it, so ``module:callable`` models resolve as on the driver). A worker that crashes or hangs becomes error
    rows, as locally; the task itself fails only when Ray's worker or node dies (Ray then retries it)."""
    started = time.time()
    cwd = settings.get("cwd")
    executor = WorkerExecutor(settings["allocator"], settings.get("timeout_s"), settings.get("bind_threads", True),
                              cwd=cwd if cwd and os.path.isdir(cwd) else os.path.expanduser("~"),
                              die_with_parent=True, nice=daemon_niceness())
    unit = Unit(message["kind"], message["label"], message["payload"], templates, time_s=time_s)
    raw = []
    for _ in range(max(processes, 1)):
        try:
            raw.append(executor.run(unit))
        except WorkerFailed as exc:
            raw.append(failed_unit_rows(unit, one_line(exc)))
    return {"raw": raw, "started_at": started, "ended_at": time.time(), "node_id": _node_id(),
            "hostname": socket.gethostname()}


def daemon_niceness() -> int | None:
    """The niceness of the Ray daemon that started this Ray worker (its parent, the raylet): what the node's own
    processes run at. Ray starts its workers at +15 (``RAY_worker_niceness``), which a measurement must not inherit."""
    try:
        import psutil

        return int(psutil.Process(os.getppid()).nice())
    except Exception:  # noqa: BLE001 - no parent to ask: leave the worker's niceness as it is
        return None


def _node_id() -> str:
    try:
        import ray

        return str(ray.get_runtime_context().get_node_id())
    except Exception:  # noqa: BLE001 - outside Ray (tests call the task body directly)
        return ""


def probe_node_unit(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """In a fresh worker on the node: its environment fingerprint, the backends usable there (and why not the
    others), each backend's default thread count and the node's logical cores."""
    from latprof.backends import backend_class, describe_backends
    from latprof.backends.base import default_threads, logical_cores
    from latprof.measure import environment

    env = environment.collect().as_dict()
    backends, unavailable, threads = [], {}, {}
    for b in describe_backends():
        if b["available"]:
            backends.append(b["name"])
            threads[b["name"]] = default_threads(backend_class(b["name"]))
        else:
            unavailable[b["name"]] = b["reason"] or "not available"
    from latprof import __version__

    nice = os.getpriority(os.PRIO_PROCESS, 0) if hasattr(os, "getpriority") else 0
    from latprof.rows import Record

    return [{"record": Record.PROBE.value, "environment": env, "nice": nice, "backends": backends,
             "unavailable": unavailable,
             "default_threads": threads, "logical_cores": logical_cores(), "latprof_version": __version__}]
