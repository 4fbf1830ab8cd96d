"""The run engine: every command is a plan of units handed here; execute each, pool, finish, store, write outputs.

    plan (units + how to finish a unit's rows) -> executor (worker processes or in-process) -> pooled rows
        -> results.jsonl (append-only, the parent the only writer) -> results.csv / summary.csv / report.html

``profile``, ``profile --per-block``, ``sweep`` and ``ci`` differ only in the plan they build.
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from latprof.errors import LatprofError, one_line
from latprof.measure import environment
from latprof.results import ResultStore
from latprof.rows import Record, record_type, row_key
from latprof.run.executors import WorkerFailed, failed_unit_rows, make_executor
from latprof.run.pool import pool_rows
from latprof.run.units import Unit

Finisher = Callable[[Unit, list[dict[str, Any]]], list[dict[str, Any]]]


@dataclass
class RunOptions:
    """Process conditions of a run (the same flags on every command)."""

    in_process: bool = False
    allocator: str | None = None  # None: the default (steady) for workers; recorded as found in-process
    processes: int | None = None  # None: the plan's default
    worker_timeout_s: float | None = None
    append: bool = False  # add to a folder that already holds results (without --resume's skipping)
    bind_threads: bool = True  # OMP_PROC_BIND=true, OMP_PLACES=cores in workers (latprof/run/worker.py says why)
    fleet: Any = None  # a latprof.run.fleet.FleetOptions: run the units on a Ray cluster (--executor ray)


@dataclass
class Plan:
    """Units in order, and the kind-specific step that turns pooled rows into final rows (ratios, verdicts...)."""

    units: list[Unit]
    finish: Finisher = lambda unit, rows: rows
    processes: int = 1
    # Adaptive passes (sweeps): extra processes for units whose answer is still undecided, within a time budget.
    undecided: Callable[[list[dict[str, Any]]], float | None] | None = None
    budget_s: float | None = None
    max_processes: int = 8


@dataclass
class RunResult:
    out_dir: Path
    results_path: Path
    environment: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    units_run: int = 0
    units_skipped: int = 0
    extra_processes: int = 0
    wall_s: float = 0.0
    notes: list[str] = field(default_factory=list)  # fleet runs: nodes or backends skipped, and why


def default_out_dir(prefix: str = "") -> Path:
    """A new folder per run: ``reports/<date>-<time>-<host>/`` (runs never mix silently)."""
    stamp = datetime.now().strftime("%Y-%m-%d-%H%M%S")
    return Path("reports") / f"{prefix}{stamp}-{socket.gethostname()}"


def open_output(out: Path | None, resume: bool, append: bool) -> tuple[Path, ResultStore]:
    """The output folder and its store. A folder that already holds results needs ``--resume`` or ``--append``."""
    if out is None:
        out = default_out_dir()
        while (out / "results.jsonl").exists():  # two runs within one second
            time.sleep(1.0)
            out = default_out_dir()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise LatprofError(f"--out {out} exists and is not a directory")
    results = out / "results.jsonl"
    if results.exists() and results.stat().st_size and not (resume or append):
        raise LatprofError(f"--out {out} already holds results; add --resume to complete that run, --append to add "
                           "to it, or choose a new folder")
    return out, ResultStore(results)


def record_environment(store: ResultStore, options: RunOptions | None = None) -> dict[str, Any]:
    """This machine's fingerprint, stored. Not stored for a fleet run: the driver measures nothing there, and each
    measuring node's own fingerprint is stored instead (latprof/run/fleet.py)."""
    env = environment.collect().as_dict()
    if options is None or options.fleet is None:
        store.append({"record": Record.ENVIRONMENT.value, **env})
    return env


def execute(
    plan: Plan,
    store: ResultStore,
    env: dict[str, Any],
    options: RunOptions,
    resume: bool = False,
    on_unit: Callable[[int, int, Unit, list[dict[str, Any]] | None], None] | None = None,
) -> RunResult:
    """Run every unit (skipping finished ones with ``resume``); each unit's rows are stored as soon as it finishes."""
    if options.fleet is not None:
        from latprof.run.fleet import execute_fleet

        return execute_fleet(plan, store, options, resume, on_unit)
    executor = make_executor(options.in_process, options.allocator, options.worker_timeout_s, options.bind_threads)
    processes = options.processes or plan.processes
    if processes < 1:
        raise LatprofError(f"--processes must be a positive integer, got {processes}")
    if options.in_process and processes > 1:
        raise LatprofError("--processes > 1 needs worker processes; drop --in-process")
    result = RunResult(store.path.parent, store.path, env)
    hardware_id = env.get("hardware_id", "")
    for unit in plan.units:
        for t in unit.templates:
            t.update(allocator=executor.allocator, hardware_id=hardware_id)
        unit.payload["hardware_id"] = hardware_id
    stored = store.latest() if resume else {}
    start = time.monotonic()
    walls: dict[int, float] = {}  # per unit: the longest wall time of one of its worker processes, start-up included
    # Per unit: [unit, raw rows per process, pooled rows, processes it has]. With --resume, a unit whose rows are all
    # stored starts from them (as one entry of raw: pooling reads their per-process groups back) and only gets the
    # passes it lacks; a unit stored with as many processes as asked for, or stored as failed, is skipped.
    state: list[list[Any]] = []
    skipped: list[Unit] = []
    for unit in plan.units:
        have = _stored_processes(unit, stored, processes) if resume else 0
        if have >= processes:
            skipped.append(unit)
        else:
            earlier = [stored[k] for k in unit.keys()] if have else []
            state.append([unit, [earlier] if earlier else [], earlier, have])
    steps, step = len(skipped) + sum(processes - e[3] for e in state), 0
    for unit in skipped:
        result.units_skipped += 1
        if on_unit:
            on_unit(step, steps, unit, None)
        step += 1
    # Several processes per unit run in passes, not back to back: pass k gives every unit its k-th process, so one
    # unit's processes lie minutes apart and the CI over processes covers the machine's drift across the run (a
    # shared VM's speed moves between minutes by far more than one minute's CI). Each pass re-pools and stores the
    # unit's rows (the newer supersede the older), so Ctrl-C keeps every finished pass and --resume completes them.
    for _ in range(processes):
        for entry in state:
            unit, raw, _, have = entry
            if have >= processes:
                continue
            raw.append(_timed_run(executor, unit, walls))
            entry[2] = rows = _finish(plan, unit, raw)
            entry[3] = have + 1
            store.append_many(rows)
            replace_rows(result, rows)
            if on_unit:
                on_unit(step, steps, unit, rows)
            step += 1
    result.units_run = len(state)
    if plan.undecided is not None and plan.budget_s and not options.in_process:
        _adaptive_passes(plan, executor, store, result, state, start, walls)
    result.wall_s = time.monotonic() - start
    return result


