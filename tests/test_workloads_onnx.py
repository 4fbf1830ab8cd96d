"""Every zoo network (and a MicroNet block) exports to ONNX with the TorchScript exporter, the graph passes the ONNX
checker, and ONNX Runtime reproduces the PyTorch output."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from latprof.workloads import build_registered
from tests.test_workloads_networks import NETWORKS

# ~3 s per network on a shared 2-core machine (TorchScript tracing): one network per layout runs by default, width
# variants, ResNet-50 (the slowest export) and the channel-shuffle / MicroNet / IGCV networks are marked slow.
QUICK = {"mobilenet_v1_x0_25", "mobilenet_v2_x1_0", "mobilenet_v3_large", "mobilenet_v3_small", "efficientnet_b0",
         "resnet18"}
SMALL_INPUT = (2, 3, 64, 64)  # a small image keeps the check cheap; batch 2 checks the batch dimension survives
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _export_and_run(module: torch.nn.Module, x: torch.Tensor, path) -> np.ndarray:
    """Export with the TorchScript exporter, check the graph, run it in ONNX Runtime on the CPU."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), str(path), dynamo=False, input_names=["x"], output_names=["y"])
    onnx.checker.check_model(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"x": x.numpy()})
    return out


@pytest.mark.parametrize("name", [n if n in QUICK else pytest.param(n, marks=pytest.mark.slow) for n in NETWORKS])
def test_network_exports_to_onnx_and_runs(name: str, tmp_path) -> None:
    w = build_registered(name, input_shape=SMALL_INPUT)
    (x,) = w.make_inputs()
    out = _export_and_run(w.module, x, tmp_path / f"{name}.onnx")
    dims = [d.dim_value for d in onnx.load(str(tmp_path / f"{name}.onnx")).graph.output[0].type.tensor_type.shape.dim]
    assert dims == [2, 1000] and out.shape == (2, 1000)
    expected = w.reference_output().numpy()
    scale = float(np.abs(expected).max())
    assert scale > 0
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4 * scale)


def test_micronet_block_c_exports_to_onnx(tmp_path) -> None:
    w = build_registered("micronet_block_c", input_shape=(1, 32, 14, 14))
    (x,) = w.make_inputs()
    out = _export_and_run(w.module, x, tmp_path / "block.onnx")
    np.testing.assert_allclose(out, w.reference_output().numpy(), rtol=1e-4, atol=1e-5)
