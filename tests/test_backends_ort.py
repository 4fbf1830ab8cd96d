"""ONNX Runtime backends: options in force (read back), output checks, export cache and export failure."""

from __future__ import annotations

import os

import pytest
import torch

from latprof.backends import BackendError, BackendOptions, create_backend
from latprof.backends.onnx_export import export_workload, workload_hash
from latprof.workloads.registry import Workload
from tests.backend_models import Eigvals, tiny_workload

FAST = {"exporter": "torchscript"}  # the dynamo exporter takes seconds per model; one test covers it


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LATPROF_CACHE", str(tmp_path / "onnx-cache"))


def test_ort_cpu_session_options_read_back():
    backend = create_backend("ort-cpu", BackendOptions(threads=2, interop_threads=1, ort_opt="basic",
                                                       extra={**FAST, "spinning": False}))
    run = backend.prepare(tiny_workload())
    try:
        s = run.settings
        assert s["intra_op_threads"] == 2
        assert s["inter_op_threads"] == 1
        assert s["execution_mode"] == "sequential"
        assert s["graph_optimization_level"] == "basic"
        assert s["intra_op_allow_spinning"] == "0"
        assert s["inter_op_allow_spinning"] == "0"
        assert s["force_spinning_stop"] == "0"  # nothing spins, nothing to stop
        assert s["providers"] == ["CPUExecutionProvider"]
        assert s["onnx_exporter"] == "torchscript" and s["onnx_opset"] == 18
        assert s["output_check"] == "compared with PyTorch eager"
        assert run.max_abs_error is not None and run.max_abs_error < 1e-3
        assert run.timer(3) > 0
    finally:
        run.close()


@pytest.mark.parametrize("level", ["none", "extended", "all"])
def test_ort_opt_levels_in_force(level):
    run = create_backend("ort-cpu", BackendOptions(threads=1, ort_opt=level, extra=FAST)).prepare(tiny_workload())
    run.close()
    assert run.settings["graph_optimization_level"] == level
    assert run.settings["intra_op_allow_spinning"] == "1"  # ort-cpu default: ONNX Runtime's own (spinning on)
    assert run.settings["force_spinning_stop"] == "1"  # ...within a run; an idle session's pool does not spin


def test_ort_mobile_profile():
    before = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    cls = create_backend("ort-mobile", BackendOptions(extra=FAST))
    assert cls.fixed_batch == 1 and cls.batch_for(8) == 1 and cls.device_class == "mobile"
    run = cls.prepare(tiny_workload())
    try:
        s = run.settings
        assert s["intra_op_threads"] == 1 and s["inter_op_threads"] == 1
        assert s["execution_mode"] == "sequential"
        assert s["intra_op_allow_spinning"] == "0"
        if hasattr(os, "sched_getaffinity"):
            assert len(s["pinned_cores"]) == 1
            assert os.sched_getaffinity(0) == set(s["pinned_cores"])
        assert "x86 is not ARM" in s["caveat"]
    finally:
        run.close()
    if before is not None:
        assert os.sched_getaffinity(0) == before  # close() restores the affinity


def test_ort_mobile_rejects_batch_above_one():
    with pytest.raises(BackendError, match="batch 1"):
        create_backend("ort-mobile", BackendOptions(extra=FAST)).prepare(tiny_workload(batch=2))


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2 if hasattr(os, "sched_getaffinity") else True,
                    reason="needs two cores and Linux affinity")
def test_ort_mobile_threads_emulate_cluster():
    run = create_backend("ort-mobile", BackendOptions(threads=2, extra=FAST)).prepare(tiny_workload())
    try:
        assert run.settings["intra_op_threads"] == 2
        assert run.settings["emulated_cores"] == 2
        assert len(run.settings["pinned_cores"]) == 2
    finally:
        run.close()


def test_wrong_output_is_backend_error():
    w = tiny_workload()
    w._reference = w.reference_output() + 1.0  # eager says something else than the backend computes
    with pytest.raises(BackendError, match="differs from PyTorch eager"):
        create_backend("ort-cpu", BackendOptions(threads=1, extra=FAST)).prepare(w)


def test_export_cache_hits_and_hash_covers_shape_and_state():
    w = tiny_workload()
    first = export_workload(w, "torchscript")
    second = export_workload(w, "torchscript")
    assert not first.cached and second.cached and first.path == second.path
    base = workload_hash(w, "torchscript", 18)
    assert workload_hash(tiny_workload(), "torchscript", 18) == base  # a fresh build of the same model: same key
    assert workload_hash(Workload(w.name, w.module, (1, 3, 32, 32)), "torchscript", 18) != base
    assert workload_hash(w, "dynamo", 18) != base
    assert workload_hash(w, "torchscript", 17) != base
    with torch.no_grad():
        w.module.fc.bias.add_(1.0)
    assert workload_hash(w, "torchscript", 18) != base