def _stored_processes(unit: Unit, stored: dict[tuple[Any, ...], dict[str, Any]], wanted: int) -> int:
    """How many processes the stored rows of ``unit`` already pool: 0 when one of its rows is missing, ``wanted``
    when one failed (a failed unit is not measured again on --resume), else the fewest among its rows."""
    rows = [stored.get(k) for k in unit.keys()]
    if not rows or any(r is None for r in rows):
        return 0
    if any(r.get("status") != "ok" for r in rows):  # type: ignore[union-attr]
        return wanted
    return min(int(r.get("processes") or 1) for r in rows)  # type: ignore[union-attr]


def _timed_run(executor: Any, unit: Unit, walls: dict[int, float]) -> list[dict[str, Any]]:
    """``_run_once``, remembering how long the whole worker took (what one more process for this unit costs)."""
    began = time.monotonic()
    rows = _run_once(executor, unit)
    walls[id(unit)] = max(walls.get(id(unit), 0.0), time.monotonic() - began)
    return rows


def _run_once(executor: Any, unit: Unit) -> list[dict[str, Any]]:
    try:
        rows = executor.run(unit)
    except WorkerFailed as exc:
        return failed_unit_rows(unit, one_line(exc))
    return tag_rows(unit, rows)


def tag_rows(unit: Unit, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the parent adds to a worker's rows: the kind of unit, and the machine's hardware_id where unset."""
    hid = unit.payload.get("hardware_id", "")
    for r in rows:
        if record_type(r) == Record.RESULT:
            r["kind"] = unit.kind  # what produced the row: profile, blocks, sweep, suite (the report dispatches on it)
        if not r.get("hardware_id"):
            r["hardware_id"] = hid
    return rows


def _finish(plan: Plan, unit: Unit, raw: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    rows = pool_rows(raw)
    return plan.finish(unit, rows)


def _adaptive_passes(plan: Plan, executor: Any, store: ResultStore, result: RunResult, state: list[list[Any]],
                     start: float, walls: dict[int, float]) -> None:
    """Spend what is left of the budget on undecided units, in rounds: each round gives every undecided unit one
    more worker process, widest CI first, re-pools it and stores the rows again (the newer rows supersede the
    older). Rounds rather than "always the widest" so one unit whose processes disagree cannot eat the budget. A
    unit stops at ``max_processes`` processes, those of rows stored before a --resume included. ``state``:
    ``execute``'s entries, [unit, raw rows per process, pooled rows, processes it has]."""
    assert plan.undecided is not None and plan.budget_s is not None
    while True:
        ranked = sorted(((plan.undecided(e[2]), i) for i, e in enumerate(state)
                         if e[3] < plan.max_processes), key=lambda c: -(c[0] or 0.0))
        round_ = [i for width, i in ranked if width is not None]
        if not round_:
            return
        for i in round_:
            unit, raw, rows, _ = state[i]
            # Only start a process that is expected to finish within the budget: as long as this unit's slowest
            # worker so far took, start-up, export load and prepare included (measure_wall_s alone leaves them out).
            per_process = walls.get(id(unit)) or float(rows[0].get("measure_wall_s") or unit.time_s) + 3.0
            if time.monotonic() - start + per_process > plan.budget_s:
                return
            raw.append(_timed_run(executor, unit, walls))
            state[i][2] = rows = _finish(plan, unit, raw)
            state[i][3] += 1
            store.append_many(rows)
            result.extra_processes += 1
            replace_rows(result, rows)


def replace_rows(result: RunResult, rows: list[dict[str, Any]]) -> None:
    """Put a unit's newly pooled result rows in place of its older ones (in their place), or at the end."""
    new = {row_key(r): r for r in _results_only(rows)}
    kept = [new.pop(row_key(r), r) for r in result.rows]
    result.rows = kept + list(new.values())


def _results_only(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if record_type(r) == Record.RESULT]


def log_unit(i: int, n: int, unit: Unit, rows: list[dict[str, Any]] | None) -> None:
    """Plain progress line (when stderr is not a terminal, e.g. CI logs)."""
    if rows is None:
        state = "skipped (already in results, --resume)"
    else:
        state = rows[0].get("verdict") or ("ok" if all(r.get("status") == "ok" for r in rows) else rows[0].get("error"))
    print(f"[{i + 1}/{n}] {unit.label}: {state}", file=sys.stderr, flush=True)
