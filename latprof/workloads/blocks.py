"""Building blocks of the lightweight-CNN literature, registered as workloads."""

from __future__ import annotations

from typing import Any

from torch import nn

from latprof.workloads.registry import register_workload


def _channels_input(key: str, default: int, size: int = 56) -> Any:
    return lambda kw: (1, int(kw.get(key, default)), size, size)


class ConvBNReLU(nn.Sequential):
    """Convolution → BatchNorm → ReLU, the unit every CNN is made of."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        dilation: int = 1,
        relu: bool = True,
    ) -> None:
        padding = dilation * (kernel_size - 1) // 2
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


@register_workload(kind="block", family="basic", default_input=_channels_input("in_channels", 32))
def conv_bn_relu(
    in_channels: int = 32, out_channels: int = 64, kernel_size: int = 3, stride: int = 1, groups: int = 1
) -> nn.Module:
    """Conv k×k → BatchNorm → ReLU; channels, kernel, stride and groups configurable (input size via --input)."""
    return ConvBNReLU(in_channels, out_channels, kernel_size, stride, groups)
