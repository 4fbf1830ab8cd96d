"""ONNX Runtime backends: ``ort-cpu``, the mobile-like ``ort-mobile`` and ``ort-cuda``.

Every session option is set explicitly and read back from the session (``InferenceSession.get_session_options``),
so a result row records what ONNX Runtime actually used. Inputs are bound once with IO binding; the timer is the
wall clock around n ``run_with_iobinding`` calls.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from latprof.backends.base import (
    DEFAULT_PRECISION,
    ORT_OPT_LEVELS,
    Backend,
    BackendError,
    PreparedRun,
    check_output,
    default_threads,
    pinning,
)
from latprof.backends.onnx_export import DEFAULT_OPSET, ExportedModel, export_workload
from latprof.backends.precision import (
    QuantSettings,
    check_fp16_output,
    check_int8_output,
    fp32_check_text,
    precision_fields,
)
from latprof.backends.registry import register_backend
from latprof.errors import one_line
from latprof.measure.protocol import wall_clock_timer
from latprof.workloads.registry import Workload

MOBILE_CAVEAT = (
    "emulation of a single-thread mobile CPU on this host: x86 is not ARM (other caches, SIMD width, memory "
    "bandwidth), so only relative conclusions (orderings, ratios) carry over, not absolute latencies"
)


# ONNX Runtime's session config key: pool threads stop spinning as soon as a Run() returns (restart on the next).
FORCE_SPINNING_STOP = "session.force_spinning_stop"


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
        "force_spinning_stop": _config_entry(so, FORCE_SPINNING_STOP) or "0",
        "enable_cpu_mem_arena": so.enable_cpu_mem_arena,
        "onnxruntime_version": ort.__version__,
    }


class OrtBackend(Backend):
    """Shared machinery: export (cached), explicit session options, IO binding, output check, wall-clock timer."""

    providers: ClassVar[tuple[str, ...]] = ("CPUExecutionProvider",)
    io_device: ClassVar[str] = "cpu"
    default_spinning: ClassVar[bool] = True  # ONNX Runtime's own default; recorded either way
    precisions: ClassVar[tuple[str, ...]] = ("fp32", "int8")  # int8: static quantisation (backends/precision.py)

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
        if self.spinning():
            # Pool threads spin within a run, as ONNX Runtime does by default, and stop when the run returns: a
            # sweep holds one session per variant, and idle sessions' spinning pools would take the cores from
            # the one being timed (docs/backends.md, "Spinning between runs").
            so.add_session_config_entry(FORCE_SPINNING_STOP, "1")
        so.log_severity_level = 3
        return so

    def provider_list(self) -> list[Any]:
        """``providers`` as ``InferenceSession`` takes them, with this backend's explicit provider options."""
        return list(self.providers)

    def run_options(self) -> Any:
        """Run options of every timed and profiled run (None: ONNX Runtime's defaults)."""
        return None

    def create_session(self, path: Path, so: Any) -> Any:
        ort = _ort()
        try:
            session = ort.InferenceSession(str(path), sess_options=so, providers=self.provider_list())
        except Exception as exc:  # invalid model, unsupported op, provider failure → error row
            raise BackendError(f"{self.name}: ONNX Runtime cannot load {path.name}: {one_line(exc)[:300]}") from None
        if session.get_providers()[0] != self.providers[0]:
            raise BackendError(f"{self.name}: session runs on {session.get_providers()[0]}, not {self.providers[0]}")
        return session

    def export(self, workload: Workload) -> ExportedModel:
        exporter = str(self.options.extra.get("exporter", "dynamo"))
        opset = int(self.options.extra.get("opset", DEFAULT_OPSET))
        return export_workload(workload, exporter, opset)

    def model(self, workload: Workload) -> tuple[ExportedModel, Path, dict[str, Any]]:
        """(the FP32 export, the file to run at ``--precision``, their settings): the export itself for fp32, else
        its cached INT8 or FP16 version (``onnx_precision.convert_model``)."""
        exported = self.export(workload)
        settings: dict[str, Any] = exported.settings()
        precision = self.options.precision
        if precision == DEFAULT_PRECISION:
            return exported, exported.path, settings
        if precision not in type(self).precisions:
            raise BackendError(f"{self.name} does not run {precision}; it runs {', '.join(type(self).precisions)}")
        from latprof.backends.onnx_precision import convert_model

        quant = QuantSettings.from_dict(self.options.quant) if precision == "int8" else None
        lowp = convert_model(exported, precision, workload, quant)
        settings.update(lowp.settings())
        settings.update({k: v for k, v in precision_fields(precision, quant).items() if v is not None})
        return exported, lowp.path, settings

    def feeds(self, session: Any, workload: Workload) -> dict[str, np.ndarray]:
        inputs = session.get_inputs()
        if len(inputs) != 1:
            raise BackendError(f"{workload.name}: latprof feeds one input tensor; the model takes {len(inputs)}")
        data = workload.make_inputs()[0].numpy()
        want = inputs[0].shape
        if len(want) != data.ndim or any(isinstance(w, int) and w != d for w, d in zip(want, data.shape)):
            raise BackendError(f"{workload.name}: model input {inputs[0].name} has shape {want}, got {list(data.shape)}")
        if inputs[0].type == "tensor(float16)":  # an FP16 model takes half inputs, as torch-cuda's .half() module
            data = data.astype(np.float16)
        return {inputs[0].name: data}

    def binding(self, session: Any, feeds: dict[str, np.ndarray]) -> Any:
        """Inputs copied once to ``io_device``, outputs bound there: the IO of every timed and profiled run."""
        return self._binding(session, feeds)

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
        exported, path, model_settings = self.model(workload)
        with contextlib.ExitStack() as stack:
            # pinned before the session exists, so its thread pool inherits the affinity
            cores = stack.enter_context(pinning(self.pin(), self.intra_threads()))
            so = self.session_options()
            placement_dir = None
            if self.check_placement:  # profile the first run only, to read where each node ran (``placement``)
                placement_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="latprof-placement-"))
                so.enable_profiling = True
                so.profile_file_prefix = str(Path(placement_dir) / "placement")
            session = self.create_session(path, so)
            feeds = self.feeds(session, workload)
            binding = self.binding(session, feeds)
            run_options = self.run_options()
            session.run_with_iobinding(binding, run_options)
            output = np.asarray(binding.copy_outputs_to_cpu()[0])
            settings: dict[str, Any] = {
                **session_settings(session),
                **model_settings,
                "pinned_cores": cores,
                "io": f"IO binding, input allocated once on {self.io_device}",
                "timing": "wall clock (time.perf_counter) around n run_with_iobinding calls, GC paused",
            }
            settings.update(provider_settings(session, self.providers[0]))
            if placement_dir is not None:
                settings["node_placement"] = self.placement(session)
            err, check = self._check(workload, output, settings, exported)

            def call() -> None:
                session.run_with_iobinding(binding, run_options)

            return PreparedRun(wall_clock_timer(call), _tensor(output), settings, err, check=check,
                               stack=stack.pop_all())

    # Whether prepare profiles its first run to check node placement (backends whose first provider is not the CPU).
    check_placement: ClassVar[bool] = False

    def placement(self, session: Any) -> dict[str, int]:
        """End the first run's profiling (later runs are not profiled) and check where its nodes ran: nodes on a
        provider other than the first are a fallback, a ``BackendError`` naming them (``check_placement``)."""
        from latprof.backends.op_profiling import native_output_silenced, node_placement, placement_fallback

        try:
            with native_output_silenced():
                trace = Path(session.end_profiling())
            events = json.loads(trace.read_text())
        except Exception as exc:  # no trace written, unreadable JSON
            raise BackendError(f"{self.name}: cannot read node placement from the profile: {one_line(exc)}") from None
        nodes = node_placement(events)
        fallback = placement_fallback(nodes, self.providers[0])
        if fallback:
            raise BackendError(f"{self.name}: {fallback}")
        counts: dict[str, int] = {}
        for info in nodes.values():
            counts[info["provider"]] = counts.get(info["provider"], 0) + 1
        return counts

    def output_tolerance(self) -> tuple[float, float] | None:
        """(rtol, atol) of the output check; None: by dtype (``base.TOLERANCES``)."""
        return None

    def _check(self, workload: Workload, output: np.ndarray, settings: dict[str, Any],
               exported: ExportedModel) -> tuple[float | None, dict[str, Any]]:
        """(max abs error, the row's check columns): FP32 element-wise against eager; INT8 and FP16 by their own
        rules (``backends/precision.py``) against eager FP32, or, for an ONNX file, against the FP32 file on
        ONNX Runtime."""
        precision = self.options.precision
        actual = _tensor(output)
        if precision == DEFAULT_PRECISION:
            if workload.module is None:
                settings["output_check"] = "not possible: an ONNX file has no PyTorch eager reference"
                return None, {"output_check": "none: an ONNX file has no PyTorch eager reference"}
            settings["output_check"] = "compared with PyTorch eager"
            return (check_output(self.name, actual, workload.reference_output(), self.output_tolerance()),
                    {"output_check": fp32_check_text()})
        if workload.module is not None:
            reference, against = workload.reference_output(), "PyTorch eager FP32"
        else:
            reference, against = self._fp32_file_output(exported.path, workload), "the FP32 model on ONNX Runtime"
        rule = check_int8_output if precision == "int8" else check_fp16_output
        check = rule(self.name, actual, reference, against)
        settings["output_check"] = check["output_check"]
        err = float((actual.double() - reference.double()).abs().max()) if reference.numel() else 0.0
        return err, check

    def _fp32_file_output(self, path: Path, workload: Workload) -> Any:
        """The reference of a user's ONNX file at low precision: the FP32 file itself on the CPU provider."""
        ort = _ort()
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return _tensor(np.asarray(session.run(None, self.feeds(session, workload))[0]))

    def profile_ops(self, workload: Workload, runs: int) -> Any:
        """Per-node kernel times from ONNX Runtime's profiler (``latprof.backends.op_profiling``)."""
        from latprof.backends.op_profiling import profile_ort

        _, path, _ = self.model(workload)  # the model at --precision: an INT8 run profiles the INT8 graph

        def session_factory(so: Any) -> Any:
            return self.create_session(path, so)

        with pinning(self.pin(), self.intra_threads()):
            feeds = self.feeds(session_factory(self.session_options()), workload)
            return profile_ort(self.session_options, session_factory, feeds, runs,
                               bind=lambda session: self.binding(session, feeds), run_options=self.run_options(),
                               clock=self.op_clock)

    # What ONNX Runtime's node times measure on this backend (``op_profiling.OpProfile.clock``).
    op_clock: ClassVar[str] = "cpu"


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


