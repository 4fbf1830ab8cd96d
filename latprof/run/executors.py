"""Executors: where a unit runs. ``WorkerExecutor`` (default) starts a fresh worker process per unit and process;
``InProcessExecutor`` measures in this process (debugging, and tests that need it).

pyperf's lesson: process state (the allocator's, thread pools', whatever ran before) changes readings, so every
reading comes from a process that ran nothing else. The worker is spawned (never forked) in its own session, so a
Ctrl-C at the terminal reaches the parent alone, which stops the worker and keeps every finished row.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from latprof.errors import LatprofError, one_line
from latprof.results import error_row, json_text
from latprof.run.allocators import DEFAULT_ALLOCATOR, allocator_env, allocator_in_force, validate_allocator
from latprof.run.units import Unit
from latprof.run.worker import BINDING_VARIABLES, THREAD_VARIABLES, run_unit_here

# Only these pass from the parent's environment into a worker (pyperf keeps a similar short list); the allocator,
# thread-count and thread-binding variables are then set explicitly (OMP_* from the parent never leak in).
# OPENBLAS_CORETYPE/L2_SIZE protect OpenBLAS on some processors.
INHERITED = ("PATH", "PYTHONPATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "TEMP", "TMP", "SYSTEMROOT",
             "LATPROF_CACHE", "LATPROF_JEMALLOC", "LATPROF_TCMALLOC", "CUDA_VISIBLE_DEVICES", "LD_LIBRARY_PATH",
             "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "VIRTUAL_ENV")


# The worker imports exactly the latprof this parent runs (an install or a source checkout), whatever the current
# folder holds; the current folder stays importable after it, for users' own model modules.
PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
WORKER_BOOT = (f"import sys; sys.path.insert(0, {PACKAGE_ROOT!r}); "
               "from latprof.run.worker import main; raise SystemExit(main(sys.argv[1:]))")


def binds_openmp(backend: str | None) -> bool:
    """OpenMP binding only where PyTorch's OpenMP pool does the timed work. libgomp binds the *main* thread to the
    first core too, and ONNX Runtime creates its own pool from the main thread, inheriting that one-core affinity:
    bound, ort-cpu's 2-thread pool ran on one core (G4 x1 with a shortcut: 10 ms instead of 2)."""
    return bool(backend) and str(backend).startswith("torch")


class WorkerFailed(Exception):
    """A worker died, hung or wrote no rows: the unit becomes error rows naming why."""


@dataclass
class InProcessExecutor:
    """Measure in this process, as it is: its allocator is whatever the process got (recorded, not chosen)."""

    isolation = "in-process"

    @property
    def allocator(self) -> str:
        return str(allocator_in_force()["allocator"])

    def run(self, unit: Unit) -> list[dict[str, Any]]:
        return run_unit_here(unit.as_message(), self.isolation)


