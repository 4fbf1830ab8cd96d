"""Fleet runs (``--executor ray``): one plan, many machines, one measurement per machine at a time, rows gathered here.

Ray is the scheduler; latprof adds what a latency measurement needs (docs/fleet.md):

- Every task asks for ``num_cpus=0, resources={"latprof": 1}``. A machine joins with
  ``ray start --address=HEAD:6379 --num-cpus=0 --resources='{"latprof": 1}'``, so Ray never runs two latprof
  measurements on one machine at once and never places other CPU work there by accident.
- On the node the task runs the unit through the isolated-worker path (``latprof/run/fleet_task.py``), and the
  node's own fingerprint (probed once per node, in a fresh worker) gives its rows their ``hardware_id``; rows also
  carry ``node`` (the node's name: its ``latprof-node`` label, else its hostname), ``node_id``, and the task's
  ``started_at`` / ``ended_at`` (epoch seconds on the node's clock) and ``run_intervals``.
- Targets: by default every unit runs once on every selected node (``--nodes`` restricts), pinned with
  ``NodeAffinitySchedulingStrategy``; ``--spread`` runs each unit once wherever a slot is free. A backend a node
  lacks is skipped there with a ``fleet_skip`` record naming the reason.
- The driver appends each unit's rows to the one ``results.jsonl`` as they arrive (fsynced). ``node`` is part of
  a row's identity, so ``--resume`` skips exactly the (unit, node) pairs already measured.
- Faults: Ray retries a task whose worker or node dies (``max_retries``). A task pinned to a node that left the
  fleet cannot run elsewhere (its row would be another machine's reading): it becomes error rows marked
  ``node_lost``, which ``--resume`` measures again once the node is back. Ctrl-C cancels every outstanding task
  (the cancelled task stops its worker process) and keeps every finished row.
"""

from __future__ import annotations

import copy
import ipaddress
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from latprof.errors import LatprofError, one_line, unknown_choice
from latprof.results import ResultStore, read_results
from latprof.rows import Record, row_key
from latprof.run.allocators import DEFAULT_ALLOCATOR, validate_allocator
from latprof.run.executors import failed_unit_rows
from latprof.run.pool import pool_rows
from latprof.run.units import Unit

EXECUTORS = ("local", "ray")  # --executor; the first is the default
RESOURCE = "latprof"  # the custom resource a measuring node offers, one unit of it
NODE_LABEL = "latprof-node"  # optional Ray node label: the node's name in rows and reports
DEFAULT_MAX_RETRIES = 2  # Ray re-runs a task whose worker or node died at most this often
INSTALL_HINT = 'pip install "latprof[ray]"'
PROBE_TIME_S = 60.0
LOOPBACK_NAMES = ("localhost",)


@dataclass
class FleetOptions:
    """``--executor ray`` and its flags."""

    address: str | None = None  # --ray-address; None: $RAY_ADDRESS, else the cluster `ray start` began here
    nodes: str | None = None  # --nodes LABEL=VALUE,... or NAME_OR_ID,...
    spread: bool = False  # --spread: each unit once, anywhere (throughput) instead of once per node
    max_retries: int = DEFAULT_MAX_RETRIES


@dataclass
class FleetNode:
    """A measuring node: Ray's view of it, then what its probe found."""

    node_id: str
    hostname: str
    labels: dict[str, str] = field(default_factory=dict)
    name: str = ""
    environment: dict[str, Any] = field(default_factory=dict)
    backends: list[str] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)
    default_threads: dict[str, int] = field(default_factory=dict)
    logical_cores: int = 0

    @property
    def hardware_id(self) -> str:
        return str(self.environment.get("hardware_id", ""))


# ------------------------------------------------------------------ Ray, connecting
def fleet_options(executor: str, address: str | None, nodes: str | None, spread: bool,
                  in_process: bool = False) -> FleetOptions | None:
    """The fleet flags checked before any file is written: None for ``--executor local``."""
    if executor not in EXECUTORS:
        raise unknown_choice("--executor", executor, EXECUTORS)
    if executor == "local":
        given = [f for f, v in (("--ray-address", address), ("--nodes", nodes), ("--spread", spread)) if v]
        if given:
            raise LatprofError(f"{', '.join(given)} applies to fleet runs; add --executor ray")
        return None
    if in_process:
        raise LatprofError("--executor ray runs every unit in a worker process on a fleet node; drop --in-process")
    connect(address)  # a missing Ray, a malformed or unreachable address: one line before any file is written
    return FleetOptions(address=address, nodes=nodes, spread=spread)


