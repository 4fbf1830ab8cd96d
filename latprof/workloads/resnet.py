"""ResNet (He et al., 2016): basic and bottleneck units with ``relu`` / ``shortcut`` switches, ResNet-18 and -50.

The bottleneck follows the paper (v1): the stride sits on the first 1×1 convolution, which is what gives the
published 3.8 G multiply-adds for ResNet-50 (torchvision's v1.5 puts it on the 3×3: 4.1 G).
``relu=False`` and ``shortcut=False`` are the ShuffleNet V2 G4 experiment (element-wise operations cost time).
"""

from __future__ import annotations

import torch
from torch import nn

from latprof.workloads.layers import ClassifierHead, SequentialNetwork, channels_input, conv_norm_act, image_input
from latprof.workloads.registry import register_workload


class _ResidualUnit(nn.Module):
    """body(x) (+ shortcut(x)) → ReLU; the two switches remove the add and every ReLU."""

    def __init__(self, body: nn.Module, in_channels: int, out_channels: int, stride: int, relu: bool, shortcut: bool):
        super().__init__()
        self.body = body
        self.use_shortcut = shortcut
        self.projection: nn.Module | None = None
        if shortcut and (stride != 1 or in_channels != out_channels):
            self.projection = conv_norm_act(in_channels, out_channels, 1, stride, act=None)
        self.relu = nn.ReLU(inplace=True) if relu else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        if self.use_shortcut:
            out = out + (x if self.projection is None else self.projection(x))
        return self.relu(out)


class ResNetBottleneck(_ResidualUnit):
    """conv1×1 → BN → ReLU → conv3×3 → BN → ReLU → conv1×1 → BN, + shortcut, ReLU after the add."""

    def __init__(
        self,
        in_channels: int = 256,
        mid_channels: int = 64,
        out_channels: int | None = None,
        stride: int = 1,
        relu: bool = True,
        shortcut: bool = True,
    ) -> None:
        out_channels = out_channels or 4 * mid_channels
        act = "relu" if relu else None
        body = nn.Sequential(
            conv_norm_act(in_channels, mid_channels, 1, stride, act=act),
            conv_norm_act(mid_channels, mid_channels, 3, 1, act=act),
            conv_norm_act(mid_channels, out_channels, 1, 1, act=None),
        )
        super().__init__(body, in_channels, out_channels, stride, relu, shortcut)


class ResNetBasic(_ResidualUnit):
    """conv3×3 → BN → ReLU → conv3×3 → BN, + shortcut, ReLU after the add."""

    def __init__(
        self,
        in_channels: int = 64,
        out_channels: int | None = None,
        stride: int = 1,
        relu: bool = True,
        shortcut: bool = True,
    ) -> None:
        out_channels = out_channels or in_channels
        act = "relu" if relu else None
        body = nn.Sequential(
            conv_norm_act(in_channels, out_channels, 3, stride, act=act),
            conv_norm_act(out_channels, out_channels, 3, 1, act=None),
        )
        super().__init__(body, in_channels, out_channels, stride, relu, shortcut)


@register_workload(kind="block", family="resnet", default_input=channels_input("in_channels", 256))
def resnet_bottleneck(
    in_channels: int = 256,
    mid_channels: int = 64,
    out_channels: int | None = None,
    stride: int = 1,
    relu: bool = True,
    shortcut: bool = True,
) -> nn.Module:
    """ResNet bottleneck unit 1×1-3×3-1×1 (out = 4×mid by default); relu / shortcut switches (ShuffleNet V2 G4)."""
    return ResNetBottleneck(in_channels, mid_channels, out_channels, stride, relu, shortcut)


@register_workload(kind="block", family="resnet", default_input=channels_input("in_channels", 64))
def resnet_basic(
    in_channels: int = 64, out_channels: int | None = None, stride: int = 1, relu: bool = True, shortcut: bool = True
) -> nn.Module:
    """ResNet basic unit 3×3-3×3 (out = in by default); relu / shortcut switches."""
    return ResNetBasic(in_channels, out_channels, stride, relu, shortcut)


def _resnet(bottleneck: bool, depths: tuple[int, int, int, int], num_classes: int = 1000) -> SequentialNetwork:
    stem = nn.Sequential(conv_norm_act(3, 64, 7, 2), nn.MaxPool2d(3, 2, 1))
    blocks: list[tuple[str, nn.Module]] = [("stem", stem)]
    in_ch = 64
    for stage, (depth, width) in enumerate(zip(depths, (64, 128, 256, 512)), start=1):
        for i in range(depth):
            stride = 2 if stage > 1 and i == 0 else 1
            if bottleneck:
                unit: nn.Module = ResNetBottleneck(in_ch, width, 4 * width, stride)
                in_ch = 4 * width
            else:
                unit = ResNetBasic(in_ch, width, stride)
                in_ch = width
            blocks.append((f"layer{stage}_{i}", unit))
    blocks.append(("head", ClassifierHead(in_ch, num_classes)))
    return SequentialNetwork(blocks)


@register_workload(kind="network", family="resnet", default_input=image_input)
def resnet18(num_classes: int = 1000) -> nn.Module:
    """ResNet-18 (basic units 2-2-2-2): 1.81 G mult-adds, 11.7 M params at 224×224 (paper: 1.8 G)."""
    return _resnet(False, (2, 2, 2, 2), num_classes)


@register_workload(kind="network", family="resnet", default_input=image_input)
def resnet50(num_classes: int = 1000) -> nn.Module:
    """ResNet-50 (bottleneck 3-4-6-3, stride on the first 1×1): 3.86 G mult-adds, 25.6 M params (paper: 3.8 G)."""
    return _resnet(True, (3, 4, 6, 3), num_classes)
