"""Building blocks of the lightweight-CNN literature, registered as workloads."""

from __future__ import annotations

from torch import nn

from latprof.workloads.layers import channels_input, conv_norm_act
from latprof.workloads.registry import register_workload


@register_workload(kind="block", family="basic", default_input=channels_input("in_channels", 32))
def conv_bn_relu(
    in_channels: int = 32, out_channels: int = 64, kernel_size: int = 3, stride: int = 1, groups: int = 1
) -> nn.Module:
    """Conv k×k → BatchNorm → ReLU; channels, kernel, stride and groups configurable (input size via --input)."""
    return conv_norm_act(in_channels, out_channels, kernel_size, stride, groups)


# The former class name, kept for callers outside the zoo (benchmarks/bench_regression_power.py builds
# ``ConvBNReLU(c, c, 3)``): the same conv → BN → ReLU sequence, built by ``layers.conv_norm_act``.
ConvBNReLU = conv_bn_relu
