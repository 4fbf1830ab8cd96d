"""The backend interface: turn a workload into a timed callable on one runtime, with every setting explicit.

A backend checks its output against PyTorch eager before anything is timed, and reports the settings actually
in force (read back from the runtime, not echoed from the request).
"""

from __future__ import annotations

import contextlib
import itertools
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import psutil
import torch

from latprof.errors import LatprofError
from latprof.measure.protocol import BatchTimer
from latprof.workloads.registry import Workload


class BackendError(Exception):
    """A workload failed on a backend (export, session creation, output mismatch): becomes an error row."""


@dataclass
class BackendOptions:
    """What the user asked for; each backend reads what applies to it and records what it got."""

    threads: int | None = None
    interop_threads: int | None = None
    pin: bool = False
    batch: int | None = None
    ort_opt: str = "all"
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PreparedRun:
    """A workload ready to time on one backend: the batch timer, the checked output and the settings in force."""

    timer: BatchTimer
    output: torch.Tensor | None
    settings: dict[str, Any]
    max_abs_error: float | None = None
    # CUDA backends: host wall time per call of each timed batch, to set beside the device-event time
    host_wall_per_call_s: list[float] | None = None
    _cleanup: list[Any] = field(default_factory=list, repr=False)

    def close(self) -> None:
        while self._cleanup:
            self._cleanup.pop()()


# Output tolerance by dtype: |actual - reference| <= atol + rtol * max|reference|.
TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float32: (1e-3, 1e-4),
    torch.float64: (1e-6, 1e-8),
    torch.float16: (1e-2, 1e-3),
    torch.bfloat16: (2e-2, 1e-2),
}


def check_output(name: str, actual: torch.Tensor, reference: torch.Tensor) -> float:
    """Compare a backend's output with PyTorch eager; raise ``BackendError`` on a mismatch, else return max error."""
    actual = actual.detach().to("cpu")
    if tuple(actual.shape) != tuple(reference.shape):
        raise BackendError(f"{name}: output shape {tuple(actual.shape)} != eager {tuple(reference.shape)}")
    rtol, atol = TOLERANCES.get(reference.dtype, (1e-3, 1e-4))
    ref = reference.to(torch.float64)
    err = float((actual.to(torch.float64) - ref).abs().max()) if ref.numel() else 0.0
    scale = float(ref.abs().max()) if ref.numel() else 0.0
    if not err <= atol + rtol * scale:  # also catches NaN
        raise BackendError(f"{name}: output differs from PyTorch eager (max abs error {err:.3g}, allowed {atol + rtol * scale:.3g})")
    return err


class Backend(ABC):
    """One runtime with explicit settings. Subclasses register with ``@register_backend``."""

    name: ClassVar[str]
    description: ClassVar[str]
    device_class: ClassVar[str] = "cpu"  # cpu | mobile | cuda: picks batch defaults and kernel channel sets
    default_batch: ClassVar[int] = 1
    fixed_batch: ClassVar[int | None] = None
    # Whether `latprof sweep` runs it when no --backend is given (compiled backends cost minutes of compile time).
    default_in_sweep: ClassVar[bool] = True

    def __init__(self, options: BackendOptions) -> None:
        self.options = options

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        """(available, reason when not) on this machine."""
        return True, ""

    def batch_for(self, requested: int | None) -> int:
        if self.fixed_batch is not None:
            return self.fixed_batch
        return requested if requested is not None else self.default_batch

    @abstractmethod
    def prepare(self, workload: Workload) -> PreparedRun:
        """Build the timed callable; raise ``BackendError`` when the workload cannot run here."""


def logical_cores() -> int:
    return psutil.cpu_count(logical=True) or 1


def validate_threads(threads: int | None) -> None:
    if threads is None:
        return
    n = logical_cores()
    if threads < 1 or threads > n:
        raise LatprofError(f"--threads must be between 1 and {n} (logical cores here), got {threads}")


# Pinning contexts may overlap and close in any order (a sweep holds several prepared runs at once and closes them
# first-in first-out). So the affinity from before the first pin is kept once, the newest open pin is in force, and
# the original comes back only when the last one closes.
_PIN_ORIGINAL: list[int] | None = None
_PIN_ACTIVE: list[tuple[int, list[int]]] = []
_PIN_IDS = itertools.count()


@contextlib.contextmanager
def pinned(cores: list[int] | None) -> Iterator[list[int] | None]:
    """Pin this process and all its threads to ``cores`` for the duration (psutil), then restore (see above)."""
    global _PIN_ORIGINAL
    if not cores:
        yield None
        return
    proc = psutil.Process()
    try:
        before = proc.cpu_affinity()
    except (AttributeError, psutil.Error):
        yield None  # pinning unsupported here (e.g. macOS); recorded as None
        return
    if not _PIN_ACTIVE:
        _PIN_ORIGINAL = before
    token = (next(_PIN_IDS), list(cores))
    _PIN_ACTIVE.append(token)
    _set_affinity(proc, cores)
    try:
        yield sorted(proc.cpu_affinity())
    finally:
        _PIN_ACTIVE.remove(token)
        if _PIN_ACTIVE:
            _set_affinity(proc, _PIN_ACTIVE[-1][1])
        elif _PIN_ORIGINAL is not None:
            _set_affinity(proc, _PIN_ORIGINAL)
            _PIN_ORIGINAL = None


def _set_affinity(proc: psutil.Process, cores: list[int]) -> None:
    """Process and every existing thread (a runtime's pool): on Linux the process call moves only one thread."""
    proc.cpu_affinity(cores)
    if not hasattr(os, "sched_setaffinity"):
        return
    for t in proc.threads():
        try:
            os.sched_setaffinity(t.id, cores)
        except OSError:  # the thread ended meanwhile
            continue


def pin_cores(count: int) -> list[int]:
    """The first ``count`` cores this process may run on (before any pinning of latprof's own)."""
    try:
        allowed = sorted(_PIN_ORIGINAL if _PIN_ACTIVE and _PIN_ORIGINAL else psutil.Process().cpu_affinity())
    except (AttributeError, psutil.Error):
        allowed = list(range(logical_cores()))
    return allowed[: max(1, count)]


def apply_pinning(run: PreparedRun, pin: bool, threads: int) -> None:
    """Pin for the lifetime of ``run`` (released by ``run.close()``); records the affinity in force."""
    if not pin:
        run.settings["pinned_cores"] = None
        return
    ctx = pinned(pin_cores(threads))
    run.settings["pinned_cores"] = ctx.__enter__()
    run._cleanup.append(lambda: ctx.__exit__(None, None, None))
