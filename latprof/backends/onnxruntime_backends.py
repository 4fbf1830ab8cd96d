"""ONNX Runtime backends: ``ort-cpu``, the mobile-like ``ort-mobile`` and ``ort-cuda``.

Every session option is set explicitly and read back from the session (``InferenceSession.get_session_options``),
so a result row records what ONNX Runtime actually used. Inputs are bound once with IO binding; the timer is the
wall clock around n ``run_with_iobinding`` calls.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from latprof.backends.base import (
    ORT_OPT_LEVELS,
    Backend,
    BackendError,
    PreparedRun,
    check_output,
    default_threads,
    pinning,
)
from latprof.backends.onnx_export import DEFAULT_OPSET, ExportedModel, export_workload
from latprof.backends.registry import register_backend
from latprof.errors import one_line
from latprof.measure.protocol import wall_clock_timer
from latprof.workloads.registry import Workload

MOBILE_CAVEAT = (
    "emulation of a single-thread mobile CPU on this host: x86 is not ARM (other caches, SIMD width, memory "
    "bandwidth), so only relative conclusions (orderings, ratios) carry over, not absolute latencies"
)


def _ort() -> Any:
    import onnxruntime

    return onnxruntime


def _levels() -> dict[str, Any]:
    """``--ort-opt`` name (``ORT_OPT_LEVELS``, in that order) → ``GraphOptimizationLevel``."""
    g = _ort().GraphOptimizationLevel
    levels = (g.ORT_DISABLE_ALL, g.ORT_ENABLE_BASIC, g.ORT_ENABLE_EXTENDED, g.ORT_ENABLE_ALL)
    return dict(zip(ORT_OPT_LEVELS, levels, strict=True))


def opt_level(name: str) -> Any:
    """``--ort-opt`` name → ``GraphOptimizationLevel``."""
    levels = _levels()
    if name not in levels:
        raise BackendError(f"--ort-opt {name!r} is not one of {', '.join(ORT_OPT_LEVELS)}")
    return levels[name]


def _level_name(level: Any) -> str:
    return next((name for name, value in _levels().items() if value == level), str(level))


def _config_entry(so: Any, key: str) -> str | None:
    try:
        return so.get_session_config_entry(key)
    except Exception:  # ORT raises when the key was never set
        return None


def session_settings(session: Any) -> dict[str, Any]:
    """The options in force, read back from the session object (not echoed from the request)."""
    ort = _ort()
    so = session.get_session_options()
    return {
        "providers": session.get_providers(),
        "intra_op_threads": so.intra_op_num_threads,
        "inter_op_threads": so.inter_op_num_threads,
        "execution_mode": "sequential" if so.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL else "parallel",
        "graph_optimization_level": _level_name(so.graph_optimization_level),
        "intra_op_allow_spinning": _config_entry(so, "session.intra_op.allow_spinning"),
        "inter_op_allow_spinning": _config_entry(so, "session.inter_op.allow_spinning"),
        "enable_cpu_mem_arena": so.enable_cpu_mem_arena,
        "onnxruntime_version": ort.__version__,
    }


class OrtBackend(Backend):
    """Shared machinery: export (cached), explicit session options, IO binding, output check, wall-clock timer."""

    providers: ClassVar[tuple[str, ...]] = ("CPUExecutionProvider",)
    io_device: ClassVar[str] = "cpu"
    default_spinning: ClassVar[bool] = True  # ONNX Runtime's own default; recorded either way

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        try:
            ort = _ort()
        except ImportError:
            return False, "onnxruntime is not installed (pip install onnxruntime)"
        missing = [p for p in cls.providers if p not in ort.get_available_providers()]
        if missing:
            return False, f"{missing[0]} not available in this onnxruntime build (needs onnxruntime-gpu and a GPU)"
        return True, ""

    # ---- what to ask for
    def intra_threads(self) -> int:
        return self.options.threads or default_threads(type(self))

    def inter_threads(self) -> int:
        return self.options.interop_threads or 1

    def spinning(self) -> bool:
        return bool(self.options.extra.get("spinning", self.default_spinning))

    def pin(self) -> bool:
        return self.options.pin

    def session_options(self) -> Any:
        """Explicit options; a fresh object each time (profiling sessions add their own flags)."""
        ort = _ort()
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.intra_threads()
        so.inter_op_num_threads = self.inter_threads()
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = opt_level(self.options.ort_opt)
        spin = "1" if self.spinning() else "0"
        so.add_session_config_entry("session.intra_op.allow_spinning", spin)
        so.add_session_config_entry("session.inter_op.allow_spinning", spin)
        so.log_severity_level = 3
        return so

    def create_session(self, path: Path, so: Any) -> Any:
        ort = _ort()
        try:
            session = ort.InferenceSession(str(path), sess_options=so, providers=list(self.providers))
        except Exception as exc:  # invalid model, unsupported op, provider failure → error row
            raise BackendError(f"{self.name}: ONNX Runtime cannot load {path.name}: {one_line(exc)[:300]}") from None
        if session.get_providers()[0] != self.providers[0]:
            raise BackendError(f"{self.name}: session runs on {session.get_providers()[0]}, not {self.providers[0]}")
        return session

    def export(self, workload: Workload) -> ExportedModel:
        exporter = str(self.options.extra.get("exporter", "dynamo"))
        opset = int(self.options.extra.get("opset", DEFAULT_OPSET))
        return export_workload(workload, exporter, opset)

    def feeds(self, session: Any, workload: Workload) -> dict[str, np.ndarray]:
        inputs = session.get_inputs()
        if len(inputs) != 1:
            raise BackendError(f"{workload.name}: latprof feeds one input tensor; the model takes {len(inputs)}")
        data = workload.make_inputs()[0].numpy()
        want = inputs[0].shape
        if len(want) != data.ndim or any(isinstance(w, int) and w != d for w, d in zip(want, data.shape)):
            raise BackendError(f"{workload.name}: model input {inputs[0].name} has shape {want}, got {list(data.shape)}")
        return {inputs[0].name: data}

    def _binding(self, session: Any, feeds: dict[str, np.ndarray]) -> Any:
        ort = _ort()
        binding = session.io_binding()
        for name, array in feeds.items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array, self.io_device, 0))
        for out in session.get_outputs():
            binding.bind_output(out.name, self.io_device)
        return binding

    # ---- the Backend interface
    def prepare(self, workload: Workload) -> PreparedRun:
        exported = self.export(workload)
        with contextlib.ExitStack() as stack:
            # pinned before the session exists, so its thread pool inherits the affinity
            cores = stack.enter_context(pinning(self.pin(), self.intra_threads()))
            session = self.create_session(exported.path, self.session_options())
            feeds = self.feeds(session, workload)
            binding = self._binding(session, feeds)
            session.run_with_iobinding(binding)
            output = np.asarray(binding.copy_outputs_to_cpu()[0])
            settings: dict[str, Any] = {
                **session_settings(session),
                **exported.settings(),
                "pinned_cores": cores,
                "io": f"IO binding, input allocated once on {self.io_device}",
                "timing": "wall clock (time.perf_counter) around n run_with_iobinding calls, GC paused",
            }
            err = self._check(workload, output, settings)
            return PreparedRun(wall_clock_timer(lambda: session.run_with_iobinding(binding)), _tensor(output),
                               settings, err, stack=stack.pop_all())

    def _check(self, workload: Workload, output: np.ndarray, settings: dict[str, Any]) -> float | None:
        if workload.module is None:
            settings["output_check"] = "not possible: an ONNX file has no PyTorch eager reference"
            return None
        settings["output_check"] = "compared with PyTorch eager"
        return check_output(self.name, _tensor(output), workload.reference_output())

    def profile_ops(self, workload: Workload, runs: int) -> Any:
        """Per-node kernel times from ONNX Runtime's profiler (``latprof.backends.op_profiling``)."""
        from latprof.backends.op_profiling import profile_ort

        exported = self.export(workload)

        def session_factory(so: Any) -> Any:
            return self.create_session(exported.path, so)

        with pinning(self.pin(), self.intra_threads()):
            feeds = self.feeds(session_factory(self.session_options()), workload)
            return profile_ort(self.session_options, session_factory, feeds, runs)


