"""zoo-b blocks: channel shuffle is a permutation, Dynamic Shift-Max behaves as specified, units wire correctly."""

from __future__ import annotations

import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from latprof.errors import LatprofError
from latprof.workloads import build_registered
from latprof.workloads.igcv import IGCV1Block, IGCV3Block
from latprof.workloads.micronet import DynamicShiftMax, dsm_elementwise_counts, micro_factorized_groups, shift_index
from latprof.workloads.shuffle import ChannelShuffle, channel_shuffle, shuffle_permutation
from latprof.workloads.shufflenet import ShuffleV1Unit, ShuffleV2Unit

ZOO_B_BLOCKS = ["shufflenet_v1_unit", "shufflenet_v2_unit", "micronet_block_a", "micronet_block_b",
                "micronet_block_c", "igcv1_block", "igcv3_block"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_channel_shuffle_known_order_and_inverse() -> None:
    x = torch.arange(6.0).view(1, 6, 1, 1).expand(2, 6, 3, 3).contiguous()
    y = channel_shuffle(x, 2)
    assert y[0, :, 0, 0].tolist() == [0, 3, 1, 4, 2, 5]
    assert torch.equal(channel_shuffle(y, 3), x)  # shuffling by C/g undoes shuffling by g


@pytest.mark.parametrize(("channels", "groups"), [(12, 3), (24, 8), (116, 2), (240, 4)])
def test_channel_shuffle_is_a_true_permutation(channels: int, groups: int) -> None:
    x = torch.randn(2, channels, 4, 4)
    y = channel_shuffle(x, groups)
    perm = shuffle_permutation(channels, groups)
    assert sorted(perm.tolist()) == list(range(channels))
    assert perm.tolist() != list(range(channels))
    assert torch.equal(y, x[:, perm])
    assert torch.equal(channel_shuffle(y, channels // groups), x)
    assert y.is_contiguous()


def test_channel_shuffle_rejects_bad_groups_and_module_identity_for_one_group() -> None:
    with pytest.raises(ValueError, match="groups"):
        channel_shuffle(torch.randn(1, 10, 2, 2), 3)
    x = torch.randn(1, 8, 2, 2)
    assert ChannelShuffle(1)(x) is x


def test_dsm_shift_index_next_group_next_channel() -> None:
    # 6 channels, 2 groups of 3: output channel (g, c) reads input channel (g+1 mod 2, c+1 mod 3)
    assert shift_index(6, 2).tolist() == [4, 5, 3, 1, 2, 0]
    idx = torch.arange(24).view(4, 6).roll(-1, 0).roll(-1, 1).reshape(-1)
    assert torch.equal(shift_index(24, 4), idx)
    with pytest.raises(ValueError):
        shift_index(10, 3)


def _zero_coefficients(dsm: DynamicShiftMax, bias: float = 0.0) -> None:
    last = dsm.fc[3]
    nn.init.zeros_(last.weight)
    nn.init.constant_(last.bias, bias)


def test_dsm_formula_with_zero_dynamic_part() -> None:
    x = torch.randn(2, 8, 5, 5)
    x2 = x[:, shift_index(8, 2)]
    dsm2 = DynamicShiftMax(8, groups=2, j=2, reduction=4, init_a=(1.0, 0.5), init_b=(0.0, 0.5)).eval()
    _zero_coefficients(dsm2)  # hard-sigmoid(0) = 0.5 → rescaled coefficient 0, only the init offsets remain
    with torch.inference_mode():
        assert torch.allclose(dsm2(x), torch.max(x, 0.5 * x + 0.5 * x2))
    dsm1 = DynamicShiftMax(8, groups=2, j=1, reduction=4, init_a=(1.0, 0.0), init_b=(0.0, 0.0)).eval()
    _zero_coefficients(dsm1)
    with torch.inference_mode():
        assert torch.allclose(dsm1(x), x)


@pytest.mark.parametrize(("bias", "expected"), [(100.0, 2.0), (-100.0, -2.0)])
def test_dsm_coefficients_saturate_at_plus_minus_two(bias: float, expected: float) -> None:
    dsm = DynamicShiftMax(16, groups=4, j=2, reduction=4).eval()
    _zero_coefficients(dsm, bias)
    with torch.inference_mode():
        coef = dsm.coefficients(torch.randn(3, 16, 4, 4))
    assert coef.shape == (3, 4 * 16, 1, 1)
    assert torch.all(coef == expected)


def test_dsm_shape_and_range_on_large_inputs() -> None:
    torch.manual_seed(0)
    dsm = DynamicShiftMax(32, groups=4, j=2, reduction=8, init_a=(1.0, 1.0)).eval()
    x = 100 * torch.randn(2, 32, 7, 7)
    with torch.inference_mode():
        coef = dsm.coefficients(x)
        out = dsm(x)
    assert out.shape == x.shape
    assert coef.min() >= -2.0 and coef.max() <= 2.0
    # |out| ≤ (|a| + |b|)·max|x| with |a| ≤ 3 (coefficient + init 1) and |b| ≤ 2
    assert out.abs().max() <= 5 * x.abs().max()


def test_dsm_elementwise_counts_rule() -> None:
    x = torch.randn(1, 8, 4, 4)
    j2 = dsm_elementwise_counts(DynamicShiftMax(8, 2, j=2).eval(), x)
    j1 = dsm_elementwise_counts(DynamicShiftMax(8, 2, j=1).eval(), x)
    assert j2 == {"mult_adds": 4 * 128, "max": 128}
    assert j1 == {"mult_adds": 2 * 128, "max": 0}


def test_micro_factorized_groups_is_sqrt_c_over_r() -> None:
    assert micro_factorized_groups(64, 4) == 4
    assert micro_factorized_groups(144, 4) == 6
    assert micro_factorized_groups(8, 2) == 2


@pytest.mark.parametrize("name", ZOO_B_BLOCKS)
def test_registered_block_builds_and_keeps_spatial_size(name: str) -> None:
    w = build_registered(name)
    with torch.inference_mode():
        y = w.module(*w.make_inputs())
    assert y.shape[0] == 1 and y.shape[2:] == w.input_shape[2:]


@pytest.mark.parametrize("name", ZOO_B_BLOCKS)
def test_registered_block_stride_two_halves_resolution(name: str) -> None:
    kwargs = {"stride": 2}
    if name == "shufflenet_v1_unit":
        kwargs["out_channels"] = 480
    w = build_registered(name, **kwargs)
    with torch.inference_mode():
        y = w.module(*w.make_inputs())
    assert y.shape[2:] == (28, 28)


@pytest.mark.parametrize("groups", [1, 2, 3, 4, 8])
def test_shufflenet_v1_unit_all_group_counts(groups: int) -> None:
    x = torch.randn(1, 48, 14, 14)
    s2 = ShuffleV1Unit(48, 240, stride=2, groups=groups, group_first_pointwise=False).eval()
    s1 = ShuffleV1Unit(240, 240, stride=1, groups=groups).eval()
    with torch.inference_mode():
        y = s1(s2(x))
    assert y.shape == (1, 240, 7, 7)
    assert s1.pw1[0].groups == groups and s1.pw2[0].groups == groups
    assert s1.pw1[0].out_channels % groups == 0


def test_shufflenet_v1_stride_two_concats_the_avgpooled_input() -> None:
    unit = ShuffleV1Unit(24, 240, stride=2, groups=3, group_first_pointwise=False).eval()
    x = torch.randn(1, 24, 8, 8)
    with torch.inference_mode():
        y = unit(x)
    assert torch.allclose(y[:, :24], nn.functional.avg_pool2d(x, 3, 2, 1))


def test_shufflenet_v2_stride_one_passes_half_the_channels_through() -> None:
    unit = ShuffleV2Unit(116, 116).eval()
    x = torch.randn(1, 116, 8, 8)
    with torch.inference_mode():
        y = channel_shuffle(unit(x), 58)  # undo the final shuffle(2)
    assert torch.equal(y[:, :58], x[:, :58])
    assert not torch.allclose(y[:, 58:], x[:, 58:])


def _dense_reach(block: nn.Module, channels: int) -> torch.Tensor:
    """Which output channels an impulse in input channel 0 reaches, with all weights positive."""
    with torch.no_grad():
        for m in block.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.abs_()
        x = torch.zeros(1, channels, 5, 5)
        x[:, 0] = 1.0
        y = block.eval()(x)
    return (y[0, :, 2, 2] != 0)


def test_igcv1_permutation_makes_the_composition_dense() -> None:
    assert bool(_dense_reach(IGCV1Block(32, primary_groups=4), 32).all())


def test_igcv3_loose_complementary_condition() -> None:
    reach = _dense_reach(IGCV3Block(32, 32, expansion=6, residual=False), 32)
    assert bool(reach.all())


@pytest.mark.parametrize(("name", "kwargs"), [("shufflenet_v1_unit", {"groups": 5}),
                                              ("shufflenet_v2_unit", {"out_channels": 64}),
                                              ("igcv1_block", {"primary_groups": 5}),
                                              ("micronet_block_a", {"j": 3})])
def test_bad_configuration_is_a_one_line_error(name: str, kwargs: dict) -> None:
    with pytest.raises(LatprofError):
        build_registered(name, **kwargs)


def test_micronet_block_c_exports_to_onnx(tmp_path) -> None:
    w = build_registered("micronet_block_c", input_shape=(1, 32, 14, 14))
    (x,) = w.make_inputs()
    path = tmp_path / "block.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(w.module, (x,), str(path), dynamo=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    np.testing.assert_allclose(out, w.reference_output().numpy(), rtol=1e-4, atol=1e-5)
