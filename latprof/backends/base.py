"""The backend interface: turn a workload into a timed callable on one runtime, with every setting explicit.

A backend checks its output against PyTorch eager before anything is timed, and reports the settings actually
in force (read back from the runtime, not echoed from the request). Whatever a backend changes in the process for
a run (threads, affinity, cuDNN mode, a module moved to the GPU) is entered on the run's ``ExitStack`` and undone by
``PreparedRun.close()``: workers are fresh processes, but ``--in-process`` runs and the tests share one.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

import psutil
import torch

from latprof.errors import LatprofError
from latprof.measure.protocol import BatchTimer
from latprof.workloads.registry import Workload

# ONNX Runtime graph optimisation levels by their ``--ort-opt`` names (``onnxruntime_backends.opt_level`` maps them),
# and the default of every command.
ORT_OPT_LEVELS = ("none", "basic", "extended", "all")
DEFAULT_ORT_OPT = "all"
# Intra-op threads of the mobile-like backends when --threads is not given (one core of a phone's cluster).
MOBILE_THREADS = 1


class BackendError(Exception):
    """A workload failed on a backend (export, session creation, output mismatch): becomes an error row."""


@dataclass
class BackendOptions:
    """What the user asked for; each backend reads what applies to it and records what it got."""

    threads: int | None = None
    interop_threads: int | None = None
    pin: bool = False
    batch: int | None = None
    ort_opt: str = DEFAULT_ORT_OPT
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PreparedRun:
    """A workload ready to time on one backend: the batch timer, the checked output and the settings in force.

    ``stack`` holds what the backend changed for this run (``stack.enter_context(...)``, ``stack.callback(...)``);
    ``close()`` (or leaving a ``with`` block) undoes it, newest first.
    """

    timer: BatchTimer
    output: torch.Tensor | None
    settings: dict[str, Any]
    max_abs_error: float | None = None
    # CUDA backends: host wall time per call of each timed batch, to set beside the device-event time
    host_wall_per_call_s: list[float] | None = None
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack, repr=False, compare=False)

    def close(self) -> None:
        self.stack.close()

    def __enter__(self) -> PreparedRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


T = TypeVar("T")


class SharedSetting(Generic[T]):
    """A process-wide setting that several prepared runs may hold at once and release in any order.

    A sweep holds several prepared runs at once and closes them first-in first-out, so "put back what was there
    before me" would leave the value of a run already closed. Instead the value from before the first hold is kept
    once, the newest open hold is in force, and the original comes back when the last hold is released.
    """

    def __init__(self, read: Callable[[], T], write: Callable[[T], None]) -> None:
        self._read, self._write = read, write
        self._original: T | None = None
        self._held: list[tuple[int, T]] = []
        self._ids = itertools.count()

    def original(self) -> T:
        """The value from before any hold (the current value when none is open)."""
        return self._original if self._held else self._read()  # type: ignore[return-value]

    @contextlib.contextmanager
    def held(self, value: T) -> Iterator[T]:
        if not self._held:
            self._original = self._read()
        token = (next(self._ids), value)
        self._held.append(token)
        try:
            self._write(value)
            yield value
        finally:
            self._held.remove(token)
            if self._held:
                self._write(self._held[-1][1])
            else:
                self._write(self._original)  # type: ignore[arg-type]
                self._original = None


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


def default_threads(backend_cls: type[Backend]) -> int:
    """Intra-op threads when ``--threads`` is not given, the same for every command: ``MOBILE_THREADS`` on the
    mobile-like backends (``device_class == "mobile"``: ort-mobile), every logical core elsewhere."""
    return MOBILE_THREADS if backend_cls.device_class == "mobile" else logical_cores()


def validate_threads(threads: int | None) -> None:
    if threads is None:
        return
    n = logical_cores()
    if threads < 1 or threads > n:
        raise LatprofError(f"--threads must be between 1 and {n} (logical cores here), got {threads}")


def _read_affinity() -> list[int]:
    return sorted(psutil.Process().cpu_affinity())


def _set_affinity(cores: list[int]) -> None:
    """Process and every existing thread (a runtime's pool): on Linux the process call moves only one thread."""
    proc = psutil.Process()
    proc.cpu_affinity(cores)
    if not hasattr(os, "sched_setaffinity"):
        return
    for t in proc.threads():
        try:
            os.sched_setaffinity(t.id, cores)
        except OSError:  # the thread ended meanwhile
            continue


# Pinning contexts may overlap and close in any order (``SharedSetting``).
AFFINITY: SharedSetting[list[int]] = SharedSetting(_read_affinity, _set_affinity)


@contextlib.contextmanager
def pinned(cores: list[int] | None) -> Iterator[list[int] | None]:
    """Pin this process and all its threads to ``cores`` for the duration (psutil), then restore; yields the
    affinity in force (None when ``cores`` is empty or pinning is unsupported here, e.g. macOS)."""
    if not cores:
        yield None
        return
    try:
        psutil.Process().cpu_affinity()
    except (AttributeError, psutil.Error):
        yield None
        return
    with AFFINITY.held(list(cores)):
        yield _read_affinity()


def pin_cores(count: int) -> list[int]:
    """The first ``count`` cores this process may run on (before any pinning of latprof's own)."""
    try:
        allowed = sorted(AFFINITY.original())
    except (AttributeError, psutil.Error):
        allowed = list(range(logical_cores()))
    return allowed[: max(1, count)]


def pinning(pin: bool, threads: int) -> contextlib.AbstractContextManager[list[int] | None]:
    """``pinned`` to ``threads`` cores when ``pin``, else a no-op yielding None (recorded as ``pinned_cores``)."""
    return pinned(pin_cores(threads)) if pin else contextlib.nullcontext(None)