def import_ray() -> Any:
    """Ray, or the one-line error saying how to get it."""
    try:
        import ray
    except ImportError:
        raise LatprofError(f"--executor ray needs Ray, which is not installed; install it with {INSTALL_HINT} "
                           "(or use --executor local)") from None
    return ray


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise LatprofError(f"malformed --ray-address {address!r}; expected HOST:PORT, e.g. 10.0.0.5:6379")
    return host.strip("[]"), int(port)


def resolve_address(address: str | None) -> str:
    """--ray-address, else $RAY_ADDRESS, else the cluster ``ray start --head`` started on this machine."""
    if address:
        return address
    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"]
    try:
        from ray._private.services import get_ray_address_from_environment

        found = get_ray_address_from_environment("auto", None)
    except Exception:  # noqa: BLE001 - Ray raises ConnectionError and others when no cluster runs here
        found = None
    if not found or found == "auto":
        raise LatprofError("no Ray cluster to join: start one (docs/fleet.md: ray start --head --num-cpus=0 ...) "
                           "and give its address with --ray-address HEAD:6379")
    return str(found)


_connected: dict[str, Any] = {"address": None, "nodes": {}}


def connect(address: str | None) -> str:
    """Join the cluster as a driver (once per process; a later call with the same address reuses it).

    A loopback address keeps this driver on loopback too: Ray otherwise rewrites 127.0.0.1 to the machine's network
    address and announces that, which a cluster bound to 127.0.0.1 cannot reach (and which would send traffic off
    the loopback interface)."""
    ray = import_ray()
    target = given = resolve_address(address)
    if ray.is_initialized():
        if _connected["address"] in (None, given):  # joined by the caller (a test, a notebook) or by us
            return target
        ray.shutdown()
        _connected["nodes"] = {}
    kwargs: dict[str, Any] = {}
    if not target.startswith("ray://"):
        host, port = split_address(target)
        try:
            socket.create_connection((host, port), timeout=5).close()
        except OSError as exc:
            raise LatprofError(f"--ray-address {target}: nothing answers there ({exc.strerror or exc}); is the head "
                               "started (ray start --head --port=6379 --num-cpus=0)?") from None
        if is_loopback(host):
            os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # for Ray processes this driver starts
            try:
                import ray._private.ray_constants as ray_constants

                ray_constants.ENABLE_RAY_CLUSTER = False  # Ray keeps loopback addresses as they are
            except (ImportError, AttributeError):
                pass
            kwargs["_node_ip_address"] = "127.0.0.1"
            target = f"127.0.0.1:{port}"
    try:
        ray.init(address=target, log_to_driver=False, logging_level=logging.WARNING, namespace="latprof", **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise LatprofError(f"cannot join the Ray cluster at {target}: {one_line(exc)}") from None
    _connected["address"] = given
    return target


# ------------------------------------------------------------------ nodes
def node_names(nodes: list[FleetNode]) -> None:
    """Name every node: its ``latprof-node`` label, else its hostname, with the node id's first characters added
    where two unlabelled nodes share a hostname (several Ray nodes on one machine). Two nodes labelled alike are an
    error: their rows could not be told apart."""
    labelled = [n.labels[NODE_LABEL] for n in nodes if n.labels.get(NODE_LABEL)]
    dup = {x for x in labelled if labelled.count(x) > 1}
    if dup:
        raise LatprofError(f"two fleet nodes carry the label {NODE_LABEL}={sorted(dup)[0]}; give every node its own "
                           "name (ray start ... --labels='{\"" + NODE_LABEL + "\": \"NAME\"}')")
    hosts = [n.hostname for n in nodes if not n.labels.get(NODE_LABEL)]
    for n in nodes:
        if n.labels.get(NODE_LABEL):
            n.name = n.labels[NODE_LABEL]
        elif hosts.count(n.hostname) > 1 or n.hostname in labelled:
            n.name = f"{n.hostname}-{n.node_id[:6]}"
        else:
            n.name = n.hostname


def discover(ray: Any) -> list[FleetNode]:
    """The alive nodes that offer the ``latprof`` resource (the head, started with ``--num-cpus=0`` and no such
    resource, is not one)."""
    nodes = [FleetNode(n["NodeID"], n.get("NodeManagerHostname") or n.get("NodeManagerAddress", ""),
                       dict(n.get("Labels") or {}))
             for n in ray.nodes() if n.get("Alive") and (n.get("Resources") or {}).get(RESOURCE, 0) >= 1]
    if not nodes:
        raise LatprofError(f"no node of the Ray cluster offers the {RESOURCE!r} resource; a machine joins with: "
                           f"ray start --address=HEAD:6379 --num-cpus=0 --resources='{{\"{RESOURCE}\": 1}}'")
    node_names(nodes)
    return nodes


def select_nodes(nodes: list[FleetNode], spec: str | None) -> list[FleetNode]:
    """``--nodes``: ``LABEL=VALUE[,LABEL=VALUE]`` keeps the nodes carrying every such label; ``NAME_OR_ID,...``
    keeps the named nodes (a name, or a node id or its first 6+ characters)."""
    if not spec or not spec.strip():
        return nodes
    items = [t.strip() for t in spec.split(",") if t.strip()]
    listing = ", ".join(f"{n.name} ({n.node_id[:8]}"
                        + "".join(f", {k}={v}" for k, v in sorted(n.labels.items()) if not k.startswith("ray.io/"))
                        + ")" for n in nodes)
    if all("=" in t for t in items):
        wanted = dict(t.split("=", 1) for t in items)
        keep = [n for n in nodes if all(n.labels.get(k.strip()) == v.strip() for k, v in wanted.items())]
        if not keep:
            raise LatprofError(f"--nodes {spec}: no fleet node carries those labels; nodes: {listing}")
        return keep
    if any("=" in t for t in items):
        raise LatprofError(f"malformed --nodes {spec!r}: give LABEL=VALUE pairs or node names/ids, not both")
    keep = []
    for t in items:
        hits = [n for n in nodes if t == n.name or (len(t) >= 6 and n.node_id.startswith(t))]
        if not hits:
            raise unknown_choice("node (--nodes)", t, [n.name for n in nodes] + [n.node_id[:8] for n in nodes])
        keep += [n for n in hits if n not in keep]
    return keep


def _task(ray: Any, max_retries: int) -> Any:
    from latprof.run.fleet_task import run_unit_task

    return ray.remote(num_cpus=0, resources={RESOURCE: 1}, max_retries=max_retries,
                      retry_exceptions=False)(run_unit_task)


def _pinned(node_id: str) -> Any:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(node_id, soft=False)


def probe(ray: Any, nodes: list[FleetNode], settings: dict[str, Any], notes: list[str]) -> list[FleetNode]:
    """Each node's fingerprint and backends, from a fresh worker there (probed once per node and process). A node
    whose probe fails (latprof missing there, say) is left out with a note."""
    cache: dict[str, FleetNode] = _connected["nodes"]
    todo = [n for n in nodes if n.node_id not in cache]
    task = _task(ray, 0)
    message = {"kind": "probe", "label": "probe", "payload": {}}
    refs = {task.options(scheduling_strategy=_pinned(n.node_id)).remote(message, [], PROBE_TIME_S, settings, 1): n
            for n in todo}
    for ref, n in refs.items():
        try:
            rec = ray.get(ref)["raw"][0][0]
        except Exception as exc:  # noqa: BLE001 - any failure of a remote probe leaves that node out
            notes.append(f"node {n.name} left out: its probe failed ({why(exc)})")
            continue
        if rec.get("record") != Record.PROBE.value:
            notes.append(f"node {n.name} left out: its probe failed ({rec.get('error') or 'no fingerprint'})")
            continue
        n.environment, n.backends, n.unavailable = rec["environment"], rec["backends"], rec["unavailable"]
        n.default_threads, n.logical_cores = rec["default_threads"], rec["logical_cores"]
        if rec.get("nice"):
            notes.append(f"node {n.name}: latprof workers run at nice {rec['nice']} (Ray's worker niceness, not "
                         "reset without privileges), so any other process there takes the CPU first; start the node "
                         "with RAY_worker_niceness=0 ray start ...")
        cache[n.node_id] = n
    out = []
    for n in nodes:
        if n.node_id in cache:
            cached = cache[n.node_id]
            cached.name, cached.labels = n.name, n.labels
            out.append(cached)
    if not out:
        raise LatprofError("no fleet node could be probed: " + "; ".join(notes))
    return out


def why(exc: BaseException) -> str:
    """A Ray failure in one short clause: the first sentence of its first line (Ray's messages go on with advice
    on its own tools)."""
    text = one_line(exc)
    for prefix in ("ray::", "RayTaskError"):
        if text.startswith(prefix) and ": " in text:
            text = text.split(": ", 1)[1]
    return text.split(". ", 1)[0].rstrip(".")


# ------------------------------------------------------------------ units per node
@dataclass
class Job:
    """One unit on one node (or, with ``--spread``, on any of ``candidates``), and what came back so far."""

    unit: Unit
    node: FleetNode | None
    candidates: list[FleetNode]
    raw: list[list[dict[str, Any]]] = field(default_factory=list)
    intervals: list[list[float]] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    ran_on: FleetNode | None = None


def _threads_for(unit: Unit, nodes: Sequence[FleetNode]) -> int | None:
    """The thread count on these nodes: the one the user gave, else the backend's default there (the smallest,
    when one unit may run on any of several nodes)."""
    if unit.extra.get("threads_explicit", True):
        return None
    backend = unit.payload.get("backend")
    counts = [n.default_threads[backend] for n in nodes if backend in n.default_threads]
    return min(counts) if counts else None


def node_unit(unit: Unit, node: FleetNode | None, threads: int | None, allocator: str) -> Unit:
    """A copy of ``unit`` for one node: its name and hardware_id in payload and row templates, and its own default
    thread count unless the user gave one."""
    payload = copy.deepcopy(unit.payload)
    templates = copy.deepcopy(unit.templates)
    name = node.name if node else None
    hid = node.hardware_id if node else ""
    payload["hardware_id"] = hid
    if threads is not None:
        payload["threads"] = threads
        if isinstance(payload.get("options"), dict) and "threads" in payload["options"]:
            payload["options"]["threads"] = threads
    for t in templates:
        t.update(allocator=allocator, hardware_id=hid, node=name)
        if threads is not None:
            t["threads"] = threads
    label = f"{unit.label} @ {name}" if name else unit.label
    return Unit(unit.kind, label, payload, templates, unit.time_s, dict(unit.extra))


def plan_jobs(units: Sequence[Unit], nodes: list[FleetNode], spread: bool, allocator: str,
              skips: list[dict[str, Any]]) -> list[Job]:
    """Every unit on every node (or once on any, ``spread``), minus backends a node lacks (recorded in ``skips``)."""
    jobs = []
    for unit in units:
        backend = unit.payload.get("backend")
        able, why = [], {}
        for n in nodes:
            threads = _threads_for(unit, [n]) or unit.payload.get("threads")
            if backend and backend not in n.backends:
                why[n.name] = f"backend {backend} is not available there ({n.unavailable.get(backend, 'unknown')})"
            elif threads and n.logical_cores and int(threads) > n.logical_cores:
                why[n.name] = f"--threads {threads} exceeds its {n.logical_cores} logical cores"
            else:
                able.append(n)
        for name, reason in why.items():
            if not spread or not able:
                skips.append({"record": Record.FLEET_SKIP.value, "node": name, "unit": unit.label, "kind": unit.kind,
                              "backend": backend, "reason": reason})
        if spread:
            if able:
                jobs.append(Job(node_unit(unit, None, _threads_for(unit, able), allocator), None, able))
            continue
        for n in able:
            jobs.append(Job(node_unit(unit, n, _threads_for(unit, [n]), allocator), n, [n]))
    return jobs


def _unit_done(job: Job, done: set[tuple[Any, ...]], spread: bool) -> bool:
    keys = {row_key({**t, "node": None}) for t in job.unit.templates} if spread else job.unit.keys()
    return keys <= done


def finished_keys(store: ResultStore, spread: bool) -> set[tuple[Any, ...]]:
    """Row identities already in the results file, for --resume: rows of a node that was lost mid-unit do not
    count (they are measured again); with ``--spread`` a row counts whichever node measured it."""
    if not store.path.exists():
        return set()
    rows = [r for r in read_results(store.path, quiet=True).results if not r.get("node_lost")]
    return {row_key({**r, "node": None}) if spread else row_key(r) for r in rows}


# ------------------------------------------------------------------ running
def _settings(options: Any) -> dict[str, Any]:
    allocator = options.allocator or DEFAULT_ALLOCATOR
    validate_allocator(allocator)
    return {"allocator": allocator, "timeout_s": options.worker_timeout_s, "bind_threads": options.bind_threads,
            "cwd": os.getcwd()}


def _lost(ray: Any, exc: BaseException, node: FleetNode | None) -> bool:
    """Whether a task failed because its node left the fleet (rather than the unit failing on a live node)."""
    import ray.exceptions as rex

    if isinstance(exc, (rex.TaskUnschedulableError, rex.NodeDiedError)):
        return True
    if node is None or not isinstance(exc, (rex.WorkerCrashedError, rex.RaySystemError)):
        return False
    try:
        alive = {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
    except Exception:  # noqa: BLE001 - the cluster itself is unreachable: the node is as good as lost
        return True
    return node.node_id not in alive


class FleetRun:
    """Submits jobs, gathers what comes back, stores each finished job's rows at once."""

    def __init__(self, ray: Any, plan: Any, store: ResultStore, settings: dict[str, Any], processes: int,
                 max_retries: int, by_id: dict[str, FleetNode]) -> None:
        self.ray, self.plan, self.store, self.settings = ray, plan, store, settings
        self.processes, self.by_id = processes, by_id
        self.task = _task(ray, max_retries)
        self.pending: dict[Any, tuple[Job, int]] = {}

    def submit(self, job: Job, processes: int, pin: FleetNode | None = None) -> None:
        opts: dict[str, Any] = {}
        target = pin or job.node
        if target is not None:
            opts["scheduling_strategy"] = _pinned(target.node_id)
        else:  # --spread: any of the nodes that were selected and have the backend, whichever is free first
            opts["label_selector"] = {"ray.io/node-id": f"in({','.join(n.node_id for n in job.candidates)})"}
        ref = self.task.options(**opts).remote(job.unit.as_message(), job.unit.templates, job.unit.time_s,
                                               self.settings, processes)
        self.pending[ref] = (job, processes)

    def wait(self) -> list[tuple[Job, dict[str, Any] | None, BaseException | None]]:
        """The next finished task(s): (job, what the task returned, or the error it failed with)."""
        ready, _ = self.ray.wait(list(self.pending), num_returns=1, timeout=1.0)
        out = []
        for ref in ready:
            job, _ = self.pending.pop(ref)
            try:
                out.append((job, self.ray.get(ref), None))
            except Exception as exc:  # noqa: BLE001 - a task that failed for good
                out.append((job, None, exc))
        return out

    def cancel(self) -> None:
        """Ctrl-C: cancel every outstanding task; a running one gets KeyboardInterrupt and stops its worker."""
        for ref in list(self.pending):
            try:
                self.ray.cancel(ref, force=False)
            except Exception:  # noqa: BLE001 - already finished or its node is gone
                pass
        self.pending.clear()

    def absorb(self, job: Job, got: dict[str, Any] | None, exc: BaseException | None) -> bool:
        """Pool what a task brought back into the job's rows and store them; False when nothing new came back."""
        from latprof.run.engine import tag_rows

        if got is not None:
            node = self.by_id.get(got["node_id"]) or job.node
            job.ran_on = node
            raw = [tag_rows(job.unit, rows) for rows in got["raw"]]
            for rows in raw:
                for r in rows:
                    r["node"] = node.name if node else got.get("hostname")
                    r["node_id"] = got["node_id"]
                    if node and node.hardware_id:
                        r["hardware_id"] = node.hardware_id
            job.raw += raw
            job.intervals.append([got["started_at"], got["ended_at"]])
        elif job.raw:  # a later pass failed: keep the rows already stored
            return False
        else:
            lost = exc is not None and _lost(self.ray, exc, job.node)
            where = f"node {job.node.name}" if job.node else "its node"
            msg = (f"{where} left the fleet before this unit finished ({why(exc)}); --resume measures it "
                   "again" if lost else f"fleet task failed: {why(exc)}")
            rows = failed_unit_rows(job.unit, msg)
            for r in rows:
                r["node"] = job.node.name if job.node else ""
                r["node_lost"] = lost
            job.rows = rows
            self.store.append_many(rows)
            return True
        rows = self.plan.finish(job.unit, pool_rows(job.raw))
        for r in rows:
            r.setdefault("node", job.ran_on.name if job.ran_on else "")
            r["started_at"] = min(i[0] for i in job.intervals)
            r["ended_at"] = max(i[1] for i in job.intervals)
            r["run_intervals"] = [list(i) for i in job.intervals]
        job.rows = rows
        self.store.append_many(rows)
        return True


def execute_fleet(plan: Any, store: ResultStore, options: Any, resume: bool = False,
                  on_unit: Callable[[int, int, Unit, list[dict[str, Any]] | None], None] | None = None) -> Any:
    """The engine's ``execute`` on a Ray cluster (see the module docstring); returns a ``RunResult``."""
    from latprof.run.engine import RunResult, replace_rows

    fleet: FleetOptions = options.fleet
    if options.in_process:
        raise LatprofError("--executor ray runs every unit in a worker process on a fleet node; drop --in-process")
    processes = options.processes or plan.processes
    if processes < 1:
        raise LatprofError(f"--processes must be a positive integer, got {processes}")
    settings = _settings(options)
    ray = import_ray()
    connect(fleet.address)
    result = RunResult(store.path.parent, store.path, {})
    nodes = probe(ray, select_nodes(discover(ray), fleet.nodes), settings, result.notes)
    for n in nodes:
        store.append({"record": Record.ENVIRONMENT.value, **n.environment, "node": n.name, "node_id": n.node_id})
    skips: list[dict[str, Any]] = []
    jobs = plan_jobs(plan.units, nodes, fleet.spread, settings["allocator"], skips)
    store.append_many(skips)
    result.notes += [f"{s['unit']} skipped on node {s['node']}: {s['reason']}" for s in skips]
    done = finished_keys(store, fleet.spread) if resume else set()
    run = FleetRun(ray, plan, store, settings, processes, fleet.max_retries, {n.node_id: n for n in nodes})
    start = time.monotonic()
    skipped = [bool(resume and _unit_done(job, done, fleet.spread)) for job in jobs]
    todo = [job for job, skip in zip(jobs, skipped) if not skip]
    steps, finished = len(jobs) - len(todo) + len(todo) * processes, 0
    for job in (job for job, skip in zip(jobs, skipped) if skip):
        result.units_skipped += 1
        if on_unit:
            on_unit(finished, steps, job.unit, None)
        finished += 1
    try:
        # Several processes in passes, as the local engine runs them: each job's next process is submitted when its
        # last one is back, pinned to the node that measured it, behind the jobs already queued there; so one
        # unit's processes on a node lie a pass apart. A job whose task failed gets no more processes.
        taken: dict[int, int] = {}  # per job: the processes it has had (its steps so far)
        for job in todo:
            run.submit(job, 1)
        while run.pending:
            for job, got, exc in run.wait():
                run.absorb(job, got, exc)
                replace_rows(result, job.rows)
                taken[id(job)] = taken.get(id(job), 0) + 1
                if taken[id(job)] == 1:
                    result.units_run += 1
                if got is not None and job.ran_on is not None and taken[id(job)] < processes:
                    run.submit(job, 1, pin=job.ran_on)
                else:  # done, or failed: it takes no more steps
                    steps -= processes - taken[id(job)]
                if on_unit:
                    on_unit(finished, steps, job.unit, job.rows)
                finished += 1
        if plan.undecided is not None and plan.budget_s:
            _adaptive_passes(run, plan, todo, result, start)
    except BaseException:
        run.cancel()
        raise
    result.environment = nodes[0].environment if len(nodes) == 1 else {}
    result.wall_s = time.monotonic() - start
    return result


def _adaptive_passes(run: FleetRun, plan: Any, jobs: list[Job], result: Any, start: float) -> None:
    """The engine's adaptive passes, per (unit, node): each round gives every still-undecided job one more worker
    process on the node that measured it, within the budget; nodes work through their rounds in parallel."""
    from latprof.run.engine import replace_rows

    while True:
        ranked = sorted(((plan.undecided(j.rows), i) for i, j in enumerate(jobs)
                         if j.raw and j.ran_on is not None and len(j.raw) < plan.max_processes),
                        key=lambda c: -(c[0] or 0.0))
        busy: dict[str, float] = {}
        submitted = 0
        for width, i in ranked:
            if width is None:
                continue
            job = jobs[i]
            assert job.ran_on is not None
            per_process = float(job.rows[0].get("measure_wall_s") or job.unit.time_s) / max(len(job.raw), 1) + 3.0
            node_time = busy.get(job.ran_on.node_id, 0.0) + per_process
            if time.monotonic() - start + node_time > plan.budget_s:
                continue
            busy[job.ran_on.node_id] = node_time
            run.submit(job, 1, pin=job.ran_on)
            submitted += 1
        if not submitted:
            return
        while run.pending:
            for job, got, exc in run.wait():
                if run.absorb(job, got, exc):
                    result.extra_processes += 1
                    replace_rows(result, job.rows)


def record_fleet_peaks(store: ResultStore, units: Sequence[Unit], pin: bool, ort_opt: str,
                       existing: Sequence[dict[str, Any]], options: Any, tf32: str | None = None) -> list[str]:
    """The roofline's peaks of every (backend, threads) the plan uses, measured on each node that runs it (once per
    node and configuration); returns notes for the ones that failed."""
    fleet: FleetOptions = options.fleet
    settings = _settings(options)
    ray = import_ray()
    connect(fleet.address)
    notes: list[str] = []
    nodes = probe(ray, select_nodes(discover(ray), fleet.nodes), settings, notes)
    have = {(p.get("backend"), p.get("threads"), p.get("node")) for p in existing
            if p.get("record") == Record.PEAKS.value}
    task = _task(ray, fleet.max_retries)
    refs = {}
    for n in nodes:
        configs = {}
        for u in units:
            b = u.payload.get("backend")
            if b in n.backends:
                configs[(b, _threads_for(u, [n]) or u.payload.get("threads"))] = None
        for backend, threads in configs:
            if (backend, threads, n.name) in have:
                continue
            message = {"kind": "peaks", "label": f"peaks {backend} @ {n.name}",
                       "payload": {"backend": backend, "threads": threads, "pin": pin, "ort_opt": ort_opt,
                                   **({"tf32": tf32} if tf32 else {}), "hardware_id": n.hardware_id}}
            ref = task.options(scheduling_strategy=_pinned(n.node_id)).remote(message, [], 30.0, settings, 1)
            refs[ref] = (n, backend)
    try:
        for ref, (n, backend) in refs.items():
            try:
                records = ray.get(ref)["raw"][0]
            except Exception as exc:  # noqa: BLE001 - the roofline is optional; say why it is missing
                notes.append(f"roofline peaks not measured on {backend} @ {n.name}: {why(exc)}")
                continue
            for rec in records:
                if rec.get("status") == "error":
                    notes.append(f"roofline peaks not measured on {backend} @ {n.name}: {rec.get('error')}")
                    continue
                rec.pop("status", None)
                rec.pop("allocator", None)
                store.append({**rec, "node": n.name, "node_id": n.node_id})
    except BaseException:
        for ref in refs:
            try:
                ray.cancel(ref, force=False)
            except Exception:  # noqa: BLE001
                pass
        raise
    return notes