def _tensor(array: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(np.ascontiguousarray(array))


@register_backend
class OrtCPU(OrtBackend):
    """ONNX Runtime, CPU execution provider, explicit threads / spinning / optimisation level."""

    name = "ort-cpu"
    description = "ONNX Runtime CPU: explicit intra/inter-op threads, sequential, spinning on, --ort-opt level"
    device_class = "cpu"
    default_batch = 1


@register_backend
class OrtMobile(OrtBackend):
    """The mobile-like profile (docs/backends.md, "The mobile-like profile"): 1 intra-op thread (``default_threads``
    of a mobile device class) and 1 inter-op thread, sequential, no spinning, one core, batch 1.

    ``--threads N`` emulates an N-core cluster: N intra-op threads pinned to N cores. This is an emulation.
    """

    name = "ort-mobile"
    description = "ONNX Runtime CPU, mobile-like: 1 thread pinned to 1 core, spinning off, batch 1 (emulation, x86 ≠ ARM)"
    device_class = "mobile"
    default_batch = 1
    fixed_batch = 1
    default_spinning = False

    def inter_threads(self) -> int:
        return 1

    def pin(self) -> bool:
        return True

    def prepare(self, workload: Workload) -> PreparedRun:
        if workload.batch != 1:
            raise BackendError(f"ort-mobile runs batch 1 only; {workload.name} has input {list(workload.input_shape)}")
        run = super().prepare(workload)
        run.settings["profile"] = "mobile-like"
        run.settings["emulated_cores"] = self.intra_threads()
        run.settings["caveat"] = MOBILE_CAVEAT
        return run


@register_backend
class OrtCUDA(OrtBackend):
    """ONNX Runtime, CUDA execution provider; IO binding keeps input and output on the GPU."""

    name = "ort-cuda"
    description = "ONNX Runtime CUDA EP (onnxruntime-gpu): IO binding on the device, host wall clock per run"
    device_class = "cuda"
    default_batch = 8
    providers = ("CUDAExecutionProvider", "CPUExecutionProvider")
    io_device = "cuda"

    def intra_threads(self) -> int:
        return self.options.threads or 1

    def prepare(self, workload: Workload) -> PreparedRun:
        run = super().prepare(workload)
        run.settings["timing"] = (
            "wall clock around n run_with_iobinding calls; ONNX Runtime synchronises the CUDA stream at the end of "
            "each run, so this is end-to-end device time plus launch overhead"
        )
        return run
