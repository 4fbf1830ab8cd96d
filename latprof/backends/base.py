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
# Numeric precision of a run (``--precision``) and the default of every command. Each backend class lists the
# precisions it runs in ``Backend.precisions``; ``latprof/backends/precision.py`` holds the rules (INT8 quantisation
# settings, which output check suits which precision).
PRECISIONS = ("fp32", "int8", "fp16")
DEFAULT_PRECISION = "fp32"
# Intra-op threads of the mobile-like backends when --threads is not given (one core of a phone's cluster).
MOBILE_THREADS = 1
# TF32 on the CUDA backends (``--tf32``): off by default, so fp32 is IEEE fp32 on every runtime, as on the paper's
# GTX 1080Ti (no TF32 units); ``on`` lets convolutions and matmuls round inputs to TF32 (faster on Ampere and newer).
TF32_CHOICES = ("on", "off")
DEFAULT_TF32 = "off"
# How every CUDA backend times (docs/backends.md, "Timing on the GPU"), recorded as ``settings.timing_semantics``.
GPU_TIMING = "per-call-sync"


class BackendError(Exception):
    """A workload failed on a backend (export, session creation, output mismatch): becomes an error row."""


def failure_message(exc: BaseException) -> str:
    """The error row's line for a workload whose prepare, measurement or profile raised: a ``BackendError``'s own
    line, anything else (a CUDA out-of-memory, a runtime's exception) prefixed with its type."""
    from latprof.errors import one_line

    return one_line(exc) if isinstance(exc, BackendError) else f"{type(exc).__name__}: {one_line(exc)}"


@dataclass
class BackendOptions:
    """What the user asked for; each backend reads what applies to it and records what it got."""

    threads: int | None = None
    interop_threads: int | None = None
    pin: bool = False
    batch: int | None = None
    ort_opt: str = DEFAULT_ORT_OPT
    extra: dict[str, Any] = field(default_factory=dict)
    tf32: str = DEFAULT_TF32  # CUDA backends only; CPU backends ignore it
    precision: str = DEFAULT_PRECISION
    # INT8 quantisation settings (``precision.QuantSettings`` as a dict; None: its defaults); int8 only
    quant: dict[str, Any] | None = None

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
    # torch CUDA backends: CUDA-event time per call of every batch the timer ran (calibration and warm-up too),
    # set beside the host wall time of the samples; ``timing_fields`` keeps the timed samples' share only
    device_event_per_call_s: list[float] | None = None
    # which output check was applied and what it found (``precision.output_check_fields``); empty: the FP32 check
    check: dict[str, Any] = field(default_factory=dict)
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack, repr=False, compare=False)

    def close(self) -> None:
        self.stack.close()

    def timing_fields(self, timed_samples: int) -> dict[str, Any]:
        """Row fields beside the latency: the median CUDA-event time per call of the last ``timed_samples`` batches.

        The protocol's timed samples are the timer's last calls (calibration and warm-up come first), so the tail of
        ``device_event_per_call_s`` is exactly the samples' batches.
        """
        events = self.device_event_per_call_s
        if not events or timed_samples <= 0:
            return {}
        tail = sorted(events[-timed_samples:])
        mid = len(tail) // 2
        median = tail[mid] if len(tail) % 2 else (tail[mid - 1] + tail[mid]) / 2
        return {"cuda_event_median_ms": median * 1e3}

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


# With TF32 in force, convolutions and matmuls round their inputs to a 10-bit mantissa (relative error about 5e-4
# per product), which grows with depth; ten times the fp32 tolerance still flags a wrong result (errors of order 1).
TF32_TOLERANCE = (1e-2, 1e-3)


def check_output(name: str, actual: torch.Tensor, reference: torch.Tensor,
                 tolerance: tuple[float, float] | None = None) -> float:
    """Compare a backend's output with PyTorch eager; raise ``BackendError`` on a mismatch, else return max error.

    ``tolerance`` (rtol, atol) overrides the dtype's entry in ``TOLERANCES`` (e.g. ``TF32_TOLERANCE``)."""
    actual = actual.detach().to("cpu")
    if tuple(actual.shape) != tuple(reference.shape):
        raise BackendError(f"{name}: output shape {tuple(actual.shape)} != eager {tuple(reference.shape)}")
    rtol, atol = tolerance or TOLERANCES.get(reference.dtype, (1e-3, 1e-4))
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
    # Intra-op threads when --threads is not given; None: ``default_threads``'s rule by device class.
    default_intra_threads: ClassVar[int | None] = None
    # Numeric precisions it runs (``--precision``); fp32 only unless a backend implements more.
    precisions: ClassVar[tuple[str, ...]] = (DEFAULT_PRECISION,)

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
    mobile-like backends (``device_class == "mobile"``: ort-mobile), every logical core elsewhere, unless the backend
    names its own (``default_intra_threads``: ort-cuda's 1, its CPU pool only serves nodes the GPU cannot run)."""
    if backend_cls.default_intra_threads is not None:
        return backend_cls.default_intra_threads
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