# The CUDA provider's options, set explicitly (``cudnn_conv_algo_search`` EXHAUSTIVE is ORT's default and the analogue of
# torch's cudnn.benchmark; ``do_copy_in_default_stream`` 1 is the default and keeps copies ordered with the kernels).
CUDA_PROVIDER_OPTIONS = {"device_id": "0", "cudnn_conv_algo_search": "EXHAUSTIVE", "do_copy_in_default_stream": "1"}
# Provider options recorded in every ort-cuda row, read back from the session.
RECORDED_PROVIDER_OPTIONS = ("device_id", "use_tf32", "cudnn_conv_algo_search", "do_copy_in_default_stream",
                             "cudnn_conv_use_max_workspace", "arena_extend_strategy", "enable_cuda_graph",
                             "prefer_nhwc", "gpu_mem_limit")


def provider_settings(session: Any, provider: str) -> dict[str, Any]:
    """The first provider's options as the session reports them (``get_provider_options``), and TF32 from them."""
    try:
        options = dict(session.get_provider_options().get(provider, {}))
    except Exception as exc:  # an old onnxruntime without the call
        return {"provider_options": f"not readable: {one_line(exc)[:120]}"}
    out: dict[str, Any] = {"provider_options": {k: options[k] for k in RECORDED_PROVIDER_OPTIONS if k in options}}
    if "use_tf32" in options:
        out["tf32"] = "on" if options["use_tf32"] == "1" else "off"
        out["tf32_conv"] = out["tf32_matmul"] = "tf32" if out["tf32"] == "on" else "ieee"
    return out


