"""ONNX counting: same mult_adds as the torch count of the exported model; bad files are one-line errors."""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import pytest
import torch
from torch import nn

from latprof.cost import count_model, count_onnx
from latprof.errors import LatprofError


class Exportable(nn.Module):
    """Conv-BN-ReLU6, depthwise, pointwise + hardswish, residual add, cat, shuffle, pooling, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU6())
        self.dw = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8))
        self.pw = nn.Sequential(nn.Conv2d(8, 8, 1), nn.Hardswish())
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stem(x)
        z = self.pw(self.dw(y)) + y
        z = torch.cat([z, y], 1)
        n, c, h, w = z.shape
        z = z.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, c, h, w)
        return self.fc(nn.functional.adaptive_avg_pool2d(z, 1).flatten(1))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    """One TorchScript export (dynamic batch) shared by the tests of this file."""
    shape = (1, 3, 12, 12)
    m = Exportable().eval()
    path = tmp_path_factory.mktemp("onnx") / "m.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (torch.randn(*shape),), str(path), dynamo=False,
                          input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    return m, path


def test_onnx_mult_adds_equal_torch_and_bn_folding_explains_elementwise(exported) -> None:
    m, path = exported
    onnx_report = count_onnx(path, (1, 3, 12, 12))
    torch_report = count_model(m, torch.randn(1, 3, 12, 12))
    folded = count_model(m, torch.randn(1, 3, 12, 12), fold_bn=True)
    assert onnx_report.totals["mult_adds"] == torch_report.totals["mult_adds"]
    # The exporter folds BN into the convs: the ONNX graph has no BN, like --fold-bn.
    assert "BatchNormalization" not in [r.op for r in onnx_report.layers]
    assert onnx_report.totals["elementwise_ops"] == folded.totals["elementwise_ops"]
    assert torch_report.totals["elementwise_ops"] - folded.totals["elementwise_ops"] == 2 * (2 * 8 * 144)
    # Transpose (the shuffle's copy) is charged read + write, like the torch clone.
    transpose = [r for r in onnx_report.layers if r.op == "Transpose"]
    assert len(transpose) == 1 and transpose[0].mem_access == 2 * 16 * 144


def test_onnx_hand_counted_conv(tmp_path: Path) -> None:
    path = tmp_path / "c.onnx"
    conv = nn.Conv2d(22, 44, 1, bias=False).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(conv, (torch.randn(1, 22, 56, 56),), str(path), dynamo=False)
    t = count_onnx(path).totals
    assert t["mult_adds"] == 56 * 56 * 22 * 44
    assert t["mem_access"] == 56 * 56 * (22 + 44) + 22 * 44
    assert t["params"] == 22 * 44


def test_onnx_batch_from_input_shape(exported) -> None:
    _, path = exported
    one = count_onnx(path, (1, 3, 12, 12)).totals["mult_adds"]
    assert count_onnx(path, (3, 3, 12, 12)).totals["mult_adds"] == 3 * one


def test_onnx_dynamic_input_needs_a_shape(exported) -> None:
    _, path = exported
    with pytest.raises(LatprofError, match="dynamic dimension"):
        count_onnx(path)


def test_onnx_missing_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(LatprofError, match="not found"):
        count_onnx(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00not a protobuf\xff" * 3)
    with pytest.raises(LatprofError, match="not a readable ONNX model"):
        count_onnx(bad)


def test_onnx_rejected_shape(exported) -> None:
    _, path = exported
    with pytest.raises(LatprofError, match="1x3x12"):
        count_onnx(path, (1, 3, 12))


def test_onnx_unsupported_node_listed(tmp_path: Path) -> None:
    node = onnx.helper.make_node("CumSum", ["x", "axis"], ["y"])
    graph = onnx.helper.make_graph(
        [node], "g", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 5])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 5])],
        [onnx.helper.make_tensor("axis", onnx.TensorProto.INT64, [], [1])],
    )
    path = tmp_path / "cum.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), str(path))
    with pytest.warns(UserWarning, match="CumSum"):
        report = count_onnx(path)
    assert report.unsupported_ops == ["CumSum"]
    assert report.totals["mem_access"] == 20
