"""ResNet (He et al., 2016): basic and bottleneck units with ``relu`` / ``shortcut`` switches, ResNet-18 and -50.

The bottleneck follows the paper (v1): the stride sits on the first 1×1 convolution, which is what gives the
published 3.8 G multiply-adds for ResNet-50 (torchvision's v1.5 puts it on the 3×3: 4.1 G).
``relu=False`` and ``shortcut=False`` are the ShuffleNet V2 G4 experiment (element-wise operations cost time).
"""

from __future__ import annotations

import torch
from torch import nn

from latprof.workloads.layers import NUM_CLASSES, ClassifierHead, SequentialNetwork, channels_input, conv_norm_act
from latprof.workloads.registry import register_networks, register_workload


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


@register_workload(kind="block", family="resnet", default_input=channels_input("in_channels", 256),
                   name="resnet_bottleneck")
class ResNetBottleneck(_ResidualUnit):
    """ResNet bottleneck unit 1×1-3×3-1×1 (out = 4×mid by default); relu / shortcut switches (ShuffleNet V2 G4).

    conv1×1 → BN → ReLU → conv3×3 → BN → ReLU → conv1×1 → BN, + shortcut, ReLU after the add.
    """

    def __init__(self, in_channels: int = 256, mid_channels: int = 64, out_channels: int | None = None, stride: int = 1,
                 relu: bool = True, shortcut: bool = True) -> None:
        out_channels = out_channels or 4 * mid_channels
        act = "relu" if relu else None
        body = nn.Sequential(
            conv_norm_act(in_channels, mid_channels, 1, stride, act=act),
            conv_norm_act(mid_channels, mid_channels, 3, 1, act=act),
            conv_norm_act(mid_channels, out_channels, 1, 1, act=None),
        )
        super().__init__(body, in_channels, out_channels, stride, relu, shortcut)


@register_workload(kind="block", family="resnet", default_input=channels_input("in_channels", 64), name="resnet_basic")
class ResNetBasic(_ResidualUnit):
    """ResNet basic unit 3×3-3×3 (out = in by default); relu / shortcut switches.

    conv3×3 → BN → ReLU → conv3×3 → BN, + shortcut, ReLU after the add.
    """

    def __init__(self, in_channels: int = 64, out_channels: int | None = None, stride: int = 1, relu: bool = True,
                 shortcut: bool = True) -> None:
        out_channels = out_channels or in_channels
        act = "relu" if relu else None
        body = nn.Sequential(
            conv_norm_act(in_channels, out_channels, 3, stride, act=act),
            conv_norm_act(out_channels, out_channels, 3, 1, act=None),
        )
        super().__init__(body, in_channels, out_channels, stride, relu, shortcut)


# The registered names, also reachable as ``latprof.workloads.resnet:resnet_basic`` (a module:callable reference).
resnet_bottleneck = ResNetBottleneck
resnet_basic = ResNetBasic


def _resnet(bottleneck: bool, depths: tuple[int, int, int, int], num_classes: int = NUM_CLASSES) -> SequentialNetwork:
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


register_networks("resnet", _resnet, {
    "resnet18": ("ResNet-18 (basic units 2-2-2-2): 1.81 G mult-adds, 11.7 M params at 224×224 (paper: 1.8 G).",
                 False, (2, 2, 2, 2)),
    "resnet50": (
        "ResNet-50 (bottleneck 3-4-6-3, stride on the first 1×1): 3.86 G mult-adds, 25.6 M params (paper: 3.8 G).",
        True, (3, 4, 6, 3)),
})
