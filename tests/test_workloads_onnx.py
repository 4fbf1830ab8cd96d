"""Every zoo network family (and a MicroNet block) exports to ONNX the way the ONNX Runtime backends export it
(latprof's default exporter, no fallback), the graph passes the ONNX checker, and ONNX Runtime reproduces the
PyTorch output."""

from __future__ import annotations

import re
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from latprof.backends.onnx_export import export_workload
from latprof.workloads import Workload, build_registered
from latprof.workloads.published import published_figures
from tests.test_workloads_networks import NETWORKS

SMALL_INPUT = (2, 3, 64, 64)  # a small image keeps the check cheap; batch 2 checks the batch dimension survives
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _layout(name: str) -> str:
    """A network's layout: its name without the width / size suffix (x1_0, g3_x1_0, m2, b0). Width variants of one
    layout export the same operators, so one per layout covers the exporter (~10 s per export here)."""
    return re.sub(r"(_g\d+)?(_x\d+_\d+)$|_m\d+$|_b\d+$", "", name)


def _smallest_per_layout() -> list[str]:
    figures = published_figures()
    chosen: dict[str, str] = {}
    for name in NETWORKS:
        best = chosen.get(_layout(name))
        if best is None or figures[name].mult_adds < figures[best].mult_adds:
            chosen[_layout(name)] = name
    return sorted(chosen.values())


def _export_and_run(workload: Workload) -> tuple[np.ndarray, onnx.ModelProto]:
    """Export as the ORT backends do (into the session's export cache, shared with test_cost_zoo.py), check the
    graph, run it in ONNX Runtime on the CPU."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exported = export_workload(workload)
    assert exported.exporter == "dynamo", exported.note  # the default exporter, not the fallback
    onnx.checker.check_model(str(exported.path))
    session = ort.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    (x,) = workload.make_inputs()
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    return out, onnx.load(str(exported.path))


def test_layouts_cover_every_network() -> None:
    assert {_layout(n) for n in _smallest_per_layout()} == {_layout(n) for n in NETWORKS}
    assert _layout("mobilenet_v1_x0_25") == _layout("mobilenet_v1_x1_0") == "mobilenet_v1"
    assert _layout("shufflenet_v1_g3_x1_0") == "shufflenet_v1" and _layout("resnet18") != _layout("resnet50")


# Dynamo exports that took over 5 s on one core of the 2-core dev VM (the others take 2.5-5 s): deselectable with
# -m "not slow"; CI runs them all.
SLOW_EXPORTS = {"efficientnetv2_s", "igcv3_d_x1_0", "micronet_m0", "mobilenet_v2_x1_0", "mobilenet_v3_large", "resnet50",
                "shufflenet_v1_g3_x1_0", "shufflenet_v2_x0_5"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_EXPORTS else n
                                  for n in _smallest_per_layout()])
def test_network_exports_to_onnx_and_runs(name: str) -> None:
    w = build_registered(name, input_shape=SMALL_INPUT)
    out, model = _export_and_run(w)
    dims = [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    assert dims == [2, 1000] and out.shape == (2, 1000)
    expected = w.reference_output().numpy()
    scale = float(np.abs(expected).max())
    assert scale > 0
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4 * scale)


def test_micronet_block_c_exports_to_onnx() -> None:
    w = build_registered("micronet_block_c", input_shape=(1, 32, 14, 14))
    out, _ = _export_and_run(w)
    np.testing.assert_allclose(out, w.reference_output().numpy(), rtol=1e-4, atol=1e-5)
