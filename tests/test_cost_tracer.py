"""Tracer behaviour: meta run equals real run, module attribution, unsupported ops, tables, errors, workloads."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from latprof.cost import UnsupportedOpWarning, count_model, count_workload, workload_counts
from latprof.errors import LatprofError


class SmallNet(nn.Module):
    """Conv-BN-ReLU6, depthwise, pointwise, hardswish, split/cat, channel shuffle, pooling, linear, softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU6())
        self.dw = nn.Conv2d(16, 16, 3, stride=2, padding=1, groups=16)
        self.pw = nn.Sequential(nn.Conv2d(16, 32, 1), nn.Hardswish())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.pw(self.dw(self.stem(x)))
        a, b = z.chunk(2, 1)
        z = torch.cat([b, a + b], 1) * torch.sigmoid(z)
        n, c, h, w = z.shape
        z = z.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, c, h, w)
        return self.fc(self.pool(z).flatten(1)).softmax(-1)


def test_meta_run_equals_real_run() -> None:
    m, inp = SmallNet(), torch.randn(2, 3, 16, 16)
    for fold in (False, True):
        meta = count_model(m, inp, fold, fake=True)
        real = count_model(m, inp, fold, fake=False)
        assert [r.as_dict() for r in meta.layers] == [r.as_dict() for r in real.layers]
        assert meta.totals == real.totals


def test_ops_are_attributed_to_module_paths() -> None:
    report = count_model(SmallNet(), torch.randn(1, 3, 16, 16))
    names = [(r.name, r.op) for r in report.layers]
    assert names[:6] == [("stem.0", "convolution"), ("stem.1", "native_batch_norm"), ("stem.2", "hardtanh"),
                         ("dw", "convolution"), ("pw.0", "convolution"), ("pw.1", "hardswish")]
    assert ("(root)", "cat") in names and ("(root)", "clone") in names and ("fc", "addmm") in names
    assert report.totals["params"] == sum(p.numel() for p in SmallNet().parameters())
    assert sum(r.params for r in report.layers) == report.totals["params"]


def test_aggregation_by_op_module_and_block() -> None:
    report = count_model(SmallNet(), torch.randn(1, 3, 16, 16))
    by_op = {r["op"]: r for r in report.aggregate("op")}
    assert by_op["convolution"]["calls"] == 3
    assert by_op["convolution"]["mult_adds"] == report.totals["mult_adds"] - 320  # all but the linear layer
    by_module = report.aggregate("module")
    assert sum(r["mem_access"] for r in by_module) == report.totals["mem_access"]
    blocks = {r["block"]: r for r in report.blocks(1)}
    assert set(blocks) == {"stem", "dw", "pw", "(root)", "pool", "fc"}
    assert blocks["stem"]["calls"] == 3
    with pytest.raises(LatprofError, match="unknown aggregation"):
        report.aggregate("layer")


def test_unsupported_op_keeps_traffic_and_is_listed_once() -> None:
    class Cum(nn.Module):
        def forward(self, x):
            return x.cumsum(1).cumsum(1)

    with pytest.warns(UnsupportedOpWarning, match="cumsum"):
        report = count_model(Cum(), torch.randn(2, 5))
    assert report.unsupported_ops == ["cumsum"]
    assert report.totals["mem_access"] == 2 * (10 + 10)
    assert report.totals["elementwise_ops"] == 0
    assert report.as_dict()["unsupported_ops"] == ["cumsum"]


def test_data_dependent_model_falls_back_to_a_real_run() -> None:
    class Gate(nn.Module):
        def forward(self, x):
            return x * 2 if x.sum().item() > -1e9 else x

    t = count_model(Gate(), torch.randn(1, 4)).totals
    assert t["elementwise_ops"] == 4 + 4  # sum + mul


def test_rejected_input_shape_is_one_line_with_the_shape() -> None:
    with pytest.raises(LatprofError) as info:
        count_model(nn.Conv2d(3, 4, 3), torch.randn(1, 5, 8, 8), name="tiny")
    msg = str(info.value)
    assert "\n" not in msg and "1x5x8x8" in msg and "tiny" in msg and "channels" in msg


def test_training_flags_are_restored_and_model_untouched() -> None:
    m = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)).train()
    before = m[1].running_mean.clone()
    count_model(m, torch.randn(2, 3, 4, 4), fake=False)
    assert m.training and m[1].training
    assert torch.equal(m[1].running_mean, before)


def test_json_contract() -> None:
    d = count_model(nn.Conv2d(3, 4, 1), torch.randn(1, 3, 4, 4), name="c").as_dict()
    assert d["model"] == "c" and d["input"] == [1, 3, 4, 4]
    assert set(d["totals"]) >= {"mult_adds", "elementwise_ops", "mem_access", "mem_bytes", "params"}
    assert set(d["layers"][0]) == {"name", "op", "mult_adds", "elementwise_ops", "mem_access", "mem_bytes",
                                   "params", "output_shape"}
    assert d["layers"][0]["output_shape"] == [1, 4, 4, 4]


def test_registered_workload_counts() -> None:
    from latprof.workloads import create_workload

    wl = create_workload("conv_bn_relu", input_shape=(1, 8, 10, 10), in_channels=8, out_channels=16)
    report = count_workload(wl)
    assert report.model == "conv_bn_relu"
    assert report.totals["mult_adds"] == 100 * 16 * 8 * 9
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        row = workload_counts(wl)
    assert row["elementwise_ops"] == 2 * 1600 + 1600  # BN + ReLU
    assert set(row) == {"mult_adds", "elementwise_ops", "mem_access", "mem_bytes", "params", "arithmetic_intensity"}
