"""Zoo blocks: ResNet units with their G4 switches, MobileNet / EfficientNet blocks, design-tip variants."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from latprof.cost import count_workload
from latprof.errors import LatprofError
from latprof.workloads import build_registered, get_spec
from latprof.workloads.layers import SqueezeExcite, make_divisible

BLOCKS = [
    "resnet_bottleneck", "resnet_basic", "depthwise_separable", "inverted_residual", "mbconv", "fused_mbconv",
    "dilated_conv3x3", "conv5x5", "factorized_conv5x5", "conv_norm",
]


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _conv_weights(module: nn.Module) -> int:
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, nn.Conv2d))


def _mult_adds(w) -> int:
    return count_workload(w).totals["mult_adds"]


def _count(module: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in module.modules())


@pytest.mark.parametrize("name", BLOCKS)
def test_block_runs_on_its_default_input(name: str) -> None:
    spec = get_spec(name)
    assert spec.kind == "block"
    w = build_registered(name, input_shape=(1, *spec.input_for({})[1:2], 8, 8))
    with torch.inference_mode():
        out = w.module(*w.make_inputs())
    assert out.shape[0] == 1 and out.shape[-2:] == (8, 8)
    assert spec.input_for({})[2:] == (56, 56)
    assert spec.input_for({"in_channels": 24})[1] == 24


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
    with torch.inference_mode():
        assert w.module(*w.make_inputs()).shape == (1, 256, 28, 28)
    no_add = build_registered("resnet_bottleneck", in_channels=64, stride=2, shortcut=False)
    assert no_add.module.projection is None


def test_basic_unit() -> None:
    w = build_registered("resnet_basic")
    assert _params(w.module) == 2 * 9 * 64 * 64 + 4 * 64
    assert _count(build_registered("resnet_basic", relu=False).module, nn.ReLU) == 0
    w2 = build_registered("resnet_basic", out_channels=128, stride=2)
    with torch.inference_mode():
        assert w2.module(*w2.make_inputs()).shape == (1, 128, 28, 28)


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
    w = build_registered("fused_mbconv", out_channels=64, stride=2)
    with torch.inference_mode():
        assert w.module(*w.make_inputs()).shape == (1, 64, 28, 28)
    assert _count(build_registered("fused_mbconv", se=True).module, SqueezeExcite) == 1


def test_design_tips_taps_and_cost() -> None:
    c = 64
    dil = build_registered("dilated_conv3x3")
    k5 = build_registered("conv5x5")
    fac = build_registered("factorized_conv5x5")
    assert (_conv_weights(dil.module), _conv_weights(k5.module), _conv_weights(fac.module)) == (9 * c * c, 25 * c * c, 10 * c * c)
    assert _mult_adds(fac) / _mult_adds(k5) == pytest.approx(10 / 25)
    assert dil.module[0].dilation == (2, 2)
    for w in (dil, k5, fac):
        with torch.inference_mode():
            assert w.module(*w.make_inputs()).shape == (1, c, 56, 56)
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


def test_make_divisible() -> None:
    assert make_divisible(32 * 1.4) == 48
    assert make_divisible(1280 * 1.4) == 1792
    assert make_divisible(72 / 4) == 24  # never drop more than 10%
    assert make_divisible(3) == 8
