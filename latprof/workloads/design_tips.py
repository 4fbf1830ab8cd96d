"""Design-tip variants from the efficient-CNN literature, each a block to time against its alternative:
3×3 dilated (d=2) vs 5×5 (same receptive field), 5×5 vs 5×1 + 1×5 (factorised), BatchNorm vs GroupNorm, and a
stack of k×k convs whose depth and width trade against each other at equal FLOPs (fewer, wider layers).

``groups`` makes any of them depthwise (``groups=in_channels``), the setting where these tips are usually argued.
"""

from __future__ import annotations

from torch import nn

from latprof.errors import LatprofError
from latprof.workloads.layers import channels_input, conv_norm_act, norm_layer
from latprof.workloads.registry import register_workload

_INPUT = channels_input("in_channels", 64)


def _check_groups(in_channels: int, out_channels: int, groups: int) -> None:
    if groups < 1 or in_channels % groups or out_channels % groups:
        raise LatprofError(
            f"groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}"
        )


@register_workload(kind="block", family="design_tips", default_input=_INPUT)
def dilated_conv3x3(
    in_channels: int = 64, out_channels: int | None = None, stride: int = 1, dilation: int = 2, groups: int = 1
) -> nn.Module:
    """3×3 conv with dilation 2 (5×5 receptive field, 9 taps) → BN → ReLU; compare with conv5x5."""
    out_channels = out_channels or in_channels
    _check_groups(in_channels, out_channels, groups)
    return conv_norm_act(in_channels, out_channels, 3, stride, groups, dilation)


@register_workload(kind="block", family="design_tips", default_input=_INPUT)
def conv5x5(in_channels: int = 64, out_channels: int | None = None, stride: int = 1, groups: int = 1) -> nn.Module:
    """Plain 5×5 conv → BN → ReLU; the reference for dilated_conv3x3 and factorized_conv5x5."""
    out_channels = out_channels or in_channels
    _check_groups(in_channels, out_channels, groups)
    return conv_norm_act(in_channels, out_channels, 5, stride, groups)


@register_workload(kind="block", family="design_tips", default_input=_INPUT)
def factorized_conv5x5(
    in_channels: int = 64, out_channels: int | None = None, stride: int = 1, groups: int = 1
) -> nn.Module:
    """5×1 conv then 1×5 conv (10 taps instead of 25) → BN → ReLU; no norm between: only the kernel shape differs."""
    out_channels = out_channels or in_channels
    _check_groups(in_channels, out_channels, groups)
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, (5, 1), (stride, 1), (2, 0), groups=groups, bias=False),
        conv_norm_act(out_channels, out_channels, (1, 5), (1, stride), groups),
    )


@register_workload(kind="block", family="design_tips", default_input=_INPUT)
def conv_norm(
    in_channels: int = 64,
    out_channels: int | None = None,
    kernel_size: int = 3,
    stride: int = 1,
    norm: str = "bn",
    num_groups: int = 32,
    act: str = "relu",
) -> nn.Module:
    """Conv k×k → norm (bn | gn with num_groups | none) → act; BN folds into the conv at inference, GN cannot."""
    out_channels = out_channels or in_channels
    block = conv_norm_act(in_channels, out_channels, kernel_size, stride, norm=norm, act=act)
    if norm == "gn":
        block[1] = norm_layer("gn", out_channels, num_groups)
    return block


@register_workload(kind="block", family="design_tips", default_input=_INPUT)
def conv_stack(in_channels: int = 64, depth: int = 1, kernel_size: int = 3) -> nn.Module:
    """``depth`` k×k conv → BN → ReLU layers, c→c; depth d at width c/√d keeps FLOPs (fewer layers at equal FLOPs)."""
    if depth < 1:
        raise LatprofError(f"depth must be >= 1, got {depth}")
    return nn.Sequential(*(conv_norm_act(in_channels, in_channels, kernel_size) for _ in range(depth)))