@dataclass
class WorkerExecutor:
    """A fresh ``python -m latprof.run.worker`` per call, with a clean environment, declared allocator and threads."""

    allocator: str = DEFAULT_ALLOCATOR
    timeout_s: float | None = None
    bind_threads: bool = True
    cwd: str | None = None  # None: this process's folder (fleet tasks pass the driver's, when the node has it)
    die_with_parent: bool = True  # the worker ends when the process that started it dies, even by SIGKILL
    nice: int | None = None  # fleet tasks: the niceness the worker should run at (latprof/run/worker.py)
    isolation = "worker"

    def __post_init__(self) -> None:
        validate_allocator(self.allocator)

    def environment(self, threads: int | None, backend: str | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k in INHERITED or k.startswith("LC_")}
        if threads:
            for k in THREAD_VARIABLES:
                env[k] = str(threads)
        if self.bind_threads and binds_openmp(backend):
            env.update(BINDING_VARIABLES)
        env["LATPROF_WORKER"] = "1"
        if self.die_with_parent:
            env["LATPROF_PARENT_PID"] = str(os.getpid())
        if self.nice is not None:
            env["LATPROF_NICE"] = str(self.nice)
        return allocator_env(self.allocator, env)

    def run(self, unit: Unit) -> list[dict[str, Any]]:
        timeout = self.timeout_s or max(120.0, 4 * unit.time_s + 120.0)
        remove_orphaned_scratch()
        with tempfile.TemporaryDirectory(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-") as tmp:
            unit_path, rows_path, err_path = (Path(tmp) / n for n in ("unit.json", "rows.json", "stderr.txt"))
            unit_path.write_text(json_text(unit.as_message()))
            with err_path.open("w") as err:
                proc = subprocess.Popen(
                    [sys.executable, "-c", WORKER_BOOT, str(unit_path), str(rows_path)],
                    env=self.environment(unit.payload.get("threads"), unit.payload.get("backend")),
                    stdin=subprocess.DEVNULL,
                    stdout=err, stderr=err, start_new_session=True, cwd=self.cwd or os.getcwd(),
                )
                try:
                    code = proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    _stop(proc)
                    raise WorkerFailed(f"worker timed out after {timeout:.0f} s and was killed") from None
                except BaseException:  # Ctrl-C in the parent: stop the worker, keep what is finished
                    _stop(proc)
                    raise
            if code != 0:
                raise WorkerFailed(_exit_reason(code, err_path))
            if not rows_path.exists():
                raise WorkerFailed("worker exited without writing rows")
            try:
                return json.loads(rows_path.read_text())["rows"]
            except (ValueError, KeyError) as exc:
                raise WorkerFailed(f"worker wrote unreadable rows: {one_line(exc)}") from None


SCRATCH_PREFIX = "latprof-worker-"  # + the parent's pid: whose scratch folder it is
_SCRATCH_NAME = re.compile(re.escape(SCRATCH_PREFIX) + r"(\d+)-")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


ORPHAN_MIN_AGE_S = 3600.0  # a pid not alive *here* may be alive in another PID namespace sharing this /tmp


@functools.cache
def remove_orphaned_scratch(folder: str | None = None, min_age_s: float = ORPHAN_MIN_AGE_S) -> list[str]:
    """Remove the worker scratch folders whose parent process is gone (once per process and folder): a parent
    killed outright (SIGKILL, a crash) takes its worker with it but cannot remove the folder. Only this user's
    folders untouched for ``min_age_s``, and never one whose pid is alive (a reused pid keeps a stale folder:
    harmless). Returns the removed."""
    removed: list[str] = []
    if not hasattr(os, "getuid"):  # not a POSIX system: folders' owners unknown, leave them
        return removed
    root = Path(folder or tempfile.gettempdir())
    try:
        entries = list(root.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _SCRATCH_NAME.match(entry.name)
        if not match:
            continue
        try:
            info = entry.lstat()  # a symlink is not a folder here
        except OSError:
            continue
        mine = stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid()
        if mine and time.time() - info.st_mtime >= min_age_s and not _alive(int(match.group(1))):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(str(entry))
    return removed


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=5)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def _exit_reason(code: int, err_path: Path) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        reason = f"worker killed by {name}"
    else:
        reason = f"worker exited with status {code}"
    tail = [line for line in err_path.read_text(errors="replace").splitlines() if line.strip()]
    last = next((line for line in reversed(tail) if not line.startswith(" ")), None)
    return f"{reason}: {last.strip()}" if last else reason


def failed_unit_rows(unit: Unit, message: str) -> list[dict[str, Any]]:
    """One error row per row the unit would have produced."""
    return [error_row(message, **t, kind=unit.kind) for t in unit.templates]


def make_executor(in_process: bool, allocator: str | None, timeout_s: float | None = None,
                  bind_threads: bool = True) -> Any:
    if in_process:
        if allocator is not None:
            raise LatprofError("--allocator applies to worker processes; --in-process measures in this process as it "
                               "is (its allocator is recorded, not chosen)")
        return InProcessExecutor()
    return WorkerExecutor(allocator or DEFAULT_ALLOCATOR, timeout_s, bind_threads)
