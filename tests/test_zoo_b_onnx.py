"""Every zoo-b network exports to ONNX (TorchScript exporter) and ONNX Runtime reproduces the PyTorch output."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from latprof.workloads import build_registered

NETWORKS = [
    "shufflenet_v1_g3_x1_0", "shufflenet_v1_g8_x1_0", "shufflenet_v2_x0_5", "shufflenet_v2_x1_0",
    "shufflenet_v2_x1_5", "shufflenet_v2_x2_0", "micronet_m0", "micronet_m1", "micronet_m2", "micronet_m3",
    "igcv3_d_x1_0",
]
SMALL_INPUT = (1, 3, 64, 64)
# ~3 s per network on a shared 2-core machine (TorchScript tracing); a small image keeps the check cheap
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


@pytest.mark.parametrize("name", NETWORKS)
def test_network_exports_to_onnx_and_runs(name: str, tmp_path) -> None:
    w = build_registered(name, input_shape=SMALL_INPUT)
    (x,) = w.make_inputs()
    path = tmp_path / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(w.module, (x,), str(path), dynamo=False)
    onnx.checker.check_model(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    expected = w.reference_output().numpy()
    assert out.shape == (1, 1000)
    scale = float(np.abs(expected).max())
    assert scale > 0
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4 * scale)
