"""The CI suite: a TOML list of small workloads plus a reference workload, measured interleaved on one backend.

Every group of entries sharing (backend, threads) is measured in shuffled rounds together with its own copy of the
reference workload (``latprof.measure.measure_interleaved``), so sample *i* of every row of a group comes from the
same round; ``latprof compare --normalize`` divides round by round by the reference.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from latprof.backends import BackendOptions, backend_class, create_backend
from latprof.backends.base import PreparedRun, failure_message, validate_threads
from latprof.errors import LatprofError, one_line, unknown_choice
from latprof.measure.protocol import BatchTimer, MeasureConfig, measure_interleaved
from latprof.regress.compare import GROUP_FIELD, REFERENCE_FIELD
from latprof.results import ResultStore, base_row, error_row, latency_fields
from latprof.run.engine import Plan, RunOptions, execute
from latprof.run.units import Unit
from latprof.shapes import Shape, format_shape, parse_shape
from latprof.workloads import create_workload

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the tomli backport (a dependency there, see pyproject.toml)
    import tomli as tomllib  # type: ignore[no-redef]

SUITE_KEYS = {
    "name", "backend", "threads", "batch", "target_ci", "max_time", "min_rounds", "min_sample_ms", "threshold", "alpha",
    "clock",
}
CLOCKS = ("wall", "thread_cpu")
ENTRY_KEYS = {"name", "workload", "input", "kwargs", "backend", "threads"}


@dataclass(frozen=True)
class SuiteEntry:
    """One workload of the suite: a unique name (the row's ``variant``), a registry name, kwargs and input shape."""

    name: str
    workload: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    input_shape: Shape | None = None
    backend: str = "torch-cpu"
    threads: int = 1


@dataclass(frozen=True)
class Suite:
    """A parsed suite file: its entries, the reference workload, and measurement / decision settings."""

    name: str
    entries: tuple[SuiteEntry, ...]
    reference: SuiteEntry
    batch: int = 1
    config: MeasureConfig = field(default_factory=MeasureConfig)
    threshold: float = 0.05
    alpha: float = 0.01
    clock: str = "wall"
    path: str = ""

    @property
    def experiment(self) -> str:
        return f"ci:{self.name}"

    def only(self, names: Iterable[str]) -> Suite:
        """The same suite restricted to the named entries (used to re-measure flagged rows)."""
        wanted = set(names)
        return replace(self, entries=tuple(e for e in self.entries if e.name in wanted))


def _entry(raw: Any, where: str, defaults: dict[str, Any]) -> SuiteEntry:
    if not isinstance(raw, dict):
        raise LatprofError(f"{where}: expected a table with name, workload, input, kwargs")
    unknown = set(raw) - ENTRY_KEYS
    if unknown:
        raise LatprofError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; valid: {', '.join(sorted(ENTRY_KEYS))}")
    for key in ("name", "workload"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise LatprofError(f"{where}: '{key}' (a string) is required")
    kwargs = raw.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise LatprofError(f"{where}: 'kwargs' must be a table, got {kwargs!r}")
    threads = raw.get("threads", defaults["threads"])
    if not isinstance(threads, int) or threads < 1:
        raise LatprofError(f"{where}: 'threads' must be a positive integer, got {threads!r}")
    return SuiteEntry(
        name=raw["name"],
        workload=raw["workload"],
        kwargs=dict(kwargs),
        input_shape=parse_shape(raw["input"]) if raw.get("input") else None,
        backend=str(raw.get("backend", defaults["backend"])),
        threads=threads,
    )


def load_suite(path: str | Path) -> Suite:
    """Parse and validate a suite TOML (layout in docs/ci.md); problems are one-line ``LatprofError``s."""
    p = Path(path)
    if not p.is_file():
        raise LatprofError(f"suite file not found: {p}")
    try:
        data = tomllib.loads(p.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise LatprofError(f"{p}: not a valid TOML suite: {one_line(exc)}") from None
    head = data.get("suite", {})
    unknown = set(head) - SUITE_KEYS
    if unknown:
        raise LatprofError(f"{p}: unknown [suite] key(s) {', '.join(sorted(unknown))}; valid: {', '.join(sorted(SUITE_KEYS))}")
    defaults = {"backend": head.get("backend", "torch-cpu"), "threads": head.get("threads", 1)}
    if "reference" not in data:
        raise LatprofError(f"{p}: a [reference] workload is required (it normalises machine drift)")
    reference = _entry(data["reference"], f"{p} [reference]", defaults)
    raw_entries = data.get("workloads", [])
    if not isinstance(raw_entries, list) or not raw_entries:
        raise LatprofError(f"{p}: at least one [[workloads]] entry is required")
    entries = tuple(_entry(e, f"{p} [[workloads]] #{i + 1}", defaults) for i, e in enumerate(raw_entries))
    names = [e.name for e in entries] + [reference.name]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise LatprofError(f"{p}: entry names must be unique (the reference's too); repeated: {', '.join(dupes)}")
    try:
        config = MeasureConfig(
            target_ci=float(head.get("target_ci", 0.01)),
            max_time_s=float(head.get("max_time", 20.0)),
            min_samples=int(head.get("min_rounds", 30)),
            min_sample_time_s=float(head.get("min_sample_ms", 10.0)) / 1e3,
        )
    except ValueError as exc:
        raise LatprofError(f"{p} [suite]: {exc}") from None
    clock = str(head.get("clock", "wall"))
    if clock not in CLOCKS:
        raise unknown_choice(f"{p} [suite] clock", clock, CLOCKS)
    if clock == "thread_cpu" and any(e.threads != 1 for e in (*entries, reference)):
        raise LatprofError(f"{p}: clock = 'thread_cpu' times the calling thread only; it needs threads = 1 everywhere")
    return Suite(
        name=str(head.get("name", p.stem)),
        entries=entries,
        reference=reference,
        batch=int(head.get("batch", 1)),
        config=config,
        threshold=float(head.get("threshold", 0.05)),
        alpha=float(head.get("alpha", 0.01)),
        clock=clock,
        path=str(p),
    )


def thread_cpu_timer(timer: BatchTimer) -> BatchTimer:
    """CPU time of the calling thread around a batch timer: time spent preempted by other processes is not counted.

    Valid only when all the work runs on the calling thread (torch-cpu with 1 intra-op thread). On a shared CI runner
    this removes most contention noise; what remains is the work itself (and its cache and memory stalls).
    """

    def run(n: int) -> float:
        start = time.thread_time()
        timer(n)
        return time.thread_time() - start

    return run


def _groups(suite: Suite) -> dict[tuple[str, int], list[SuiteEntry]]:
    out: dict[tuple[str, int], list[SuiteEntry]] = {}
    for e in suite.entries:
        out.setdefault((e.backend, e.threads), []).append(e)
    return out


def _identity(suite: Suite, entry: SuiteEntry, shape: Shape, is_reference: bool, group: str) -> dict[str, Any]:
    return {
        "experiment": suite.experiment,
        "workload": entry.workload,
        "variant": entry.name,
        "backend": entry.backend,
        "threads": entry.threads,
        "batch": int(shape[0]),
        "input_shape": format_shape(shape),
        "kwargs": entry.kwargs,
        REFERENCE_FIELD: is_reference,
        GROUP_FIELD: group,
    }


def suite_to_dict(suite: Suite) -> dict[str, Any]:
    """A suite as plain JSON for a worker (suites may be built in code, not only read from a file)."""
    data = asdict(replace(suite, entries=tuple(_plain(e) for e in suite.entries), reference=_plain(suite.reference)))
    return data


def _plain(entry: SuiteEntry) -> SuiteEntry:
    """Shapes as plain tuples (a parsed shape also remembers the text it came from)."""
    return replace(entry, input_shape=tuple(int(x) for x in entry.input_shape) if entry.input_shape else None)


def suite_from_dict(data: dict[str, Any]) -> Suite:
    def entry(e: dict[str, Any]) -> SuiteEntry:
        return SuiteEntry(**{**e, "input_shape": tuple(e["input_shape"]) if e.get("input_shape") else None})

    return Suite(**{**data, "entries": tuple(entry(e) for e in data["entries"]), "reference": entry(data["reference"]),
                    "config": MeasureConfig(**data["config"])})


def suite_plan(suite: Suite) -> Plan:
    """One unit per (backend, threads) group: its entries and the reference, interleaved in one worker process."""
    units = []
    for (backend_name, threads), entries in _groups(suite).items():
        backend_class(backend_name)
        validate_threads(threads)
        group = uuid.uuid4().hex[:12]
        ref = replace(suite.reference, backend=backend_name, threads=threads)
        templates = []
        for entry in [ref, *entries]:
            workload = create_workload(entry.workload, input_shape=entry.input_shape, batch=suite.batch, **entry.kwargs)
            templates.append(base_row(**_identity(suite, entry, workload.input_shape, entry is ref, group)))
        payload = {"suite": suite_to_dict(suite.only(e.name for e in entries)), "backend": backend_name,
                   "threads": threads, "group": group}
        units.append(Unit("suite", f"{suite.name} {backend_name} {threads} thread(s)", payload, templates,
                          time_s=suite.config.max_time_s + 10.0 * (len(entries) + 1)))
    return Plan(units, processes=1)


def measure_suite_unit(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """In the worker: measure one group's entries interleaved with its copy of the reference."""
    suite = suite_from_dict(payload["suite"])
    backend_name, threads, group = payload["backend"], payload["threads"], payload["group"]
    hardware_id = payload.get("hardware_id", "")
    entries = [e for e in suite.entries if (e.backend, e.threads) == (backend_name, threads)]
    options = BackendOptions(threads=threads, batch=suite.batch)
    ref = replace(suite.reference, backend=backend_name, threads=threads)
    prepared: dict[str, PreparedRun] = {}
    idents: dict[str, dict[str, Any]] = {}
    rows: list[dict[str, Any]] = []
    try:
        for entry in [ref, *entries]:
            workload = create_workload(entry.workload, input_shape=entry.input_shape, batch=suite.batch, **entry.kwargs)
            ident = _identity(suite, entry, workload.input_shape, entry is ref, group)
            try:
                prepared[entry.name] = create_backend(backend_name, options).prepare(workload)
                idents[entry.name] = ident
            except Exception as exc:  # BackendError, CUDA out of memory...: that entry's error row
                if entry is ref:
                    raise LatprofError(f"reference workload {ref.name!r} failed on {backend_name}: "
                                       f"{failure_message(exc)}") from None
                rows.append(error_row(failure_message(exc), **ident, hardware_id=hardware_id))
        wrap = thread_cpu_timer if suite.clock == "thread_cpu" else (lambda t: t)
        timers = {n: wrap(p.timer) for n, p in prepared.items()}
        m = measure_interleaved(timers, baseline=ref.name, config=suite.config)
    finally:
        for p in prepared.values():
            p.close()
    for name, meas in m.measurements.items():
        settings = dict(prepared[name].settings)
        if suite.clock == "thread_cpu":
            settings["timing"] = "CPU time of the calling thread (time.thread_time), GC paused"
        rows.append(base_row(
            **idents[name], **latency_fields(meas), rounds=m.rounds, clock=suite.clock, settings=settings,
            max_abs_error_vs_eager=prepared[name].max_abs_error, status="ok", error="", hardware_id=hardware_id,
        ))
    return rows


def run_suite(suite: Suite, store: ResultStore, env: dict[str, Any], run: RunOptions | None = None) -> list[dict[str, Any]]:
    """Measure every entry interleaved with the reference (one worker per group); rows are appended to ``store``."""
    return execute(suite_plan(suite), store, env, run or RunOptions()).rows