def test_per_op_profilers_print_nothing_of_their_own(capfd):
    """Kineto writes ``USDT: ... profiler_start`` / ``profiler_stop`` to fd 2; latprof silences it (issue 12)."""
    from latprof.backends.op_profiling import native_output_silenced, profile_torch

    w = tiny_workload()
    (x,) = w.make_inputs()
    profile = profile_torch(lambda: w.module(x), runs=2, warmup=1)
    assert profile.ops
    run = create_backend("ort-cpu", BackendOptions(threads=1, extra=FAST))
    assert run.profile_ops(w, 3).ops
    captured = capfd.readouterr()
    assert "USDT" not in captured.err + captured.out
    assert "profiler_start" not in captured.err + captured.out
    with native_output_silenced():
        os.write(2, b"hidden native line\n")
    print("after", flush=True)
    os.write(2, b"visible native line\n")
    captured = capfd.readouterr()
    assert "hidden" not in captured.err and "visible native line" in captured.err and "after" in captured.out


def test_dynamo_exporter_is_the_default():
    run = create_backend("ort-cpu", BackendOptions(threads=1)).prepare(tiny_workload())
    run.close()
    assert run.settings["onnx_exporter"] == "dynamo"
    assert run.settings["onnx_export_fallback"] is None


def test_dynamo_exports_in_one_process_share_one_torchlib_table_and_write_the_same_graph(tmp_path, monkeypatch):
    import onnx
    from torch.onnx._internal.exporter import _registration

    from latprof.backends import onnx_export

    original = vars(_registration.ONNXRegistry)["from_torchlib"]
    built = []

    def counted(cls, opset_version=18):
        built.append(opset_version)
        return original.__func__(cls, opset_version=opset_version)

    monkeypatch.setattr(_registration.ONNXRegistry, "from_torchlib", classmethod(counted))
    monkeypatch.setattr(onnx_export, "_TORCHLIB_REGISTRIES", {})
    w = tiny_workload()
    module, inputs = w.module.eval(), w.make_inputs()
    with torch.no_grad():
        with onnx_export._quiet():  # as torch exports without latprof: a table built for the export
            torch.onnx.export(module, inputs, str(tmp_path / "plain.onnx"), dynamo=True, opset_version=18,
                              input_names=["input"], output_names=["output"])
        assert len(built) == 1
        for name in ("first", "second"):
            onnx_export._export_dynamo(module, inputs, tmp_path / f"{name}.onnx", 18)
    assert len(built) == 2 and built[0] == built[1]  # the first of latprof's exports built its table, the second
    # reused it
    assert vars(_registration.ONNXRegistry)["from_torchlib"].__func__ is counted  # restored after each export
    graphs = [onnx.load(str(tmp_path / f"{n}.onnx")).graph.SerializeToString() for n in ("plain", "first", "second")]
    assert graphs[0] == graphs[1] == graphs[2]


def test_user_onnx_file_runs_without_reference(tmp_path):
    exported = export_workload(tiny_workload(), "torchscript", root=tmp_path)
    w = Workload("user.onnx", None, (1, 3, 16, 16), source="onnx", onnx_path=str(exported.path))
    run = create_backend("ort-cpu", BackendOptions(threads=1)).prepare(w)
    run.close()
    assert run.settings["onnx_exporter"] == "user-file"
    assert run.settings["output_check"].startswith("not possible")
    assert run.max_abs_error is None
    assert tuple(run.output.shape) == (1, 10)


def test_exporter_failure_is_error_row(tmp_path):
    from latprof.measure.protocol import MeasureConfig
    from latprof.profile import ProfileRequest, run_profile
    from latprof.workloads.registry import _REGISTRY, register_workload

    if "_test_unexportable" not in _REGISTRY:
        register_workload(kind="block", default_input=(1, 1, 4, 4), name="_test_unexportable")(lambda: Eigvals())
    from latprof.run.engine import RunOptions

    # in process: the model is registered by this test, so a fresh worker process would not know its name
    files = run_profile(ProfileRequest(models=["_test_unexportable"], backends=["ort-cpu"], threads=1,
                                       config=MeasureConfig(max_time_s=0.2), out=tmp_path / "out",
                                       run=RunOptions(in_process=True)))
    (row,) = files.rows
    assert row["status"] == "error"
    assert "ONNX export failed" in row["error"]
    assert "dynamo exporter failed" in row["error"] and "torchscript exporter failed" in row["error"]


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="Linux thread affinity")
def test_pinning_moves_threads_that_already_exist():
    """A runtime's thread pool exists before pinning; psutil's process call alone would move only one thread."""
    import threading

    from latprof.backends.base import pin_cores, pinned

    stop = threading.Event()
    worker = threading.Thread(target=stop.wait)
    worker.start()
    try:
        before = os.sched_getaffinity(worker.native_id)
        core = pin_cores(1)
        with pinned(core):
            assert os.sched_getaffinity(worker.native_id) == set(core)
        assert os.sched_getaffinity(worker.native_id) == before
    finally:
        stop.set()
        worker.join()


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs Linux affinity and two cores")
def test_overlapping_pins_closed_first_in_first_out_restore_the_original():
    """A sweep prepares several pinned runs and closes them in order: the process must end unpinned."""
    from latprof.backends.base import pin_cores, pinned

    original = os.sched_getaffinity(0)
    one, two = pinned(pin_cores(1)), pinned(pin_cores(2))
    assert len(one.__enter__()) == 1
    assert len(two.__enter__()) == 2  # counted from the original affinity, not from the first pin
    one.__exit__(None, None, None)
    assert len(os.sched_getaffinity(0)) == 2  # the pin still open stays in force
    two.__exit__(None, None, None)
    assert os.sched_getaffinity(0) == original
