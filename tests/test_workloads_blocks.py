"""Zoo blocks: every registered block builds and keeps (or halves) the resolution; ResNet units with their G4
switches, MobileNet / EfficientNet blocks, design-tip variants; ShuffleNet V1/V2 units, Dynamic Shift-Max and the
MicroNet micro-blocks, IGCV1/IGCV3 (their permutations make the group convolutions dense)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from latprof.cost import count_workload
from latprof.errors import LatprofError
from latprof.workloads import build_registered, get_spec
from latprof.workloads.efficientnet import FusedMBConv
from latprof.workloads.igcv import IGCV1Block, IGCV2Block, IGCV3Block
from latprof.workloads.layers import SqueezeExcite, channel_shuffle
from latprof.workloads.micronet import DynamicShiftMax, dsm_elementwise_counts, micro_factorized_groups, shift_index
from latprof.workloads.shufflenet import ShuffleV1Unit, ShuffleV2Unit

BLOCKS = [
    "conv_bn_relu", "resnet_bottleneck", "resnet_basic", "depthwise_separable", "inverted_residual", "mbconv",
    "fused_mbconv", "dilated_conv3x3", "conv5x5", "factorized_conv5x5", "conv_norm",
    "shufflenet_v1_unit", "shufflenet_v2_unit", "micronet_block_a", "micronet_block_b", "micronet_block_c",
    "igcv1_block", "igcv3_block", "igcv2_block", "micro_depthwise",
]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _conv_weights(module: nn.Module) -> int:
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, nn.Conv2d))


def _mult_adds(w) -> int:
    return count_workload(w).totals["mult_adds"]


def _count(module: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in module.modules())


def _output(w) -> torch.Tensor:
    with torch.inference_mode():
        return w.module(*w.make_inputs())


# ------------------------------------------------------------------ every block
@pytest.mark.parametrize("name", BLOCKS)
def test_block_runs_on_its_default_input_and_keeps_spatial_size(name: str) -> None:
    spec = get_spec(name)
    assert spec.kind == "block"
    assert spec.input_for({})[2:] == (56, 56)
    assert spec.input_for({"in_channels": 24})[1] == 24
    w = build_registered(name)
    y = _output(w)
    assert y.shape[0] == 1 and y.shape[2:] == w.input_shape[2:]
    small = build_registered(name, input_shape=(1, *spec.input_for({})[1:2], 8, 8))
    assert _output(small).shape[-2:] == (8, 8)


@pytest.mark.parametrize("name", BLOCKS)
def test_block_at_stride_two_halves_resolution(name: str) -> None:
    kwargs = {"stride": 2, **({"out_channels": 480} if name == "shufflenet_v1_unit" else {})}
    assert _output(build_registered(name, **kwargs)).shape[2:] == (28, 28)


@pytest.mark.parametrize(("name", "kwargs"), [("shufflenet_v1_unit", {"groups": 5}),
                                              ("shufflenet_v2_unit", {"out_channels": 64}),
                                              ("igcv1_block", {"primary_groups": 5}),
                                              ("micronet_block_a", {"j": 3})])
def test_bad_configuration_is_a_one_line_error(name: str, kwargs: dict) -> None:
    with pytest.raises(LatprofError):
        build_registered(name, **kwargs)


# ------------------------------------------------------------------ ResNet units
def test_bottleneck_defaults_and_exact_params() -> None:
    w = build_registered("resnet_bottleneck")
    assert w.input_shape == (1, 256, 56, 56)
    assert get_spec("resnet_bottleneck").input_for({"in_channels": 128}) == (1, 128, 56, 56)
    # 1×1 256→64, 3×3 64→64, 1×1 64→256, three BNs (weight + bias); identity shortcut has no parameters
    assert _params(w.module) == 256 * 64 + 9 * 64 * 64 + 64 * 256 + 2 * (64 + 64 + 256)
    assert _count(w.module, nn.ReLU) == 3
    assert _mult_adds(w) == (256 * 64 + 9 * 64 * 64 + 64 * 256) * 56 * 56


def test_bottleneck_relu_and_shortcut_switches() -> None:
    base = build_registered("resnet_bottleneck", relu=False, shortcut=False).module
    assert _count(base, nn.ReLU) == 0
    x = torch.randn(1, 256, 8, 8)
    with torch.inference_mode():
        assert torch.equal(base(x), base.body(x))
        with_add = build_registered("resnet_bottleneck", relu=False, shortcut=True).module
        with_add.load_state_dict(base.state_dict())
        torch.testing.assert_close(with_add(x), base.body(x) + x)
        full = build_registered("resnet_bottleneck").module
        full.load_state_dict(base.state_dict())
        torch.testing.assert_close(full(x), torch.relu(full.body(x) + x))
    assert _count(build_registered("resnet_bottleneck", shortcut=False).module, nn.ReLU) == 3


def test_bottleneck_projection_when_shape_changes() -> None:
    w = build_registered("resnet_bottleneck", in_channels=64, stride=2)
    assert _params(w.module) == 64 * 64 + 9 * 64 * 64 + 64 * 256 + 2 * (64 + 64 + 256) + 64 * 256 + 2 * 256
    assert _output(w).shape == (1, 256, 28, 28)
    no_add = build_registered("resnet_bottleneck", in_channels=64, stride=2, shortcut=False)
    assert no_add.module.projection is None


def test_basic_unit() -> None:
    w = build_registered("resnet_basic")
    assert _params(w.module) == 2 * 9 * 64 * 64 + 4 * 64
    assert _count(build_registered("resnet_basic", relu=False).module, nn.ReLU) == 0
    assert _output(build_registered("resnet_basic", out_channels=128, stride=2)).shape == (1, 128, 28, 28)


# ------------------------------------------------------------------ MobileNet / EfficientNet blocks
def test_depthwise_separable_params() -> None:
    w = build_registered("depthwise_separable", in_channels=64, out_channels=128)
    assert _params(w.module) == 64 * 9 + 2 * 64 + 64 * 128 + 2 * 128
    assert _mult_adds(w) == (64 * 9 + 64 * 128) * 56 * 56


def test_inverted_residual_residual_and_expansion() -> None:
    m = build_registered("inverted_residual", in_channels=32, expansion=6).module
    assert m.residual and _conv_weights(m) == 32 * 192 + 192 * 9 + 192 * 32
    assert not build_registered("inverted_residual", in_channels=32, stride=2).module.residual
    t1 = build_registered("inverted_residual", in_channels=32, out_channels=16, expansion=1).module
    assert _conv_weights(t1) == 32 * 9 + 32 * 16 and not t1.residual
    assert _count(t1, nn.ReLU6) == 1


def test_mbconv_se_and_activation() -> None:
    m = build_registered("mbconv").module
    assert _count(m, SqueezeExcite) == 1 and _count(m, nn.Hardswish) == 2 and _count(m, nn.Hardsigmoid) == 1
    assert _count(build_registered("mbconv", se=False).module, SqueezeExcite) == 0
    sw = build_registered("mbconv", act="swish").module
    assert _count(sw, nn.SiLU) == 3 and _count(sw, nn.Sigmoid) == 1
    assert _count(build_registered("mbconv", act="relu").module, nn.ReLU) == 3
    with pytest.raises(LatprofError, match="unknown activation 'gelu'"):
        build_registered("mbconv", act="gelu")


def test_fused_mbconv() -> None:
    m = build_registered("fused_mbconv", in_channels=48, expansion=4).module
    assert _conv_weights(m) == 48 * 192 * 9 + 192 * 48 and m.residual
    single = build_registered("fused_mbconv", in_channels=24, expansion=1).module
    assert _conv_weights(single) == 24 * 24 * 9
    assert _output(build_registered("fused_mbconv", out_channels=64, stride=2)).shape == (1, 64, 28, 28)
    assert _count(build_registered("fused_mbconv", se=True).module, SqueezeExcite) == 1


# ------------------------------------------------------------------ design tips
def test_design_tips_taps_and_cost() -> None:
    c = 64
    dil = build_registered("dilated_conv3x3")
    k5 = build_registered("conv5x5")
    fac = build_registered("factorized_conv5x5")
    assert (_conv_weights(dil.module), _conv_weights(k5.module), _conv_weights(fac.module)) == (9 * c * c, 25 * c * c, 10 * c * c)
    assert _mult_adds(fac) / _mult_adds(k5) == pytest.approx(10 / 25)
    assert dil.module[0].dilation == (2, 2)
    for w in (dil, k5, fac):
        assert _output(w).shape == (1, c, 56, 56)
    dw = build_registered("conv5x5", groups=64)
    assert _conv_weights(dw.module) == 25 * c
    with pytest.raises(LatprofError, match="groups=3"):
        build_registered("dilated_conv3x3", groups=3)


def test_conv_norm_choice() -> None:
    assert _count(build_registered("conv_norm").module, nn.BatchNorm2d) == 1
    gn = build_registered("conv_norm", norm="gn", num_groups=8).module
    (g,) = [m for m in gn.modules() if isinstance(m, nn.GroupNorm)]
    assert g.num_groups == 8
    assert _count(build_registered("conv_norm", norm="none").module, nn.BatchNorm2d) == 0
    with pytest.raises(LatprofError, match="unknown norm 'ln'.*valid: bn, gn, none"):
        build_registered("conv_norm", norm="ln")


# ------------------------------------------------------------------ ShuffleNet units
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


# ------------------------------------------------------------------ Dynamic Shift-Max and MicroNet
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


# ------------------------------------------------------------------ IGCV
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


# ------------------------------------------------------------------ blocks of the claim experiments (kernels/)
def test_igcv2_interleaved_group_convs_are_dense_and_cheap() -> None:
    assert bool(_dense_reach(IGCV2Block(64, (8, 8)), 64).all())  # L=3, K=8: complementary
    assert bool(_dense_reach(IGCV2Block(64, (16, 16, 16)), 64).all())  # L=4, K=4
    assert not bool(_dense_reach(IGCV2Block(64, (8,)), 64).all())  # one group 1x1 alone is not
    w = build_registered("igcv2_block")
    assert _mult_adds(w) == 56 * 56 * (9 * 64 + 2 * 64 * 8)
    with pytest.raises(LatprofError):
        build_registered("igcv2_block", pointwise_groups=(5, 8))


def test_low_rank_pointwise_is_the_talks_5x() -> None:
    dense, low = build_registered("low_rank_pointwise"), build_registered("low_rank_pointwise", rank=10)
    assert _mult_adds(dense) == 56 * 56 * 100 * 100 and _mult_adds(low) == 56 * 56 * 2 * 100 * 10
    assert _output(low).shape == (1, 100, 56, 56)
    with pytest.raises(LatprofError):
        build_registered("low_rank_pointwise", rank=-1)


def test_conv_stack_depth_and_width() -> None:
    w = build_registered("conv_stack", in_channels=45, depth=8)
    assert _count(w.module, nn.Conv2d) == 8 and _conv_weights(w.module) == 8 * 9 * 45 * 45
    assert _output(w).shape == (1, 45, 56, 56)
    with pytest.raises(LatprofError, match="depth"):
        build_registered("conv_stack", depth=0)


def test_micro_factorized_pointwise_and_depthwise_against_dense() -> None:
    fac, dense = (build_registered("micro_factorized_pointwise", factorized=f) for f in (True, False))
    assert micro_factorized_groups(128, 4) == 4
    assert _mult_adds(fac) == 56 * 56 * 2 * 128 * 32 // 4 and _mult_adds(dense) == 56 * 56 * 128 * 128
    assert _output(fac).shape == _output(dense).shape == (1, 128, 56, 56)
    fdw, ddw = (build_registered("micro_depthwise", kernel_size=5, factorized=f) for f in (True, False))
    assert (_conv_weights(fdw.module), _conv_weights(ddw.module)) == (10 * 64, 25 * 64)


def test_micronet_block_c_activation_swap_keeps_the_convs() -> None:
    blocks = {a: build_registered("micronet_block_c", act=a).module for a in ("dsm", "relu", "hswish")}
    assert _count(blocks["dsm"], DynamicShiftMax) == 3
    assert _count(blocks["relu"], DynamicShiftMax) == 0 and _count(blocks["relu"], nn.ReLU) == 3
    assert _count(blocks["hswish"], nn.Hardswish) == 3
    assert len({_conv_weights(b) for b in blocks.values()}) == 1
    with pytest.raises(LatprofError, match="unknown activation"):
        build_registered("micronet_block_c", act="gelu")


def test_shufflenet_v1_unit_without_shuffle_keeps_the_convs() -> None:
    on, off = build_registered("shufflenet_v1_unit"), build_registered("shufflenet_v1_unit", shuffle=False)
    assert on.module.shuffle.groups == 3 and off.module.shuffle.groups == 1
    assert _conv_weights(on.module) == _conv_weights(off.module) and _mult_adds(on) == _mult_adds(off)
    assert not torch.allclose(_output(on), _output(off))


def test_efficientnetv2_early_stages_fuse_the_first_stages() -> None:
    for fused in range(4):
        w = build_registered("efficientnetv2_early_stages", fused_stages=fused)
        assert _count(w.module, FusedMBConv) == (0, 2, 6, 10)[fused]  # stages of 2, 4, 4 blocks
        assert _count(w.module, SqueezeExcite) == (10, 8, 4, 0)[fused]  # MBConv keeps EfficientNet's SE
    assert _output(build_registered("efficientnetv2_early_stages", input_shape=(1, 3, 64, 64))).shape == (1, 64, 8, 8)
    with pytest.raises(LatprofError):
        build_registered("efficientnetv2_early_stages", fused_stages=4)