@register_backend
class OrtCUDA(OrtBackend):
    """ONNX Runtime, CUDA execution provider; IO binding keeps input and output on the GPU.

    Per-call latency like every GPU backend: ``Run()`` synchronises the stream at its end (the run option
    ``disable_synchronize_execution_providers`` is set to 0 explicitly). One intra-op thread by default, spinning
    off: the CUDA provider launches from the calling thread; the CPU pool only serves nodes the GPU cannot run, and
    any such node is an error (``check_placement``).
    """

    name = "ort-cuda"
    description = "ONNX Runtime CUDA EP (onnxruntime-gpu): IO binding on the device, per-call latency, --tf32"
    device_class = "cuda"
    default_batch = 8
    default_intra_threads = 1
    default_spinning = False
    providers = ("CUDAExecutionProvider", "CPUExecutionProvider")
    io_device = "cuda"
    check_placement = True
    op_clock = "host-launch"
    precisions = ("fp32", "fp16")  # fp16: the export converted by onnxruntime.transformers.float16

    def provider_list(self) -> list[Any]:
        from latprof.backends.cuda_runtime import check_tf32

        cuda = {**CUDA_PROVIDER_OPTIONS, "use_tf32": "1" if check_tf32(self.options.tf32) == "on" else "0"}
        return [(self.providers[0], cuda), *self.providers[1:]]

    def run_options(self) -> Any:
        ro = _ort().RunOptions()
        ro.add_run_config_entry("disable_synchronize_execution_providers", "0")
        return ro

    def prepare(self, workload: Workload) -> PreparedRun:
        from latprof.backends.base import GPU_TIMING
        from latprof.backends.cuda_runtime import TIMING_TEXT, sampled_under_load

        run = super().prepare(workload)
        s = run.settings
        s["timing"] = (f"{TIMING_TEXT}: ONNX Runtime synchronises the CUDA stream at the end of each "
                       "run_with_iobinding (run option disable_synchronize_execution_providers=0)")
        s["timing_semantics"] = GPU_TIMING
        s["tf32_requested"] = self.options.tf32
        s["output_tolerance"] = "tf32" if self.output_tolerance() else "fp32"
        s.update(_ort_cuda_device(int(CUDA_PROVIDER_OPTIONS["device_id"])))
        run.stack.enter_context(sampled_under_load(s, s.get("gpu_uuid")))
        return run

    def output_tolerance(self) -> tuple[float, float] | None:
        from latprof.backends.base import TF32_TOLERANCE

        return TF32_TOLERANCE if self.options.tf32 == "on" else None


def _ort_cuda_device(ordinal: int) -> dict[str, Any]:
    """The GPU behind CUDA ordinal ``ordinal`` as the fingerprint matched it (``latprof.measure.gpu``)."""
    from latprof.measure.gpu import process_gpus

    gpu = next((g for g in process_gpus() if g.get("index") == ordinal), {})
    return {"device": gpu.get("name"), "gpu_uuid": gpu.get("gpu_uuid"), "gpu_match": gpu.get("match"),
            "capability": gpu.get("capability"), "driver": gpu.get("driver"),
            "clock_sm_idle_mhz": gpu.get("clock_sm_mhz"), "power_limit_w": gpu.get("power_limit_w")}
